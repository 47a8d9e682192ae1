"""Study files: every error names its field; --set reaches methods; the plan counts trials and runs."""
from __future__ import annotations

import pytest
import yaml

from medcl.study import StudyConfigError, load_study
from medcl.study.plan import describe, grid_sweep, tuning_sweep

BASE = {"name": "base", "benchmark": {"name": "synthmed", "num_tasks": 2, "image_size": 16, "train_per_class": 4,
                                      "val_per_class": 1, "test_per_class": 2, "classes": ["normal", "nodule"]},
        "model": {"name": "medcl-tiny"}, "train": {"batch_size": 4, "steps_per_task": 2}}


def study_file(tmp_path, **fields):
    raw = {"name": "s", "output_dir": str(tmp_path / "out"), "experiment": BASE, "baseline": "finetune",
           "methods": [{"label": "finetune"},
                       {"label": "rehearsal", "strategy": {"buffer_size": 10},
                        "space": {"strategy.replay_fraction": {"uniform": [0.2, 0.8]}}}],
           "seeds": [0, 1, 2], "orders": [["xray", "ultrasound"], ["ultrasound", "xray"]], "tuning": {"trials": 3},
           **fields}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def problems(path, overrides=()):
    with pytest.raises(StudyConfigError) as info:
        load_study(path, list(overrides))
    return dict(info.value.problems)


def test_plan_counts_equal_budgets_and_the_grid(tmp_path):
    study = load_study(study_file(tmp_path))
    plan = describe(study)
    assert plan["tuning_trials"] == 3 and plan["evaluation_runs"] == 2 * 3 * 2 and plan["total_runs"] == 15
    assert [m["tuning"] for m in plan["methods"]][0] == "fixed"
    tuning = tuning_sweep(study, study.method("rehearsal"))
    assert tuning.num_samples == 3 and tuning.scheduler.name == "none"
    assert tuning.experiment["train"]["eval_split"] == "val" and tuning.experiment["seed"] == 0
    assert tuning.experiment["benchmark"]["order"] == ["xray", "ultrasound"]
    grid = grid_sweep(study, study.method("rehearsal"), {"strategy.replay_fraction": 0.4})
    assert grid.num_samples == len(grid.enqueue) == 6
    assert grid.experiment["strategy"] == {"name": "rehearsal", "buffer_size": 10, "replay_fraction": 0.4}
    assert "eval_split" not in grid.experiment["train"]  # the test protocol
    assert {(p["seed"], tuple(p["order"])) for p in grid.enqueue} == {
        (s, o) for s in (0, 1, 2) for o in (("xray", "ultrasound"), ("ultrasound", "xray"))}


def test_errors_name_the_field(tmp_path):
    path = study_file(tmp_path)
    assert "baseline" in problems(path, ["baseline=ewc"])
    assert "name" in problems(path, ["name=.."])
    assert "tuning.trials" in problems(path, ["tuning.trials=0"])
    found = problems(path, ["methods.rehearsal.strategy.buffer_sze=3"])
    assert "buffer_size" in found["methods.1.strategy.buffer_sze"]
    found = problems(path, ["methods.1.space.train.lrr={uniform: [0.1, 0.2]}"])
    assert "train.lr" in found["methods.1.space.train.lrr"]
    assert "methods.0.set.train.lr" in problems(path, ["methods.finetune.set.train.lr=-1"])
    assert "no method" in problems(path, ["methods.nope.strategy.x=1"])["methods.nope.strategy.x"]
    assert "orders" in problems(path, ["orders=[[xray, xray]]"])
    assert "seeds" in problems(path, ["seeds=[1, 1]"])
    assert "output_dir" in problems(path, ["output_dir=s3://bucket/studies"])


def test_method_overrides_reach_set_and_space(tmp_path):
    study = load_study(study_file(tmp_path), ["methods.finetune.set.train.lr=0.01", "tuning.trials=5",
                                              "methods.1.space.train.lr={loguniform: [1.0e-4, 1.0e-2]}"])
    assert study.method("finetune").set == {"train.lr": 0.01} and study.tuning.trials == 5
    assert set(study.method("rehearsal").space) == {"strategy.replay_fraction", "train.lr"}


def test_findings_study_validates():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "experiments" / "studies"
    for name in ("findings.yaml", "findings_medical.yaml"):
        study = load_study(root / name)
        assert study.seeds == [0, 1, 2, 3, 4] and study.baseline == "finetune"
        assert describe(study)["evaluation_runs"] == 5 * len(study.methods)


def test_method_paths_are_absolute_like_the_base_experiments(tmp_path, monkeypatch):
    """A trial may run in another working directory (or node): a method's own path fields resolve
    against the working directory the study was loaded from, as the base experiment's do."""
    monkeypatch.chdir(tmp_path)
    methods = [{"label": "finetune", "set": {"model.pretrained": "weights/clip.safetensors", "train.lr": 0.1}},
               {"label": "zscl", "strategy": {"reference": {"name": "parquet", "path": "corpora/pairs"}}}]
    study = load_study(study_file(tmp_path, methods=methods, orders=None))
    assert study.method("finetune").set == {"model.pretrained": str(tmp_path / "weights/clip.safetensors"),
                                            "train.lr": 0.1}
    assert study.method("zscl").strategy == {"reference": {"name": "parquet", "path": str(tmp_path / "corpora/pairs")}}
