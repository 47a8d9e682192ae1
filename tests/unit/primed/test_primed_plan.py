"""PRIMED's question pool, driver-side planning (fake retriever, real starting model) and the stream."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from medcl import seeds
from medcl.primed.planner import plan_reference_sets, read_plan, reference_file
from medcl.primed.questions import load_questions
from medcl.primed.scorer import StartingModelScorer
from medcl.primed.stream import read_reference_set, reference_rows
from medcl.primed.uniform import ZSCL_DEFAULT_REFERENCE_SIZE, KeywordIndex, round_robin, uniform_keywords
from medcl.strategies.primed import PrimedParams, PrimedUniformParams
from primed_fakes import FakeRetriever, synthmed_corpus, synthmed_tasks

MODALITIES = ("xray", "ultrasound", "fundus", "pathology", "ct", "dermatology", "mri", "radiology")


def test_default_pool_covers_the_shipped_modalities():
    pool = load_questions()
    assert 200 <= len(pool) <= 1000
    assert len({q.text for q in pool.questions}) == len(pool)
    for modality in MODALITIES:
        assert pool.domains_for(modality), modality
    texts = " ".join(q.text for q in pool.questions)
    for word in ("pneumonia", "nodule", "cyst", "calcification", "fracture", "malignant", "glaucoma"):
        assert word in texts, word


def test_user_pool_json_and_errors_name_the_field(tmp_path):
    own = tmp_path / "own.json"
    own.write_text(json.dumps({"domains": {"knee": {"label": "a knee X-ray", "modalities": ["xray"], "sites": {
        "joint": ["osteoarthritis", {"disease": "effusion", "question": "knee radiograph with joint effusion"}]}}}}))
    pool = load_questions(own)
    assert [q.text for q in pool.questions] == ["a knee X-ray of the joint showing osteoarthritis",
                                                "knee radiograph with joint effusion"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("domains: {xray: {label: X, sites: {chest: []}}}")
    with pytest.raises(ValueError, match=r"domains\.xray\.sites.*chest"):
        load_questions(bad)
    bad.write_text("domains: {xray: {label: X, sites: {chest: [a]}, colour: red}}")
    with pytest.raises(ValueError, match="colour"):
        load_questions(bad)


@pytest.fixture(scope="module")
def setting():
    params = PrimedParams(k=6, k_v=1, a=3, b=1, c=2, n=5)
    corpus = synthmed_corpus(per_class=3, text_only=4)
    return None, params, corpus, synthmed_tasks(), StartingModelScorer.build({"name": "medcl-tiny"}, 0)


def _plan(setting, out, **kwargs):
    _, params, corpus, tasks, scorer = setting
    retriever = FakeRetriever(corpus)
    summary = plan_reference_sets(tasks, out, kwargs.pop("params", params), seed=0, model={"name": "medcl-tiny"},
                                  retriever=retriever, scorer=scorer, log=lambda m: None, **kwargs)
    return summary, retriever


def test_reference_sets_are_identical_for_the_same_seed_and_reused(setting, tmp_path):
    first, retriever = _plan(setting, tmp_path / "a")
    second, _ = _plan(setting, tmp_path / "b")
    for index in range(2):
        a, b = (pq.read_table(reference_file(tmp_path / d, index)) for d in ("a", "b"))
        assert a.equals(b) and a.num_rows > 0
    assert retriever.calls == 2  # one batched search per task (queries already ranked are not asked again)
    levels = first["tasks"][1]["levels"]
    assert first["tasks"][0]["levels"]["task"] == 0 and levels["task"] > 0 and levels["domain"] > 0
    table = pq.read_table(reference_file(tmp_path / "a", 1)).to_pylist()
    assert all(r["image"] and not r["id"].startswith("roco:") for r in table)  # text-only entries never chosen
    assert first["tasks"][1]["text_only_dropped"] > 0
    assert {r["level"] for r in table} == {"task", "domain", "gen"} and all(r["query"] for r in table)
    again, retriever = _plan(setting, tmp_path / "a")
    assert retriever.calls == 0 and again == read_plan(tmp_path / "a")  # resume reuses the plan


def test_changed_parameters_replan(setting, tmp_path):
    _plan(setting, tmp_path)
    _, retriever = _plan(setting, tmp_path, params=setting[1].model_copy(update={"c": 1}))
    assert retriever.calls == 2


def test_bm25_plan_has_the_dynamic_size(setting, tmp_path):
    dynamic, _ = _plan(setting, tmp_path / "d")
    corpus = [r for r in setting[2] if r["image"] is not None]
    keyword = KeywordIndex([r["id"] for r in corpus], [r["caption"] for r in corpus])
    bm25, _ = _plan(setting, tmp_path / "u", mode="bm25", keyword_index=keyword)
    assert [t["rows"] for t in bm25["tasks"]] == [t["rows"] for t in dynamic["tasks"]]
    rows = pq.read_table(reference_file(tmp_path / "u", 1)).to_pylist()
    assert {r["level"] for r in rows} == {"bm25"} and len({r["id"] for r in rows}) == len(rows)


def test_paper_uniform_plan_is_zscl_sized_from_uniform_keywords_the_same_for_every_task(setting, tmp_path):
    params = PrimedUniformParams(k=6, k_v=1, keywords=5, size=12)
    summary, _ = _plan(setting, tmp_path, mode="uniform", params=params)
    keywords = uniform_keywords(load_questions(), 5, seed=0)
    assert keywords == uniform_keywords(load_questions(), 5, seed=0) != uniform_keywords(load_questions(), 5, seed=1)
    assert len(set(keywords)) == 5 and set(keywords) <= {q.disease for q in load_questions().questions}
    tables = [pq.read_table(reference_file(tmp_path, i)).to_pylist() for i in range(2)]
    assert [t["rows"] for t in summary["tasks"]] == [len(t) for t in tables]
    for rows in tables:
        assert 0 < len(rows) <= 12 and len({r["id"] for r in rows}) == len(rows)
        assert {r["level"] for r in rows} == {"uniform"} and {r["query"] for r in rows} <= set(keywords)
        counts = [sum(r["query"] == k for r in rows) for k in keywords]  # turns: shares differ by at most one
        assert max(counts) - min(c for c in counts if c) <= 1 or len(rows) < 12
    assert [r["id"] for r in tables[0]] == [r["id"] for r in tables[1]]  # no dependence on earlier tasks
    with pytest.raises(ValueError, match="strategy.keywords"):
        uniform_keywords(load_questions(), 10_000, seed=0)


def test_round_robin_takes_turns_and_skips_what_an_earlier_list_took():
    picked = round_robin([["a", "b", "c"], ["a", "d"], []], 4)
    assert picked == [(0, "a"), (1, "d"), (0, "b"), (0, "c")]
    assert round_robin([["a"], ["a"]], 5) == [(0, "a")]


def test_the_paper_uniform_default_size_is_zscls_default_reference_set():
    from medcl.data.reference import ReferenceConfig

    assert PrimedUniformParams().size == ZSCL_DEFAULT_REFERENCE_SIZE == len(ReferenceConfig().load())
    assert PrimedUniformParams().keywords == 30


def test_stream_is_sharded_and_deterministic(setting, tmp_path):
    _plan(setting, tmp_path)
    pairs = read_reference_set(tmp_path, 1, image_size=24)
    assert pairs.images.shape[1:] == (24, 24, 3) and pairs.images.dtype == np.uint8
    n = len(pairs)
    passes = {seed: (lambda p, seed=seed: seeds.rng(seed, "reference", 1, p)) for seed in (0, 1)}
    for step in (0, 3):
        whole = reference_rows(step, 4, n, passes[0])
        halves = [reference_rows(step, 4, n, passes[0], rank=r, world=2) for r in (0, 1)]
        assert sorted(np.concatenate(halves).tolist()) == sorted(whole.tolist())
    epoch = np.concatenate([reference_rows(s, 1, n, passes[0]) for s in range(n)])
    assert sorted(epoch.tolist()) == list(range(n))  # one pass visits every pair once
    assert np.array_equal(epoch, np.concatenate([reference_rows(s, 1, n, passes[0]) for s in range(n)]))
    assert not np.array_equal(epoch, np.concatenate([reference_rows(s, 1, n, passes[1]) for s in range(n)]))
    with pytest.raises(FileNotFoundError, match="not planned"):
        read_reference_set(tmp_path, 5, image_size=24)
