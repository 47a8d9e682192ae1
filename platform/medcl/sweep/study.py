"""The Optuna study behind a sweep: storage, sampler, creation, resumption.

The study is the sweep's source of truth (``sqlite:///sweeps/<name>/study.db`` by default, or any
SQLAlchemy URL, so ``optuna-dashboard <url>`` can open it; with an object-store ``output_dir`` a
driver-local working copy kept in the bucket, see :mod:`medcl.sweep.study_store`). Every trial is asked and told by the
sweep driver (:mod:`medcl.sweep.searcher`), so a trial's state is COMPLETE (all tasks trained, the
objective values), PRUNED (stopped by ASHA after fewer tasks), FAIL (an error), or RUNNING while a
sweep process is alive. A RUNNING trial found when a sweep is resumed was interrupted by a crash: it
is handed out again under the same number, with the same parameters and run directory (which
resumes after its last finished task), so no configuration is run twice and none stays RUNNING.
A trial's run directory is named by its number and a hash of its parameters (:func:`run_name`),
so no trial ever continues a directory holding other parameters.
"""
from __future__ import annotations

from medcl.confine import rmtree_below
from medcl import storage as places
from medcl.redact import mask_url_password
from medcl.sweep.config import SweepConfig
from medcl.sweep.errors import SweepError

FINISHED = ("COMPLETE", "PRUNED", "FAIL")


def open_study(sweep: SweepConfig, *, resume: bool, fresh: bool, enqueue: list[dict]):
    """Create the study (enqueueing ``enqueue`` points), or open it with ``resume``.

    Raises :class:`SweepError` when the study already has trials and neither ``resume`` nor
    ``fresh`` is given, or when its objective directions differ from the sweep file's.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if fresh:
        _delete(sweep)
    places.makedirs(sweep.sweep_dir)
    storage = sweep.storage_url
    existing = None
    try:
        existing = optuna.load_study(study_name=sweep.name, storage=storage, sampler=make_sampler(sweep))
    except KeyError:
        pass
    if existing is not None and existing.trials:
        if not resume:
            raise SweepError(f"sweep {sweep.name!r} already has {len(existing.trials)} trial(s) in "
                             f"{mask_url_password(storage)}; "
                             "add --resume to continue it, or --fresh to start over")
        if [d.name.lower() for d in existing.directions] != sweep.directions:
            raise SweepError(f"{mask_url_password(storage)} holds study {sweep.name!r} with directions "
                             f"{[d.name.lower() for d in existing.directions]}, the sweep file asks for "
                             f"{sweep.directions} (objective changed); use --fresh or another name")
        # A fresh sampler with the sweep's seed would draw the first trials' values again.
        study = optuna.load_study(study_name=sweep.name, storage=storage,
                                  sampler=make_sampler(sweep, offset=len(existing.trials)))
        name_metrics(study, [o.metric for o in sweep.objective])  # a study made before names were recorded
        return study
    study = existing or optuna.create_study(study_name=sweep.name, storage=storage, directions=sweep.directions,
                                            sampler=make_sampler(sweep))
    name_metrics(study, [o.metric for o in sweep.objective])
    for point in enqueue:
        study.enqueue_trial(point, skip_if_exists=True)
    return study


def name_metrics(study, names: list[str]) -> None:
    """Record the objective's metric names in the study (Optuna's ``Study.set_metric_names``,
    Optuna >= 3.2), so optuna-dashboard and ``study.trials_dataframe()`` show ``avg`` rather than
    "Objective 0"; written once, when missing or different."""
    import warnings

    if getattr(study, "metric_names", None) == names:
        return
    with warnings.catch_warnings():  # set_metric_names is marked experimental by Optuna
        warnings.simplefilter("ignore")
        study.set_metric_names(names)


def make_sampler(sweep: SweepConfig, offset: int = 0):
    """Optuna's sampler; ``offset`` (the trials already in a resumed study) shifts the seed, so a
    resumed sweep does not replay the random draws of its first trials."""
    import optuna

    s = sweep.searcher
    seed = None if s.seed is None else s.seed + offset
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=s.n_startup_trials,
                                      constant_liar=sweep.max_concurrent_trials > 1)


def run_name(number: int, params: dict) -> str:
    """The run directory of a trial, ``trial-<number>-<hash>``: ``hash`` is the first 8 hex digits
    of the SHA-256 of the parameters as sorted JSON, so a trial number that a study reuses (one
    that lost trials, e.g. a study restored from an older copy) with other parameters never
    continues the checkpoints of another configuration, and a trial resumed with its own
    parameters finds its own directory again."""
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"trial-{number:04d}-{digest}"


def interrupted_trials(study) -> list:
    """Trials left RUNNING by a sweep process that died, oldest first."""
    return [t for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING"]


def finished_count(study) -> int:
    return sum(t.state.name in FINISHED for t in study.get_trials(deepcopy=False))


def fail_trials(study, trials, reason: str) -> None:
    for trial in trials:
        study.tell(trial.number, state=_state("FAIL"))
        print(f"medcl: trial-{trial.number:04d} marked FAIL ({reason})", flush=True)


def _state(name: str):
    from optuna.trial import TrialState

    return TrialState[name]


def _delete(sweep: SweepConfig) -> None:
    import optuna

    places.makedirs(sweep.sweep_dir)  # the default sqlite file's folder must exist
    try:
        optuna.delete_study(study_name=sweep.name, storage=sweep.storage_url)
    except KeyError:
        pass
    from medcl.sweep.study_store import is_staged

    if not is_staged(sweep):
        rmtree_below(sweep.sweep_dir, places.place(sweep.output_dir))
        return
    from medcl.sweep.lease import LEASE_FILE

    for name in places.listdir(sweep.sweep_dir):  # all but this driver's lease (it still holds the sweep)
        if name != LEASE_FILE:
            child = sweep.sweep_dir / name
            places.delete(child) if places.is_file(child) else rmtree_below(child, sweep.sweep_dir)
