"""A study's claims and ablations: checked on the study's fields, decided on paired per-seed differences
(medcl.stats), shown as tables; runs made outside a study are adopted only when their experiment is identical."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from medcl.config import validate_experiment
from medcl.stats import paired_difference
from medcl.study import StudyConfigError, load_study
from medcl.study.adopt import AdoptError, adopt_runs
from medcl.study.config import Ablation, Claim
from medcl.study.statistics import analyse
from medcl.study.tables import display_tables

BASE = {"name": "base", "benchmark": {"name": "synthmed", "num_tasks": 2, "image_size": 16, "train_per_class": 4,
                                      "test_per_class": 2, "classes": ["normal", "nodule"]},
        "model": {"name": "medcl-tiny"}, "train": {"batch_size": 4, "steps_per_task": 2}, "telemetry": False}
METHODS = [{"label": "finetune"}, {"label": "rehearsal", "strategy": {"buffer_size": 10}},
           {"label": "rehearsal_small", "strategy": {"name": "rehearsal", "buffer_size": 2}}]


def study_file(tmp_path, **fields):
    raw = {"name": "s", "output_dir": str(tmp_path / "out"), "experiment": BASE, "baseline": "finetune",
           "methods": METHODS, "seeds": [0, 1], **fields}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def problems(path):
    with pytest.raises(StudyConfigError) as info:
        load_study(path)
    return dict(info.value.problems)


def test_claims_and_ablations_name_their_wrong_fields(tmp_path):
    found = problems(study_file(tmp_path, claims=[{"claim": "x", "left": "rehearsal", "right": "ewc", "metric": "avg"}]))
    assert "claims.0.right" in found and "finetune, rehearsal" in found["claims.0.right"]
    found = problems(study_file(tmp_path, claims=[{"claim": "x", "left": "rehearsal", "right": "finetune",
                                                   "metric": "accuracy"}]))
    assert "claims.0.metric" in found and "transfer" in found["claims.0.metric"]
    found = problems(study_file(tmp_path, ablations=[{"label": "rehearsal_small", "of": "lwf"}]))
    assert "ablations.0.of" in found
    study = load_study(study_file(tmp_path, ablations=[{"label": "rehearsal_small", "of": "rehearsal"}]))
    from medcl.study.runner import switched

    assert switched(study, study.ablations[0]) == {"strategy.buffer_size": 2}


def runs_of(values: dict[str, list[float]]) -> list[dict]:
    return [{"method": m, "seed": s, "order": "default", "complete": True,
             "metrics": {"transfer": v, "avg": v + 1, "last": v - 1, "bwt": -1.0}}
            for m, per_seed in values.items() for s, v in enumerate(per_seed)]


def test_claim_verdicts_are_the_paired_differences():
    rng = np.random.default_rng(1)
    base = rng.normal(50, 5, size=5)  # large seed noise, small consistent gap: only pairing sees it
    values = {"finetune": list(base), "rehearsal": list(base + 1.0 + rng.normal(0, 0.1, 5)),
              "rehearsal_small": list(base - 0.5 + rng.normal(0, 2.0, 5))}
    claims = [Claim(claim="up", left="rehearsal", right="finetune", metric="last"),
              Claim(claim="down", left="finetune", right="rehearsal", metric="avg"),
              Claim(claim="lower forgetting", left="rehearsal", right="finetune", metric="bwt", direction="lower")]
    out = analyse(runs_of(values), list(values), "finetune", 0.95, claims, [Ablation(label="rehearsal_small",
                                                                                      of="rehearsal")])
    up, down, flat = out["claims"]
    expected = paired_difference(dict(enumerate(np.array(values["rehearsal"]) - 1)),
                                 dict(enumerate(np.array(values["finetune"]) - 1)))
    assert up["verdict"] == "holds" and up["interval"] == pytest.approx(expected.interval.as_dict())
    assert down["verdict"] == "fails"
    assert flat["verdict"] == "inconclusive" and flat["interval"]["mean"] == 0.0
    ablation = out["ablations"][0]
    assert set(ablation["metrics"]) == {"transfer", "avg", "last"}
    diff = np.array(values["rehearsal_small"]) - np.array(values["rehearsal"])
    assert ablation["metrics"]["transfer"]["interval"]["mean"] == pytest.approx(diff.mean())


def test_claim_without_runs_has_no_verdict_and_is_not_tabled():
    values = {"finetune": [1.0, 2.0, 3.0], "rehearsal": [2.0, 3.5, 4.0]}
    runs = runs_of(values) + [{"method": "rehearsal_small", "seed": 0, "order": "default", "complete": False,
                               "metrics": None}]
    claims = [Claim(claim="a", left="rehearsal", right="finetune", metric="avg"),
              Claim(claim="b", left="rehearsal_small", right="finetune", metric="avg")]
    stats = analyse(runs, [*values, "rehearsal_small"], "finetune", 0.95, claims, [])
    assert stats["claims"][1]["verdict"] is None
    payload = {"statistics": stats, "methods": [{"label": l} for l in [*values, "rehearsal_small"]],
               "baseline": "finetune", "tuning": {}, "changed": {},
               "costs": {l: {"runs": 0, "cpu_hours": 0.0, "gpu_hours": 0.0} for l in [*values, "rehearsal_small"]}}
    tables = {t.name: t for t in display_tables(payload)}
    assert [row[0] for row in tables["claims"].rows] == ["a"] and "ablations" not in tables
    assert tables["claims"].rows[0][-1] == stats["claims"][0]["verdict"]


def write_run(folder, raw, complete=True, provenance=True):
    folder.mkdir(parents=True)
    saved = validate_experiment(raw).model_dump(mode="json")
    if provenance:
        saved["provenance"] = {"git": "abc"}
    (folder / "config.yaml").write_text(yaml.safe_dump(saved))
    (folder / "metrics.json").write_text(json.dumps({"complete": complete, "avg": 50.0, "transfer": 40.0,
                                                     "last": 45.0, "bwt": -2.0, "wall_time_s_per_task": [1.0, 2.0],
                                                     "bench_wall_s": 4.0}))


def test_adoption_takes_only_identical_finished_experiments(tmp_path):
    study = load_study(study_file(tmp_path))
    from medcl.study.adopt import point_experiment
    from medcl.study.plan import grid_points

    points = grid_points(study)
    outside = tmp_path / "elsewhere"
    finetune, rehearsal = study.method("finetune"), study.method("rehearsal")
    write_run(outside / "seq" / "finetune-seed0", {**point_experiment(study, finetune, points[0]), "name": "x",
                                                    "output_dir": str(outside)})
    write_run(outside / "seq" / "finetune-seed1", point_experiment(study, finetune, points[1]), complete=False)
    other_lr = point_experiment(study, rehearsal, points[0])
    other_lr["train"] = {**other_lr["train"], "lr": 0.5}
    write_run(outside / "rehearsal-seed0", other_lr)
    write_run(outside / "rehearsal-seed1", point_experiment(study, rehearsal, points[1]), provenance=False)
    runs, missing = adopt_runs(study, [outside])
    assert {(r["method"], r["seed"]) for r in runs} == {("finetune", 0), ("rehearsal", 1)}
    assert {(m["method"], m["seed"]) for m in missing} == {("finetune", 1), ("rehearsal", 0), ("rehearsal_small", 0),
                                                           ("rehearsal_small", 1)}
    assert all(r["trial_wall_s"] == 4.0 and r["cost"]["wall_s"] == 3.0 for r in runs)
    with pytest.raises(AdoptError, match="no such folder"):
        adopt_runs(study, [tmp_path / "absent"])


def test_adoption_refuses_tuned_methods(tmp_path):
    methods = [{"label": "finetune"}, {"label": "rehearsal", "space": {"strategy.buffer_size": {"choice": [2, 4]}}}]
    study = load_study(study_file(tmp_path, methods=methods))
    with pytest.raises(AdoptError, match="rehearsal have a search space"):
        adopt_runs(study, [tmp_path])


def test_claims_and_ablations_reach_csv(tmp_path):
    from medcl.study.tables import write_tables

    values = {"finetune": [1.0, 2.0, 3.0], "rehearsal": [2.0, 3.5, 4.0], "rehearsal_small": [2.5, 3.0, 4.5]}
    stats = analyse(runs_of(values), list(values), "finetune", 0.95,
                    [Claim(claim="a, quoted", left="rehearsal", right="finetune", metric="avg")],
                    [Ablation(label="rehearsal_small", of="rehearsal")])
    payload = {"statistics": stats, "methods": [{"label": l} for l in values], "baseline": "finetune", "tuning": {},
               "changed": {"rehearsal_small": {"strategy.buffer_size": 2}},
               "costs": {l: {"runs": 3, "trainable_parameters": None, "wall_s": 1.0, "mean_wall_s": 1.0,
                             "cpu_hours": 0.0, "gpu_hours": 0.0, "peak_host_rss_bytes": None,
                             "peak_device_bytes": None} for l in values}}
    out = write_tables(payload, tmp_path)
    import csv

    claims = list(csv.DictReader((tmp_path / "claims.csv").open()))
    assert out["csv_claims"] == "tables/claims.csv" and claims[0]["claim"] == "a, quoted"
    assert float(claims[0]["diff_mean"]) == pytest.approx(stats["claims"][0]["interval"]["mean"])
    ablations = list(csv.DictReader((tmp_path / "ablations.csv").open()))
    assert [r["metric"] for r in ablations] == ["transfer", "avg", "last"]
    assert "| rehearsal_small vs rehearsal | buffer_size=2 |" in (tmp_path / "ablations.md").read_text()
