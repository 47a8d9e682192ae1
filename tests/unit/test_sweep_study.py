"""The Optuna side of a sweep without Tune: ask/tell states, resumption (resources: test_sweep_capacity)."""
from __future__ import annotations

import pytest

from medcl.sweep import validate_sweep
from medcl.sweep.searcher import StudySearcher, classify
from medcl.sweep.space import optuna_distributions
from medcl.sweep.study import SweepError, finished_count, interrupted_trials, open_study, run_name

BASE = {"benchmark": {"name": "synthmed", "num_tasks": 2}, "train": {"steps_per_task": 5}}


def config(tmp_path, **fields):
    return validate_sweep({"name": "s", "experiment": BASE, "output_dir": str(tmp_path),
                           "space": {"train.lr": {"loguniform": [1e-4, 1e-2]}}, **fields})


def searcher_for(sweep, study, resume=()):
    return StudySearcher(study, optuna_distributions(sweep, None), metrics=[o.metric for o in sweep.objective],
                         prune_metric=sweep.prune_metric, resume=resume)


def test_classify_states():
    assert classify(None, True, ["avg"])[0] == "FAIL"
    assert classify({"task": 1, "tasks": 3, "avg": 50.0}, False, ["avg"])[:2] == ("PRUNED", None)
    assert classify({"task": 3, "tasks": 3, "avg": 50.0, "transfer": 20.0}, False, ["avg", "transfer"])[:2] == \
        ("COMPLETE", [50.0, 20.0])
    assert classify({"task": 3, "tasks": 3, "avg": 50.0}, False, ["avg", "bwt"])[0] == "FAIL"


def test_stopped_trials_are_pruned_not_complete_with_a_partial_score(tmp_path):
    sweep = config(tmp_path)
    study = open_study(sweep, resume=False, fresh=False, enqueue=[{"train.lr": 1e-3}])
    searcher = searcher_for(sweep, study)
    first, second, third = (searcher.suggest(f"t{i}") for i in range(3))
    assert first == {"trial_number": 0, "params": {"train.lr": 1e-3}, "run_name": run_name(0, {"train.lr": 1e-3})}
    searcher.on_trial_result("t0", {"task": 1, "tasks": 2, "avg": 60.0})
    searcher.on_trial_complete("t0", {"task": 2, "tasks": 2, "avg": 55.0, "time_total_s": 3.0})
    searcher.on_trial_complete("t1", {"task": 1, "tasks": 2, "avg": 20.0})  # ASHA stopped it after task 1
    searcher.on_trial_complete("t2", None, error=True)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED", "FAIL"]
    assert trials[0].values == [55.0] and trials[0].intermediate_values == {1: 60.0, 2: 55.0}
    assert trials[1].intermediate_values == {1: 20.0} and trials[0].user_attrs["wall_time_s"] == 3.0
    assert study.best_trial.number == 0


def test_resume_reruns_interrupted_trials_under_their_number(tmp_path):
    sweep = config(tmp_path)
    study = open_study(sweep, resume=False, fresh=False, enqueue=[])
    searcher = searcher_for(sweep, study)
    first = searcher.suggest("a")
    searcher.on_trial_complete("a", {"task": 2, "tasks": 2, "avg": 40.0})
    crashed = searcher.suggest("b")  # the sweep process dies here: trial 1 stays RUNNING
    with pytest.raises(SweepError, match="--resume"):
        open_study(sweep, resume=False, fresh=False, enqueue=[])
    study = open_study(sweep, resume=True, fresh=False, enqueue=[])
    interrupted = interrupted_trials(study)
    assert [t.number for t in interrupted] == [1] and finished_count(study) == 1
    searcher = searcher_for(sweep, study, resume=interrupted)
    again = searcher.suggest("c")
    assert again == crashed
    searcher.on_trial_complete("c", {"task": 2, "tasks": 2, "avg": 45.0})
    new = searcher.suggest("d")
    assert new["trial_number"] == 2 and new["params"] != first["params"]  # the resumed sampler does not replay
    states = [t.state.name for t in study.get_trials()]
    assert states == ["COMPLETE", "COMPLETE", "RUNNING"] and interrupted_trials(study)[0].number == 2
    fresh = open_study(sweep, resume=False, fresh=True, enqueue=[])
    assert fresh.trials == []
    assert open_study(config(tmp_path / "new"), resume=False, fresh=True, enqueue=[]).trials == []


def test_run_directories_are_keyed_by_number_and_parameters_and_every_change_is_announced(tmp_path):
    """A study that lost trials (restored from an older copy) hands out a number again with other
    parameters: its run directory differs, so it never continues another configuration's
    checkpoints; the same number with the same parameters (a resumed trial) finds its own again."""
    assert run_name(3, {"train.lr": 1e-3, "x": "a"}) == run_name(3, {"x": "a", "train.lr": 1e-3})
    assert run_name(3, {"train.lr": 1e-3}) != run_name(3, {"train.lr": 2e-3}) != run_name(4, {"train.lr": 2e-3})
    assert run_name(3, {"train.lr": 1e-3}).startswith("trial-0003-")
    sweep = config(tmp_path)
    study = open_study(sweep, resume=False, fresh=False, enqueue=[])
    changes = []
    searcher = StudySearcher(study, optuna_distributions(sweep, None), metrics=["avg"], prune_metric="avg",
                             on_change=lambda: changes.append([t.state.name for t in study.get_trials()]))
    given = searcher.suggest("a")
    assert changes == [["RUNNING"]] and study.trials[0].user_attrs["run_name"] == given["run_name"]
    searcher.on_trial_result("a", {"task": 1, "tasks": 2, "avg": 50.0})
    searcher.on_trial_complete("a", {"task": 2, "tasks": 2, "avg": 40.0})
    assert changes == [["RUNNING"], ["COMPLETE"]]  # after the ask and after the tell


def test_a_trial_killed_before_its_parameters_were_sampled_gets_them_on_resume(tmp_path):
    """Optuna stores a new trial (RUNNING) before its parameters: a sweep killed in between leaves
    one with none. Resumed, it is given its parameters (an enqueued trial its enqueued values)
    instead of running the experiment's defaults unrecorded."""
    sweep = config(tmp_path, space={"train.lr": {"loguniform": [1e-4, 1e-2]}, "train.batch_size": {"choice": [8, 16]}})
    study = open_study(sweep, resume=False, fresh=False, enqueue=[{"train.batch_size": 16}])
    for _ in range(2):
        study.ask()  # a trial created, its parameters not yet sampled (the first one is the enqueued one)
    study = open_study(sweep, resume=True, fresh=False, enqueue=[])
    interrupted = interrupted_trials(study)
    assert [t.params for t in interrupted] == [{}, {}]
    searcher = searcher_for(sweep, study, resume=interrupted)
    for name, batch_sizes in (("a", (16,)), ("b", (8, 16))):
        resumed = searcher.suggest(name)
        assert set(resumed["params"]) == {"train.lr", "train.batch_size"}
        assert 1e-4 <= resumed["params"]["train.lr"] <= 1e-2 and resumed["params"]["train.batch_size"] in batch_sizes
        searcher.on_trial_complete(name, {"task": 2, "tasks": 2, "avg": 40.0})
    recorded = [t.params for t in study.get_trials() if t.state.name == "COMPLETE"]
    assert [set(p) for p in recorded] == [{"train.lr", "train.batch_size"}] * 2


def test_multi_objective_study_and_pruned_trials(tmp_path):
    sweep = config(tmp_path, objective=["avg", "transfer"])
    study = open_study(sweep, resume=False, fresh=False, enqueue=[])
    searcher = searcher_for(sweep, study)
    searcher.suggest("a"), searcher.suggest("b")
    searcher.on_trial_complete("a", {"task": 2, "tasks": 2, "avg": 40.0, "transfer": 30.0})
    searcher.on_trial_complete("b", {"task": 1, "tasks": 2, "avg": 10.0, "transfer": 5.0})
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE", "PRUNED"]
    assert study.best_trials[0].values == [40.0, 30.0]
    with pytest.raises(SweepError, match="directions"):
        open_study(config(tmp_path, objective=["avg"]), resume=True, fresh=False, enqueue=[])


def test_trial_statuses_go_to_telemetry(tmp_path, monkeypatch):
    from medcl import telemetry

    calls = []
    monkeypatch.setattr(telemetry, "record_trial", lambda sweep, status: calls.append((sweep, status)))
    sweep = config(tmp_path)
    searcher = searcher_for(sweep, open_study(sweep, resume=False, fresh=False, enqueue=[]))
    for i in range(3):
        searcher.suggest(f"t{i}")
    searcher.on_trial_complete("t0", {"task": 2, "tasks": 2, "avg": 55.0})
    searcher.on_trial_complete("t1", {"task": 1, "tasks": 2, "avg": 20.0})
    searcher.on_trial_complete("t2", None, error=True)
    assert calls == [("s", "running")] * 3 + [("s", "finished"), ("s", "pruned"), ("s", "failed")]


def test_the_searcher_pickles_without_its_uploader(tmp_path):
    """Tune pickles the searcher with its experiment state; the object-store study's uploader holds
    a network client (not picklable) and stays with the driver."""
    import pickle
    import threading

    lock = threading.Lock()
    sweep = config(tmp_path)
    searcher = StudySearcher(open_study(sweep, resume=False, fresh=False, enqueue=[]), optuna_distributions(sweep, None),
                             metrics=["avg"], prune_metric="avg", on_change=lambda: lock.acquire)
    copy = pickle.loads(pickle.dumps(searcher))
    assert copy.on_change() is None and searcher.on_change is not copy.on_change
