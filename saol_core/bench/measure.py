"""The clock, per-repeat statistics, cost ratios, FLOP fractions and the device's measured peak."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

Clock = Callable[[Callable[[], None], torch.device], float]


@dataclass
class Stats:
    median: float
    min: float
    max: float
    values: list[float]


def summarize(values: Sequence[float]) -> Stats:
    """Median, min and max of per-repeat figures (images/s)."""
    if not values:
        raise ValueError("no repeats to summarize")
    return Stats(statistics.median(values), min(values), max(values), list(values))


def cost_ratio(images_per_s: Sequence[float], baseline_images_per_s: Sequence[float]) -> float:
    """Time per image relative to the baseline (> 1 = slower): the median over repeats of the ratio
    within each repeat, where recipe and baseline ran back to back (robust to load drifting between
    repeats on a shared machine)."""
    if len(images_per_s) != len(baseline_images_per_s):
        raise ValueError("recipe and baseline need the same repeats")
    return statistics.median(b / v for v, b in zip(images_per_s, baseline_images_per_s))


def flop_fraction(macs_per_image: float, images_per_s: float, peak_flops: float, passes: int) -> float:
    """Achieved fraction of peak: MACs x 2 FLOP/MAC x passes (3 = forward + backward) x images/s / peak."""
    return macs_per_image * 2 * passes * images_per_s / peak_flops


def timed(fn: Callable[[], None], device: torch.device) -> float:
    """Seconds taken by ``fn`` (device events on GPU: the queued work is included)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure_peak(device: torch.device, dtype: torch.dtype, trials: int = 4, clock: Clock = timed
                 ) -> dict[str, float]:
    """Best FLOP/s of a large matmul and of a large 3x3 convolution (an implicit GEMM); ``peak`` = max."""
    n, (b, c, s) = (8192, (256, 256, 32)) if device.type == "cuda" else (2048, (64, 256, 16))
    a, m = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    x = torch.randn(b, c, s, s, device=device, dtype=dtype)
    w = torch.randn(c, c, 3, 3, device=device, dtype=dtype)
    out = {}
    with torch.no_grad():
        for name, fn, flops in (("matmul", lambda: torch.mm(a, m), 2 * n**3),
                                ("conv3x3", lambda: torch.nn.functional.conv2d(x, w, padding=1),
                                 2 * b * c * c * 9 * s * s)):
            fn()
            out[name] = flops / min(clock(fn, device) for _ in range(trials))
    out["peak"] = max(out.values())
    return out
