"""Figures of a study's numbers: training curves, every cell beside the paper's, the paired comparisons
(forest plot), the comparisons at each training budget, and the cost figure."""
from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..study.report import TOP1_HEADS


def training_curves(history: pd.DataFrame | list[dict], facet: str | None = None,
                    labels: dict[str, str] | None = None, per_line: int = 2, split: str = "test",
                    variants: dict[str, str] | None = None):
    """Training loss and top-1 of each head on ``split`` (what the runs evaluate: ``saol_core.study.
    evaluated_split``) per epoch: a pair of panels (loss, top-1) per ``facet``
    value, ``per_line`` pairs side by side, each metric on one y-range across all panels so that rows
    compare at a glance.

    history: metrics.jsonl lines of one run, or the long frame of ``saol_core.study.histories``
    (columns run, row, variant, seed): lines are then per variant (a colour) and head (solid SAOL, dashed
    GAP-FC), seeds averaged (± sd band).
    labels: what to call each facet value (a study's row labels); default the value itself.
    variants: what to call each variant, in the order of the legends and colours (a study's variants);
    default the names, sorted.
    """
    df = pd.DataFrame(history)
    if "variant" in df:
        names = variants or {}
        order = list(names) + sorted(set(df["variant"]) - set(names))
        df["variant"] = pd.Categorical(df["variant"].map(lambda v: names.get(v, v)), [names.get(v, v) for v in order])
    keep = [c for c in df if c not in TOP1_HEADS]
    test = df.melt(id_vars=keep, value_vars=[c for c in TOP1_HEADS if c in df], var_name="head",
                   value_name="top1").dropna(subset=["top1"])
    test["head"] = test["head"].map(TOP1_HEADS)
    by_variant = "variant" in df and df["variant"].nunique() > 1
    # a variant keeps its colour in every panel (loss and top-1) and the head is the line style; with one
    # variant the head is the colour
    colour = "variant" if by_variant else "head"
    palette = {k: f"C{i}" for i, k in enumerate(df["variant"].cat.categories if by_variant else sorted(set(test["head"])))}
    facets = list(dict.fromkeys(df[facet])) if facet else [None]
    per_line = max(1, min(per_line, len(facets)))
    lines = -(-len(facets) // per_line)
    marker = "o" if df["epoch"].nunique() < 20 else None
    with sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(lines, 2 * per_line, figsize=(5.0 * per_line, 2.6 * lines + 0.4), squeeze=False)
        pairs = axes.reshape(lines, per_line, 2).reshape(-1, 2)
        for ax in pairs[len(facets):].flat:
            ax.set_visible(False)
        for (ax_loss, ax_acc), value in zip(pairs, facets):
            part = df if value is None else df[df[facet] == value]
            test_part = test if value is None else test[test[facet] == value]
            sns.lineplot(part, x="epoch", y="train_loss", hue="variant" if by_variant else None,
                         palette=palette if by_variant else None,
                         hue_order=[k for k in palette if k in set(part["variant"])] if by_variant else None,
                         errorbar="sd", marker=marker, ax=ax_loss)
            sns.lineplot(test_part, x="epoch", y="top1", hue=colour, palette=palette,
                         hue_order=[k for k in palette if k in set(test_part[colour])],
                         style="head" if by_variant else None,
                         style_order=[h for h in TOP1_HEADS.values() if h in set(test_part["head"])] if by_variant else None,
                         dashes={"SAOL": "", "GAP-FC": (4, 2)} if by_variant else True,
                         errorbar="sd", marker=marker, ax=ax_acc)
            name = "" if value is None else textwrap.fill((labels or {}).get(value, str(value)), 30)
            ax_loss.set(title=f"{name}\ntraining loss (Eq. 7 total)".strip(), ylabel="loss")
            ax_acc.set(title=f"{name}\n{split} top-1 of each head".strip(), ylabel="top-1 (%)")
            for ax in (ax_loss, ax_acc):
                ax.title.set_fontsize(8)
                ax.xaxis.get_major_locator().set_params(integer=True)
                if ax.get_legend() is not None:
                    ax.legend(fontsize=6, title=None)
        for column in (0, 1):   # one y-range per metric
            used = [ax for ax in pairs[:len(facets), column]]
            low = min(ax.get_ylim()[0] for ax in used)
            high = max(ax.get_ylim()[1] for ax in used)
            for ax in used:
                ax.set_ylim(low, high)
    fig.tight_layout()
    return fig


_KIND_LABELS = {"saol": "SAOL", "gap": "GAP-FC", "cam": "CAM", "gradcam": "Grad-CAM", "attention": "A",
                "spatial": "Y_k", "center": "centre Gaussian"}


_METRIC_LABELS = {"top1": "top-1", "top5": "top-5", "top1_loc": "Top-1 Loc", "gt_known_loc": "GT-known Loc",
                  "max_box_acc": "MaxBoxAcc", "max_box_acc_v2": "MaxBoxAccV2", "top1_cls": "top-1 of the map's head"}


def metric_label(key: str) -> str:
    """A run-summary metric key as a reader names it: "saol_top1_loc" -> "SAOL Top-1 Loc (%)",
    "gap_top1" -> "GAP-FC top-1 (%)", "cam_gmacs" -> "CAM GMACs", "center_top1_loc_saol" -> "centre box,
    SAOL's class: Top-1 Loc (%)"; an unknown key is returned as it is."""
    kind, _, metric = key.partition("_")
    if key in _METRIC_LABELS:
        return f"{_METRIC_LABELS[key]} (%)"
    if kind in _KIND_LABELS and metric in _METRIC_LABELS:
        return f"{_KIND_LABELS[kind]} {_METRIC_LABELS[metric]} (%)"
    if kind in _KIND_LABELS and metric == "gmacs":
        return f"{_KIND_LABELS[kind]} GMACs"
    head = key.removeprefix("center_top1_loc_")
    if head != key and head in _KIND_LABELS:
        return f"centre box, {_KIND_LABELS[head]}'s class: Top-1 Loc (%)"
    return key


def results_plot(summary: pd.DataFrame, results: pd.DataFrame | None = None):
    """Every cell of a study: its per-seed values (dots), their mean with the 95 % t-interval of the mean
    (bar), and the paper's numbers (one marker per reference model); one panel per table column. A column
    of several metrics ("SAOL / CAM") draws each in its own colour, slightly offset, in the cell's order.
    A paper number far from all of ours (see :func:`_paper_marks`) sits at the panel's edge with its value
    printed, so that a gap of ten points does not squeeze our seeds into one spot.

    summary: ``saol_core.study.summarize`` output; results: ``saol_core.study.collect`` output (per-seed
    values; without it, mean ± std).
    """
    from scipy import stats
    columns = list(dict.fromkeys(summary["column"]))
    refs = [c for c in summary if c.startswith("paper:")] or ["paper"]
    values = pd.concat([summary["mean"], *[summary[r] for r in refs]]).astype(float).dropna()
    share = len(values) > 0 and values.max() - values.min() <= 10
    markers = ["x", "+", "1", "*"]
    several = summary.groupby(["row", "column"]).size().max() > 1
    ordinal = ["first", "second", "third", "fourth"]
    rows = list(dict.fromkeys(summary["row"]))
    ours, papers = {}, {}
    with sns.axes_style("whitegrid"):
        wide = min(len(columns), 4)
        high = -(-len(columns) // wide)
        fig, axes = plt.subplots(high, wide, figsize=(4.2 * wide, (0.42 * len(rows) + 1.6) * high),
                                 sharey=True, sharex=share, squeeze=False)
        for ax in axes.flat[len(columns):]:
            ax.set_visible(False)
        for ax, column in zip(axes.flat, columns):
            part = summary[summary.column == column]
            metrics = list(dict.fromkeys(part["metric"]))
            for k, metric in enumerate(metrics):
                color = f"C{k}" if k < 3 else f"C{k + 4}"   # C3.. mark the paper's numbers
                what = f"ours, {ordinal[k % 4]} number of a cell" if several else "ours"
                offset = 0.0 if len(metrics) == 1 else (k - (len(metrics) - 1) / 2) * 0.3
                cells = part[part.metric == metric].set_index("row").reindex(rows)
                for y, (row, cell) in enumerate(cells.iterrows()):
                    if pd.isna(cell["metric"]):
                        continue
                    seeds = [] if results is None else [
                        float(v) for v in results[(results.row == row) & (results.status == "finished")
                                                  & (results.variant == cell.variant)][metric]
                        if v is not None and not pd.isna(v)]
                    if seeds:
                        ax.scatter(seeds, y + offset + np.linspace(-0.1, 0.1, len(seeds)), s=10, color=color,
                                   alpha=0.5, label=f"{what}, per seed")
                    if cell["n"] and not pd.isna(cell["mean"]):
                        half = (stats.t.ppf(0.975, cell["n"] - 1) * cell["std"] / np.sqrt(cell["n"])
                                if results is not None and cell["n"] > 1 else cell["std"])
                        half = 0.0 if pd.isna(half) else half
                        ax.errorbar([cell["mean"]], [y + offset], xerr=[half], fmt="o", color=color, capsize=3,
                                    label=f"{what}, mean ± 95 % CI" if results is not None else f"{what}, mean ± std")
                        seeds = [*seeds, cell["mean"] - half, cell["mean"] + half]
                    ours.setdefault(ax, []).extend(seeds)
                for j, ref in enumerate(refs):
                    if cells[ref].notna().any():
                        name = "paper" if ref == "paper" else f"paper {ref.split(':', 1)[1]}"
                        shift = offset + (j - (len(refs) - 1) / 2) * 0.25
                        papers.setdefault(ax, []).append((cells[ref].astype(float).to_numpy(),
                                                          np.arange(len(rows)) + shift,
                                                          dict(marker=markers[j % len(markers)], color=f"C{3 + j}",
                                                               label=name, zorder=3)))
            labels = summary.drop_duplicates("row").set_index("row").loc[rows, "label"]
            ax.set_yticks(np.arange(len(rows)), labels, fontsize=8)
            ax.set_title(textwrap.fill(column, 48), fontsize=9)
            ax.set_xlabel(textwrap.fill(" / ".join(metric_label(m) for m in metrics), 56), fontsize=8)  # a panel's width
        _paper_marks(axes.flat[:len(columns)], ours, papers, share)
        axes[0, 0].invert_yaxis()
        handles = {l: h for ax in axes.flat for h, l in zip(*ax.get_legend_handles_labels())}
        fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(len(handles), 4), fontsize=7,
                   frameon=False)
    fig.tight_layout(rect=(0, (0.06 if len(handles) <= 4 else 0.1) / high, 1, 1))
    return fig


def _paper_marks(axes, ours: dict, papers: dict, share: bool) -> None:
    """Draw the paper's numbers of each panel. Our values span [lo, hi]; a paper number more than
    max(2, hi - lo) points outside it is drawn in a margin at the panel's edge with its value printed beside
    it, and the x-limits cover only ours and the near paper numbers (the union over panels that share x)."""
    windows = {}
    for ax in axes:
        mine = [v for v in ours.get(ax, []) if np.isfinite(v)]
        if not mine:
            continue
        theirs = np.concatenate([xs for xs, _, _ in papers.get(ax, [])] or [np.array([])])
        lo, hi = min(mine), max(mine)
        reach = max(2.0, hi - lo)
        near = theirs[(theirs >= lo - reach) & (theirs <= hi + reach)]
        if len(near):
            lo, hi = min(lo, near.min()), max(hi, near.max())
        pad = max(0.3, 0.06 * (hi - lo))
        windows[ax] = (lo - pad, hi + pad)
    if share and windows:
        union = (min(a for a, _ in windows.values()), max(b for _, b in windows.values()))
        windows = {ax: union for ax in windows}
    far = {}
    for ax in axes:
        a, b = windows.get(ax, (-np.inf, np.inf))
        for xs, ys, style in papers.get(ax, []):
            ax.scatter([], [], **style)   # the legend entry, whether or not a number fits the axis
            inside = (xs >= a) & (xs <= b)
            ax.scatter(xs[inside], ys[inside], **{**style, "label": None})
            out = ~inside & np.isfinite(xs)
            far.setdefault(ax, []).extend((x, y, style) for x, y in zip(xs[out], ys[out]))
    for ax, (a, b) in windows.items():
        sides = {x > b for group in (far.values() if share else [far.get(ax, [])]) for x, _, _ in group}
        margin = 0.18 * (b - a)   # room for the edge marks and their printed values
        left, right = a - margin * (False in sides), b + margin * (True in sides)
        for x, y, style in far.get(ax, []):
            edge = right - 0.15 * margin if x > b else left + 0.15 * margin
            ax.scatter([edge], [y], **{**style, "label": None})
            ax.annotate(f"{x:.1f}", (edge, y), xytext=(-5 if x > b else 5, 0), textcoords="offset points",
                        ha="right" if x > b else "left", va="center", fontsize=6, color=style["color"])
        ax.set_xlim(left, right)
    if any(far.values()):
        axes[0].scatter([], [], marker=">", color="0.4",
                        label="paper number beyond the axis: at the edge, value printed")


VERDICT_COLORS = {"reproduced": "C2", "same direction, larger": "C9", "same direction, smaller": "C8",
                  "smaller than the paper's": "C1", "inconclusive": "0.45", "contradicted": "C3", "differs": "C0",
                  "no difference seen": "0.65", "too few seeds": "0.45", "no same-class pair": "0.65"}
"""One colour per verdict word of saol_core.study.stats.VERDICTS (the report's legend defines them); the two
verdicts without an interval share greys with others and are told apart by a hollow marker (``verdict_style``)."""


def verdict_style(verdict: str) -> dict:
    """Matplotlib errorbar style of a verdict: its colour, hollow where the verdict has no interval."""
    color = VERDICT_COLORS.get(verdict, "0.45")
    hollow = verdict in ("too few seeds", "no same-class pair")
    return {"color": color, "mfc": "white" if hollow else color}


def comparisons_plot(compared: pd.DataFrame):
    """A forest plot of a study's comparisons: our paired a − b with its 95 % interval, coloured by its
    verdict on sign and size (``VERDICT_COLORS``), and the paper's a − b per reference model.

    compared: ``saol_core.study.comparisons`` output (columns comparison, hw_class, n, mean, lo, hi,
    verdict, paper:<ref>); a comparison split over hardware classes gets one line per class, named in its
    label; lines without a paired value are left empty.
    """
    refs = [c for c in compared if c.startswith("paper:")]
    markers = ["x", "+", "1", "*"]
    split = compared.comparison.duplicated(keep=False)
    labels = [f"{c} [{k}] (n={n})" if s else f"{c} (n={n})"
              for c, k, n, s in zip(compared.comparison, compared.hw_class, compared.n, split)]
    with sns.axes_style("whitegrid"):
        fig, ax = plt.subplots(figsize=(7.5, 0.36 * len(compared) + 1.6))
        ax.axvline(0, color="0.3", lw=0.8)
        for y, c in enumerate(compared.itertuples()):
            if pd.isna(c.mean):
                continue
            lo, hi = (c.mean, c.mean) if pd.isna(c.lo) else (c.lo, c.hi)
            ax.errorbar([c.mean], [y], xerr=[[c.mean - lo], [hi - c.mean]], fmt="o",
                        capsize=3, **verdict_style(c.verdict),
                        label=f"ours, mean ± 95 % CI: {c.verdict}")
        for j, ref in enumerate(refs):
            values = compared[ref].astype(float)
            if values.notna().any():
                ax.scatter(values, np.arange(len(compared)), marker=markers[j % len(markers)], color=f"C{4 + j}",
                           label="paper" if ref == "paper:paper" else f"paper {ref.split(':', 1)[1]}", zorder=3)
        ax.set_yticks(np.arange(len(compared)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("a − b (points)", fontsize=8)
        handles = dict(zip(*reversed(ax.get_legend_handles_labels())))
        ax.legend(handles.values(), handles.keys(), fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12),
                  ncol=min(len(handles), 3), frameon=False)
        fig.tight_layout()
    return fig


def budget_plot(compared: pd.DataFrame):
    """Each headline comparison's paired a − b with its 95 % interval at every training budget (x, in the
    order given), coloured by verdict, beside the paper's a − b per reference model (dashed lines).

    compared: ``saol_core.study.budget_comparisons`` output (comparison, budget, mean, lo, hi, verdict,
    paper:<ref>); a comparison split over hardware classes shows each class's line side by side.
    """
    names = list(dict.fromkeys(compared.comparison))
    budgets = list(dict.fromkeys(compared.budget))
    refs = [c for c in compared if c.startswith("paper:")]
    with sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(1, len(names), figsize=(3.0 * len(names) + 0.6, 3.4), squeeze=False)
        for ax, name in zip(axes[0], names):
            part = compared[compared.comparison == name]
            ax.axhline(0, color="0.3", lw=0.8)
            for x, budget in enumerate(budgets):
                lines = part[part.budget == budget].reset_index(drop=True)
                for j, c in lines.iterrows():
                    if pd.isna(c["mean"]):
                        continue
                    lo, hi = (c["mean"], c["mean"]) if pd.isna(c["lo"]) else (c["lo"], c["hi"])
                    xj = x + 0.12 * (j - (len(lines) - 1) / 2)
                    ax.errorbar([xj], [c["mean"]], yerr=[[c["mean"] - lo], [hi - c["mean"]]], fmt="o", capsize=3,
                                label=f"ours: {c['verdict']}", **verdict_style(c["verdict"]))
                    ax.annotate(f"n={c['n']}", (xj, hi), xytext=(0, 3), textcoords="offset points", ha="center",
                                fontsize=6)
            for k, ref in enumerate(refs):
                value = part[ref].dropna()
                if len(value):
                    ax.axhline(float(value.iloc[0]), color=f"C{4 + k}", ls="--", lw=1,
                               label="paper" if ref == "paper:paper" else f"paper {ref.split(':', 1)[1]}")
            ax.set_xticks(range(len(budgets)), budgets, fontsize=8)
            ax.set_xlim(-0.5, len(budgets) - 0.5)
            ax.set_title(name, fontsize=8)
        axes[0, 0].set_ylabel("a − b (points)", fontsize=8)
        handles = {}
        for ax in axes[0]:
            handles.update(dict(zip(*reversed(ax.get_legend_handles_labels()))))
        fig.legend(handles.values(), handles.keys(), fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=min(len(handles), 4), frameon=False)
        fig.tight_layout()
    return fig


def costs_plot(costs: pd.DataFrame, speed: pd.DataFrame):
    """GMACs (from ``saol_core.macs``) and measured training images/s per backbone, hue = heads.

    costs: columns backbone, heads, GMACs; speed: columns backbone, heads, "train img/s".
    """
    with sns.axes_style("whitegrid"):
        fig, (ax_macs, ax_speed) = plt.subplots(1, 2, figsize=(10, 0.5 * costs["backbone"].nunique() + 1.8))
        sns.barplot(costs.drop_duplicates(["backbone", "heads"]), y="backbone", x="GMACs", hue="heads", ax=ax_macs)
        sns.barplot(speed, y="backbone", x="train img/s", hue="heads", ax=ax_speed)
        ax_macs.set(title="multiply-accumulates per image", ylabel="")
        ax_speed.set(title="measured training throughput", ylabel="")
    fig.tight_layout()
    return fig
