"""Sweep files, search spaces, orders, running metrics: no Ray, no training."""
from __future__ import annotations

import numpy as np
import pytest
import yaml

from medcl.config import ExperimentConfig, validate_experiment
from medcl.metrics import summarize
from medcl.sweep import SweepConfigError, load_sweep, validate_sweep
from medcl.sweep.running import running_metrics
from medcl.sweep.space import optuna_distributions, resolve_orders, trial_experiment

BASE = {"benchmark": {"name": "synthmed", "num_tasks": 3}, "strategy": {"name": "rehearsal"},
        "train": {"steps_per_task": 5}}


def sweep(**fields) -> dict:
    return {"name": "s", "experiment": BASE, **fields}


def problems(raw: dict) -> dict[str, str]:
    with pytest.raises(SweepConfigError) as info:
        validate_sweep(raw)
    assert "invalid sweep" in str(info.value)
    return dict(info.value.problems)


def test_unknown_dotted_path_names_the_path_and_nearest_fields():
    found = problems(sweep(space={"strategy.bufer_size": {"int": [10, 100]}}))
    assert "unknown experiment field" in found["space.strategy.bufer_size"]
    assert "nearest valid fields: strategy.buffer_size" in found["space.strategy.bufer_size"]


def test_bad_distribution_kind_lists_the_allowed_kinds():
    found = problems(sweep(space={"train.lr": {"gaussian": [0.1, 1]}}))
    assert "unknown distribution 'gaussian'" in found["space.train.lr"]
    assert "uniform, loguniform, int, choice" in found["space.train.lr"]
    assert "exactly one" in problems(sweep(space={"train.lr": {"uniform": [0, 1], "loguniform": [1, 2]}}))["space.train.lr"]


@pytest.mark.parametrize("dist, message", [
    ({"uniform": [1.0, 0.5]}, "low must be below high"),
    ({"loguniform": [0.0, 1.0]}, "low must be > 0"),
    ({"choice": []}, "at least one value"),
    ({"loguniform": [1e-4, 1e-2], "step": 0.1}, "step is not allowed"),
])
def test_bad_bounds_are_named(dist, message):
    assert message in problems(sweep(space={"train.lr": dist}))["space.train.lr"]


def test_values_the_experiment_refuses_are_errors():
    found = problems(sweep(space={"train.lr": {"uniform": [0.0, 0.1]},
                                  "strategy.policy": {"choice": ["reservoir", "newest"]}}))
    assert "value 0.0 is refused" in found["space.train.lr"] and "greater than 0" in found["space.train.lr"]
    assert "'newest'" in found["space.strategy.policy"]


def test_enqueued_points_must_be_dimensions_with_valid_values():
    found = problems(sweep(space={"train.lr": {"loguniform": [1e-4, 1e-2]}},
                           enqueue=[{"train.lrr": 0.1}, {"train.lr": -1}]))
    assert "not a dimension" in found["enqueue.0.train.lrr"]
    assert "refused" in found["enqueue.1.train.lr"]


def test_sweep_fields_and_base_experiment_are_checked():
    assert "unknown field" in problems({**sweep(), "num_sample": 3})["num_sample"]
    assert "forgetting" in problems(sweep(objective=[{"metric": "accuracy"}]))["objective.0.metric"]
    found = problems({"name": "s", "experiment": {**BASE, "train": {"lr": 1e-3}}})
    assert "steps_per_task" in found["experiment.train"]
    assert "orders_only" in problems(sweep(orders_only=True))["<root>"]


def test_objective_defaults_and_directions():
    config = validate_sweep(sweep(objective=["avg", {"metric": "forgetting"}]))
    assert [o.mode for o in config.objective] == ["max", "min"]
    assert config.directions == ["maximize", "minimize"] and config.prune_metric == "avg"


def test_load_sweep_reads_the_experiment_file_and_overrides(tmp_path):
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump({"name": "e", **BASE}))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"name": "s", "experiment": "exp.yaml", "num_samples": 8,
                                                     "space": {"train.lr": {"loguniform": [1e-4, 1e-2]}}}))
    config = load_sweep(tmp_path / "s.yaml", ["num_samples=3", "experiment.train.steps_per_task=2"])
    assert config.num_samples == 3 and config.experiment["train"]["steps_per_task"] == 2
    with pytest.raises(SweepConfigError, match="no such experiment file"):
        (tmp_path / "t.yaml").write_text("name: t\nexperiment: missing.yaml\n")
        load_sweep(tmp_path / "t.yaml")


def test_orders_permutations_sampled_and_explicit():
    names = ["a", "b", "c"]
    assert len(resolve_orders(validate_sweep(sweep(order="permutations")), names)) == 6
    sampled = resolve_orders(validate_sweep(sweep(order={"permutations": 3, "seed": 1})), names)
    assert len({tuple(o) for o in sampled}) == 3 and all(sorted(o) == names for o in sampled)
    assert sampled == resolve_orders(validate_sweep(sweep(order={"permutations": 3, "seed": 1})), names)
    with pytest.raises(SweepConfigError, match="not an order"):
        resolve_orders(validate_sweep(sweep(order=[["a", "b", "x"]])), names)


def test_trial_experiment_applies_params_order_and_resources():
    config = validate_sweep(sweep(space={"strategy.buffer_size": {"int": [10, 50]},
                                         "benchmark.classes": {"choice": [["normal", "cyst"], ["normal", "nodule"]]}},
                                  order="permutations", resources={"train_workers": 2, "worker_cpus": 0.5}))
    dists = optuna_distributions(config, [["a", "b"], ["b", "a"]])
    assert set(dists) == {"strategy.buffer_size", "benchmark.classes", "order"}
    raw = trial_experiment(config, {"strategy.buffer_size": 20, "benchmark.classes": '["normal", "cyst"]',
                                    "order": "b>a"}, name="trial-0001", output_dir="/tmp/x")
    assert raw["strategy"]["buffer_size"] == 20 and raw["benchmark"]["classes"] == ["normal", "cyst"]
    assert raw["benchmark"]["order"] == ["b", "a"] and raw["train"]["workers"] == 2
    assert raw["train"]["cpus_per_worker"] == 0.5 and raw["name"] == "trial-0001"
    assert BASE["strategy"] == {"name": "rehearsal"}  # the base is not modified


def test_running_metrics_equal_summarize_after_the_last_task():
    rng = np.random.default_rng(0)
    a, z = rng.uniform(0, 100, (4, 4)), rng.uniform(0, 100, 4)
    final = running_metrics(a, z)
    for key, value in summarize(a, zero_shot=z).items():
        assert final[key] == pytest.approx(value)
    first = running_metrics(a[:1], z)
    assert "bwt" not in first and "forgetting" not in first
    assert first["avg"] == pytest.approx(a[0].mean()) and first["transfer"] == pytest.approx(a[0, 1:].mean())
    assert first["fwt"] == pytest.approx(a[0, 1] - z[1])
    assert running_metrics(a[:2], z)["bwt"] == pytest.approx(a[1, 0] - a[0, 0])


def test_shipped_tiny_sweep_validates_and_its_best_shape_is_an_experiment():
    config = load_sweep("experiments/sweeps/tiny_synthmed.yaml")
    raw = trial_experiment(config, {"train.lr": 1e-3}, name="x", output_dir="/tmp")
    assert isinstance(validate_experiment(raw), ExperimentConfig)
    for name in ("cloud_rehearsal_order.yaml", "cloud_distillation_order.yaml", "cloud_mslora_cr.yaml"):
        data = yaml.safe_load(open(f"experiments/sweeps/{name}"))
        assert {"name", "experiment", "space", "objective"} <= set(data)
