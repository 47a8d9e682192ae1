"""A Ray Tune searcher that asks and tells an Optuna study directly.

Why not ``ray.tune.search.optuna.OptunaSearch``: it tells Optuna COMPLETE with the last reported
value for every trial that ends without an error, including trials ASHA stopped after one task, so
a pruned trial would enter the study (and TPE's model, and ``best_trial``) with a partial score.
Here a trial whose last result is before its final task is told PRUNED; its per-task values are
kept as Optuna intermediate values. The study lives in storage, so a resumed sweep needs no
searcher checkpoint (see :mod:`medcl.sweep.study`).

Tune config handed to a trial: ``{"trial_number": n, "params": {dotted path: value}, "run_name":
"trial-<n>-<params hash>"}`` (:func:`medcl.sweep.study.run_name`, also kept as the trial's user
attribute ``run_name``). ``on_change`` is called after every ask and tell (the object-store
study's upload, :mod:`medcl.sweep.study_store`).

Fault injection (tests): ``MEDCL_FAULT="trial=N,task=K"`` ends the driver process
(:func:`medcl.faults.maybe_fail`) when trial N has reported task K, i.e. while it is running.
"""
from __future__ import annotations

import math
import warnings
from typing import Any

from ray.tune.search import Searcher

from medcl import telemetry
from medcl.faults import maybe_fail
from medcl.sweep.study import run_name

TIME_ATTR = "task"  # the trial's results: "task" (tasks trained so far, 0 = zero-shot row) and "tasks"


class StudySearcher(Searcher):
    """Ask/tell over ``study`` with ``distributions``; ``metrics`` are the objective names in the
    study's order; ``prune_metric`` is reported per task as the intermediate value (single
    objective only: Optuna keeps none for multi-objective studies); ``resume`` lists interrupted
    trials (FrozenTrial) to hand out again first; ``on_change`` runs after each ask and tell."""

    def __init__(self, study, distributions: dict, *, metrics: list[str], prune_metric: str, resume: list = (),
                 on_change=lambda: None):
        super().__init__(metric=None, mode=None)
        self.study, self.distributions, self.on_change = study, distributions, on_change
        self.metrics, self.prune_metric = metrics, prune_metric
        self._resume = list(resume)
        self._live: dict[str, Any] = {}

    def __getstate__(self) -> dict:
        """Tune pickles the searcher with the experiment's state (``tuner.pkl``, for
        ``Tuner.restore``, which medcl never uses: a sweep resumes from its study). ``on_change``
        (the object-store study's uploader, which holds a network client) stays with the driver
        that runs it, and so does the study: its storage holds the database URL with its password
        (:mod:`medcl.redact`), which must not land in the sweep's files."""
        return {**self.__dict__, "on_change": _no_change, "study": None}

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # metrics and modes come from the sweep file

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the study is in its storage."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: the study is in its storage."""

    def suggest(self, trial_id: str) -> dict | None:
        import optuna

        if self._resume:
            frozen = self._resume.pop(0)
            trial = optuna.trial.Trial(self.study, frozen._trial_id)
            params = {**frozen.params, **complete_params(trial, self.distributions, frozen.params)}
        else:
            trial = self.study.ask(self.distributions)
            params = dict(trial.params)
        name = run_name(trial.number, params)
        trial.set_user_attr("run_name", name)
        self._live[trial_id] = trial
        self.on_change()  # the trial and its parameters are in the study before any of its files exist
        telemetry.record_trial(self.study.study_name, "running")
        return {"trial_number": trial.number, "params": params, "run_name": name}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        trial = self._live.get(trial_id)
        self._report(trial, result)
        if trial is not None:
            maybe_fail("trial_result", trial=trial.number, task=int(result.get(TIME_ATTR) or 0))

    def _report(self, trial, result: dict) -> None:
        value = result.get(self.prune_metric)
        if trial is None or len(self.metrics) > 1 or value is None or not result.get(TIME_ATTR):
            return
        with warnings.catch_warnings():  # a resumed trial may report a task again: Optuna keeps the first
            warnings.simplefilter("ignore")
            trial.report(float(value), step=int(result[TIME_ATTR]))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        trial = self._live.pop(trial_id, None)
        if trial is None:
            return
        if result and not error:  # the result that made ASHA stop the trial reaches only this hook
            self._report(trial, result)
        state, values, note = classify(result, error, self.metrics)
        trial.set_user_attr("wall_time_s", float((result or {}).get("time_total_s") or 0.0))
        trial.set_user_attr("tasks_trained", int((result or {}).get(TIME_ATTR) or 0))
        if note:
            trial.set_user_attr("note", note)
        from optuna.trial import TrialState

        self.study.tell(trial.number, values, state=TrialState[state])
        self.on_change()
        telemetry.record_trial(self.study.study_name, TRIAL_STATUS[state])
        shown = ", ".join(f"{m} {v:.2f}" for m, v in zip(self.metrics, values or []))
        done = f"{(result or {}).get(TIME_ATTR, 0)}/{(result or {}).get('tasks', '?')} tasks"
        print(f"medcl: trial-{trial.number:04d} {state} after {done}{': ' + shown if shown else ''}"
              f"{' (' + note + ')' if note else ''}", flush=True)


def _no_change() -> None:
    """``on_change`` of a searcher unpickled away from its driver."""


TRIAL_STATUS = {"COMPLETE": "finished", "PRUNED": "pruned", "FAIL": "failed"}  # Optuna state -> telemetry


def classify(result: dict | None, error: bool, metrics: list[str]) -> tuple[str, list[float] | None, str]:
    """``(state, values, note)`` of a finished Tune trial: FAIL on an error or a missing objective,
    PRUNED when it stopped before its last task, else COMPLETE with the objective values."""
    if error:
        return "FAIL", None, "the trial raised an error; see its Tune log"
    result = result or {}
    if int(result.get(TIME_ATTR) or 0) < int(result.get("tasks") or 1):
        return "PRUNED", None, ""
    values = [result.get(m) for m in metrics]
    missing = [m for m, v in zip(metrics, values) if v is None or not math.isfinite(float(v))]
    if missing:
        return "FAIL", None, f"no value for {', '.join(missing)} (does the strategy train one stage per task?)"
    return "COMPLETE", [float(v) for v in values], ""


def complete_params(trial, distributions: dict, params: dict) -> dict:
    """The parameters an interrupted trial lacks, suggested now (an enqueued trial's fixed values are
    returned as enqueued). A sweep killed between Optuna creating a trial and sampling its
    parameters leaves a RUNNING trial with some or none; resumed as is, it would run the
    experiment's defaults and be recorded without them."""
    import optuna.distributions as od

    missing = {}
    for name, dist in distributions.items():
        if name in params:
            continue
        if isinstance(dist, od.CategoricalDistribution):
            missing[name] = trial.suggest_categorical(name, dist.choices)
        elif isinstance(dist, od.IntDistribution):
            missing[name] = trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
        elif isinstance(dist, od.FloatDistribution):
            missing[name] = trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
        else:
            raise TypeError(f"{name}: cannot suggest a {type(dist).__name__}")
    return missing
