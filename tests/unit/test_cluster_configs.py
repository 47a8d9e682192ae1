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


# --- nothing let in, nothing drifting (issue 29 item 7) -------------------------------------------

CONSTRAINTS = CLUSTER / "constraints.txt"
LAUNCHERS = ("aws.yaml", "gcp.yaml")
COMMAND_LISTS = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
                 "head_start_ray_commands", "worker_start_ray_commands")  # in the order the launcher runs them
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def _pins() -> dict[str, str]:
    from packaging.utils import canonicalize_name

    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._\-]*)==([0-9][0-9A-Za-z.!]*)", line)
        assert match, f"constraints.txt: {line!r} is not an exact name==version pin (no ranges, no local labels)"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"constraints.txt pins {name} twice"
        pins[name] = match.group(2)
    return pins


def test_the_constraints_pin_every_dependency_exactly_within_pyprojects_ranges():
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = _pins()
    assert len(pins) > 50, "constraints.txt should lock the transitive closure, not only the direct dependencies"
    for text in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pins, f"constraints.txt does not pin {name} (run cluster/lock_constraints.py)"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject's {req.specifier}"
    assert pins["ray"] == "2.60.0", "the launchers' image and KubeRay's rayVersion are Ray 2.60.0"


def _pip_installs() -> list[tuple[str, str]]:
    """``(where, command)`` for every ``pip install`` a node runs: launcher command lists, the
    Dockerfile's RUN lines (continuations joined)."""
    found = []
    for name in LAUNCHERS:
        (config,) = _documents(CLUSTER / name)
        found += [(f"{name}:{key}", c) for key in COMMAND_LISTS for c in config.get(key) or [] if "pip" in c]
    dockerfile = re.sub(r"\\\n\s*", " ", (CLUSTER / "Dockerfile").read_text())
    found += [("Dockerfile", line) for line in dockerfile.splitlines() if line.startswith("RUN") and "pip" in line]
    return found


def _install_arguments(command: str) -> list[list[str]]:
    """The arguments after each ``pip install`` in a shell command."""
    words = shlex.split(command.replace("&&", " ; ").replace(";", " ; "))
    runs, current = [], None
    for i, word in enumerate(words):
        if word == "install" and i > 0 and words[i - 1] in ("pip", "pip3") or \
                word == "install" and i > 1 and words[i - 1] == "pip" and words[i - 2] == "-m":
            current = []
            runs.append(current)
        elif word == ";":
            current = None
        elif current is not None:
            current.append(word)
    return runs


def test_every_install_on_a_node_uses_the_constraints_and_exact_pins():
    installs = _pip_installs()
    assert {w.split(":")[0] for w, _ in installs} == {"aws.yaml", "gcp.yaml", "Dockerfile"}
    for where, command in installs:
        runs = _install_arguments(command)
        assert runs, f"{where}: {command!r} mentions pip but no install was parsed"
        for args in runs:
            constraint = [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-c", "--constraint")]
            assert constraint and all(c.endswith("cluster/constraints.txt") for c in constraint), \
                f"{where}: {command!r} installs without -c cluster/constraints.txt"
            named = [a for i, a in enumerate(args) if not a.startswith("-") and args[i - 1] not in
                     ("-c", "--constraint", "-e", "--editable", "-r")]
            loose = [a for a in named if not re.fullmatch(r"[A-Za-z0-9_.\-\[\],]+==[0-9][0-9A-Za-z.]*", a)]
            assert not loose, f"{where}: {loose} installed without an exact == pin"
            assert "-U" not in args and "--upgrade" not in args, f"{where}: an upgrade ignores the lock's intent"
    for path, doc in _all_documents():  # job runtime environments install nothing on their own
        envs = [doc] if path.name == "runtime_env.yaml" else \
            [yaml.safe_load(doc["spec"]["runtimeEnvYAML"])] if doc.get("kind") == "RayJob" else []
        for env in envs:
            assert not {"pip", "uv", "conda"} & set(env), f"{path.name}: a runtime env must not install packages"


def test_the_launchers_run_every_node_in_the_python_of_the_constraints():
    """The lock is made on Python 3.11 (numpy 2.4 needs >= 3.11): every node runs the image with it."""
    assert "(Python 3.11," in CONSTRAINTS.read_text().splitlines()[1]
    assert "FROM rayproject/ray:2.60.0-py311-gpu" in (CLUSTER / "Dockerfile").read_text()
    for name in LAUNCHERS:
        (config,) = _documents(CLUSTER / name)
        assert config["docker"]["image"] == "rayproject/ray:2.60.0-py311-gpu", name
        assert "--volume /mnt/medcl:/mnt/medcl" in config["docker"]["run_options"], f"{name}: share not in the container"


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_configs_are_valid_for_rays_launcher(name):
    import jsonschema
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    (config,) = _documents(CLUSTER / name)
    jsonschema.validate(config, schema)
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head, f"{name}: the dashboard must listen on the head's loopback"


@pytest.mark.parametrize("name", LAUNCHERS)
def test_the_shared_storage_is_mounted_before_its_owner_is_set(name):
    (config,) = _documents(CLUSTER / name)
    steps = [part.strip() for key in COMMAND_LISTS for c in config.get(key) or [] for part in re.split(r"&&|;", c)]
    mounts = [i for i, s in enumerate(steps) if re.search(rf"\bmount\b.*{SHARED_MOUNT}", s) and "mountpoint" not in
              s.split("||")[-1]]
    owners = [i for i, s in enumerate(steps) if re.search(rf"\bchown\b.*{SHARED_MOUNT}", s)]
    makes = [i for i, s in enumerate(steps) if re.search(rf"\bmkdir\b.*{SHARED_MOUNT}", s)]
    assert mounts and owners and makes, f"{name}: expected mkdir, mount and chown of {SHARED_MOUNT}"
    assert max(makes) < min(mounts) < min(owners), \
        f"{name}: {SHARED_MOUNT} must be made, then mounted, then chowned: {[steps[i] for i in sorted(makes + mounts + owners)]}"


def _pod_templates(doc: dict) -> list[tuple[str, dict]]:
    spec = doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]
    return [("head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec["workerGroupSpecs"]]


def _policy_admits(policy: dict, labels: dict, port: int) -> bool:
    """True when some ingress rule of ``policy`` admits pods with ``labels`` (any namespace) to ``port``."""
    for rule in policy["spec"].get("ingress", []):
        ports = {p.get("port") for p in rule.get("ports", [])}
        if ports and port not in ports:
            continue
        for peer in rule["from"]:
            selector = peer.get("podSelector", {})
            if all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()) and all(
                    labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", [])):
                return True
    return False


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml"])
def test_kuberay_ships_a_network_policy_around_its_ray_pods(name):
    docs = _documents(CLUSTER / "kuberay" / name)
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert len(policies) == 1, f"{name}: ship exactly one NetworkPolicy"
    (policy,) = policies
    assert policy["apiVersion"] == "networking.k8s.io/v1" and "Ingress" in policy["spec"]["policyTypes"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector, f"{name}: the policy must select the Ray pods, not every pod"
    for doc in (d for d in docs if d["kind"] in ("RayCluster", "RayJob")):
        for group, spec in _pod_templates(doc):
            labels = spec["template"].get("metadata", {}).get("labels", {})
            assert selector.items() <= labels.items(), f"{name}:{doc['metadata']['name']}: {group} pods not selected"
    for rule in policy["spec"]["ingress"]:
        assert rule.get("from"), f"{name}: an ingress rule without 'from' admits every source"
        assert not any("ipBlock" in peer for peer in rule["from"]), f"{name}: no ipBlock sources"
        if rule["from"] != [{"podSelector": {"matchLabels": selector}}]:  # only Ray's own pods get every port
            assert {p["port"] for p in rule.get("ports", [])} <= {8265, 8080}, f"{name}: {rule} opens other ports"
    assert _policy_admits(policy, selector, 6379), "Ray's pods must reach each other's GCS"
    assert not _policy_admits(policy, {"app": "someone-else"}, 8265), "an unrelated pod reaches the dashboard"
    assert not _policy_admits(policy, {"app.kubernetes.io/name": "prometheus"}, 8265), "Prometheus: metrics only"


def test_no_dashboard_is_reachable_beyond_the_pods_that_need_it():
    """RayCluster: the dashboard on the head's loopback (port-forward only). RayJob: the pod address
    (its submitter and the operator call it), behind a ClusterIP service and the NetworkPolicy.
    Nowhere a LoadBalancer, NodePort, Ingress, host network or host port."""
    for path, doc in _all_documents():
        kind = doc.get("kind")
        assert kind not in ("Service", "Ingress", "Gateway"), f"{path.name}: ships a {kind}"
        if kind not in ("RayCluster", "RayJob"):
            continue
        for group, spec in _pod_templates(doc):
            pod = spec["template"]["spec"]
            assert not pod.get("hostNetwork"), f"{path.name}: {group} uses the host network"
            assert not any("hostPort" in p for c in pod["containers"] for p in c.get("ports", [])), path.name
        head = _pod_templates(doc)[0][1]
        assert head.get("serviceType", "ClusterIP") == "ClusterIP"
        host = head["rayStartParams"].get("dashboard-host", "0.0.0.0")  # KubeRay's default is 0.0.0.0
        if kind == "RayCluster":
            assert host in LOOPBACK_HOSTS, f"{path.name}: a RayCluster's dashboard listens on {host}"
        else:
            (policy,) = [d for d in _documents(path) if d["kind"] == "NetworkPolicy"]
            submitter = {"job-name": doc["metadata"]["name"]}
            assert host in LOOPBACK_HOSTS or (_policy_admits(policy, submitter, 8265) and not
                                              _policy_admits(policy, {"app": "other"}, 8265)), path.name
