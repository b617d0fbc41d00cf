"""Concurrent runs with split threads: aggregate training images/s of ``jobs`` processes x ``threads``
threads each (e.g. one run with 2 threads vs two runs with 1 thread on a 2-core CPU, or 1 vs 4 vs 12 runs
sharing one GPU), the choice a study's ``--jobs`` makes. Layouts alternate over the repeats so that a load
change hits all alike."""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
from typing import Sequence

from .. import markdown
from .measure import Stats, summarize
from .recipes import BenchSettings


def parse_layout(text: str) -> tuple[int, int]:
    """"2x1" -> (2 jobs, 1 thread each)."""
    try:
        jobs, threads = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"layout {text!r} must look like <jobs>x<threads>, e.g. 2x1") from None
    if jobs < 1 or threads < 1:
        raise ValueError(f"layout {text!r}: jobs and threads must be >= 1")
    return jobs, threads


def _worker(backbone: str, recipe: str, settings: BenchSettings, device: str, threads: int, barrier, out) -> None:
    import torch

    from .recipes import bench_backbone
    torch.set_num_threads(threads)
    barrier.wait()  # all jobs of a layout time their steps together
    row = bench_backbone(backbone, [recipe], dataclasses.replace(settings, mode="train"), torch.device(device))[0]
    out.put(row.ips.median)


def bench_layouts(backbone: str, recipe: str, layouts: Sequence[tuple[int, int]], settings: BenchSettings,
                  rounds: int = 2, device: str = "cpu") -> dict[tuple[int, int], dict]:
    """{layout: {"per_run": Stats of one job's img/s, "aggregate": Stats of the jobs' summed img/s}}, each
    layout measured ``rounds`` times (layouts interleaved); on a GPU the jobs share it."""
    ctx = mp.get_context("spawn")
    found: dict[tuple[int, int], dict[str, list[float]]] = {l: {"per_run": [], "aggregate": []} for l in layouts}
    for _ in range(rounds):
        for jobs, threads in layouts:
            barrier, out = ctx.Barrier(jobs), ctx.Queue()
            procs = [ctx.Process(target=_worker, args=(backbone, recipe, settings, device, threads, barrier, out))
                     for _ in range(jobs)]
            for p in procs:
                p.start()
            rates = [out.get() for _ in procs]
            for p in procs:
                p.join()
            found[(jobs, threads)]["per_run"] += rates
            found[(jobs, threads)]["aggregate"].append(sum(rates))
    return {l: {k: summarize(v) for k, v in d.items()} for l, d in found.items()}


def layouts_table(backbone: str, recipe: str, results: dict[tuple[int, int], dict]) -> str:
    """Markdown: layout, one run's img/s, aggregate img/s, aggregate vs the first layout."""
    first = next(iter(results.values()))["aggregate"].median if results else 1.0
    return markdown.table(["backbone", "recipe", "runs x threads", "one run: img/s median [min-max]",
                           "all runs: img/s median [min-max]", "x first layout"],
                          [[backbone, recipe, f"{jobs} x {threads}", _fmt(r["per_run"]), _fmt(r["aggregate"]),
                            f"{r['aggregate'].median / first:.2f}"] for (jobs, threads), r in results.items()])


def _fmt(s: Stats) -> str:
    return f"{s.median:.0f} [{s.min:.0f}-{s.max:.0f}]"
