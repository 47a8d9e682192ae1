"""experiments/benchmarks/gpu_check.py cannot rot: its ``--dry-run`` (the same code on CPU, tiny ViT,
2 steps) runs here in a fresh interpreter in which Ray, FAISS and Optuna cannot be imported, as on
the bare GPU machine it is written for (docs/gpu.md); the carry helpers are checked directly."""
from __future__ import annotations

import functools
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from medcl.strategies import STRATEGIES

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "experiments" / "benchmarks" / "gpu_check.py"
ABSENT_ON_THE_GPU_MACHINE = ("ray", "faiss", "optuna")
# sys.modules[name] = None makes `import name` raise ImportError in that interpreter
RUNNER = ("import runpy, sys\n"
          "for name in {absent!r}:\n    sys.modules[name] = None\n"
          "sys.argv = [{script!r}, '--dry-run', '--out', {out!r}]\n"
          "runpy.run_path({script!r}, run_name='__main__')\n")


@functools.lru_cache(maxsize=None)
def _load_script():
    spec = importlib.util.spec_from_file_location("medcl_gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gpu-check") / "gpu_check.json"
    code = RUNNER.format(absent=ABSENT_ON_THE_GPU_MACHINE, script=str(SCRIPT), out=str(out))
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads(out.read_text())
    printed = done.stdout[done.stdout.index('{\n "script"'):]  # after PRIMED's planning lines
    assert json.loads(printed) == data  # the same JSON printed and written
    return data


def test_every_strategy_trains_with_finite_losses_and_matches_the_cpu_fp32_loss(dry_run):
    rows = dry_run["sections"]["strategies"]["rows"]
    assert sorted({r["strategy"] for r in rows}) == sorted(STRATEGIES.names())
    assert {("finetune", "fp16")} <= {(r["strategy"], r["precision"]) for r in rows}  # the grad scaler's row
    for row in rows:
        assert row["ok"] and "error" not in row, row
        assert row["finite"] and all(math.isfinite(v) for stage in row["losses"] for v in stage)
        assert sum(len(stage) for stage in row["losses"]) >= 2
        fp32 = row["fp32"]
        assert fp32["equal"] and math.isfinite(fp32["device"]) and math.isfinite(fp32["cpu"])
    assert dry_run["sections"]["strategies"]["train_step"]["images_per_s"] > 0


def test_the_mid_task_resume_equals_the_uninterrupted_run_and_the_control_does_not(dry_run):
    resume = dry_run["sections"]["resume"]
    assert resume["ok"] and resume["equal"] and resume["control_differs"]
    k = resume["checkpoint_after"]
    assert len(resume["resumed"]) == len(resume["uninterrupted"]) - k > 0
    assert resume["resumed"] == pytest.approx(resume["uninterrupted"][k:], rel=1e-6, abs=1e-6)


def test_the_embedder_rows_sit_beside_the_published_reference(dry_run):
    embed = dry_run["sections"]["embed"]
    assert embed["ok"] and embed["reference"]["images_per_s"] == 3356
    assert {(r["precision"], r["batch"]) for r in embed["rows"]} == {(p, b) for p in ("fp32", "bf16") for b in (8, 16)}
    assert all(r["embedder_images_per_s"] > 0 and r["tower_images_per_s"] > 0 for r in embed["rows"])


def test_nothing_absent_on_the_gpu_machine_was_needed(dry_run):
    assert dry_run["ok"] and dry_run["forbidden_modules_loaded"] == []
    assert dry_run["sections"]["faiss"] == {"ok": True, "carried": False, "note": dry_run["sections"]["faiss"]["note"],
                                            "seconds": dry_run["sections"]["faiss"]["seconds"]}
    assert dry_run["dry_run"] and dry_run["gpu_seconds"] > 0 and dry_run["device"].startswith("cpu")


def test_a_failing_section_is_recorded_and_the_next_still_runs(tmp_path):
    gpu_check = _load_script()
    report = gpu_check.Report(gpu_check.DRY, tmp_path / "out.json")

    def broken(*, deadline):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    report.section("broken", broken)
    report.section("fine", lambda *, deadline: {"value": 1})
    written = json.loads((tmp_path / "out.json").read_text())
    assert written["sections"]["broken"]["ok"] is False and "illegal memory access" in written["sections"]["broken"]["error"]
    assert written["sections"]["fine"]["ok"] and written["sections"]["fine"]["value"] == 1 and written["ok"] is False


def test_faiss_on_cpu_only_says_so():
    pytest.importorskip("faiss")
    gpu_check = _load_script()
    result = gpu_check.check_faiss(gpu_check.build_fixture_stub(gpu_check.DRY), deadline=0)
    assert result["carried"] and result["gpus"] == 0 and "no GPU support" in result["note"]


def test_the_carry_is_pinned_sized_and_the_command_installs_offline(tmp_path):
    gpu_check = _load_script()
    requirements = gpu_check.carry_requirements()
    assert all("==" in r for r in requirements)
    assert {r.split("==")[0] for r in requirements} >= {"open_clip_torch", "ftfy", "pydantic", "pydantic_core"}
    (tmp_path / "big.whl").write_bytes(b"\0" * (gpu_check.CARRY_LIMIT_BYTES + 1))
    with pytest.raises(ValueError, match="over the 64 MiB"):
        gpu_check.check_carry(tmp_path, ROOT)
    (tmp_path / "big.whl").write_bytes(b"\0" * 1024)
    assert gpu_check.check_carry(tmp_path, ROOT)["wheels"] == ["big.whl"]
    command = gpu_check.device_command("build/gpu-carry")
    assert "--no-index" in command and "build/gpu-carry/*.whl" in command and "$OUT/gpu_check.json" in command
