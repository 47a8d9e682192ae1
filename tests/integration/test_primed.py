"""PRIMED end to end: a tiny corpus -> embeddings -> FAISS index in tmp_path, planned on the "driver"
(``runner.prepare_strategy``), then a 2-task synthmed sequence through the real worker loop
(Ray Train local mode, ``local_sequence.run_local``)."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from local_sequence import run_local
from medcl import publish
from medcl.config import strategy_params, validate_experiment
from medcl.engine.runner import build_tasks, prepare_strategy
from medcl.rundir import RunDir
from medcl.strategies import build_strategy

pytestmark = [pytest.mark.ray, pytest.mark.slow]
STEPS = 4


def _config(output_dir, name: str, strategy: dict):
    return validate_experiment({
        "name": name, "seed": 0, "output_dir": str(output_dir),
        "benchmark": {"name": "synthmed", "num_tasks": 2, "train_per_class": 8, "val_per_class": 1, "test_per_class": 4},
        "model": {"name": "medcl-tiny"}, "strategy": strategy,
        "train": {"workers": 1, "batch_size": 16, "lr": 3e-3, "steps_per_task": STEPS},
    })


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    from medcl.corpus.build import build_corpus
    from medcl.corpus.embed import ModelInfo, embed_corpus
    from medcl.corpus.index import build_index
    from medcl.corpus.spec import validate_spec

    root = tmp_path_factory.mktemp("primed-corpus")
    spec = validate_spec({"sources": [{"type": "synthmed", "per_class": 3, "seed": 4}]})
    build_corpus(spec, root / "corpus", use_ray=False)
    embed_corpus(root / "corpus", root / "emb", ModelInfo(name="medcl-tiny"), use_ray=False)
    build_index(root / "emb", root / "index", factory="flat", log=lambda message: None)
    return root / "index"


def _primed(index_dir, **extra) -> dict:
    return {"name": "primed", "index_dir": str(index_dir), "k": 6, "a": 2, "b": 1, "c": 1, "n": 6,
            "reference_batch_size": 8, **extra}


@pytest.fixture(scope="module")
def planned_run(ray_session, index_dir, tmp_path_factory):
    config = _config(tmp_path_factory.mktemp("planned"), "primed", _primed(index_dir))
    run = RunDir(config.run_dir.resolve())  # what run_experiment does, without writing config.yaml here
    prepared = prepare_strategy(build_strategy("primed", strategy_params(config)), config, build_tasks(config), run)
    return config, run, prepared, run_local(config, fresh=False, prepared=prepared)  # the workers read the driver's plan


def _steps(result) -> list[dict]:
    events = [json.loads(line) for line in result.run.events.read_text().splitlines()]
    return [{k: v for k, v in e.items() if k not in ("time", "elapsed_s", "samples_per_s")}
            for e in events if e["kind"] == "step"]


def test_primed_plans_on_the_driver_and_trains_two_tasks(planned_run):
    config, run, prepared, result = planned_run
    plan_dir = run.path / "primed"
    assert prepared == str(plan_dir) and "plan_dir" not in config.strategy.params()  # the user's params untouched
    plan = json.loads((plan_dir / "plan.json").read_text())
    assert [t["task"] for t in plan["tasks"]] == ["xray", "ultrasound"]
    assert plan["tasks"][0]["levels"]["task"] == 0 and plan["tasks"][1]["levels"]["task"] == 2 * 5
    reference = pq.read_table(plan_dir / "reference-001.parquet").to_pylist()
    assert reference and all(r["id"].startswith("synthmed:") and r["image"] for r in reference)

    metrics = json.loads(result.run.metrics.read_text())
    assert metrics["complete"] and metrics["steps_per_task"] == [STEPS, STEPS]
    events = [json.loads(line) for line in result.run.events.read_text().splitlines()]
    steps = [e for e in events if e["kind"] == "step"]
    assert {e["task"] for e in steps} == {"xray", "ultrasound"}
    for task in ("xray", "ultrasound"):
        logged = [e for e in steps if e["task"] == task]
        assert logged[0]["step"] == 1 and logged[-1]["step"] == STEPS
        assert logged[0]["ckt"] == pytest.approx(0.0, abs=1e-4) and logged[0]["dfg"] == 0.0  # teacher = model at start
        assert logged[-1]["ckt"] > 1e-4 and logged[-1]["dfg"] > 0 and logged[-1]["cmc"] > 0
    assert np.isfinite(metrics["last"])


def test_online_retrieval_with_the_starting_scorer_equals_the_planned_run(planned_run, index_dir, tmp_path):
    config = _config(tmp_path, "primed", _primed(index_dir, retrieval="online", online_scorer="starting",
                                                 refresh_every=3, service=False))
    online = run_local(config)  # no driver plan: rank 0 retrieves in the worker at steps 0 and 3 of each task
    planned = planned_run[3]
    assert _steps(online) == _steps(planned) and _steps(online)  # every logged loss term, exactly
    assert online.run.matrix.read_text() == planned.run.matrix.read_text()
    metrics = json.loads(online.run.metrics.read_text())
    assert metrics["primed_refreshes"] == 2 * 2 and metrics["primed_refresh_s"] > 0
    assert not (online.run.path / "primed").exists()


def test_primed_uniform_without_an_index_retrieves_from_the_builtin_corpus(ray_session, tmp_path):
    config = _config(tmp_path, "primed-uniform", {"name": "primed_uniform", "builtin_per_class": 2, "k": 4,
                                                  "keywords": 8, "size": 40, "reference_batch_size": 8, "dfg": 0})
    result = run_local(config)  # the driver hook plans from the built-in synthmed corpus
    assert (result.run.path / "primed" / "reference-001.parquet").is_file()
    metrics = json.loads(result.run.metrics.read_text())
    assert metrics["complete"] and metrics["steps_per_task"] == [STEPS, STEPS]
    logged = result.run.events.read_text()
    assert '"ckt"' in logged and '"dfg"' not in logged


def test_online_retrieval_through_the_service_runs_it_for_the_training_only(ray_session, index_dir, tmp_path):
    from medcl.corpus.service import RetrievalService, ServiceError

    config = _config(tmp_path, "primed-svc", _primed(index_dir, retrieval="online", service=True,
                                                      service_name="test-primed-online"))
    strategy = build_strategy("primed", strategy_params(config))
    assert strategy.prepare(config, build_tasks(config), tmp_path) is None  # online: nothing planned
    with strategy.services(config, tmp_path):
        service = RetrievalService.connect("test-primed-online")  # what rank 0 of the workers does
        # the service serves (and pins) the index's current version (medcl.publish)
        assert service.layout["index_dir"] == str(publish.resolve(index_dir).resolve()) and service.info()
    with pytest.raises(ServiceError, match="no retrieval service"):
        RetrievalService.connect("test-primed-online")
    running = RetrievalService.start(index_dir, name="test-primed-online")  # somebody else's: used, not stopped
    try:
        with strategy.services(config, tmp_path):
            pass
        assert RetrievalService.connect("test-primed-online").info()
    finally:
        running.stop()
