"""Paired comparisons of two table cells over the seeds both ran: the mean per-seed difference, its 95 %
t-interval, and a verdict against the sign of the paper's difference.

Seed s of every row starts from the same initial weights and data order (``saol_core.train``), so the
per-seed difference removes that shared variation; the interval is Student's t on those differences.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats

LEVEL = 0.95


@dataclass
class Paired:
    n: int                 # seeds both cells finished
    mean: float | None     # mean of (a - b) over those seeds
    sd: float | None       # sample std of the differences
    lo: float | None       # LEVEL t-interval of the mean difference
    hi: float | None


def paired(a: dict[int, float], b: dict[int, float], level: float = LEVEL) -> Paired:
    """``a``, ``b``: {seed: value}. Differences over the common seeds; no interval below 2 seeds."""
    diffs = [a[s] - b[s] for s in sorted(set(a) & set(b))]
    n = len(diffs)
    if n == 0:
        return Paired(0, None, None, None, None)
    mean = sum(diffs) / n
    if n < 2:
        return Paired(1, mean, None, None, None)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return Paired(n, mean, sd, mean - half, mean + half)


def verdict(p: Paired, paper_delta: float | None) -> str:
    """reproduced: the interval excludes 0 on the paper's side; contradicted: it excludes 0 on the other
    side; unresolved: it includes 0. Without a paper sign: "differs" / "no difference resolved"."""
    if p.lo is None:
        return "too few seeds"
    if not paper_delta:
        return "differs" if p.lo > 0 or p.hi < 0 else "no difference resolved"
    if p.lo > 0 or p.hi < 0:
        return "reproduced" if (p.lo > 0) == (paper_delta > 0) else "contradicted"
    return "unresolved"
