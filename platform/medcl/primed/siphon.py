"""PRIMED's dynamic siphon (docs/methods.md#5-primed): which queries of M^i feed task i's reference set.

Before task i (0-based, tasks in training order), M^i splits into three levels:

    M_task   = the class-label entries of tasks 0..i-1              (a items per query)
    M_domain = M0 questions whose domain matches an earlier task's   (b items per query)
               modality (``QuestionPool.domains_for``)
    M_gen    = n questions drawn uniformly without replacement from   (c items per query)
               the rest of M0, seeded by (seed, "siphon", i) (medcl.seeds)

So the nominal size is a*|M_task| + b*|M_domain| + c*n. The first task has no earlier task: its
reference set comes from M_gen alone. :func:`assemble` walks the queries level by level (task,
domain, gen; pool order within a level) and takes each query's next best pairs not chosen by an
earlier query, so a pair appears once, credited to the first query that chose it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medcl import seeds
from medcl.primed.questions import Question, QuestionPool, task_questions
from medcl.primed.select import Candidate

LEVELS = ("task", "domain", "gen")


@dataclass(frozen=True)
class SiphonQuery:
    question: Question
    level: str
    take: int


def siphon_queries(pool: QuestionPool, tasks: list, index: int, *, a: int, b: int, c: int, n: int,
                   seed: int) -> list[SiphonQuery]:
    """The levelled queries of task ``index`` (see the module docstring)."""
    earlier = tasks[:index]
    m_task = [q for task in earlier for q in task_questions(pool, task)]
    domains = set().union(*(pool.domains_for(t.modality) for t in earlier)) if earlier else set()
    m_domain = [q for q in pool.questions if q.domain in domains]
    rest = [q for q in pool.questions if q.domain not in domains]
    picked = seeds.rng(seed, "siphon", index).choice(len(rest), min(n, len(rest)), replace=False)
    m_gen = [rest[i] for i in np.sort(picked)]
    return ([SiphonQuery(q, "task", a) for q in m_task] + [SiphonQuery(q, "domain", b) for q in m_domain]
            + [SiphonQuery(q, "gen", c) for q in m_gen])


def nominal_size(queries: list[SiphonQuery]) -> int:
    return sum(q.take for q in queries)


def assemble(queries: list[SiphonQuery], ranked: dict[str, list[Candidate]]) -> list[dict]:
    """Rows ``{id, caption, level, query, dense_score, xmodal_score}`` from each query's ranked list."""
    chosen: set[str] = set()
    rows = []
    for query in queries:
        taken = 0
        for candidate in ranked.get(query.question.text, []):
            if taken == query.take:
                break
            if candidate.id in chosen:
                continue
            chosen.add(candidate.id)
            taken += 1
            rows.append({"id": candidate.id, "caption": candidate.caption, "level": query.level,
                         "query": query.question.text, "dense_score": candidate.dense,
                         "xmodal_score": candidate.xmodal})
    return rows
