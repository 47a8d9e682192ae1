"""AUC beside accuracy: medcl.auc against scikit-learn, the engine's auc.csv / metrics, report, compare, sweeps."""
from __future__ import annotations

import json

import numpy as np
import pytest

from medcl.auc import average_ranks, binary_auc, macro_auc, softmax
from medcl.engine.checkpoint import SequenceState
from medcl.engine.outputs import write_outputs
from medcl.metrics import summarize
from medcl.rundir import RunDir, read_matrix_csv

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def _scores(rng, n: int, classes: int, ties: bool):
    logits = rng.normal(size=(n, classes)) * 3
    if ties:  # coarse scores: many exact ties, as a saturated softmax gives
        logits = np.round(logits)
    labels = rng.integers(0, classes, size=n)
    logits[np.arange(n), labels] += rng.uniform(0, 2, size=n)  # some signal, far from 0.5
    return softmax(logits), labels


@pytest.mark.parametrize("classes", [2, 3, 9, 33])
@pytest.mark.parametrize("ties", [False, True])
def test_macro_auc_matches_sklearn(classes, ties):
    rng = np.random.default_rng(classes * 2 + ties)
    worst = 0.0
    for _ in range(5):
        probabilities, labels = _scores(rng, 400, classes, ties)
        present = np.unique(labels)
        if len(present) < classes:
            continue
        ours, used = macro_auc(probabilities, labels)
        if classes == 2:  # the usual binary AUC of the positive class
            theirs = sklearn_metrics.roc_auc_score(labels, probabilities[:, 1])
        else:
            theirs = sklearn_metrics.roc_auc_score(labels, probabilities, multi_class="ovr", average="macro")
        assert used == classes
        worst = max(worst, abs(ours - 100 * theirs))
    assert worst < 1e-9, worst


def test_classes_without_test_images_are_left_out_of_the_mean():
    rng = np.random.default_rng(1)
    probabilities, labels = _scores(rng, 300, 5, False)
    labels[labels == 4] = 0  # class 4 has no test image: sklearn refuses, medcl averages the other 4
    with pytest.raises(ValueError):
        sklearn_metrics.roc_auc_score(labels, probabilities, multi_class="ovr", average="macro")
    ours, used = macro_auc(probabilities, labels)
    expected = np.mean([sklearn_metrics.roc_auc_score(labels == c, probabilities[:, c]) for c in range(4)])
    assert used == 4 and ours == pytest.approx(100 * expected, abs=1e-9)


def test_edge_cases_and_errors():
    assert average_ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert binary_auc([0.1, 0.9], [False, True]) == 1.0 and binary_auc([0.9, 0.1], [False, True]) == 0.0
    assert binary_auc([0.5, 0.5, 0.5], [True, False, True]) == 0.5
    assert np.isnan(binary_auc([0.2, 0.3], [True, True]))
    assert macro_auc(np.full((3, 2), 0.5), np.zeros(3, dtype=int))[1] == 0
    with pytest.raises(ValueError, match="0..1"):
        macro_auc(np.full((2, 2), 0.5), [0, 2])
    with pytest.raises(ValueError, match="N x C"):
        macro_auc(np.ones(4), [0, 1, 0, 1])


def _state(**auc) -> SequenceState:
    return SequenceState(task_names=["a", "b"], stage_names=["a", "b"], zero_shot=[20.0, 30.0],
                         rows=[[90.0, 35.0], [70.0, 80.0]], wall_time_s=[1.0, 2.0], steps=[5, 5],
                         trainable_parameters=[10, 10], **auc)


def test_engine_writes_the_auc_matrix_and_its_metrics(tmp_path):
    run = RunDir(tmp_path)
    auc_rows = [[95.0, 60.0], [85.0, 90.0]]
    metrics = write_outputs(run, _state(auc_zero_shot=[50.0, 55.0], auc_rows=auc_rows), strategy="finetune",
                            model="m", benchmark="b")
    labels, tasks, values = read_matrix_csv(run.auc)
    assert labels == ["zero_shot", "a", "b"] and tasks == ["a", "b"]
    np.testing.assert_array_equal(values, [[50.0, 55.0], *auc_rows])
    expected = summarize(auc_rows, zero_shot=[50.0, 55.0])
    assert metrics["auc_last"] == expected["last"] == 87.5 and metrics["auc_bwt"] == -10.0
    assert metrics["auc_transfer"] == 60.0 and metrics["auc_fwt"] == 5.0
    assert metrics["last"] == 75.0  # accuracy metrics untouched
    saved = json.loads(run.metrics.read_text())
    assert saved["auc_per_task"][0]["final"] == 85.0 and saved["auc_zero_shot"] == [50.0, 55.0]


def test_undefined_auc_and_old_checkpoints_give_none_with_a_note(tmp_path):
    metrics = write_outputs(RunDir(tmp_path), _state(auc_zero_shot=[50.0, float("nan")],
                                                    auc_rows=[[95.0, float("nan")], [85.0, float("nan")]]),
                            strategy="finetune", model="m", benchmark="b")
    assert metrics["auc_last"] is None and "['b']" in metrics["auc_note"]
    old = tmp_path / "old"
    old.mkdir()
    metrics = write_outputs(RunDir(old), _state(), strategy="finetune", model="m", benchmark="b")
    assert metrics["auc_last"] is None and not (old / "auc.csv").exists() and "before AUC" in metrics["auc_note"]


def test_report_and_compare_show_auc(tmp_path):
    from medcl.compare import compare_runs
    from medcl.report import format_metrics, write_report

    runs = []
    for name, strategy in [("ft", "finetune"), ("l2", "l2")]:
        run = RunDir(tmp_path / name)
        run.path.mkdir()
        write_outputs(run, _state(auc_zero_shot=[50.0, 55.0], auc_rows=[[95.0, 60.0], [85.0, 90.0]]),
                      strategy=strategy, model="m", benchmark="b")
        runs.append(run.path)
    document = write_report(runs[0]).read_text()
    assert "AUC matrix" in document and "auc_last" in document and "87.50" in document
    text, rows = compare_runs(runs)
    assert "auc_last" in text.splitlines()[0] and rows[1]["auc_bwt"] == -10.0
    assert "auc_avg" in format_metrics(json.loads((runs[0] / "metrics.json").read_text()))


def test_auc_metrics_are_sweep_objectives_and_running_reports():
    from medcl.sweep.config import Objective
    from medcl.sweep.running import running_auc_metrics

    assert Objective(metric="auc_last").mode == "max" and Objective(metric="auc_forgetting").mode == "min"
    with pytest.raises(Exception, match="auc_last"):
        Objective(metric="auc_lst")
    report = running_auc_metrics([[95.0, 60.0]], [50.0, 55.0])
    assert report == {"auc_avg": 77.5, "auc_last": 77.5, "auc_transfer": 60.0, "auc_fwt": 5.0}
    assert running_auc_metrics([[95.0, float("nan")]]) == {}
