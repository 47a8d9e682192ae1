"""Driver side of PRIMED: plan every task's reference set before the TorchTrainer starts.

    plan_reference_sets(config, tasks, plan_dir, params)        # called by Primed.prepare

PRIMED's queries for task i depend only on earlier tasks' labels, all known before the run, so the
whole sequence is planned up front (DESIGN.md): per task, the siphon's queries
(:mod:`.siphon`) go through the retriever in one batched ``search_text`` call (only queries not
ranked for an earlier task), the stage-1 survivors' rows are fetched in batches of ``FETCH_BATCH``
ids and their images embedded once by the starting model (:mod:`.scorer`), and :mod:`.select`
ranks them. The result is written to ``plan_dir``:

    reference-<i>.parquet   id, caption, image (the corpus's encoded bytes), modality,
                            level (task | domain | gen | uniform | bm25 | batch), query, dense_score, xmodal_score
    plan.json               fingerprint of everything the plan depends on, and per task: rows,
                            rows per level, text-only entries dropped, retrieval seconds

A plan whose fingerprint matches (same tasks, model, seed, retrieval parameters, question file,
index manifest) is reused, so re-running a run (resume) does not retrieve again.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from medcl import storage
from medcl.primed.questions import load_questions, pool_for_task
from medcl.primed.retriever import open_retriever
from medcl.primed.scorer import StartingModelScorer
from medcl.primed.select import Candidate, dense_stage, rank_candidates
from medcl.primed.siphon import LEVELS, assemble, siphon_queries
from medcl.primed.uniform import (KeywordIndex, corpus_captions, keyword_depth, keyword_rows, uniform_keywords,
                                   uniform_rows)

PLAN_FILE = "plan.json"
FETCH_BATCH = 512
PLAN_SCHEMA = pa.schema([("id", pa.string()), ("caption", pa.string()), ("image", pa.binary()),
                         ("modality", pa.string()), ("level", pa.string()), ("query", pa.string()),
                         ("dense_score", pa.float32()), ("xmodal_score", pa.float32())])
PLANNING_FIELDS = ("k", "k_v", "a", "b", "c", "n", "over_fetch", "tie_decimals", "questions", "index_dir", "corpus_dir",
                   "builtin_per_class", "builtin_seed", "builtin_domains", "keywords", "size")
MODES = ("dynamic", "uniform", "bm25")


def reference_file(plan_dir, index: int):
    """Task ``index``'s reference set in ``plan_dir`` (a local Path, or a Location for a URI)."""
    from medcl.storage import place

    return place(plan_dir) / f"reference-{index:03d}.parquet"


class DynamicPlanner:
    """Ranks queries through ``retriever`` and ``scorer``; keeps each query's ranking for reuse."""

    def __init__(self, retriever, scorer, params):
        self.retriever, self.scorer, self.params = retriever, scorer, params
        self.ranked: dict[str, list[Candidate]] = {}
        self.dropped: dict[str, int] = {}

    def rank(self, texts: list[str]) -> None:
        todo = [t for t in dict.fromkeys(texts) if t not in self.ranked]
        if not todo:
            return
        p = self.params
        result = self.retriever.search_text(todo, p.k * p.over_fetch)
        new = list(dict.fromkeys(i for row in result.ids for i in row if i and not self.scorer.known(i)))
        for start in range(0, len(new), FETCH_BATCH):
            self.scorer.images(self.retriever.fetch(new[start:start + FETCH_BATCH]))
        queries = self.scorer.texts(todo)
        for q, text in enumerate(todo):
            ids, scores = result.ids[q], np.asarray(result.scores[q])
            paired = np.array([bool(i) and self.scorer.image(i) is not None for i in ids], dtype=bool)
            kept = np.flatnonzero(paired)[dense_stage([ids[j] for j in np.flatnonzero(paired)], scores[paired],
                                                      p.k, p.tie_decimals)]
            floor = scores[kept].min() if len(kept) else np.inf
            self.dropped[text] = int(sum(bool(i) and not paired[j] and scores[j] >= floor for j, i in enumerate(ids)))
            candidates = [Candidate(ids[j], result.captions[q][j], float(scores[j]),
                                    float(queries[q] @ self.scorer.image(ids[j]))) for j in kept]
            self.ranked[text], _ = rank_candidates(text, candidates, k=p.k, k_v=p.k_v)

    def plan(self, pool, tasks: list, index: int, seed: int, extra: tuple = ()) -> tuple[list[dict], dict]:
        """Task ``index``'s siphon rows; ``extra``: more :class:`~.siphon.SiphonQuery` after the
        siphon's (PRIMED's online mode: the current batch's class prompts)."""
        p = self.params
        queries = siphon_queries(pool, tasks, index, a=p.a, b=p.b, c=p.c, n=p.n, seed=seed) + list(extra)
        self.rank([q.question.text for q in queries])
        rows = assemble(queries, self.ranked)
        dropped = sum(self.dropped.get(t, 0) for t in {q.question.text for q in queries})
        return rows, {"queries": {lvl: sum(q.level == lvl for q in queries) for lvl in LEVELS},
                      "text_only_dropped": dropped}


def plan_fingerprint(tasks: list, params, *, seed: int, model: dict, mode: str) -> str:
    """sha256 over the tasks, the model, the seed, the planning parameters and their input files."""
    body = {"seed": seed, "model": model, "mode": mode,
            "params": {f: getattr(params, f, None) for f in PLANNING_FIELDS},
            "tasks": [[t.name, t.modality, list(t.classes), [list(p) for p in t.class_prompts]] for t in tasks]}
    questions = getattr(params, "questions", None)
    body["questions_sha"] = hashlib.sha256(Path(questions).read_bytes()).hexdigest() if questions else None
    from medcl.publish import resolve  # the index version a reader opens now (medcl.publish)

    index_json = resolve(params.index_dir) / "index.json" if getattr(params, "index_dir", None) else None
    body["index_sha"] = (hashlib.sha256(storage.read_bytes(index_json)).hexdigest()
                         if index_json and storage.is_file(index_json) else None)
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def read_plan(plan_dir: Path) -> dict | None:
    path = Path(plan_dir) / PLAN_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def saved_plan_matches(plan_dir: Path, fingerprint: str, num_tasks: int) -> bool:
    plan = read_plan(plan_dir)
    return bool(plan and plan.get("fingerprint") == fingerprint and len(plan.get("tasks", [])) == num_tasks
                and all(reference_file(plan_dir, i).is_file() for i in range(num_tasks)))


def write_reference(plan_dir: Path, index: int, rows: list[dict], fetched: list[dict]) -> Path:
    """One task's reference set: the plan rows joined with the fetched corpus rows (images)."""
    columns = {name: [] for name in PLAN_SCHEMA.names}
    for row, corpus_row in zip(rows, fetched):
        merged = {**row, "image": corpus_row["image"], "modality": corpus_row.get("modality") or ""}
        for name in PLAN_SCHEMA.names:
            columns[name].append(merged[name])
    path = reference_file(plan_dir, index)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns, schema=PLAN_SCHEMA), path)
    return path


def plan_reference_sets(tasks: list, plan_dir: Path, params, *, seed: int, model: dict, threads: int = 1,
                        retriever=None, scorer=None, mode: str = "dynamic", keyword_index=None, log=print) -> dict:
    """Plan (or reuse) every task's reference set under ``plan_dir``; return the plan summary.

    ``model``: the experiment's model section (``name``, ``pretrained``, ``image_size``), rebuilt as
    the starting model unless ``scorer`` is given; ``retriever``/``keyword_index`` replace the ones
    built from ``params`` (tests); ``mode``: ``dynamic`` (PRIMED), ``uniform`` (PRIMED_uni) or ``bm25``
    (:class:`TaskPlanner`).
    """
    plan_dir = Path(plan_dir)
    fingerprint = plan_fingerprint(tasks, params, seed=seed, model=model, mode=mode)
    if saved_plan_matches(plan_dir, fingerprint, len(tasks)):
        log(f"primed: reusing the reference sets planned in {plan_dir}")
        return read_plan(plan_dir)
    opened, previous_threads = None, torch.get_num_threads()
    torch.set_num_threads(threads)  # the starting model, run as a worker would run it
    try:
        scorer = scorer or StartingModelScorer.build(model, seed)
        if retriever is None:
            retriever, opened = open_retriever(params, scorer, tasks)
        planner = TaskPlanner(retriever, scorer, params, mode=mode, seed=seed, keyword_index=keyword_index)
        summary = {"fingerprint": fingerprint, "mode": mode, "tasks": []}
        for index, task in enumerate(tasks):
            started = time.perf_counter()
            rows, stats = planner.rows(tasks, index)
            write_reference(plan_dir, index, rows, fetch_rows(retriever, rows))
            levels = {lvl: sum(r["level"] == lvl for r in rows) for lvl in (LEVELS if mode == "dynamic" else (mode,))}
            summary["tasks"].append({"task": task.name, "rows": len(rows), "levels": levels, **stats,
                                     "retrieval_s": round(time.perf_counter() - started, 3)})
            log(f"primed: task {index + 1}/{len(tasks)} {task.name}: {len(rows)} reference pairs {levels}")
        (plan_dir / PLAN_FILE).write_text(json.dumps(summary, indent=2))
        return summary
    finally:
        torch.set_num_threads(previous_threads)
        if opened is not None:
            opened()


class TaskPlanner:
    """One task's reference rows in any mode, the same code for the driver's plan and PRIMED's
    online mode: ``dynamic`` (the siphon), ``uniform`` (PRIMED_uni: ``params.keywords`` keywords,
    ``params.size`` pairs) or ``bm25`` (same-size BM25 keyword sets); see :mod:`.uniform`.
    Rankings (and the scorer's image embeddings) are cached, so a query is ranked once."""

    def __init__(self, retriever, scorer, params, *, mode: str, seed: int, keyword_index=None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "uniform":  # each keyword must be able to give its share of the set
            params = params.model_copy(update={"k": max(params.k, keyword_depth(params.size, params.keywords))})
        self.retriever, self.mode, self.seed, self.params = retriever, mode, seed, params
        self.dynamic = DynamicPlanner(retriever, scorer, params)
        self.pool = load_questions(params.questions)
        self.keyword_index = keyword_index

    def rows(self, tasks: list, index: int, extra: tuple = ()) -> tuple[list[dict], dict]:
        if self.mode == "uniform":
            keywords = uniform_keywords(self.pool, self.params.keywords, self.seed)
            self.dynamic.rank(keywords)
            return keyword_rows(self.dynamic.ranked, keywords, self.params.size), {"keywords": len(keywords)}
        rows, stats = self.dynamic.plan(self.pool, tasks, index, self.seed, extra)
        if self.mode == "bm25":
            self.keyword_index = self.keyword_index or _keyword_index(self.params, self.retriever)
            rows = uniform_rows(self.keyword_index, pool_for_task(self.pool, tasks, index), size=len(rows),
                                seed=self.seed, task_index=index)
        return rows, stats


def fetch_rows(retriever, rows: list[dict]) -> list[dict]:
    """The corpus rows (with images) of ``rows``' ids, fetched in batches of ``FETCH_BATCH``."""
    return [r for start in range(0, len(rows), FETCH_BATCH)
            for r in retriever.fetch([row["id"] for row in rows[start:start + FETCH_BATCH]])]


def _keyword_index(params, retriever) -> KeywordIndex:
    if hasattr(retriever, "captions_with_images"):  # the built-in corpus
        return KeywordIndex(*retriever.captions_with_images())
    from medcl.corpus.retrieval import corpus_dir_of

    corpus_dir = corpus_dir_of(params.index_dir, params.corpus_dir) if params.index_dir else params.corpus_dir
    if corpus_dir is None:
        raise ValueError("strategy.corpus_dir: primed_bm25 needs the corpus directory for keyword retrieval")
    return KeywordIndex(*corpus_captions(corpus_dir))
