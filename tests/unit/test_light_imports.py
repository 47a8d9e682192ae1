"""The command line stays light: help, a config error and the error types load no torch, Ray or
open_clip, and importing medcl leaves the environment alone (each checked in a fresh interpreter)."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import medcl.errors

HEAVY = ("torch", "open_clip", "ray", "pyarrow")
PROBE = """
import json, os, sys
before = dict(os.environ)
{body}
print(json.dumps({{"heavy": [m for m in {heavy!r} if m in sys.modules], "env_changed": dict(os.environ) != before}}))
"""


def probe(body: str, tmp_path: Path, heavy: tuple[str, ...] = HEAVY) -> dict:
    script = PROBE.format(body=body, heavy=heavy)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_medcl_changes_no_environment_variable(tmp_path):
    assert probe("import medcl, medcl.errors, medcl.registry, medcl.config", tmp_path) == {"heavy": [], "env_changed": False}


def test_help_loads_no_heavy_library(tmp_path):
    body = ("from medcl.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit as exc:\n    assert exc.code == 0\n")
    assert probe(body, tmp_path)["heavy"] == []


def test_a_config_error_is_reported_without_loading_torch(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: x\ntrain: {steps_per_task: 1, lr: -1}\n")
    body = ("import contextlib, io\nfrom medcl.cli import main\nerr = io.StringIO()\n"
            "with contextlib.redirect_stderr(err):\n    code = main(['run', 'bad.yaml'])\n"
            "assert code == 2 and 'train.lr' in err.getvalue(), err.getvalue()\n")
    assert probe(body, tmp_path)["heavy"] == []


def test_the_driver_and_the_worker_modules_load_neither_open_clip_nor_peft(tmp_path):
    """open_clip (7-8 s a process: transformers, torchvision) loads at the first model build, peft
    (~1 s) at the first LoRA pool: `medcl run`'s driver, checking a model with random init or a
    weights file (offline: conftest sets HF_HUB_OFFLINE), and a worker's modules load neither
    (docs/performance.md, start-up)."""
    body = ("import medcl.cli, medcl.engine.runner, medcl.engine.loop, medcl.models.lora, medcl.strategies\n"
            "from medcl.models import ModelLoadError, check_model_source\n"
            "check_model_source('medcl-tiny', None)\n"
            "try:\n    check_model_source('medcl-tiny', 'missing/model.safetensors')\n"
            "except ModelLoadError:\n    pass\n")
    assert probe(body, tmp_path, heavy=("open_clip", "peft", "transformers", "torchvision", "timm"))["heavy"] == []


def test_errors_module_imports_only_the_standard_library():
    tree = ast.parse(Path(medcl.errors.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported - {"__future__"} <= set(sys.stdlib_module_names)


def test_user_errors_share_one_base_and_survive_pickling():
    import pickle

    from medcl.errors import ConfigError, MedclError, UnknownNameError

    error = pickle.loads(pickle.dumps(ConfigError("x.yaml", [("train.lr", "bad")])))
    assert isinstance(error, MedclError) and error.problems == [("train.lr", "bad")]
    assert str(error) == "x.yaml: invalid experiment\n  train.lr: bad"
    unknown = pickle.loads(pickle.dumps(UnknownNameError("strategy", "finetunne", ["finetune"])))
    assert "did you mean 'finetune'" in str(unknown) and isinstance(unknown, KeyError)
