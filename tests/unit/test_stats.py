"""medcl.stats: t-intervals and paired differences against SciPy's own t-test, and the verdict rule."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from medcl.stats import format_interval, paired_difference, t_interval, verdict

finite = st.floats(min_value=-100, max_value=100, allow_nan=False, allow_infinity=False)


def test_interval_matches_scipy_one_sample_t_test():
    values = [52.0, 55.5, 49.25, 58.0, 51.5]
    ours = t_interval(values, 0.95)
    theirs = scipy_stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
    assert ours.n == 5
    assert ours.sd == pytest.approx(scipy_stats.tstd(values))  # sample (n - 1) sd, not population
    assert (ours.low, ours.high) == pytest.approx((theirs.low, theirs.high))


def test_sample_sd_is_not_the_population_sd():
    values = [1.0, 2.0, 3.0]
    assert t_interval(values).sd == pytest.approx(1.0)  # population sd would be 0.816


def test_one_value_has_no_interval_and_no_values_is_an_error():
    single = t_interval([3.0])
    assert (single.mean, single.low, single.high) == (3.0, None, None)
    assert format_interval(single) == "3.0 (n=1)"
    with pytest.raises(ValueError, match="at least one"):
        t_interval([])
    with pytest.raises(ValueError, match="finite"):
        t_interval([1.0, math.nan])


def test_paired_difference_uses_only_shared_seeds_and_cancels_seed_noise():
    # Seed effects of +-10 dwarf a constant +1 advantage: unpaired intervals overlap, the paired one does not.
    base = {0: 40.0, 1: 60.0, 2: 50.0, 3: 45.0, 4: 55.0}
    better = {s: v + 1.0 + 0.1 * s for s, v in base.items()}
    better[9] = 99.0  # not shared: ignored
    diff = paired_difference(better, base, direction=+1)
    assert diff.seeds == (0, 1, 2, 3, 4)
    assert diff.differences == pytest.approx((1.0, 1.1, 1.2, 1.3, 1.4))
    assert diff.verdict == "holds"
    assert t_interval(list(base.values())).high > t_interval([better[s] for s in base]).low  # unpaired: overlap
    assert paired_difference(base, better, direction=+1).verdict == "fails"
    assert paired_difference(base, better, direction=-1).verdict == "holds"


def test_paired_difference_without_shared_seeds_is_an_error():
    with pytest.raises(ValueError, match="no seed in common"):
        paired_difference({0: 1.0}, {1: 2.0})


@pytest.mark.parametrize("low, high, direction, expected", [
    (0.5, 2.0, 1, "holds"), (-2.0, -0.5, 1, "fails"), (-0.5, 2.0, 1, "inconclusive"),
    (-2.0, -0.5, -1, "holds"), (0.5, 2.0, -1, "fails"), (0.0, 0.0, 1, "inconclusive")])
def test_verdict_rule(low, high, direction, expected):
    from medcl.stats import Interval
    assert verdict(Interval(n=5, mean=(low + high) / 2, sd=1.0, half_width=(high - low) / 2, low=low, high=high),
                   direction) == expected


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(finite, finite), min_size=2, max_size=8))
def test_verdict_agrees_with_scipys_paired_t_test(pairs):
    left = {i: a for i, (a, _) in enumerate(pairs)}
    right = {i: b for i, (_, b) in enumerate(pairs)}
    diff = paired_difference(left, right, direction=+1)
    differences = [a - b for a, b in pairs]
    if diff.interval.sd is None or diff.interval.sd < 1e-9 * max(1.0, max(abs(d) for d in differences)):
        return  # a constant difference: SciPy's p-value is undefined there
    result = scipy_stats.ttest_rel([a for a, _ in pairs], [b for _, b in pairs])
    if abs(result.pvalue - 0.05) < 1e-6:
        return  # on the boundary either answer is right
    excludes_zero = diff.verdict != "inconclusive"
    assert excludes_zero == (result.pvalue < 0.05)
    if excludes_zero:
        assert (diff.verdict == "holds") == (diff.interval.mean > 0)


def test_format_interval_signed():
    assert format_interval(t_interval([1.0, 2.0, 3.0]), signed=True).startswith("+2.0 [-0.")
