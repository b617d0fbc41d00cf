"""Paired comparisons: the t-interval recomputed another way (scipy's paired t-test), and the verdicts."""
import math

import pytest
from scipy import stats

from saol_core.study.stats import Paired, paired, verdict


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
    (0.1, 0.9, 0.53, "reproduced"),
    (-0.9, -0.1, -0.75, "reproduced"),
    (-0.9, -0.1, 0.53, "contradicted"),
    (0.1, 0.9, -0.2, "contradicted"),
    (-0.2, 0.9, 0.53, "unresolved"),
    (-0.2, 0.9, None, "no difference resolved"),
    (0.2, 0.9, None, "differs"),
])
def test_verdicts(lo, hi, paper, expected):
    assert verdict(Paired(3, (lo + hi) / 2, 1.0, lo, hi), paper) == expected
