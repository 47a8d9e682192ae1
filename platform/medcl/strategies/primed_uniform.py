"""PRIMED with uniform keyword retrieval: the ablation of the question hierarchy and dynamic siphon.

Everything as ``primed`` (losses, teacher, DFG, planning on the driver), except each task's
reference set: the same number of pairs as PRIMED's, chosen by BM25 keyword retrieval with the
queries of M^i taken in turn (:mod:`medcl.primed.uniform`).
"""
from __future__ import annotations

from medcl.strategies.base import register_strategy
from medcl.strategies.primed import Primed


@register_strategy("primed_uniform")
class PrimedUniform(Primed):
    description = "PRIMED's losses on a same-size reference set from uniform keyword (BM25) retrieval"
    plan_mode = "uniform"
