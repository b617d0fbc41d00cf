"""Finished runs of a study -> the paper's table (ours mean ± std over seeds, n, delta, the paper's numbers),
the paired comparisons (mean difference, 95 % interval, verdict) -> ``table.md`` and ``README.md``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .. import markdown
from ..config import make_config
from ..runs import cpu_name, cpu_vendor, hardware_class, read_json
from ..wsol.maps import HEAD_OF_KIND, KINDS
from .spec import ACROSS, ROOT, Study, expand, project_path, run_status
from .stats import LEVEL, VERDICTS, half_width, paired, verdict


def metric_value(summary: dict, name: str) -> float | None:
    """A metric of a finished run; ``top1``/``top5`` = the primary head's (SAOL if present, else GAP-FC)."""
    final = summary.get("final") or {}
    if name in ("top1", "top5"):
        name = f"saol_{name}" if f"saol_{name}" in final else f"gap_{name}"
    value = final.get(name, summary.get(name))
    return float(value) if isinstance(value, (int, float)) else None


def _hardware(record: dict) -> str | None:
    """"AMD EPYC (2 cores, AVX2)", "... + NVIDIA H200" where a GPU was visible, from a run's hardware record
    (older records lack the capability)."""
    if not record:
        return None
    cores = f"{record['cpu_count']} cores" + (f", {record['cpu_capability']}" if record.get("cpu_capability") else "")
    return f"{cpu_name(record)} ({cores})" + (f" + {record['gpu']}" if record.get("gpu") else "")


def _run_times(done) -> str:
    """Finished runs' wall time by device type, with CPU thread-hours: "1.50 h of run wall time: 1.00 h in 2
    cpu runs (2.00 thread-hours), 0.50 h in 1 cuda run"."""
    parts, total = [], 0.0
    for device, runs in done.groupby(done.device.fillna("?"), sort=True):
        timed = [r for r in runs.itertuples() if not _missing(r.wall_time_s)]
        hours = sum(float(r.wall_time_s) for r in timed) / 3600
        total += hours
        text = f"{hours:.2f} h in {len(runs)} {device} run{'s' if len(runs) != 1 else ''}"
        if device == "cpu":
            threads = sum(float(r.wall_time_s) * int(r.threads) for r in timed if not _missing(r.threads)) / 3600
            text += f" ({threads:.2f} thread-hours)"
        parts.append(text)
    return f"{total:.2f} h of run wall time: " + ", ".join(parts) if parts else "no finished run"


def _run_time(summary: dict) -> float | None:
    """A finished run's wall time: its epochs (training + evaluation) and its localization scoring."""
    if summary.get("wall_time_s") is None:
        return None
    return summary["wall_time_s"] + ((summary.get("final") or {}).get("wsol_time_s") or 0.0)


def collect(study: Study, out: str | Path):
    """One line per run of the grid: row, variant, seed, status, notebook, and its final metrics (those of
    the columns and comparisons, and the no-model baselines of the compared localization metrics)."""
    import pandas as pd
    runs_dir = project_path(out) / "runs"
    compared = {m for c in study.comparisons for m in (c.a[1], c.b[1])}
    metrics = sorted({m for c in study.columns for m in c.metric} | {"saol_top1", "gap_top1"} | compared
                     | {no_model_baseline(m) for m in compared} - {None})
    lines = []
    for run in expand(study):
        status = run_status(study, run, runs_dir)
        folder = runs_dir / run.name
        summary = read_json(folder / "summary.json") if status == "finished" else {}
        notebook = folder / Path(study.notebook).name
        hardware = summary.get("hardware") or {}
        environment = folder / "environment.json"
        versions = read_json(environment).get("versions", {}) if summary and environment.exists() else {}
        lines.append({"run": run.name, "row": run.row, "variant": run.variant, "seed": run.seed,
                      "status": status, "notebook": str(notebook) if notebook.exists() else None,
                      "wall_time_s": _run_time(summary), "images_per_s": summary.get("images_per_s"),
                      "hardware": _hardware(hardware),
                      "threads": hardware.get("torch_threads"),
                      "device": summary["device"].split(":")[0] if summary.get("device") else None,
                      "amp": summary.get("amp"), "compiled": summary.get("compile") is True,
                      "hw_class": hardware_class(summary.get("device"), hardware, summary.get("amp"), versions.get("torch")),
                      "vendor": cpu_vendor(hardware) if str(summary.get("device", "")).startswith("cpu") else None,
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
            papers = {ref: table[row.name][j] if row.name in table else [None] * len(col.metric)
                      for ref, table in study.papers.items()}
            for k, metric in enumerate(col.metric):
                values = [v for v in runs[metric] if v is not None and not pd.isna(v)]
                mean, std = _mean_std(values)
                refs = {ref: values[k] for ref, values in papers.items()}
                cells[row.name, col.label, k] = {
                    "row": row.name, "label": row.label, "column": col.label, "variant": col.variant,
                    "metric": metric, "n": len(values), "mean": mean, "std": std, "paper": next(iter(refs.values()), None),
                    **{f"paper:{ref}": v for ref, v in refs.items()}}
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


def _cell(part, ours: bool, ref: str = "paper") -> str:
    """One table cell from the summary lines of one (row, column): "a ± s / b ± s (+d) [n=5]" for ours,
    the reference's numbers (with their delta for the first reference) otherwise."""
    first = part.iloc[0]
    key = "paper" if ours else f"paper:{ref}"
    if ours and (part["n"] == 0).all() or not ours and all(_missing(p) for p in part[key]):
        return "—"
    if ours:
        text = " / ".join(_num(m) + ("" if _missing(s) else f" ± {s:.2f}") for m, s in zip(part["mean"], part["std"]))
        first = part[part["n"] > 0].iloc[0]
    else:
        text = " / ".join(_num(p) for p in part[key])
    delta = first["delta"] if ours else first["paper_delta"] if part[key].equals(part["paper"]) else None
    text += "" if _missing(delta) else f" ({_num(delta, True)})"
    return text + (f" [n={first['n']}]" if ours else "")


MAX_COLUMNS = 10
"""Widest table a report prints; a study with more columns gets several tables, each with the row labels."""


def table_markdown(study: Study, summary) -> str:
    """The paper's layout: a line per row; per column ours (mean ± std (delta) [n]) and each reference's
    (a reference without a number in that column is left out), split into tables of at most
    ``MAX_COLUMNS`` columns."""
    refs = [ref for ref, table in study.papers.items() if table]
    blocks = []   # per study column: (headers, one list of cells per row)
    for c in study.columns:
        parts = [summary[(summary.row == row.name) & (summary.column == c.label)] for row in study.rows]
        head, cells = [c.label], [[_cell(part, True)] for part in parts]
        for ref in refs:
            theirs = [_cell(part, False, ref) for part in parts]
            if any(t != "—" for t in theirs):
                head.append(ref if len(refs) == 1 and ref == "paper" else f"paper {ref}")
                for row, t in zip(cells, theirs):
                    row.append(t)
        blocks.append((head, cells))
    tables, current = [], []
    for block in blocks:
        if current and 1 + sum(len(h) for h, _ in current) + len(block[0]) > MAX_COLUMNS:
            tables.append(current)
            current = []
        current.append(block)
    tables.append(current)
    return "\n\n".join(markdown.table(["Model", *(x for h, _ in t for x in h)],
                                       [[row.label, *(x for _, cells in t for x in cells[i])]
                                        for i, row in enumerate(study.rows)]) for t in tables if t)


def _class_key(hw_class: str | None, across: str | None) -> str | None:
    """The part of a hardware class two paired runs must share: all of it, or all but what ``across`` lets
    differ (``study.spec.ACROSS``). Classes read "device chip · precision · torch x.y"."""
    if hw_class is None:
        return None
    chip, amp, torch_version = hw_class.split(" · ")
    return {None: hw_class, "precision": f"{chip} · {torch_version}", "hardware": amp}[across]


BASELINED = ("gt_known_loc", "max_box_acc", "max_box_acc_v2")
"""Localization metrics that need no classifier, so that the centre-Gaussian map (no model) scores them too."""


def no_model_baseline(metric: str) -> str | None:
    """``<kind>_<metric>`` of a map kind -> the no-model baseline it is judged against: ``center_<metric>``,
    or for Top-1 Loc ``center_top1_loc_<kind>`` (the centred box, classified by the same head); None for
    accuracies, which are not localization."""
    kind, _, rest = metric.partition("_")
    if kind not in KINDS:
        return None
    return f"center_top1_loc_{kind}" if rest == "top1_loc" else f"center_{rest}" if rest in BASELINED else None


def _sides(label: str) -> tuple[str, str]:
    """The names of a comparison's two sides, read from a label "metric: A − B" ("a", "b" where it has no
    single " − ")."""
    sides = label.split(": ", 1)[-1].split(" − ")
    return (sides[0], sides[1]) if len(sides) == 2 else ("a", "b")


def _side_notes(c: dict) -> str:
    """"; SAOL below its no-model baseline (57.51)" for each side whose mean localizes worse than its own, and
    "; the head behind CAM (X) has not plateaued (+1.20 in the last quarter)" for each side whose head had not."""
    notes = []
    for side, name in zip(("a", "b"), _sides(c["comparison"])):
        if not _missing(c.get(f"{side}_below_baseline")) and bool(c[f"{side}_below_baseline"]):
            notes.append(f"{name} below its no-model baseline ({_num(c[f'{side}_baseline'])})")
        if not _missing(c.get(f"{side}_unplateaued_gain")):
            notes.append(f"the head behind {name} has not plateaued ({_num(c[f'{side}_unplateaued_gain'], True)} "
                         "in the last quarter)")
    return "".join(f"; {n}" for n in notes)


def _unplateaued_gain(study: Study, plateau, row: str, variant: str, metric: str) -> float | None:
    """What the last quarter of training added to the head behind ``metric`` in this row and variant, where
    that head has not plateaued (``plateaus``); None where it has, or the study sets no criterion."""
    kind = metric.split("_", 1)[0]
    head = TOP1_HEADS.get(f"{HEAD_OF_KIND.get(kind, kind)}_top1")   # a map kind's head, or the head itself
    if plateau is None or not len(plateau) or head is None:
        return None
    row_label = next(r.label for r in study.rows if r.name == row)
    variant_label = next(v.label for v in study.variants if v.name == variant)
    hit = plateau[(plateau.row == row_label) & (plateau.variant == variant_label) & (plateau["head"] == head)]
    if not len(hit) or _missing(hit.plateaued.iloc[0]) or hit.plateaued.iloc[0]:
        return None
    return float(hit.gain.iloc[0])


def comparisons(study: Study, results, plateau=None):
    """One line per ``study.comparisons`` entry and hardware class: the paired a - b over the seeds whose
    two runs share a class (``saol_core.runs.hardware_class``; a cross-class pair is never paired), its
    interval and half-width, the paper's a - b per reference and the verdict on sign and size against the
    first reference that has a number. Seeds both cells ran on different classes are counted in
    ``cross_class``; ``vendors`` names the CPU makers of the paired runs where they differ. A localization
    metric (``no_model_baseline``) also gets, per side, ``a_baseline`` / ``b_baseline``: its no-model
    baseline's mean over the paired runs, and ``a_below_baseline`` / ``b_below_baseline``: that side's mean
    localizes worse than it. With ``plateau`` (``plateaus``), a side whose head has not plateaued gets
    ``a_unplateaued_gain`` / ``b_unplateaued_gain``: what the last quarter of training still added to it."""
    import pandas as pd
    done = results[results.status == "finished"]

    def cell(row: str, metric: str, variant: str) -> dict[int, tuple]:
        part = done[(done.row == row) & (done.variant == variant)]
        return {int(r.seed): (float(getattr(r, metric)), None if _missing(r.hw_class) else r.hw_class,
                              None if _missing(r.vendor) else r.vendor)
                for r in part.itertuples() if not _missing(getattr(r, metric))}

    lines = []
    for c in study.comparisons:
        a, b = cell(*c.a, c.variant), cell(*c.b, c.variant)
        groups: dict[str, list[int]] = {}
        cross = 0
        for seed in sorted(set(a) & set(b)):
            key_a, key_b = _class_key(a[seed][1], c.across), _class_key(b[seed][1], c.across)
            if key_a is None or key_a != key_b:
                cross += 1
            else:
                groups.setdefault(key_a, []).append(seed)
        reference = next((v for v in c.paper.values() if v is not None), None)
        papers = {f"paper:{ref}": c.paper.get(ref) for ref in study.papers if study.papers[ref]}
        for key, seeds in sorted(groups.items(), key=lambda kv: -len(kv[1])) or [(None, [])]:
            p = paired({s: a[s][0] for s in seeds}, {s: b[s][0] for s in seeds})
            vendors = sorted({x[s][2] for x in (a, b) for s in seeds if x[s][2]})
            base = {}
            for side, (row, metric), x in (("a", c.a, a), ("b", c.b, b)):
                gain = _unplateaued_gain(study, plateau, row, c.variant, metric)
                if gain is not None:
                    base[f"{side}_unplateaued_gain"] = gain
                name = no_model_baseline(metric)
                centre = ([v[0] for s, v in cell(row, name, c.variant).items() if s in seeds]
                          if name is not None and name in done.columns else [])
                if centre:
                    level = sum(centre) / len(centre)
                    base.update({f"{side}_baseline": level,
                                 f"{side}_below_baseline": sum(x[s][0] for s in seeds) / len(seeds) < level})
            lines.append({"comparison": c.label, "a": ".".join(c.a), "b": ".".join(c.b), "hw_class": key,
                          "n": p.n, "mean": p.mean, "sd": p.sd, "lo": p.lo, "hi": p.hi, "half_width": half_width(p),
                          "verdict": verdict(p, reference) if seeds or not cross else "no same-class pair",
                          "cross_class": cross,
                          "vendors": ", ".join(vendors) if len(vendors) > 1 else None, **papers, **base})
    return pd.DataFrame(lines)


def comparisons_markdown(study: Study, table) -> str:
    """The comparisons as a markdown table: ours (mean [interval] (n)), the interval's half-width, the
    verdict, the hardware class the pairs share, the paper's deltas."""
    refs = [ref for ref, t in study.papers.items() if t]
    head = ["Comparison (a − b)", f"ours: paired Δ [{LEVEL:.0%} CI] (n)", "± (half-width)", "verdict",
            "hardware class of the pairs", *[f"paper Δ {r}" for r in refs]]
    lines = []
    for c in table.to_dict("records"):
        ours = "—" if _missing(c["mean"]) else _num(c["mean"], True) + (
            "" if _missing(c["lo"]) else f" [{_num(c['lo'], True)}, {_num(c['hi'], True)}]") + f" (n={c['n']})"
        notes = [] if _missing(c.get("vendors")) else [f"CPU vendors differ: {c['vendors']}"]
        notes += [f"{c['cross_class']} seed(s) on different classes left out"] if c.get("cross_class") else []
        where = ("—" if _missing(c["hw_class"]) else c["hw_class"]) + (f" ({'; '.join(notes)})" if notes else "")
        lines.append([c["comparison"], ours, _num(c["half_width"]), c["verdict"] + _side_notes(c), where,
                      *[_num(c[f"paper:{r}"], True) for r in refs]])
    return markdown.table(head, lines)


def verdict_legend(table) -> str:
    """The definitions of the verdict words a comparisons table uses, as one paragraph."""
    used = [v for v in VERDICTS if v in set(table.verdict)] if len(table) else []
    legend = "Verdicts (the paper's Δ: the first reference with a number): " + "; ".join(
        f"*{v}* = {VERDICTS[v]}" for v in used) + "."
    if {"a_baseline", "b_baseline"} & set(table):
        legend += (" *below its no-model baseline*: that side's mean localizes worse than the centre Gaussian "
                   "(a map that ignores the image; for Top-1 Loc its box judged with the same head's "
                   "classification; its mean over the same runs in brackets), whatever the Δ.")
    if {"a_unplateaued_gain", "b_unplateaued_gain"} & set(table):
        legend += (" *has not plateaued*: the head behind that side still gained at least `study.plateau` points "
                   "of top-1 over the last quarter of training (the plateau table), so that side is measured "
                   "before its plateau.")
    return legend


def maps_run(out: str | Path, results) -> str | None:
    """The finished run to draw SAOL's maps from: the first with a figure record (``saol_core.figrecords``,
    committed) or a checkpoint that trains the full method (CutMix + L_SS1 + L_SS2), else the last SAOL run
    with either; None if no run has one (records from before figure records keep no checkpoints)."""
    import yaml
    from ..figrecords import FIG5
    runs_dir = project_path(out) / "runs"
    candidates = []
    for run in results[results.status == "finished"].run:
        folder = runs_dir / run
        if not ((folder / FIG5).exists() or (folder / "checkpoint.pt").exists()):
            continue
        cfg = yaml.safe_load((folder / "config.yaml").read_text())
        loss = cfg["loss"]
        if "saol" in cfg["model"]["heads"]:
            candidates.append((loss["cutmix_prob"] > 0 and loss["w_ss1"] > 0 and loss["w_ss2"] > 0, run))
    full = [run for is_full, run in candidates if is_full]
    return full[0] if full else candidates[-1][1] if candidates else None


def evaluated_split(study: Study) -> str:
    """What the study's runs measure top-1 on each epoch: "held-out train" where they hold training images out
    (data.holdout_per_class, a recipe study), else "test"."""
    return "held-out train" if make_config(project_path(study.path)).data.holdout_per_class else "test"


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


TOP1_HEADS = {"saol_top1": "SAOL", "gap_top1": "GAP-FC"}
"""The heads whose top-1 a run logs each evaluated epoch, and what a reader calls them."""


def plateaus(study: Study, history):
    """What the last quarter of training added: per row, variant and head, the mean over seeds of top-1 at
    each run's last evaluation in its first three quarters (epoch <= 3/4 of its final epoch) and at its final
    epoch, and their difference (``gain``, mean and sd over the seeds); ``plateaued`` (gain < study.plateau)
    where the study sets a criterion. history: ``histories`` of the finished runs."""
    import pandas as pd
    lines = []
    if history.empty:
        return pd.DataFrame(lines)
    row_labels = {r.name: r.label for r in study.rows}
    variant_labels = {v.name: v.label for v in study.variants}
    for (row, variant), part in history.groupby(["row", "variant"], sort=False):
        for metric, head in TOP1_HEADS.items():
            if metric not in part:
                continue
            ends = []
            for _, run in part.dropna(subset=[metric]).groupby("run", sort=False):
                by_epoch = run.drop_duplicates("epoch", keep="last").set_index("epoch")[metric]
                early = by_epoch[by_epoch.index <= 0.75 * by_epoch.index.max()]
                if len(early):
                    ends.append((early.index[-1], by_epoch.index[-1], early.iloc[-1], by_epoch.iloc[-1]))
            if not ends:
                continue
            start, end, at_start, at_end = map(pd.Series, zip(*ends))
            gain = at_end - at_start
            lines.append({"row": row_labels[row], "variant": variant_labels[variant], "head": head,
                          "epochs": " / ".join(f"{a} → {b}" for a, b in sorted(set(zip(start, end)))),
                          "start": at_start.mean(), "end": at_end.mean(), "gain": gain.mean(),
                          "gain_sd": gain.std() if len(gain) > 1 else None, "n": len(gain),
                          "plateaued": None if study.plateau is None else bool(gain.mean() < study.plateau)})
    return pd.DataFrame(lines)


def plateaus_markdown(study: Study, table) -> str:
    """The plateau table and the sentence that says how it was made and what the criterion is."""
    variants = len(set(table.variant)) > 1
    head = ["Row", *(["variant"] if variants else []), "head", "epochs (¾ → end)", "top-1 at ¾", "top-1 at the end",
            "gain (± sd over seeds)", "n", *(["plateaued"] if study.plateau is not None else [])]
    lines = [[c["row"], *([c["variant"]] if variants else []), c["head"], c["epochs"], _num(c["start"]),
              _num(c["end"]), _num(c["gain"], True) + ("" if _missing(c["gain_sd"]) else f" ± {c['gain_sd']:.2f}"),
              c["n"], *([{True: "yes", False: "**no**"}[c["plateaued"]]] if study.plateau is not None else [])]
             for c in table.to_dict("records")]
    rule = (f"A row has plateaued when the last quarter added less than {study.plateau:g} points (`study.plateau`)."
            if study.plateau is not None else "This study sets no plateau criterion (`study.plateau`).")
    return "\n".join([markdown.table(head, lines), "",
                      "Top-1 of each head (mean over the finished seeds) at each run's last evaluation in its first "
                      "three quarters of training and at its end; gain = what the last quarter added. " + rule])


def _rel(path: str | Path, base: Path) -> str:
    path = Path(path)
    return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)


def _machine(results) -> str:
    """The hardware and settings the finished runs report, with how many ran on each, e.g. "AMD EPYC (2 cores),
    cpu, 1 thread(s), bfloat16: 3 runs" ("..., bfloat16, compiled" for train.compile)."""
    from collections import Counter
    done = results[results.status == "finished"]
    seen = Counter(f"{r.hardware}, {r.device}, {int(r.threads)} thread(s), {r.amp}" + ", compiled" * bool(r.compiled)
                   for r in done.itertuples() if not _missing(r.hardware))
    return "; ".join(f"{k}: {n} run{'s' * (n > 1)}" for k, n in sorted(seen.items())) or "—"


def budget_comparisons(study: Study):
    """The headline comparisons (``headlines``' choice) of every study in ``study.budgets``, each from its
    own report folder's records, with a ``budget`` column in the order given."""
    import pandas as pd
    from .spec import load_study
    frames = []
    for label, (path, out) in study.budgets.items():
        other = load_study(path)
        compared = comparisons(other, collect(other, out))
        frames.append(compared[compared.comparison.isin(_headline_labels(other))].assign(budget=label))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _headline_labels(study: Study) -> list[str]:
    return [c.label for c in study.comparisons if c.headline] or [
        c.label for c in study.comparisons if any(v is not None for v in c.paper.values())][:6]


def headlines(study: Study, compared) -> list[str]:
    """One line per main comparison (those marked ``headline``; else those with a paper number, at most 6):
    "label: Δ [lo, hi], verdict (n=5, class; paper +1.61 ResNet-110)"."""
    lines = []
    for c in compared[compared.comparison.isin(_headline_labels(study))].to_dict("records"):
        ours = "no paired seeds" if _missing(c["mean"]) else _num(c["mean"], True) + (
            "" if _missing(c["lo"]) else f" [{_num(c['lo'], True)}, {_num(c['hi'], True)}]")
        papers = [f"{_num(c[k], True)} {k.split(':', 1)[1]}".replace(" paper", "") for k in c
                  if k.startswith("paper:") and not _missing(c[k])]
        where = "" if _missing(c["hw_class"]) else f", {c['hw_class']}"
        lines.append(f"- {c['comparison']}: {ours}, **{c['verdict']}**{_side_notes(c)} (n={c['n']}{where}"
                     + (f"; paper {', '.join(papers)})" if papers else ")"))
    return lines


def update_readme_block(kind: str, folder: str, content: str, readme: Path | None = None) -> bool:
    """Replace what stands between ``<!-- KIND FOLDER -->`` and the next ``<!-- /KIND -->`` in the project
    README with ``content``, so that the README quotes what the report in ``FOLDER`` holds now (``headline``:
    its headline lines; ``runs``: how many of its runs have finished). False (README untouched) where it has
    no such block."""
    from ..runs import atomic_write_text
    readme = readme or ROOT / "README.md"
    start, end = f"<!-- {kind} {folder} -->", f"<!-- /{kind} -->"
    text = readme.read_text() if readme.exists() else ""
    if start not in text:
        return False
    head, rest = text.split(start, 1)
    if end not in rest:
        raise ValueError(f"{readme}: `{start}` has no `{end}` after it")
    new = head + start + content + end + rest.split(end, 1)[1]
    if new != text:
        atomic_write_text(readme, new)
    return True


def _is_smoke(study: Study) -> bool:
    return study.overlay is not None or "smoke" in Path(study.path).parts


def write_report(study: Study, out: str | Path, summary, results, figures: dict[str, str | Path]) -> Path:
    """``<out>/table.md`` (the tables) and ``<out>/README.md`` (tables, setting, figures, runs, how to
    regenerate). Both texts are built before either is written; a PNG in ``<out>/figures`` that the report
    no longer shows (its runs were rerun or removed) is deleted."""
    from ..runs import atomic_write_text
    out = project_path(out)
    table = table_markdown(study, summary)
    note = ("Metrics of the final epoch's model (accuracy and localization in %). Ours: mean ± sample std over the finished seeds, (±d) = "
            "difference of the means to the reference cell" + (f" (row `{study.delta_row}`)" if study.delta_row else "")
            + ", [n=runs]; the paper's numbers are means of its runs.")
    tables = [table, "", note]
    done = results[results.status == "finished"]
    plateau = plateaus(study, histories(out, done))
    if study.comparisons:
        compared = comparisons(study, results, plateau)
        k = int(compared.lo.notna().sum()) if len(compared) else 0
        tables += ["", comparisons_markdown(study, compared), "",
                   f"Paired Δ: mean over the seeds whose two runs share a hardware class of (a − b), with its "
                   f"{LEVEL:.0%} Student-t interval; ± = its half-width, the smallest difference these seeds could "
                   "tell from 0. Runs are paired only within one hardware class (device, GPU model or CPU vector "
                   "ISA, precision, torch version); a check marked " + " or ".join(
                       f"`across: {k}` lets only {v} differ" for k, v in ACROSS.items()) + ". " + verdict_legend(compared)
                   + (" Each interval stands alone, "
                      f"with no correction for the {k} intervals in this table: were no difference real, about "
                      f"{k * (1 - LEVEL):.1f} of them would exclude 0 by chance, so a verdict whose interval ends "
                      "near 0 is weak evidence." if k else "")]
    if len(plateau):
        tables += ["", "**What the last quarter of training added**", "", plateaus_markdown(study, plateau)]
    rel = _rel(out, ROOT)
    parts = [f"# {study.title}", ""]
    if _is_smoke(study):
        parts += ["> **Smoke run: not a result.** Tiny models trained for a few steps on stand-in data, to check "
                  "that the study runs end to end; no number here says anything about SAOL.", ""]
    lines = headlines(study, compared) if study.comparisons and len(compared) else None
    if lines is not None:
        parts += [f"**Headline** (paired Δ of the final epoch's metrics [{LEVEL:.0%} CI], verdict on sign and size, "
                  "n seeds and their hardware class; the paper's Δ):", "", *lines, ""]
    parts += [f"Source: {study.source}", ""]
    if study.setting:
        parts += [study.setting.strip(), ""]
    parts += [f"Study `{study.path}`: {len(done)}/{len(results)} runs finished on {_machine(results)}; "
              f"{_run_times(done)}.", "",
              f"Regenerate this page from the committed run records: `python -m saol_core.study {study.path} "
              f"--out {rel} --table-only`. Run or resume the missing runs: `python -m saol_core.study "
              f"{study.path} --out {rel}`.", "", *tables, ""]
    for title, path in figures.items():
        parts += [f"### {title}", "", f"![{title}]({_rel(project_path(path), out)})", ""]
    runs = [[f"`{r.run}`", r.status, "—" if _missing(r.hw_class) else r.hw_class,
             "—" if _missing(r.vendor) else r.vendor, _num(r.wall_time_s), _num(r.images_per_s),
             "—" if _missing(r.notebook) else f"[{Path(r.notebook).name}]({_rel(r.notebook, out)})"]
            for r in results.itertuples()]
    parts += ["### Runs", "", "Wall time: the run's epochs (training and evaluation) and, where it is scored, its "
              "localization.", "", markdown.table(["run", "status", "hardware class", "CPU maker", "wall time (s)",
                                                  "train images/s", "executed notebook"], runs)]
    atomic_write_text(out / "table.md", f"## {study.title}\n\n" + "\n".join(tables) + "\n")
    atomic_write_text(out / "README.md", "\n".join(parts) + "\n")
    # the project README quotes this report only once the report itself is written
    if lines is not None:
        update_readme_block("headline", rel, "\n" + "".join(f"{line}\n" for line in lines))
    update_readme_block("runs", rel, f"{len(done)} of {len(results)}")
    shown = {project_path(path).resolve() for path in figures.values()}
    for stale in sorted((out / "figures").glob("*.png")):   # drawn from runs the report no longer holds
        if stale.resolve() not in shown:
            stale.unlink()
    return out / "README.md"
