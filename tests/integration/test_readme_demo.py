"""The README's first command, as a newcomer runs it: ``make demo`` on a fresh clone.

The repository is cloned (``git clone`` of this checkout's HEAD: committed files only, as on a CI
clone) into a temporary directory, and the recipe of the Makefile's ``demo:`` target is run there,
line by line, from the clone's root, with the shipped relative paths: ``medcl pretrain
experiments/pretrain_synthmed.yaml`` then ``medcl run experiments/quickstart.yaml --fresh`` today,
whatever the Makefile says tomorrow. One thing is added, for CI's time budget: shorter training
(``SHORTER``: the pretraining's ``train.steps`` and the sequence's ``train.steps_per_task``), since
nothing checked here depends on how well the models learn; the demo's full-length accuracy and
time are measured by ``experiments/benchmarks/quickstart_time.py``. The clone's own code runs (``PYTHONPATH=
<clone>/platform``, ``python -m medcl.cli``) with this test run's packages, so nothing is installed.
Checked: both commands succeed, the printed matrix is the run's ``matrix.csv``, ``metrics.json``
is complete, the weights the quickstart starts from are the ones the pretraining wrote, and no
line of Ray's own reaches the terminal. The experiment's model and learning rates are read from
the clone's files, never assumed.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
COMMAND_TIMEOUT_S = 1200
ANSI = re.compile(r"\x1b\[[0-9;]*m")
PREFIX = re.compile(r"^\((\w+) pid=\d+(?:, ip=[\d.]+)?\) ?(.*)$")
RAY_LOG = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+(DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+\S+:\d+ --")
MEDCL_LINE = ("[", "medcl:")  # medcl's own progress lines, printed by Train worker rank 0
SHORTER = {"pretrain": ["--set", "train.steps=150"], "run": ["--set", "train.steps_per_task=40"]}


def makefile_recipe(makefile: str, target: str) -> list[str]:
    """The recipe lines of ``target`` in a Makefile (tab-indented lines after ``target:``)."""
    lines, recipe, inside = makefile.splitlines(), [], False
    for line in lines:
        if inside and line.startswith("\t"):
            recipe.append(line.strip().lstrip("@-").strip())
        elif inside and line.strip() and not line.startswith("#"):
            break
        elif re.match(rf"^{re.escape(target)}\s*:", line):
            inside = True
    return [r for r in recipe if r and not r.startswith("#")]


def as_command(recipe_line: str) -> list[str]:
    """A recipe line run with this interpreter: ``$(BIN)/medcl ARGS`` -> ``python -m medcl.cli ARGS``."""
    program, *args = shlex.split(recipe_line)
    if program.rsplit("/", 1)[-1] == "medcl":
        return [sys.executable, "-m", "medcl.cli", *args]
    if program.rsplit("/", 1)[-1] == "python":
        return [sys.executable, *args]
    raise AssertionError(f"the demo recipe runs {program!r}; teach test_readme_demo.as_command about it")


def ray_internal_lines(output: str) -> list[str]:
    """Lines that come from Ray itself: logs of Ray's processes and actors, Ray's log format, core
    worker messages; medcl's own lines printed through a Train worker do not count."""
    found = []
    for line in ANSI.sub("", output).splitlines():
        prefixed = PREFIX.match(line)
        if prefixed:
            if not (prefixed[1] == "RayTrainWorker" and prefixed[2].startswith(MEDCL_LINE)):
                found.append(line)
        elif RAY_LOG.match(line) or "core_worker.cc" in line or "raylet" in line.lower():
            found.append(line)
    return found


def test_the_recipe_parser():
    makefile = "x:\n\techo x\n\n# the demo\ndemo: $(STAMP)\n\t$(BIN)/medcl pretrain a.yaml\n\t@$(BIN)/medcl run b.yaml --fresh\n\ntest:\n\tpytest\n"
    assert makefile_recipe(makefile, "demo") == ["$(BIN)/medcl pretrain a.yaml", "$(BIN)/medcl run b.yaml --fresh"]
    assert as_command("$(BIN)/medcl run b.yaml --fresh")[1:] == ["-m", "medcl.cli", "run", "b.yaml", "--fresh"]
    assert ray_internal_lines("(RayTrainWorker pid=3) [task 1/4 xray] step 1\n(PlacementGroupCleaner pid=4) Failed\n"
                              "2026-12-02 21:39:12,725\tWARNING authentication_token_setup.py:85 -- Token\n"
                              "Accuracy matrix (%)\n") == ["(PlacementGroupCleaner pid=4) Failed",
                                                         "2026-12-02 21:39:12,725\tWARNING authentication_token_setup.py:85 -- Token"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Clone, run the demo recipe from the clone's root; every command's output."""
    clone = tmp_path_factory.mktemp("fresh") / "medcl"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=300)
    recipe = makefile_recipe((clone / "Makefile").read_text(), "demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MEDCL_"))}
    env.update(PYTHONPATH=str(clone / "platform"), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    where = subprocess.run([sys.executable, "-c", "import medcl; print(medcl.__file__)"], env=env, cwd=clone,
                           capture_output=True, text=True, check=True).stdout.strip()
    outputs = []
    for line in recipe:
        command = as_command(line)
        command += SHORTER.get(command[3] if command[1:3] == ["-m", "medcl.cli"] else "", [])
        proc = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT_S)
        outputs.append(proc.stdout + proc.stderr)
        assert proc.returncode == 0, f"`{line}` failed in a fresh clone:\n{outputs[-1][-6000:]}"
    return {"clone": clone, "recipe": recipe, "outputs": outputs, "medcl": where}


def test_the_demo_runs_the_readme_commands_from_the_clone(demo):
    clone = demo["clone"]
    assert Path(demo["medcl"]).is_relative_to(clone / "platform"), "the clone's code must run, not this checkout's"
    commands = [shlex.split(line)[1:3] for line in demo["recipe"]]
    assert commands == [["pretrain", "experiments/pretrain_synthmed.yaml"], ["run", "experiments/quickstart.yaml"]]
    readme = (clone / "README.md").read_text()
    assert "make demo" in readme and "medcl pretrain experiments/pretrain_synthmed.yaml" in readme


def test_the_printed_matrix_and_metrics_are_the_runs(demo):
    from medcl.rundir import read_matrix_csv

    clone, printed = demo["clone"], demo["outputs"][-1]
    quickstart = yaml.safe_load((clone / "experiments" / "quickstart.yaml").read_text())
    run_dir = clone / quickstart.get("output_dir", "runs") / quickstart["name"]
    assert f"Run directory: {run_dir}" in printed
    labels, tasks, values = read_matrix_csv(run_dir / "matrix.csv")
    assert len(labels) == len(tasks) + 1 == quickstart["benchmark"]["num_tasks"] + 1
    auc_at, metrics_at = printed.index("AUC matrix (%"), printed.index("Metrics (%)")
    for table, csv in ((printed[printed.index("Accuracy matrix (%)"):auc_at], "matrix.csv"),
                       (printed[auc_at:metrics_at], "auc.csv")):
        rows = [line.split() for line in table.splitlines() if line.startswith(("before training", "after "))]
        _, _, expected = read_matrix_csv(run_dir / csv)
        assert [row[-len(tasks):] for row in rows] == [[f"{v:.1f}" for v in row] for row in expected], csv
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["complete"] and set(metrics) >= {"transfer", "avg", "last", "bwt", "forgetting", "fwt"}
    for key in ("transfer", "avg", "last", "bwt", "forgetting", "fwt"):
        assert re.search(rf"^{key}\s+{metrics[key]:.2f}$", printed, re.M), f"{key} not printed as in metrics.json"


def test_the_quickstart_starts_from_the_weights_the_pretraining_wrote(demo):
    clone = demo["clone"]
    quickstart = yaml.safe_load((clone / "experiments" / "quickstart.yaml").read_text())
    pretrain = yaml.safe_load((clone / "experiments" / "pretrain_synthmed.yaml").read_text())
    weights = clone / pretrain.get("output_dir", "runs") / pretrain["name"] / "model.safetensors"
    assert weights.is_file() and f"Weights: {weights}" in demo["outputs"][0]
    assert clone / quickstart["model"]["pretrained"] == weights, "the shipped files no longer chain"
    saved = yaml.safe_load((clone / quickstart.get("output_dir", "runs") / quickstart["name"] / "config.yaml").read_text())
    assert saved["model"]["pretrained"] == str(weights), "workers must be given the absolute path"


def test_no_ray_internal_line_reaches_the_terminal(demo):
    for line, output in zip(demo["recipe"], demo["outputs"]):
        assert ray_internal_lines(output) == [], f"`{line}` printed Ray's own lines"
