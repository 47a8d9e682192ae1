"""A whole study (``medcl study``): 2 methods x 2 seeds x 2 orders on a tiny synthmed, one method
tuned (2 trials on validation data), interrupted in the middle of its first grid and resumed; its
statistics against :mod:`medcl.stats` recomputed from the runs' ``metrics.json``; its board loaded in
a real headless Chromium (Debian's package; the test skips, saying why, when there is none).

Runs are 2-task sequences of 3 steps a task trained in the trial process (``train_workers: 0``), as
in tests/integration/test_sweep.py, so a run costs seconds.
"""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import yaml

from medcl.rundir import read_events
from medcl.stats import paired_difference, t_interval
from medcl.study import validate_study

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ORDERS = [["xray", "ultrasound"], ["ultrasound", "xray"]]


def tiny_study(output_dir: Path) -> dict:
    return {"name": "tiny", "output_dir": str(output_dir), "baseline": "finetune", "seeds": [0, 1], "orders": ORDERS,
            "experiment": {
                "name": "tiny", "telemetry": False,
                "benchmark": {"name": "synthmed", "num_tasks": 2, "image_size": 16, "train_per_class": 8,
                              "val_per_class": 4, "test_per_class": 10, "classes": ["normal", "nodule"]},
                "model": {"name": "medcl-tiny"},
                "train": {"batch_size": 16, "lr": 3e-3, "steps_per_task": 3, "log_every": 100}},
            "methods": [{"label": "finetune"},
                        {"label": "rehearsal", "strategy": {"buffer_size": 20},
                         "space": {"strategy.replay_fraction": {"uniform": [0.2, 0.8]}}}],
            "tuning": {"trials": 2, "searcher": {"name": "random", "seed": 0}},
            "resources": {"trial_cpus": 1, "train_workers": 0}, "max_concurrent_runs": 2}


@pytest.fixture(scope="module")
def study_run(ray_session, tmp_path_factory):
    """The study interrupted once (the driver raises when grid trial 1 of the first method has
    reported its first task, leaving that trial RUNNING), then run again to the end."""
    from medcl.study.runner import run_study

    root = tmp_path_factory.mktemp("study")
    study = validate_study(tiny_study(root))
    marker = root / "fault-fired"
    fault = {"MEDCL_FAULT": "trial=1,task=1", "MEDCL_FAULT_ACTION": "raise", "MEDCL_FAULT_ONCE": str(marker)}
    os.environ.update(fault)
    try:
        with pytest.raises(Exception, match="injected fault"):
            run_study(study)
    finally:
        for key in fault:
            os.environ.pop(key, None)
    grid_db = study.study_dir / "runs" / "finetune" / "study.db"
    interrupted = [t.state.name for t in optuna.load_study(study_name="finetune", storage=f"sqlite:///{grid_db}").trials]
    started = time.perf_counter()
    payload = run_study(study)
    return {"study": study, "payload": payload, "interrupted": interrupted, "resumed_s": time.perf_counter() - started}


def stage_starts(run_dir: Path) -> list[int]:
    return [e["stage"] for e in read_events(run_dir / "events.jsonl") if e["kind"] == "stage_start"]


def test_a_killed_study_resumes_where_it_stopped(study_run):
    interrupted = study_run["interrupted"]  # trials 0 and 1 run side by side: trial 0 may or may not have finished
    assert interrupted[1] == "RUNNING"  # the driver stopped while trial 1 ran, inside the first grid
    root = study_run["study"].study_dir
    storage = f"sqlite:///{root / 'runs' / 'finetune' / 'study.db'}"
    trials = optuna.load_study(study_name="finetune", storage=storage).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4  # no extra trial, none left RUNNING
    assert sorted((t.params["seed"], t.params["order"]) for t in trials) == sorted(
        (s, ">".join(o)) for s in (0, 1) for o in ORDERS)  # every seed x order exactly once
    trials_dir = root / "runs" / "finetune" / "trials"
    # trial 1 was stopped right after reporting task 1 (its workers wait at the gate): it resumes at task 2
    assert stage_starts(trials_dir / trials[1].user_attrs["run_name"]) == [1, 2]
    for trial, before in zip(trials, interrupted):  # a run finished before the interruption is not run again
        starts = stage_starts(trials_dir / trial.user_attrs["run_name"])
        assert starts == [1, 2] if before == "COMPLETE" else starts[-1] == 2 and starts == sorted(starts)
    runs = study_run["payload"]["runs"]
    assert len(runs) == 8 and all(r["complete"] for r in runs)


def test_equal_budget_tuning_on_validation_then_the_test_protocol(study_run):
    payload, root = study_run["payload"], study_run["study"].study_dir
    assert set(payload["tuning"]) == {"rehearsal"}  # finetune has fixed parameters: not tuned
    tuning = payload["tuning"]["rehearsal"]
    assert tuning["trials"] == tuning["complete"] == 2
    storage = f"sqlite:///{root / 'tuning' / 'rehearsal' / 'study.db'}"
    trials = optuna.load_study(study_name="rehearsal", storage=storage).get_trials()
    best = max(trials, key=lambda t: t.values[0])
    assert tuning["chosen"] == {"strategy.replay_fraction": best.params["strategy.replay_fraction"]}
    for run in tuning["trial_runs"]:  # tuning trials are scored on validation data
        config = yaml.safe_load((Path(run) / "config.yaml").read_text())
        assert config["train"]["eval_split"] == "val" and config["seed"] == 0
    for run in (r for r in payload["runs"] if r["method"] == "rehearsal"):  # the chosen configuration, on test
        config = yaml.safe_load((root / run["run_dir"] / "config.yaml").read_text())
        assert config["train"]["eval_split"] == "test"
        assert config["strategy"]["replay_fraction"] == tuning["chosen"]["strategy.replay_fraction"]
    assert "fixed" in (root / "tables" / "accuracy.md").read_text()


def test_statistics_are_medcl_stats_of_the_runs_metrics(study_run):
    payload, root = study_run["payload"], study_run["study"].study_dir
    on_disk = json.loads((root / "study.json").read_text())
    assert on_disk["statistics"]["metrics"] == payload["statistics"]["metrics"]
    per_seed = {}
    for run in payload["runs"]:
        metrics = json.loads((root / run["run_dir"] / "metrics.json").read_text())
        for metric in ("transfer", "avg", "last", "bwt"):
            per_seed.setdefault((run["method"], metric), {}).setdefault(run["seed"], []).append(metrics[metric])
    for (method, metric), seeds in per_seed.items():
        means = {s: sum(v) / len(v) for s, v in seeds.items()}
        stats = on_disk["statistics"]["methods"][method][metric]
        assert stats["interval"] == pytest.approx(t_interval(list(means.values())).as_dict())
        if method != "finetune":
            baseline = {s: sum(v) / len(v) for s, v in per_seed[("finetune", metric)].items()}
            expected = paired_difference(means, baseline)
            got = on_disk["statistics"]["paired"][method][metric]
            assert got["interval"] == pytest.approx(expected.interval.as_dict()) and got["verdict"] == expected.verdict
    costs = on_disk["costs"]["finetune"]
    assert costs["runs"] == 4 and costs["trainable_parameters"] > 0 and costs["peak_host_rss_bytes"] > 0
    assert costs["cpu_hours"] == pytest.approx(sum(r["cost"]["wall_s"] for r in payload["runs"]
                                                   if r["method"] == "finetune") / 3600)
    for name in ("accuracy", "paired", "orders", "costs"):
        assert (root / "tables" / f"{name}.md").is_file() and (root / "tables" / f"{name}.tex").is_file()
    assert {p.name for p in (root / "plots").iterdir()} == {"intervals.png", "matrices.png", "curves.png",
                                                           "orders.png", "cost.png"}


def test_outputs_rebuild_from_the_finished_runs_without_ray(study_run):
    from medcl.study.runner import collect_study

    rebuilt = collect_study(study_run["study"])
    def plain(value):  # as study.json holds it (seeds as keys become strings)
        return json.loads(json.dumps(value))

    assert plain(rebuilt["statistics"]) == plain(study_run["payload"]["statistics"])
    assert plain(rebuilt["costs"]) == plain(study_run["payload"]["costs"])


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr", "--v=0",
                           *args], capture_output=True, text=True, timeout=120)


def console_errors(stderr: str) -> list[str]:
    """Lines Chromium logs for the page's console (``:CONSOLE``): the board has no script, so any is an error."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (Debian's package: apt-get install chromium; "
                                             ".ci/run installs it)")
def test_board_in_a_headless_browser(study_run, tmp_path):
    payload, root = study_run["payload"], study_run["study"].study_dir
    board = root / "index.html"
    broken = tmp_path / "broken.html"  # the check below can fail: a page with a script error is caught
    broken.write_text("<html><body><script>notDefined();</script></body></html>")
    assert console_errors(chromium("--dump-dom", broken.as_uri()).stderr)
    loaded = chromium("--dump-dom", board.as_uri())
    assert loaded.returncode == 0 and not console_errors(loaded.stderr), loaded.stderr[-2000:]
    dom = loaded.stdout
    cells = {}
    for table, body in re.findall(r'<table data-table="(\w+)"[^>]*>(.*?)</table>', dom, flags=re.S):
        rows = re.findall(r'<tr data-method="([^"]+)"[^>]*>(.*?)</tr>', body, flags=re.S)
        cells[table] = {m: [html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)]
                        for m, r in rows}
    from medcl.stats import Interval, format_interval

    metrics = payload["statistics"]["metrics"]
    for method in ("finetune", "rehearsal"):  # the accuracy table holds study.json's intervals
        expected = [format_interval(Interval(**payload["statistics"]["methods"][method][m]["interval"]), digits=1)
                    for m in metrics]
        assert cells["accuracy"][method][2:] == expected
    verdicts = [payload["statistics"]["paired"]["rehearsal"][m]["verdict_word"] for m in metrics]
    assert [c.split()[-1] for c in cells["paired"]["rehearsal"][1:]] == verdicts
    assert len(cells["runs"]) == 2 and len(re.findall(r'<tr data-method=', dom.split('data-table="runs"')[1])) == 8
    links = re.findall(r'(?:href|src)="([^"]+)"', dom)
    assert sum(link.endswith("report.html") for link in links) == 8
    for link in links:  # relative, and each resolves beside index.html
        assert "://" not in link and not link.startswith("/"), link
        assert (root / html.unescape(link)).is_file(), link
    shot = tmp_path / "board.png"
    taken = chromium("--window-size=1400,2400", f"--screenshot={shot}", board.as_uri())
    assert taken.returncode == 0 and shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("MEDCL_BOARD_SCREENSHOT"):  # keep a copy for a person to look at
        shutil.copy(shot, os.environ["MEDCL_BOARD_SCREENSHOT"])
