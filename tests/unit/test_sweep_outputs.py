"""A sweep's plots and terminal summary do not make noise look like signal; the study names its metrics.

Plots are checked through their axes (limits, ticks, what is drawn), not pixels: ``plots._save`` is
replaced by one that hands the figure back.
"""
from __future__ import annotations

import optuna
import pytest

from medcl.sweep import plots, validate_sweep
from medcl.sweep.outputs import best_lines, trials_table
from medcl.sweep.study import open_study

BASE = {"benchmark": {"name": "synthmed", "num_tasks": 2}, "train": {"steps_per_task": 5}}


def sweep_config(tmp_path, **fields):
    return validate_sweep({"name": "s", "experiment": BASE, "output_dir": str(tmp_path),
                           "space": {"train.lr": {"loguniform": [1e-4, 1e-2]},
                                     "train.batch_size": {"int": [8, 64], "step": 8}}, **fields})


def study_with(sweep, values: list[float]):
    """The sweep's study with one COMPLETE trial per value (its parameters drawn by the sampler)."""
    study = open_study(sweep, resume=False, fresh=False, enqueue=[])
    distributions = {"train.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
                     "train.batch_size": optuna.distributions.IntDistribution(8, 64, step=8)}
    for value in values:
        trial = study.ask(distributions)
        study.tell(trial, value)
    return study


@pytest.fixture
def figures(monkeypatch):
    monkeypatch.setattr(plots, "_save", lambda fig, path: fig)


def history_axes(sweep, study):
    return plots.write_plots(sweep, study, trials_table(sweep, study), sweep.sweep_dir)["history"].axes[0]


def test_history_does_not_zoom_into_a_fraction_of_a_point_and_ticks_whole_trials(tmp_path, figures):
    sweep = sweep_config(tmp_path)
    ax = history_axes(sweep, study_with(sweep, [50.0, 50.1, 50.2]))  # chance-level noise
    low, high = ax.get_ylim()
    assert high - low >= plots.MIN_SPAN_POINTS
    assert low <= 50.0 and high >= 50.2
    assert all(float(t).is_integer() for t in ax.get_xticks())


def test_history_keeps_a_wide_range_as_it_is(tmp_path, figures):
    sweep = sweep_config(tmp_path)
    ax = history_axes(sweep, study_with(sweep, [30.0, 70.0]))
    low, high = ax.get_ylim()
    assert low <= 30.0 and high >= 70.0 and high - low < 50  # matplotlib's margins, not widened further


def test_importances_need_enough_complete_trials(tmp_path, figures):
    sweep = sweep_config(tmp_path)
    few = study_with(sweep, [40.0, 55.0])
    ax = plots.write_plots(sweep, few, trials_table(sweep, few), sweep.sweep_dir)["importances"].axes[0]
    assert not ax.patches  # no bars
    assert "too few trials" in " ".join(t.get_text() for t in ax.texts)

    enough = study_with(sweep_config(tmp_path / "more"), [40.0 + 3 * i for i in range(plots.MIN_TRIALS_FOR_IMPORTANCE)])
    sweep_more = sweep_config(tmp_path / "more")
    ax = plots.write_plots(sweep_more, enough, trials_table(sweep_more, enough), sweep_more.sweep_dir)["importances"].axes[0]
    assert len(ax.patches) == 2 and not ax.texts  # one bar per parameter


def test_best_trial_parameters_and_objective_are_printed(tmp_path):
    sweep = sweep_config(tmp_path)
    study = study_with(sweep, [40.0, 61.25, 55.0])
    lines = best_lines(sweep, study)
    best = study.trials[1]
    assert lines[0] == "best trial: trial-0001 (avg 61.25)"
    assert f"  train.batch_size = {best.params['train.batch_size']}" in lines
    assert f"  train.lr = {best.params['train.lr']:.4g}" in lines
    assert best_lines(sweep_config(tmp_path / "empty"), open_study(sweep_config(tmp_path / "empty"), resume=False,
                                                                    fresh=False, enqueue=[])) == []


def test_the_study_names_its_objective_metrics(tmp_path):
    sweep = sweep_config(tmp_path, objective=["avg", "transfer"])
    open_study(sweep, resume=False, fresh=False, enqueue=[])
    stored = optuna.load_study(study_name="s", storage=sweep.storage_url)
    assert stored.metric_names == ["avg", "transfer"]


def test_a_resumed_study_made_without_names_gets_them(tmp_path):
    sweep = sweep_config(tmp_path)
    tmp_path.joinpath("s").mkdir()
    old = optuna.create_study(study_name="s", storage=sweep.storage_url, directions=["maximize"])
    old.tell(old.ask({"train.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}), 50.0)
    assert optuna.load_study(study_name="s", storage=sweep.storage_url).metric_names is None
    open_study(sweep, resume=True, fresh=False, enqueue=[])
    assert optuna.load_study(study_name="s", storage=sweep.storage_url).metric_names == ["avg"]
