"""PRIMED retrieval stages and the dynamic siphon, on hand-made candidates."""
from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from medcl.primed.questions import load_questions, pool_for_task
from medcl.primed.select import Candidate, bm25_gate, dense_stage, dense_threshold, group_by_caption, rank_candidates
from medcl.primed.siphon import assemble, nominal_size, siphon_queries
from primed_fakes import synthmed_tasks


def test_dynamic_threshold_keeps_every_tie_at_the_kth_unique_score():
    ids = ["a", "b", "c", "d", "e", "f", "g"]
    scores = np.array([0.9, 0.9, 0.8, 0.8, 0.8 + 1e-9, 0.7, 0.6], np.float32)
    assert dense_threshold(scores, 2) == pytest.approx(0.8)
    assert dense_stage(ids, scores, 2).tolist() == [0, 1, 2, 3, 4]  # 5 > k: all ties at 0.8 are in
    assert dense_stage(ids, scores, 1).tolist() == [0, 1]
    assert dense_stage(ids, scores, 10).tolist() == list(range(7))  # k' = #unique = 4 -> everything


def test_dense_stage_ignores_missing_slots():
    scores = np.array([0.5, 0.4, -np.inf, -np.inf], np.float32)
    assert dense_stage(["a", "b", "", ""], scores, 5).tolist() == [0, 1]
    assert dense_stage(["", ""], np.array([-np.inf, -np.inf]), 3).tolist() == []


def _c(i, caption, xmodal, dense=0.5):
    return Candidate(f"id{i}", caption, dense, xmodal)


def test_group_by_caption_keeps_the_best_k_v_images_per_caption():
    cands = [_c(0, "cap A", 0.1), _c(1, "cap A", 0.9), _c(2, "cap A", 0.5), _c(3, "cap B", 0.3)]
    assert [c.id for c in group_by_caption(cands, 2)] == ["id1", "id2", "id3"]
    assert [c.id for c in group_by_caption(cands, 1)] == ["id1", "id3"]


def test_bm25_gate_keeps_the_lexically_closest_captions_when_more_than_k():
    cands = [_c(0, "dermoscopy image of a melanoma", 0.9), _c(1, "chest radiograph showing pneumonia", 0.1),
             _c(2, "fundus photograph with drusen", 0.8), _c(3, "chest radiograph, no finding", 0.2)]
    kept = bm25_gate("chest radiograph pneumonia", cands, 2)
    assert [c.id for c in kept] == ["id1", "id3"]
    assert bm25_gate("anything", cands[:2], 2) == cands[:2]


def test_rank_drops_text_only_entries_and_sorts_by_cross_modal_score():
    cands = [_c(0, "a", 0.2), _c(1, "b", math.nan), _c(2, "c", 0.7), _c(3, "d", math.nan)]
    ranked, dropped = rank_candidates("q", cands, k=10, k_v=1)
    assert [c.id for c in ranked] == ["id2", "id0"] and dropped == 2


@pytest.fixture
def pool(tmp_path):
    spec = {"version": 1, "domains": {
        "xray": {"label": "an X-ray", "modalities": ["xray"], "sites": {"chest": ["pneumonia", "nodule", "effusion"]}},
        "ct": {"label": "a CT scan", "modalities": ["ct"], "sites": {"head": ["bleed", "stroke"]}},
        "fundus": {"label": "a fundus photograph", "sites": {"retina": ["drusen", "exudates", "haemorrhage", "glaucoma"]}}}}
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(spec))
    return load_questions(path)


def test_siphon_levels_and_proportions(pool):
    tasks = synthmed_tasks(("xray", "ultrasound"))
    first = siphon_queries(pool, tasks, 0, a=3, b=2, c=1, n=4, seed=0)
    assert {q.level for q in first} == {"gen"} and len(first) == 4  # no earlier task: M_gen only
    second = siphon_queries(pool, tasks, 1, a=3, b=2, c=1, n=4, seed=0)
    levels = [q.level for q in second]
    assert levels.count("task") == len(tasks[0].classes) == 5
    assert [q.question.domain for q in second if q.level == "domain"] == ["xray"] * 3
    gen = [q.question for q in second if q.level == "gen"]
    assert len(gen) == 4 and all(q.domain in ("ct", "fundus") for q in gen)
    assert nominal_size(second) == 5 * 3 + 3 * 2 + 4 * 1
    # each query has plenty of distinct candidates: the set has exactly a/b/c items per query
    ranked = {q.question.text: [_c(f"{i}-{j}", f"cap {i} {j}", 1 - j / 10) for j in range(5)]
              for i, q in enumerate(second)}
    rows = assemble(second, ranked)
    counts = {lvl: sum(r["level"] == lvl for r in rows) for lvl in ("task", "domain", "gen")}
    assert counts == {"task": 15, "domain": 6, "gen": 4}
    assert len({r["id"] for r in rows}) == len(rows)


def test_siphon_skips_pairs_an_earlier_query_took(pool):
    queries = siphon_queries(pool, synthmed_tasks(), 1, a=2, b=1, c=0, n=0, seed=0)
    shared = [_c(j, f"cap {j}", 1 - j / 10) for j in range(10)]
    rows = assemble(queries, {q.question.text: shared for q in queries})
    assert [r["id"] for r in rows] == [f"id{j}" for j in range(len(rows))]  # each query takes the next unused
    assert rows[0]["query"] == queries[0].question.text and rows[0]["level"] == "task"


def test_m_gen_sample_depends_on_seed_and_task(pool):
    tasks = synthmed_tasks()
    pick = lambda seed, i: [q.question.text for q in siphon_queries(pool, tasks, i, a=1, b=1, c=1, n=3, seed=seed)
                            if q.level == "gen"]
    assert pick(0, 1) == pick(0, 1)
    assert len({tuple(pick(s, 0)) for s in range(6)}) > 1


def test_pool_for_task_adds_earlier_class_labels(pool):
    tasks = synthmed_tasks()
    assert len(pool_for_task(pool, tasks, 0)) == len(pool) == 9
    m1 = pool_for_task(pool, tasks, 1)
    assert len(m1) == 9 + 5 and m1[-1].task == "xray" and m1[-1].text == tasks[0].class_prompts[-1][0]
