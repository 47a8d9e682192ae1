"""A study's statistics, all from :mod:`medcl.stats` (the one place medcl computes them).

The unit of replication is the seed. With ``x[s, o]`` a metric of the run with seed ``s`` and task
order ``o`` (complete runs only)::

    per_seed[s]      = mean_o x[s, o]                     (orders averaged within a seed)
    interval         = t_interval(per_seed over s)        (mean, 95 % Student-t interval over seeds)
    per_order[o]     = mean_s x[s, o]
    order_spread     = max_o per_order[o] - min_o per_order[o];  order_sd = sd over o of per_order
    paired vs base   = paired_difference(per_seed[method], per_seed[baseline], direction)
                       direction +1 (higher is better), -1 for forgetting;
                       verdict holds -> "better", fails -> "worse", else "inconclusive"
    claim            = paired_difference(per_seed[left], per_seed[right], direction of the claim):
                       holds / fails / inconclusive ("left beats right on metric")
    ablation         = paired_difference(per_seed[label], per_seed[of]) on Transfer, Avg, Last;
                       no direction claimed (the verdict read as "the switch raises the metric")
"""
from __future__ import annotations

import math
from collections import defaultdict

from medcl.stats import paired_difference, t_interval
from medcl.study.config import ABLATION_METRICS, LOWER_IS_BETTER, STUDY_METRICS

VERDICT_WORDS = {"holds": "better", "fails": "worse", "inconclusive": "inconclusive"}


def study_metrics(runs: list[dict]) -> list[str]:
    """:data:`STUDY_METRICS`, then ``auc_<m>`` for each of them that every complete run has."""
    complete = [r["metrics"] for r in runs if r["complete"]]
    auc = [f"auc_{m}" for m in STUDY_METRICS if complete and all(r.get(f"auc_{m}") is not None for r in complete)]
    return [*STUDY_METRICS, *auc]


def method_statistics(runs: list[dict], metric: str, level: float) -> dict | None:
    """The per-seed, per-order and interval figures of one method's ``runs`` for ``metric`` (module doc)."""
    cells: dict[tuple, float] = {}
    for r in runs:
        value = (r["metrics"] or {}).get(metric) if r["complete"] else None
        if value is not None and math.isfinite(value):
            cells[(r["seed"], r["order"])] = float(value)
    if not cells:
        return None
    by_seed, by_order = defaultdict(list), defaultdict(list)
    for (seed, order), value in cells.items():
        by_seed[seed].append(value)
        by_order[order].append(value)
    per_seed = {s: sum(v) / len(v) for s, v in sorted(by_seed.items())}
    per_order = {o: sum(v) / len(v) for o, v in by_order.items()}
    spread = max(per_order.values()) - min(per_order.values())
    order_sd = t_interval(list(per_order.values()), level).sd if len(per_order) > 1 else None
    return {"interval": t_interval(list(per_seed.values()), level).as_dict(), "per_seed": per_seed,
            "per_order": per_order, "order_spread": spread, "order_sd": order_sd, "runs": len(cells)}


def paired_against(method_stats: dict, baseline_stats: dict, metric: str, level: float) -> dict | None:
    """``method - baseline`` per seed with interval and verdict (module doc), or None when no seed is shared."""
    direction = -1 if metric in LOWER_IS_BETTER else 1
    try:
        diff = paired_difference(method_stats["per_seed"], baseline_stats["per_seed"], direction=direction, level=level)
    except ValueError:
        return None
    out = diff.as_dict()
    out["verdict_word"] = VERDICT_WORDS[diff.verdict]
    return out


def analyse(runs: list[dict], labels: list[str], baseline: str, level: float, claims=(), ablations=()) -> dict:
    """``{"metrics", "level", "baseline", "methods": {label: {metric: stats}}, "paired": {label: {metric: diff}},
    "claims": [...], "ablations": [...]}`` (``claims``/``ablations``: :class:`~medcl.study.config.Claim` and
    :class:`~medcl.study.config.Ablation` items; see the module doc)."""
    metrics = study_metrics(runs)
    methods = {label: {m: method_statistics([r for r in runs if r["method"] == label], m, level) for m in metrics}
               for label in labels}
    paired = {}
    for label in labels:
        if label == baseline:
            continue
        paired[label] = {m: paired_against(methods[label][m], methods[baseline][m], m, level)
                         if methods[label][m] and methods[baseline][m] else None for m in metrics}
    return {"metrics": metrics, "level": level, "baseline": baseline, "methods": methods, "paired": paired,
            "claims": [check_claim(methods, c, level) for c in claims],
            "ablations": [ablation_row(methods, a, level) for a in ablations]}


def _paired(methods: dict, left: str, right: str, metric: str, direction: int, level: float) -> dict | None:
    a, b = (methods[left].get(metric) or {}).get("per_seed"), (methods[right].get(metric) or {}).get("per_seed")
    if not a or not b:
        return None
    try:
        return paired_difference(a, b, direction=direction, level=level).as_dict()
    except ValueError:  # no seed in common
        return None


def check_claim(methods: dict, claim, level: float) -> dict:
    """The claim with its paired difference (``left - right`` per seed) and verdict; ``verdict`` None
    when a side has no complete run for the metric."""
    direction = 1 if claim.direction == "higher" else -1
    diff = _paired(methods, claim.left, claim.right, claim.metric, direction, level)
    return {**claim.model_dump(), **(diff or {"verdict": None})}


def ablation_row(methods: dict, ablation, level: float) -> dict:
    """``label - of`` per seed on each of :data:`ABLATION_METRICS` (None where a side has no runs)."""
    return {"label": ablation.label, "of": ablation.of,
            "metrics": {m: _paired(methods, ablation.label, ablation.of, m, 1, level) for m in ABLATION_METRICS}}
