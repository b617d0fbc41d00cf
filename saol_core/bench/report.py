"""reports/BENCHMARKS.md: one section per (device, command), tables, profile, targets met or missed."""
from __future__ import annotations

import platform
import re
from pathlib import Path

import torch
import torchvision

from .. import markdown
from ..runs import atomic_write_text
from .measure import Stats, cost_ratio
from .recipes import COMPILED, PROFILE_PASSES, Row

TARGETS = {"resident_vs_conventional": 1.2, "saol_vs_gap": 1.10, "full_vs_gap_cutmix": 1.35, "resident_vs_official": 2.0}
"""The speed targets of the project's speed issue (CPU, 2 cores)."""
MARK = "<!-- bench-section: {} -->"
HEADER = """# Throughput benchmarks

Made by `python -m saol_core.bench` (see its docstring for the method). One section per (device,
command); re-running a command on the same device replaces its section and keeps the others.
"""


def fmt_stats(s: Stats, digits: int = 0) -> str:
    return f"{s.median:.{digits}f} [{s.min:.{digits}f}-{s.max:.{digits}f}]"


def rows_table(rows: list[Row]) -> str:
    out = []
    for row in rows:
        base = {r.recipe: r.ips.values for r in rows if r.backbone == row.backbone and r.mode == row.mode}
        same = COMPILED if row.recipe.endswith(COMPILED) else ""   # a compiled row against the compiled baseline
        ratio = {k: f"{cost_ratio(row.ips.values, base[k + same]):.3f}" if k + same in base else "-"
                 for k in ("gap", "gap+cutmix")}
        p = f"{row.cutmix_prob:g} ({row.mixed})" if row.cutmix_prob else "-"
        out.append([row.backbone, row.recipe, p, row.teacher, f"{row.macs / 1e9:.4f}", fmt_stats(row.ips),
                    ratio["gap"], ratio["gap+cutmix"], "-" if row.fraction is None else f"{100 * row.fraction:.1f}"])
    return markdown.table(["backbone", "recipe", "CutMix p (mixed steps)", "SS2 teacher", "GMACs/img",
                           "img/s median [min-max]", "x GAP-FC", "x GAP-FC+CutMix", "% peak"], out)


PROFILE_ORDER = ["cutmix", "forward backbone", "forward saol", "forward gap", "forward mask", "losses",
                 "ss2 teacher", "  of which teacher backbone + heads", "backward", "optimizer", "other",
                 "step (wall, profiled)"]


def profile_table(profiles: dict) -> str:
    """One table per backbone: parts of the step (rows) x recipes (columns), ms per step."""
    out = []
    for backbone in dict.fromkeys(b for b, _ in profiles):
        recipes = [r for b, r in profiles if b == backbone]
        seen = {k for r in recipes for k in profiles[(backbone, r)]}
        parts = [k for k in PROFILE_ORDER if k in seen] + sorted(seen - set(PROFILE_ORDER))
        out += [markdown.table([f"{backbone}: ms/step", *recipes],
                               [[k, *(f"{profiles[(backbone, r)][k]:.1f}" if k in profiles[(backbone, r)] else "-"
                                      for r in recipes)] for k in parts]), ""]
    return "\n".join(out)


PIPELINE_LABELS = {"conventional": "conventional data (DataLoader, {w} workers) + this project's step",
                   "resident": "device-resident data (saol_core.data) + this project's step",
                   "official loop": "the official loop: conventional data + its ResNet and step (fp32, NCHW)",
                   "resident (fp32)": "device-resident data + this project's step in fp32"}


def pipelines_table(pipes: dict, workers: int) -> str:
    """One row per timed pipeline: images/s and the ratios to the conventional pipeline and official loop."""
    official = pipes.get("vs_official")
    out = [[PIPELINE_LABELS[k].format(w=workers), fmt_stats(s), f"{s.median / pipes['ips']['conventional'].median:.2f}",
            *([f"{official[k]:.2f}"] if official else [])] for k, s in pipes["ips"].items()]
    return markdown.table(["pipeline", "img/s median [min-max]", "x conventional",
                           *(["x official loop"] if official else [])], out)


def target_lines(rows: list[Row], pipes: dict | None) -> list[str]:
    """'met' / 'missed' for each target that the measured rows allow checking."""
    lines = []
    for row in (r for r in rows if r.mode == "train"):
        base = {r.recipe: r.ips.values for r in rows if r.backbone == row.backbone and r.mode == "train"}
        for recipe, ref, key in (("saol", "gap", "saol_vs_gap"), ("full", "gap+cutmix", "full_vs_gap_cutmix"),
                                 ("full-step-teacher", "gap+cutmix", "full_vs_gap_cutmix")):
            if row.recipe == recipe and ref in base:
                v = cost_ratio(row.ips.values, base[ref])
                verdict = "met" if v <= TARGETS[key] else "MISSED"
                if recipe == "full-step-teacher":  # not the default recipe: shown for the record
                    verdict = f"would be {verdict.lower()}; not the default (SS2 teacher at the step's precision)"
                lines.append(f"- {row.backbone}: {recipe} / {ref} = {v:.3f} (target <= {TARGETS[key]}): {verdict}")
    if pipes:
        v, goal = pipes["ratio"], TARGETS["resident_vs_conventional"]
        lines.append(f"- {pipes['backbone']}: resident / conventional pipeline = {v:.2f}x (target >= {goal}x): "
                     f"{'met' if v >= goal else 'MISSED'}")
        if pipes.get("vs_official"):
            v, goal = pipes["vs_official"]["resident"], TARGETS["resident_vs_official"]
            same = pipes["vs_official"].get("resident (fp32)")
            lines.append(f"- {pipes['backbone']}: this project's loop ({pipes['precision']}) / the official loop (fp32) = "
                         f"{v:.2f}x (goal >= {goal}x): {'met' if v >= goal else 'MISSED'}"
                         + (f"; at the same precision (fp32): {same:.2f}x" if same else ""))
    return lines


def compile_lines(rows: list[Row]) -> list[str]:
    """How much faster each recipe's compiled step is than its eager one (both timed in this process,
    interleaved): the median over repeats of eager time / compiled time."""
    ips = {(r.backbone, r.mode, r.recipe): r.ips.values for r in rows}
    lines = []
    for r in rows:
        eager = (r.backbone, r.mode, r.recipe.removesuffix(COMPILED))
        if r.recipe.endswith(COMPILED) and eager in ips:
            lines.append(f"- {r.backbone}: {eager[2]} compiled / eager ({r.mode}) = "
                         f"{cost_ratio(ips[eager], r.ips.values):.3f}x faster")
    return lines


def render_section(key: str, command: str, env: dict, settings: dict, rows: list[Row], pipes: dict | None,
                   profiles: dict | None = None, layouts: str | None = None) -> str:
    hw = env["hardware"]
    parts = [MARK.format(key), f"## {env['device_label']}: `{command}`", "",
             f"- date: {env['date']}; load average (1 min) before / after: {env['load'][0]:.2f} / {env['load'][1]:.2f}",
             f"- hardware: {hw.get('gpu', hw['cpu'])}; CPU {hw['cpu']}, {hw['cpu_count']} cores, "
             f"{hw['torch_threads']} torch threads",
             f"- software: torch {torch.__version__}, torchvision {torchvision.__version__}, "
             f"Python {platform.python_version()}",
             "- settings: " + ", ".join(f"{k} {v}" for k, v in settings.items()),
             f"- peak ({env['peak_dtype']}): " + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in env["peak"].items()),
             ""]
    for mode in ("train", "infer"):
        sub = [r for r in rows if r.mode == mode]
        if sub:
            what = "training step (CutMix + forward + losses + backward + SGD)" if mode == "train" else "inference forward"
            parts += [f"### Model-only {what}, synthetic device-resident batches", "", rows_table(sub), ""]
    if pipes:
        parts += ["### End to end (data + training step): conventional vs device-resident pipeline", "",
                  f"{pipes['backbone']}, GAP-FC + CutMix p={pipes['cutmix_prob']:g}, {pipes['data']}, "
                  f"{pipes['images']} images ({pipes['steps']} steps) per repeat; conventional augmentation: "
                  f"{', '.join(pipes['augment'])} per image in the DataLoader ({settings['workers']} workers) + host CutMix "
                  f"(the resident loader applies the same crop/flip as one gather on the device).", "",
                  pipelines_table(pipes, settings["workers"]), ""]
    if layouts:
        parts += ["### Concurrent runs with split threads (training step, aggregate images/s)", "",
                  "Each layout: that many processes, started together, each timing the first recipe with that "
                  "many torch threads; layouts interleaved over 2 rounds.", "", layouts, ""]
    if profiles:
        parts += ["### Where a training step's time goes (torch.profiler, CPU time, ms per step)", "",
                  f"Median of {PROFILE_PASSES} profiled passes of --steps steps (mixed and clean steps "
                  "averaged). forward <part> = the training forward of that module; ss2 teacher = SS2's "
                  "no-grad clean forward (the teacher's parts are inside it); backward = autograd engine.", "",
                  profile_table(profiles)]
    faster = compile_lines(rows)
    if faster:
        parts += ["Compiled against eager (median over the repeats of the paired time ratio):", *faster, ""]
    targets = target_lines(rows, pipes)
    if targets:
        parts += ["Targets:", *targets, ""]
    return "\n".join(parts).rstrip() + "\n"


def update_report(path: str | Path, key: str, section: str) -> str:
    """Replace the section marked ``key`` in ``path`` (or append it); other sections are kept verbatim."""
    path = Path(path)
    text = path.read_text() if path.exists() else HEADER
    marks = list(re.finditer(re.escape(MARK.format("")[:-4]) + r"(.*?) -->\n", text))
    chunks = {m.group(1): text[m.start(): marks[i + 1].start() if i + 1 < len(marks) else len(text)]
              for i, m in enumerate(marks)}
    head = text[: marks[0].start()] if marks else text
    chunks[key] = section
    out = head.rstrip() + "\n\n" + "\n".join(c.rstrip() + "\n" for c in chunks.values())
    atomic_write_text(path, out)
    return out
