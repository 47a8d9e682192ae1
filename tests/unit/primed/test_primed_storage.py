"""PRIMED's plan in an object store (moto S3 on 127.0.0.1): planned locally and uploaded by
``Primed.prepare``, reused from the store, and streamed to workers from it."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from s3server import BUCKET, s3  # noqa: E402,F401  (s3: the moto server fixture)

from medcl import storage  # noqa: E402
from medcl.config import strategy_params, validate_experiment  # noqa: E402
from medcl.primed import planner  # noqa: E402
from medcl.primed.scorer import StartingModelScorer  # noqa: E402
from medcl.primed.stream import read_reference_set  # noqa: E402
from medcl.storage import Location  # noqa: E402
from medcl.strategies import primed  # noqa: E402
from medcl.strategies.primed import Primed, PrimedParams  # noqa: E402
from primed_fakes import FakeRetriever, synthmed_corpus, synthmed_tasks  # noqa: E402


@pytest.fixture(scope="module")
def setting():
    params = PrimedParams(k=6, k_v=1, a=3, b=1, c=2, n=5)
    return params, synthmed_corpus(per_class=3, text_only=4), synthmed_tasks(), StartingModelScorer.build({"name": "medcl-tiny"}, 0)


def test_prepare_plans_into_the_store_reuses_it_and_workers_stream_from_it(s3, setting, monkeypatch, tmp_path):
    params, corpus, tasks, scorer = setting
    calls, original = [], planner.plan_reference_sets

    def plan(tasks, plan_dir, params, **kwargs):  # the real planner, with the unit tests' fake retriever
        retriever = FakeRetriever(corpus)
        summary = original(tasks, plan_dir, params, seed=kwargs["seed"], model={"name": "medcl-tiny"},
                           retriever=retriever, scorer=scorer, log=lambda m: None)
        calls.append((Path(plan_dir), retriever.calls))
        return summary

    monkeypatch.setattr(primed, "plan_reference_sets", plan)
    run_dir = Location(f"s3://{BUCKET}/primed-{os.urandom(4).hex()}/run")
    config = validate_experiment({"name": "run", "strategy": {"name": "primed", "k": 6, "k_v": 1, "a": 3, "b": 1,
                                                              "c": 2, "n": 5}})
    strategy = Primed(strategy_params(config))
    assert strategy.prepare(config, tasks, run_dir) == str(run_dir / "primed")  # ctx.prepared of the workers
    assert calls[0][1] == 2 and not calls[0][0].exists(), "planned in a temporary local directory, since removed"
    assert storage.listdir(run_dir / "primed") == ["plan.json", "reference-000.parquet", "reference-001.parquet"]
    strategy.prepare(config, tasks, run_dir)  # resumed: the plan is downloaded and reused, nothing retrieved
    assert calls[1][1] == 0
    local = tmp_path / "local"
    storage.download_dir(run_dir / "primed", local)
    remote, here = read_reference_set(str(run_dir / "primed"), 1, 24), read_reference_set(local, 1, 24)
    assert here.captions == remote.captions and np.array_equal(here.images, remote.images) and len(here) > 0
