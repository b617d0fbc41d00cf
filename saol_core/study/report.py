"""Finished runs of a study -> the paper's table (ours mean ± std over seeds, n, delta, the paper's number)
-> ``table.md`` and ``README.md`` with the figures.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .spec import ROOT, Study, expand, project_path, run_status


def metric_value(summary: dict, name: str) -> float | None:
    """A metric of a finished run; ``top1``/``top5`` = the primary head's (SAOL if present, else GAP-FC)."""
    final = summary.get("final") or {}
    if name in ("top1", "top5"):
        name = f"saol_{name}" if f"saol_{name}" in final else f"gap_{name}"
    value = final.get(name, summary.get(name))
    return float(value) if isinstance(value, (int, float)) else None


def collect(study: Study, out: str | Path):
    """One line per run of the grid: row, variant, seed, status, notebook, and its final metrics."""
    import pandas as pd
    runs_dir = project_path(out) / "runs"
    metrics = sorted({m for c in study.columns for m in c.metric} | {"saol_top1", "gap_top1"})
    lines = []
    for run in expand(study):
        status = run_status(study, run, runs_dir)
        folder = runs_dir / run.name
        summary = json.loads((folder / "summary.json").read_text()) if status == "finished" else {}
        notebook = folder / Path(study.notebook).name
        lines.append({"run": run.name, "row": run.row, "variant": run.variant, "seed": run.seed,
                      "status": status, "notebook": str(notebook) if notebook.exists() else None,
                      "wall_time_s": summary.get("wall_time_s"), "images_per_s": summary.get("images_per_s"),
                      **{m: metric_value(summary, m) if summary else None for m in metrics}})
    return pd.DataFrame(lines)


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    return mean, std


def summarize(study: Study, results):
    """The table, long form: one line per (row, column, metric) with n, mean, sample std, the paper's
    number, and the deltas of ours and the paper's to the reference cell (``delta_row``/``delta_to``)."""
    import pandas as pd
    done = results[results.status == "finished"]
    cells = {}
    for row in study.rows:
        for j, col in enumerate(study.columns):
            runs = done[(done.row == row.name) & (done.variant == col.variant)]
            paper = study.paper[row.name][j] if row.name in study.paper else [None] * len(col.metric)
            for k, metric in enumerate(col.metric):
                values = [v for v in runs[metric] if v is not None and not pd.isna(v)]
                mean, std = _mean_std(values)
                cells[row.name, col.label, k] = {
                    "row": row.name, "label": row.label, "column": col.label, "metric": metric,
                    "n": len(values), "mean": mean, "std": std, "paper": paper[k]}
    for (row, column, k), cell in cells.items():
        col = next(c for c in study.columns if c.label == column)
        ref = cells.get((study.delta_row or row, col.delta_to or column, k))
        is_self = ref is cell or ref is None
        cell["delta"] = (None if is_self or cell["mean"] is None or ref["mean"] is None
                         else cell["mean"] - ref["mean"])
        cell["paper_delta"] = (None if is_self or cell["paper"] is None or ref["paper"] is None
                               else cell["paper"] - ref["paper"])
    return pd.DataFrame(list(cells.values()))


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _num(x: float | None, signed: bool = False) -> str:
    return "—" if _missing(x) else f"{x:+.2f}" if signed else f"{x:.2f}"


def _cell(part, ours: bool) -> str:
    """One table cell from the summary lines of one (row, column): "a ± s / b ± s (+d) [n=5]"."""
    first = part.iloc[0]
    if ours and first["n"] == 0 or not ours and all(_missing(p) for p in part["paper"]):
        return "—"
    if ours:
        text = " / ".join(_num(m) + ("" if _missing(s) else f" ± {s:.2f}") for m, s in zip(part["mean"], part["std"]))
    else:
        text = " / ".join(_num(p) for p in part["paper"])
    delta = first["delta" if ours else "paper_delta"]
    text += "" if _missing(delta) else f" ({_num(delta, True)})"
    return text + (f" [n={first['n']}]" if ours else "")


def table_markdown(study: Study, summary) -> str:
    """The paper's layout: a line per row; per column ours (mean ± std (delta) [n]) and the paper's."""
    with_paper = bool(study.paper)
    head = ["Model"]
    for c in study.columns:
        head += [c.label, "paper"] if with_paper else [c.label]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in study.rows:
        cells = [row.label]
        for c in study.columns:
            part = summary[(summary.row == row.name) & (summary.column == c.label)]
            cells += [_cell(part, True)] + ([_cell(part, False)] if with_paper else [])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def histories(out: str | Path, results):
    """metrics.jsonl of every run that has one, long form (run, row, variant, seed + the logged columns)."""
    import pandas as pd
    frames = []
    for line in results.itertuples():
        path = project_path(out) / "runs" / line.run / "metrics.jsonl"
        if path.exists():
            rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
            frames.append(pd.DataFrame(rows).assign(run=line.run, row=line.row, variant=line.variant,
                                                    seed=line.seed))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _rel(path: str | Path, base: Path) -> str:
    path = Path(path)
    return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)


def write_report(study: Study, out: str | Path, summary, results, figures: dict[str, str | Path]) -> Path:
    """``<out>/table.md`` (the table) and ``<out>/README.md`` (table, figures, runs, how to reproduce)."""
    from ..runs import atomic_write_text
    out = project_path(out)
    table = table_markdown(study, summary)
    note = ("Accuracy (%) at the final epoch. Ours: mean ± sample std over the finished seeds, (±d) = "
            "difference to the reference cell" + (f" (row `{study.delta_row}`)" if study.delta_row else "")
            + ", [n=runs]; the paper's numbers are means of its runs.")
    atomic_write_text(out / "table.md", f"## {study.title}\n\n{table}\n\n{note}\n")
    done = int((results.status == "finished").sum())
    parts = [f"# {study.title}", "", f"Source: {study.source}", "",
             f"Study `{study.path}`: {done}/{len(results)} runs finished. Reproduce or resume: "
             f"`python -m saol_core.study {study.path} --out {_rel(out, ROOT)}`.", "", table, "", note, ""]
    for title, path in figures.items():
        parts += [f"### {title}", "", f"![{title}]({_rel(project_path(path), out)})", ""]
    parts += ["### Runs", "", "| run | status | wall time (s) | images/s | executed notebook |",
              "|---|---|---|---|---|"]
    for r in results.itertuples():
        nb = f"[{Path(r.notebook).name}]({_rel(r.notebook, out)})" if r.notebook else "—"
        parts.append(f"| `{r.run}` | {r.status} | {_num(r.wall_time_s)} | {_num(r.images_per_s)} | {nb} |")
    atomic_write_text(out / "README.md", "\n".join(parts) + "\n")
    return out / "README.md"
