"""A newcomer's walkthrough (issue 32, part two): each rough edge a first user hit, as a check.

Cheap and Ray-free: each test exercises the function that decides what the user is told."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from medcl.config import ConfigError, load_experiment, validate_experiment
from medcl.data.task import Split, Task
from medcl.errors import MedclError


def _task(name: str, n_train: int, n_test: int = 10, classes: int = 2, size: int = 8) -> Task:
    labels = np.arange(n_train, dtype=np.int64) % classes
    test_labels = np.zeros(n_test, dtype=np.int64)
    test_labels[: n_test // 4] = 1  # 75 % of the test split is class 0
    image = lambda n: np.zeros((n, size, size, 1), dtype=np.uint8)  # noqa: E731
    return Task(name=name, classes=tuple(f"c{i}" for i in range(classes)),
                class_prompts=tuple((f"c{i}",) for i in range(classes)), modality="xray",
                splits={"train": Split(image(n_train), labels), "test": Split(image(n_test), test_labels)})


def _config(**train):
    return validate_experiment({"name": "x", "train": {"steps_per_task": 5, **train}})


# ----------------------------------------------------------------- item 1: sizes before Ray starts

def test_a_batch_larger_than_a_tasks_training_split_names_the_field_the_task_and_its_size():
    from medcl.engine.preflight import check_batch_fits

    tasks = [_task("big", 5000), _task("small", 600)]
    with pytest.raises(ConfigError) as excinfo:
        check_batch_fits(_config(batch_size=100000), tasks)
    text = str(excinfo.value)
    assert "train.batch_size" in text and "'small'" in text and "600" in text and "100000" in text
    check_batch_fits(_config(batch_size=600), tasks)  # exactly the smallest split: allowed


def test_a_batch_that_cannot_fit_in_memory_is_refused_before_ray_starts():
    from medcl.engine.preflight import check_memory, estimate_step_bytes

    config = _config(batch_size=4096, workers=2)
    need = estimate_step_bytes(config, image_size=224)
    assert need > 4096 * 3 * 224 * 224 * 4  # at least the float input of the global batch
    with pytest.raises(ConfigError) as excinfo:
        check_memory(config, image_size=224, available_bytes=need // 2)
    assert "train.batch_size" in str(excinfo.value) and "GB" in str(excinfo.value)
    check_memory(config, image_size=224, available_bytes=need * 2)


def test_rays_out_of_memory_error_becomes_one_line_naming_the_fields():
    import ray.exceptions
    from ray.train import WorkerGroupError

    from medcl.engine.preflight import out_of_memory_hint

    config = _config(batch_size=512, workers=2)
    oom = ray.exceptions.OutOfMemoryError("Task was killed due to the node running low on memory.")
    wrapped = WorkerGroupError("worker 0 failed", {0: oom})
    for exc in (oom, wrapped, RuntimeError("train failed")):
        if exc.__class__ is RuntimeError:
            exc.__cause__ = wrapped
        hint = out_of_memory_hint(exc, config)
        assert hint is not None and "\n" not in hint
        assert "train.batch_size=512" in hint and "train.workers=2" in hint
    assert out_of_memory_hint(ValueError("nan loss"), config) is None


# ----------------------------------------------------------------- item 11: a token-auth cluster

def test_joining_a_cluster_without_auth_mode_says_what_to_set(monkeypatch):
    from medcl.engine.cluster import auth_hint

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    hint = auth_hint("10.0.0.5:6379")
    assert hint is not None and "RAY_AUTH_MODE=token" in hint and "10.0.0.5:6379" in hint and "\n" not in hint
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert auth_hint("10.0.0.5:6379") is None


def test_a_failed_join_raises_one_clear_error(monkeypatch):
    import ray

    from medcl.engine import cluster

    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)

    def refuse(**kwargs):
        raise ConnectionError("Failed to connect to Ray cluster")

    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(MedclError) as excinfo:
        cluster.connect(None)
    assert "RAY_AUTH_MODE=token" in str(excinfo.value) and "10.0.0.5:6379" in str(excinfo.value)


# ----------------------------------------------------------------- item 10: small messages

def test_an_unknown_field_close_to_a_short_one_gets_a_did_you_mean(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("name: x\ntrain: {steps_per_task: 1}\n")
    with pytest.raises(ConfigError) as excinfo:
        load_experiment(path, ["train.lr_rate=1e-3"])
    assert "did you mean 'lr'" in str(excinfo.value)


def test_an_unknown_field_of_a_strategy_without_parameters_says_it_takes_none(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("name: x\ntrain: {steps_per_task: 1}\nstrategy: {name: finetune, lam: 1}\n")
    with pytest.raises(ConfigError) as excinfo:
        load_experiment(path)
    assert "strategy.lam" in str(excinfo.value) and "takes no parameters" in str(excinfo.value)


def test_report_of_a_missing_folder_says_the_folder_does_not_exist(tmp_path, capsys):
    from medcl.cli import main

    assert main(["report", str(tmp_path / "nonexistent")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "matrix.csv" not in err


def test_list_strategies_is_light_and_shows_parameters_with_defaults(tmp_path):
    code = ("import sys, contextlib, io\nfrom medcl.cli import main\nout = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n    main(['list', 'strategies'])\n"
            "print(repr(out.getvalue()))\n"
            "print([m for m in ('torch', 'ray', 'open_clip') if m in sys.modules])\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    listing, heavy = done.stdout.strip().splitlines()[-2:]
    assert heavy == "[]"
    listing = eval(listing)  # noqa: S307 - our own repr
    from medcl.strategies import STRATEGIES

    for name in STRATEGIES.names():
        assert f"\n{name} " in "\n" + listing, name
        for field, info in STRATEGIES.get(name).Params.model_fields.items():
            assert f"{field}=" in listing, (name, field)


def test_a_data_root_typo_says_the_folder_does_not_exist_not_a_missing_download(tmp_path):
    from medcl.data import BENCHMARKS
    from medcl.data.spec import DataError

    (tmp_path / "data").mkdir()
    options = {"data_root": str(tmp_path / "dta"), "tasks": [{"adapter": "medmnist", "dataset": "breastmnist",
                                                              "root": "medmnist"}]}
    with pytest.raises(DataError) as excinfo:
        BENCHMARKS.get("sequence")().build(options, seed=0)
    text = str(excinfo.value)
    assert "benchmark.data_root" in text and "does not exist" in text and "download" not in text
    options["data_root"] = str(tmp_path / "data")  # exists, but its medmnist/ folder does not
    with pytest.raises(DataError) as excinfo:
        BENCHMARKS.get("sequence")().build(options, seed=0)
    assert "does not exist" in str(excinfo.value) and "benchmark.tasks.0.root" in str(excinfo.value)


def test_the_stored_strategy_catalogue_matches_the_registry():
    """If this fails, a strategy changed: run `python -m medcl.strategy_catalogue` (the listing itself
    is never stale: it falls back to the registry when a digest differs)."""
    import json

    from medcl.strategy_catalogue import CATALOGUE, build

    assert json.loads(CATALOGUE.read_text()) == build()


def test_a_changed_strategy_source_makes_the_listing_fall_back_to_the_registry(monkeypatch):
    from medcl import strategy_catalogue

    stored = json.loads(strategy_catalogue.CATALOGUE.read_text())
    assert strategy_catalogue._current(stored["sources"])
    stale = {**stored["sources"], "strategies/l2.py": "0" * 64}
    assert not strategy_catalogue._current(stale)
    missing = {k: v for k, v in stored["sources"].items() if k != "strategies/l2.py"}
    assert not strategy_catalogue._current(missing)


def test_medcl_run_refuses_a_batch_larger_than_the_data_before_ray_and_pins_no_run_folder(tmp_path, capsys,
                                                                                          monkeypatch):
    import medcl.engine.runner as runner
    from medcl.cli import main

    def no_ray(*args, **kwargs):  # the session may already run a Ray: check that this command never joins one
        raise AssertionError("Ray was started before the batch size was checked")

    monkeypatch.setattr(runner, "connect_checked", no_ray)

    (tmp_path / "x.yaml").write_text(
        "name: big-batch\nbenchmark: {name: synthmed, num_tasks: 2, train_per_class: 4, test_per_class: 2}\n"
        f"train: {{steps_per_task: 1, batch_size: 100000}}\noutput_dir: {tmp_path / 'runs'}\n")
    assert main(["run", str(tmp_path / "x.yaml")]) == 2
    err = capsys.readouterr().err
    assert "train.batch_size" in err and "100000" in err and "20 images" in err, err
    assert not (tmp_path / "runs" / "big-batch").exists()


def test_metrics_record_the_majority_class_rate_per_task():
    from medcl.engine.outputs import majority_class_rates

    assert majority_class_rates([_task("a", 10, n_test=8), _task("b", 10, n_test=4)]) == {"a": 75.0, "b": 75.0}


# ----------------------------------------------------------------- item 5: the report

def _run_dir(root, metrics: dict | None = None, steps: int = 40, strategy: str = "zscl"):
    from medcl import rundir
    from medcl.metrics import per_task, summarize

    tasks = ["xray", "breast"]
    zero, trained = [40.0, 73.1], [[80.0, 60.0], [70.0, 85.0]]
    run = rundir.RunDir(root)
    run.path.mkdir(parents=True)
    rundir.write_matrix_csv(run.matrix, [rundir.ZERO_SHOT_ROW, *tasks], tasks, np.array([zero, *trained]))
    rundir.write_json(run.metrics, {**summarize(trained, zero), "per_task": per_task(trained, zero, tasks),
                                    "strategy": strategy, "model": "medcl-tiny", "benchmark": "synthmed",
                                    "steps_per_task": [steps, steps], "wall_time_s_per_task": [10.0, 10.0],
                                    **(metrics or {})})
    for stage, task in enumerate(tasks, 1):
        for step in range(1, steps + 1, 10):
            rundir.append_event(run.events, {"kind": "step", "stage": stage, "task": task, "step": step,
                                             "loss": 1.0 / step, "ce": 0.5, "l2": 0.1, "image_distill": 0.2})
    return run.path


def test_report_scales_its_figures_and_keeps_legends_off_the_curves(tmp_path):
    from medcl.report import _loss_figure, write_report

    document = write_report(_run_dir(tmp_path / "r")).read_text()
    assert "max-width:100%" in document.replace(" ", "")
    from medcl.rundir import read_events

    figure = _loss_figure(read_events(tmp_path / "r" / "events.jsonl"))
    for ax in figure.axes:
        assert ax.get_legend() is None  # one legend for the figure, outside every axes
    assert figure.legends and figure.legends[0].get_bbox_to_anchor() is not None


def test_report_shows_effective_strategy_parameters_and_the_majority_class_rate(tmp_path):
    from medcl.report import write_report

    run = _run_dir(tmp_path / "r", {"strategy_params": {"l2": 1.0, "temperature": 2.0},
                                    "majority_class_rate": {"xray": 50.0, "breast": 73.1}})
    document = write_report(run).read_text()
    assert "Strategy parameters" in document and "<td>temperature</td><td>2.0</td>" in document
    assert "majority class" in document and "<td>73.10</td>" in document


def test_report_of_a_primed_run_shows_what_was_retrieved(tmp_path):
    from medcl.report import write_report

    run = _run_dir(tmp_path / "r", strategy="primed")
    (run / "primed").mkdir()
    (run / "primed" / "plan.json").write_text(json.dumps({"mode": "dynamic", "tasks": [
        {"task": "xray", "rows": 24, "levels": {"task": 16, "domain": 8}, "retrieval_s": 1.25}]}))
    document = write_report(run).read_text()
    assert "Retrieval" in document and "<td>xray</td><td>24</td>" in document and "task 16" in document


# ----------------------------------------------------------------- item 6: medcl compare

def test_compare_warns_about_runs_of_different_benchmarks_or_steps_and_matches_the_finetune_baseline(tmp_path):
    from medcl.compare import compare_runs, comparison_markdown, comparison_warnings

    short_ft = _run_dir(tmp_path / "ft-short", {"wall_time_s_per_task": [1.0, 1.0]}, steps=10, strategy="finetune")
    long_ft = _run_dir(tmp_path / "ft-long", {"wall_time_s_per_task": [5.0, 5.0]}, steps=40, strategy="finetune")
    zscl = _run_dir(tmp_path / "zscl-long", {"wall_time_s_per_task": [20.0, 20.0]}, steps=40)
    runs = [short_ft, long_ft, zscl]
    warnings = comparison_warnings(runs)
    assert len(warnings) == 1 and "steps per task" in warnings[0] and "ft-short" in warnings[0]
    _, rows = compare_runs(runs)
    table = comparison_markdown(runs, rows)
    zscl_row = next(line for line in table.splitlines() if line.startswith("| zscl-long"))
    assert zscl_row.rstrip(" |").endswith("4.00")  # 40 s / ft-long's 10 s, not ft-short's 2 s
    assert "ft-long" in table.split(zscl_row)[1]  # the note names the baseline used
    assert comparison_warnings([long_ft, zscl]) == []


# ----------------------------------------------------------------- item 8: the terminal

@pytest.mark.parametrize("tty, no_color, plain", [(False, None, True), (True, "1", True), (True, None, False)])
def test_ray_colour_codes_are_off_unless_writing_to_a_terminal(monkeypatch, tty, no_color, plain):
    from medcl.engine.localray import COLOUR_VARIABLE, plain_output_unless_terminal

    class Stream:
        def isatty(self):
            return tty

    monkeypatch.delenv(COLOUR_VARIABLE, raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    if no_color:
        monkeypatch.setenv("NO_COLOR", no_color)
    plain_output_unless_terminal(Stream())
    assert (os.environ.get(COLOUR_VARIABLE) == "0") is plain


@pytest.mark.ray
def test_ray_data_steps_log_no_progress_bar_notice(ray_session, capfd):
    import ray.data

    from medcl.corpus.raydata import data_context

    from ray.util.debug import reset_log_once

    class Keep(logging.Handler):
        records: list = []

        def emit(self, record):
            self.records.append(record.getMessage())

    handler, ray_logger = Keep(level=logging.INFO), logging.getLogger("ray.data")  # Ray's loggers do not reach root's
    ray_logger.addHandler(handler)
    try:
        reset_log_once()  # Ray logs the notice once per process: maybe already by an earlier test
        data_context()
        assert len(ray.data.range(8).map_batches(lambda batch: batch).take_all()) == 8
    finally:
        ray_logger.removeHandler(handler)
    assert not [m for m in Keep.records if "Progress bars" in m], Keep.records
    assert "Progress bars" not in capfd.readouterr().err


# ----------------------------------------------------------------- item 9: PRIMED's recipe

def test_embedding_with_a_randomly_initialised_model_is_warned_about():
    from medcl.commands.corpus import random_weights_warning
    from medcl.corpus.embed import ModelInfo

    warning = random_weights_warning(ModelInfo("medcl-tiny", None, None, 0))
    assert warning is not None and "medcl-tiny" in warning and "--run" in warning and "\n" not in warning
    assert random_weights_warning(ModelInfo("medcl-tiny", "runs/x/model.safetensors", None, 0)) is None


def test_a_caption_with_newlines_stays_on_its_row_of_the_query_table():
    from medcl.commands.index import table_cell

    cell = table_cell("Axial CT.\nArrow: mass\r\n\tleft lobe")
    assert "\n" not in cell and "\r" not in cell and "\t" not in cell
    assert "Axial CT." in cell and "left lobe" in cell


def test_docs_and_experiment_files_name_the_same_corpus_paths():
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    texts = {p: p.read_text() for p in [*repo.glob("docs/*.md"), *repo.glob("experiments/**/*.yaml"), repo / "README.md"]}
    named = {m for text in texts.values() for m in re.findall(r"(?<![\w/.-])((?:runs/)?corpora/[\w-]+)", text)}
    assert "runs/corpora/roco_medpix-index" in named and "runs/corpora/synthmed" in named
    assert not {n for n in named if not n.startswith("runs/")}, sorted(named)


# ----------------------------------------------------------------- item 10: pretrain's first line

def test_progress_is_printed_from_the_first_step_of_a_long_stage(tmp_path, capsys):
    import torch

    from medcl.engine.progress import ProgressLog
    from medcl.rundir import RunDir, read_events

    run = RunDir(tmp_path / "pre")
    run.path.mkdir()
    log = ProgressLog(run, enabled=True, telemetry=False)
    log.start_stage("pretrain", 0, 1, 1200)
    for step in range(1, 4):
        log.step(step, {"loss": torch.tensor(2.0)}, samples=8)
    out = capsys.readouterr().out
    assert "step 1/1200 loss 2.0000" in out and "step 2/1200" not in out
    assert [e.get("step") for e in read_events(run.events) if e["kind"] == "step"] == []  # events: unchanged cadence


def test_a_seeded_split_without_shared_patients_is_described_as_per_image():
    from medcl.data.prepare.core import assign_splits

    per_image = [{"image": f"covid/{i}.jpg", "patient": f"covid/{i}.jpg", "split": None} for i in range(10)]
    assert "per image" in assign_splits(per_image, 0) and "patient-level" not in assign_splits(per_image, 0)
    shared = [{"image": f"{i}.jpg", "patient": f"p{i // 2}", "split": None} for i in range(10)]
    assert "patient-level" in assign_splits(shared, 0)
