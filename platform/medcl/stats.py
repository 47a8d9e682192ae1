"""Statistics for comparing continual-learning methods over seeds: t-intervals and paired differences.

A comparison of two methods on the same seeds (same data draws, same initialisation, same task
order) is a *paired* design: the seed's own noise cancels in the per-seed difference, so the
difference's interval is far narrower than the two methods' intervals side by side. This module is
the one place medcl computes these numbers (``medcl study``, ``method_findings.py`` and
``docs/findings.md`` use it).

Formulas, for values ``x_1..x_n`` (``n >= 2``):

    mean        = (1/n) * sum_i x_i
    sd          = sqrt( sum_i (x_i - mean)^2 / (n - 1) )            (sample standard deviation)
    half_width  = t_{1 - (1 - level)/2, n - 1} * sd / sqrt(n)      (Student's t, two-sided)
    interval    = [mean - half_width, mean + half_width]

A paired difference applies the same to ``d_s = left_s - right_s`` over the seeds ``s`` both sides
have. Its verdict for a claim "left > right" (``direction=+1``) or "left < right" (``-1``):

    holds         the interval lies strictly on the claimed side of 0
    fails         the interval lies strictly on the other side of 0
    inconclusive  the interval contains 0 (or fewer than 2 paired seeds)

The degenerate case sd = 0 gives a zero-width interval at the mean: the verdict then follows the
sign of the mean (all seeds agree exactly), and a mean of exactly 0 is inconclusive.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

from scipy import stats as _scipy_stats

DEFAULT_LEVEL = 0.95
VERDICTS = ("holds", "fails", "inconclusive")


@dataclass(frozen=True)
class Interval:
    """Mean, sample standard deviation and two-sided t-interval of ``n`` values."""

    n: int
    mean: float
    sd: float | None
    half_width: float | None
    low: float | None
    high: float | None
    level: float = DEFAULT_LEVEL

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PairedDifference:
    """``left - right`` per shared seed, its interval and the verdict of the claim ``direction``."""

    seeds: tuple
    differences: tuple[float, ...]
    interval: Interval
    direction: int
    verdict: str

    def as_dict(self) -> dict:
        out = asdict(self)
        out["seeds"], out["differences"], out["interval"] = list(self.seeds), list(self.differences), self.interval.as_dict()
        return out


def t_interval(values: Sequence[float], level: float = DEFAULT_LEVEL) -> Interval:
    """The mean of ``values`` with a two-sided Student-t interval at ``level`` (module docstring).

    One value gives the mean with no spread (``sd``, ``half_width``, ``low``, ``high`` are None);
    no values raise ``ValueError``.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("t_interval needs at least one value")
    if any(not math.isfinite(v) for v in xs):
        raise ValueError(f"t_interval needs finite values, got {xs}")
    n, mean = len(xs), math.fsum(xs) / len(xs)
    if n == 1:
        return Interval(n=1, mean=mean, sd=None, half_width=None, low=None, high=None, level=level)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in xs) / (n - 1))
    half = float(_scipy_stats.t.ppf(1.0 - (1.0 - level) / 2.0, n - 1)) * sd / math.sqrt(n)
    return Interval(n=n, mean=mean, sd=sd, half_width=half, low=mean - half, high=mean + half, level=level)


def verdict(interval: Interval, direction: int) -> str:
    """``holds`` / ``fails`` / ``inconclusive`` for the claim that the true value has sign ``direction``."""
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 (left > right) or -1 (left < right), got {direction}")
    if interval.low is None or interval.high is None:
        return "inconclusive"
    low, high = interval.low * direction, interval.high * direction
    if direction < 0:
        low, high = high, low
    if low > 0:
        return "holds"
    if high < 0:
        return "fails"
    return "inconclusive"


def paired_difference(left: Mapping, right: Mapping, *, direction: int = 1,
                      level: float = DEFAULT_LEVEL) -> PairedDifference:
    """Per-seed ``left[s] - right[s]`` over the seeds both mappings have (values None are skipped).

    Args:
        left, right: seed -> metric value of the two methods (same seeds = paired design).
        direction: the claim: +1 "left > right", -1 "left < right".
        level: the interval's coverage.

    Raises:
        ValueError: when no seed is shared (an unpaired comparison is not what this computes).
    """
    seeds = tuple(s for s in left if s in right and left[s] is not None and right[s] is not None)
    if not seeds:
        raise ValueError(f"no seed in common: left has {sorted(left, key=str)}, right has {sorted(right, key=str)}")
    differences = tuple(float(left[s]) - float(right[s]) for s in seeds)
    interval = t_interval(differences, level)
    return PairedDifference(seeds=seeds, differences=differences, interval=interval, direction=direction,
                            verdict=verdict(interval, direction))


def format_interval(interval: Interval, digits: int = 1, signed: bool = False) -> str:
    """``"52.3 [50.1, 54.5]"`` (or ``"+2.1 [+0.4, +3.8]"`` with ``signed``); one value: the mean alone."""
    spec = f"{'+' if signed else ''}.{digits}f"
    if interval.low is None:
        return f"{interval.mean:{spec}} (n=1)"
    return f"{interval.mean:{spec}} [{interval.low:{spec}}, {interval.high:{spec}}]"
