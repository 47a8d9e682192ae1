"""Every YAML under cluster/ parses, has the keys its kind needs, and names real medcl commands and files.

Kinds: Ray cluster launcher files (``provider`` key), KubeRay ``RayCluster`` / ``RayJob``
documents (``kind``), and the job runtime environment (``runtime_env.yaml``). Entrypoints are split
with shlex; the subcommand and its flags are parsed by ``medcl.cli``'s own parser, and every file
argument must exist in the repository. The Grafana dashboard must query every medcl metric.
"""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
YAML_FILES = sorted(p for p in CLUSTER.rglob("*") if p.suffix in (".yaml", ".yml"))
RUNTIME_ENV_KEYS = {"working_dir", "py_modules", "excludes", "pip", "uv", "conda", "env_vars", "container",
                    "image_uri", "config", "nsight", "py_executable"}


def _documents(path: Path) -> list[dict]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs), f"{path}: expected YAML mappings"
    return docs


def _all_documents():
    return [(path, doc) for path in YAML_FILES for doc in _documents(path)]


def _gpus(resources: dict) -> float:
    return float(resources.get("GPU", 0))


def check_entrypoint(command: str) -> None:
    """``medcl <subcommand> ...``: a real subcommand whose arguments the CLI accepts, files that exist."""
    from medcl.cli import _parser

    argv = shlex.split(command)
    assert argv[0] == "medcl", f"entrypoint {command!r} does not run medcl"
    parser = _parser()
    try:
        args = parser.parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"medcl's parser rejects the entrypoint {command!r}")
    files = [v for v in vars(args).values() if isinstance(v, Path)]
    assert files, f"entrypoint {command!r} names no experiment or sweep file"
    for path in files:
        assert (REPO / path).is_file(), f"entrypoint {command!r}: {path} is not a file in the repository"
    if args.command == "run":
        from medcl.config import load_experiment

        load_experiment(REPO / args.experiment, args.overrides, output_dir=args.output_dir)  # --set fields valid


def test_cluster_folder_has_every_kind():
    kinds = {doc.get("kind") or ("launcher" if "provider" in doc else path.name) for path, doc in _all_documents()}
    assert kinds >= {"launcher", "RayCluster", "RayJob", "runtime_env.yaml"}
    assert {p.name for p in YAML_FILES} >= {"aws.yaml", "gcp.yaml", "raycluster.yaml", "rayjob.yaml", "runtime_env.yaml"}


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_launcher_configs(name):
    (config,) = _documents(CLUSTER / name)
    for key in ("cluster_name", "max_workers", "idle_timeout_minutes", "provider", "auth", "available_node_types",
                "head_node_type", "setup_commands", "head_start_ray_commands", "worker_start_ray_commands"):
        assert key in config, f"{name}: missing {key}"
    assert config["provider"]["type"] == name.split(".")[0]
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    for node_type, spec in types.items():
        assert {"node_config", "resources", "min_workers", "max_workers"} <= set(spec), f"{name}: {node_type}"
        assert spec["min_workers"] <= spec["max_workers"]
    assert _gpus(types[config["head_node_type"]]["resources"]) == 0, "the head is a CPU node"
    gpu_types = [t for t, s in types.items() if _gpus(s["resources"]) > 0]
    assert gpu_types and config["max_workers"] >= 1, f"{name}: no GPU worker type"
    assert 0 < config["idle_timeout_minutes"] <= 60
    assert any("pip install" in c and "medcl" in c for c in config["setup_commands"]), "setup installs medcl"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = " ".join(c for c in config[key] if "ray start" in c)
        assert "RAY_AUTH_MODE=token" in start, f"{name}: {key} must turn token auth on"
        assert "0.0.0.0" not in start, f"{name}: {key} must not expose the dashboard"
    assert "~/.ray/auth_token" in config.get("file_mounts", {}), f"{name}: the token must reach every node"


def _check_ray_cluster_spec(spec: dict, where: str) -> None:
    assert spec.get("authOptions", {}).get("mode") == "token", f"{where}: token auth"
    head = spec["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP", f"{where}: the head service must stay internal"
    assert head["template"]["spec"]["containers"], where
    groups = spec["workerGroupSpecs"]
    assert groups, f"{where}: no worker group"
    for group in groups:
        assert group.get("minReplicas", 0) <= group.get("maxReplicas", 0), where
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert int(limits.get("nvidia.com/gpu", 0)) >= 1, f"{where}: worker group {group['groupName']} has no GPU"


def test_kuberay_manifests():
    manifests = [(p, d) for p, d in _all_documents() if d.get("kind") in ("RayCluster", "RayJob")]
    assert manifests
    for path, doc in manifests:
        where = f"{path.name}:{doc['metadata']['name']}"
        assert doc["apiVersion"] == "ray.io/v1", where
        if doc["kind"] == "RayCluster":
            _check_ray_cluster_spec(doc["spec"], where)
            continue
        spec = doc["spec"]
        assert spec["shutdownAfterJobFinishes"] is True, where
        assert isinstance(yaml.safe_load(spec["runtimeEnvYAML"]), dict), where
        _check_ray_cluster_spec(spec["rayClusterSpec"], where)
        check_entrypoint(spec["entrypoint"])
    subcommands = {shlex.split(d["spec"]["entrypoint"])[1] for _, d in manifests if d["kind"] == "RayJob"}
    assert subcommands == {"run", "sweep"}


def test_runtime_env():
    (env,) = _documents(CLUSTER / "runtime_env.yaml")
    assert set(env) <= RUNTIME_ENV_KEYS, f"unknown runtime_env fields: {set(env) - RUNTIME_ENV_KEYS}"
    assert "working_dir" not in env, "the working dir is given on the command line (--working-dir)"
    assert {".venv/", ".git/", "runs/"} <= set(env["excludes"])
    assert all(isinstance(v, str) for v in env["env_vars"].values()), "env_vars values must be strings"


def test_commands_in_readme_and_comments_name_real_commands():
    """Every ``-- medcl ...`` command written in cluster/ (README, YAML comments) is valid."""
    commands = []
    for path in [CLUSTER / "README.md", REPO / "README.md", REPO / "docs" / "cluster.md", *YAML_FILES]:
        text = re.sub(r"\\\n\s*(#\s*)?", " ", path.read_text())  # join continued lines
        commands += [m.group(1).strip() for m in re.finditer(r"-- (medcl [^\n`#]+)", text)]
    assert commands
    for command in commands:
        check_entrypoint(command)


SHARED_MOUNT = "/mnt/medcl"


def _absolute_paths(value) -> list[str]:
    if isinstance(value, dict):
        return [p for v in value.values() for p in _absolute_paths(v)]
    if isinstance(value, list):
        return [p for v in value for p in _absolute_paths(v)]
    return [value] if isinstance(value, str) and value.startswith("/") else []


def test_the_cloud_sweeps_read_and_write_where_the_shipped_clusters_mount_shared_storage():
    """A cloud sweep's data, weights and outputs must be on the one path every node of the shipped
    clusters sees (aws.yaml, gcp.yaml and the KubeRay volume mount it at /mnt/medcl)."""
    for config in ("aws.yaml", "gcp.yaml", "kuberay/raycluster.yaml"):
        assert SHARED_MOUNT in (CLUSTER / config).read_text(), f"cluster/{config} does not mount {SHARED_MOUNT}"
    sweeps = sorted((REPO / "experiments" / "sweeps").glob("cloud_*.yaml"))
    assert sweeps
    for path in sweeps:
        found = _absolute_paths(yaml.safe_load(path.read_text()))
        assert found, f"{path.name} names no data, weights or output path"
        outside = [p for p in found if not p.startswith(SHARED_MOUNT + "/")]
        assert not outside, f"{path.name}: {outside} are not under {SHARED_MOUNT}, which no shipped cluster mounts"


def test_grafana_dashboard_queries_every_metric():
    from medcl.telemetry import METRICS

    dashboard = json.loads((CLUSTER / "grafana" / "medcl.json").read_text())
    exprs = " ".join(t["expr"] for panel in dashboard["panels"] for t in panel["targets"])
    for name in METRICS:
        assert f"ray_{name}" in exprs, f"no panel shows {name}"
    used = set(re.findall(r"ray_(medcl_\w+?)(?:_bucket)?\b", exprs))
    assert used <= set(METRICS), f"panels query unknown metrics: {used - set(METRICS)}"
