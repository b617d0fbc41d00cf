"""Paired comparisons: the t-interval recomputed another way (scipy's paired t-test), and the verdicts."""
import math

import pytest
from scipy import stats

from saol_core.study.stats import VERDICTS, Paired, half_width, paired, verdict


def test_paired_interval_matches_scipy_ttest_rel():
    a = {0: 91.2, 1: 90.4, 2: 91.9, 3: 90.8, 4: 91.5, 7: 99.0}   # seed 7 has no partner: left out
    b = {0: 90.1, 1: 90.6, 2: 90.9, 3: 89.7, 4: 90.2, 5: 80.0}
    p = paired(a, b)
    seeds = [0, 1, 2, 3, 4]
    ref = stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).confidence_interval(0.95)
    assert p.n == 5
    assert p.mean == pytest.approx(sum(a[s] - b[s] for s in seeds) / 5)
    assert (p.lo, p.hi) == (pytest.approx(ref.low), pytest.approx(ref.high))
    # by hand: t(0.975, 4) = 2.7764
    assert p.hi - p.mean == pytest.approx(2.7764 * p.sd / math.sqrt(5), rel=1e-4)


def test_paired_with_fewer_than_two_seeds_has_no_interval():
    assert paired({0: 1.0}, {1: 2.0}) == Paired(0, None, None, None, None)
    assert paired({0: 3.0}, {0: 1.0}) == Paired(1, 2.0, None, None, None)
    assert verdict(paired({0: 3.0}, {0: 1.0}), 0.5) == "too few seeds"


@pytest.mark.parametrize("lo, hi, paper, expected", [
    (0.1, 0.9, 0.53, "reproduced"),                      # excludes 0 on the paper's side, holds its Δ
    (-0.9, -0.1, -0.75, "reproduced"),
    (0.1, 0.9, 0.9, "reproduced"),                       # the paper's Δ on the interval's edge counts as inside
    (1.0, 3.0, 0.44, "same direction, larger"),          # e.g. a Δ several times the paper's
    (0.05, 0.3, 1.61, "same direction, smaller"),
    (-3.0, -1.0, -0.2, "same direction, larger"),
    (-0.2, 0.3, 1.61, "smaller than the paper's"),       # holds 0, not the paper's Δ
    (-0.3, 0.2, -1.2, "smaller than the paper's"),
    (-0.2, 0.9, 0.53, "inconclusive"),                   # holds both
    (-0.9, -0.1, 0.53, "contradicted"),
    (0.1, 0.9, -0.2, "contradicted"),
    (-0.3, 0.4, 0.0, "reproduced"),                      # a paper Δ of 0 is a number: no difference reproduces it
    (0.1, 0.4, 0.0, "contradicted"),
    (-0.4, -0.1, 0.0, "contradicted"),
    (-0.2, 0.9, None, "no difference seen"),             # no paper number: their own words
    (0.2, 0.9, None, "differs"),
    (-0.9, -0.2, None, "differs"),
])
def test_verdicts_on_sign_and_size(lo, hi, paper, expected):
    assert verdict(Paired(3, (lo + hi) / 2, 1.0, lo, hi), paper) == expected
    assert expected in VERDICTS


def test_every_verdict_word_is_reachable_and_defined():
    cases = [(lo, hi, d) for lo, hi in [(0.1, 0.9), (1.0, 3.0), (0.05, 0.3), (-0.2, 0.3), (-0.2, 0.9), (-0.9, -0.1)]
             for d in (0.53, -0.2, 0.0, None, 1.61)]
    seen = {verdict(Paired(3, (lo + hi) / 2, 1.0, lo, hi), d) for lo, hi, d in cases} | {verdict(Paired(1, 1.0, None, None, None), 1.0)}
    assert seen | {"no same-class pair"} == set(VERDICTS)  # that one is the report's (saol_core.study.report)


def test_half_width_is_the_distance_from_the_mean_to_either_end():
    p = paired({0: 3.0, 1: 4.0, 2: 3.5}, {0: 1.0, 1: 1.5, 2: 1.2})
    assert half_width(p) == pytest.approx(p.hi - p.mean) == pytest.approx(p.mean - p.lo)
    assert half_width(paired({0: 1.0}, {0: 2.0})) is None
