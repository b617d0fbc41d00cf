"""Paired comparisons of two table cells over the seeds both ran: the mean per-seed difference, its 95 %
t-interval, and a verdict against the paper's difference on sign and size.

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


VERDICTS = {
    "reproduced": "the interval contains the paper's Δ and excludes 0 on its side (for a paper Δ of 0: "
                  "contains 0)",
    "same direction, larger": "the interval excludes 0 on the paper's side, and lies beyond the paper's Δ",
    "same direction, smaller": "the interval excludes 0 on the paper's side, and lies short of the paper's Δ",
    "smaller than the paper's": "the interval contains 0 but not the paper's Δ: an effect of the paper's size "
                                "would have been seen, and was not",
    "inconclusive": "the interval contains both 0 and the paper's Δ: these seeds cannot tell them apart",
    "contradicted": "the interval excludes 0 on the side opposite the paper's Δ (for a paper Δ of 0: excludes 0)",
    "differs": "no paper number; the interval excludes 0",
    "no difference seen": "no paper number; the interval contains 0 (a difference beyond its half-width would "
                          "have been seen)",
    "too few seeds": "fewer than 2 paired seeds: no interval",
    "no same-class pair": "no seed ran both cells on one hardware class: nothing is paired, no verdict",
}
"""Every verdict word a report may print, with its definition (the reports' legend and docs/method.md)."""


def verdict(p: Paired, paper_delta: float | None) -> str:
    """Our paired interval against the paper's Δ, on sign and size (the words of ``VERDICTS``). A paper Δ
    of 0 is a number: "no difference" is then what reproduces it."""
    if p.lo is None:
        return "too few seeds"
    excludes_zero = p.lo > 0 or p.hi < 0
    if paper_delta is None:
        return "differs" if excludes_zero else "no difference seen"
    if paper_delta == 0:
        return "contradicted" if excludes_zero else "reproduced"
    holds_paper = p.lo <= paper_delta <= p.hi
    if not excludes_zero:
        return "inconclusive" if holds_paper else "smaller than the paper's"
    if (p.lo > 0) != (paper_delta > 0):
        return "contradicted"
    if holds_paper:
        return "reproduced"
    return "same direction, larger" if abs(p.mean) > abs(paper_delta) else "same direction, smaller"


def half_width(p: Paired) -> float | None:
    """Half the interval's width: the smallest difference these seeds could tell from 0."""
    return None if p.lo is None else (p.hi - p.lo) / 2
