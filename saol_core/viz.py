"""Figures for the notebooks (seaborn/matplotlib) and the ipywidgets explorer; notebooks only call these.

- :func:`cutmix_grid`: a CutMix-ed batch with its box and lambda.
- :func:`training_curves`: loss and test top-1 per epoch from metrics.jsonl (one run or a study).
- :func:`attention_maps`: paper Fig. 5 — input, SAOL's attention A, spatial logits Y of the top-2
  classes and A (.) Y_k (the class-wise localization map of Sec. 4.2).
- :func:`results_plot`: a study's cells, ours (per seed, mean with its 95 % interval) beside the paper's numbers.
- :func:`explorer`: pick a run folder, two test images and a box; see the mixed input, A, Y and both
  heads' predictions update live.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
import torch.nn.functional as F
from matplotlib.patches import Rectangle
from torch import Tensor

HEAT = "magma"


def _show(ax, image: Tensor, title: str = "") -> None:
    """(C,H,W) in [0,1] -> an axis without ticks."""
    img = image.permute(1, 2, 0).clamp(0, 1).cpu().numpy()
    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def _heat(ax, image: Tensor, heat: Tensor, title: str = "", vmax: float | None = None, colorbar: bool = False) -> None:
    """A (Ho,Wo) map, upsampled bilinearly to the image and drawn over its grayscale version (0..vmax)."""
    _show(ax, image.mean(0, keepdim=True).expand(3, -1, -1) * 0.6, title)
    up = F.interpolate(heat[None, None].float(), size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    shown = ax.imshow(up.cpu().numpy(), cmap=HEAT, alpha=0.6, vmin=0, vmax=vmax)
    if colorbar:
        bar = ax.figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
        bar.ax.tick_params(labelsize=6)


def short_name(name: str, width: int = 14) -> str:
    """A class name fit for a panel title: "001.Black_footed_Albatross" -> "Black footed Al…"."""
    name = name.split(".", 1)[1] if "." in name and name.split(".", 1)[0].isdigit() else name
    name = name.replace("_", " ")
    return name if len(name) <= width else name[: width - 1] + "…"


def _box(ax, box: tuple[int, int, int, int] | None, color: str = "cyan") -> None:
    """Outline a (y0, y1, x0, x1) half-open pixel box."""
    if box is not None and box[1] > box[0] and box[3] > box[2]:
        y0, y1, x0, x1 = box
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color=color, lw=1.5))


def cutmix_grid(images: Tensor, labels: Tensor, mix, class_names: Sequence[str], denormalize, n: int = 8):
    """The first ``n`` images of a CutMix batch (``saol_core.cutmix.CutMixBatch``) with the box drawn.

    images: (B,C,H,W) clean normalized batch; labels: (B,). Titles: original class x lambda + pasted
    class x (1 - lambda), the label mix the losses use.
    """
    n = min(n, images.shape[0])
    shown = denormalize(mix.images[:n])
    fig, axes = plt.subplots(1, n, figsize=(1.6 * n, 2.0), squeeze=False)
    for i, ax in enumerate(axes[0]):
        if mix.applied:
            j = int(mix.perm[i])
            title = (f"{class_names[int(labels[i])]} {mix.lam:.2f}\n"
                     f"+ {class_names[int(labels[j])]} {1 - mix.lam:.2f}")
        else:
            title = f"{class_names[int(labels[i])]}\n(not mixed)"
        _show(ax, shown[i], title)
        _box(ax, mix.box if mix.applied else None)
    fig.suptitle(f"CutMix batch: lambda = {mix.lam:.2f} of the original image", fontsize=9)
    fig.tight_layout()
    return fig


def training_curves(history: pd.DataFrame | list[dict], facet: str | None = None):
    """Training loss and test top-1 of each head per epoch, a line of panels per ``facet`` value.

    history: metrics.jsonl lines of one run, or the long frame of ``saol_core.study.histories``
    (columns run, row, variant, seed): lines are then per variant (and head), seeds averaged (± sd band).
    """
    df = pd.DataFrame(history)
    heads = {"saol_top1": "SAOL", "gap_top1": "GAP-FC"}
    keep = [c for c in df if c not in heads]
    test = df.melt(id_vars=keep, value_vars=[c for c in heads if c in df], var_name="head",
                   value_name="top1").dropna(subset=["top1"])
    test["head"] = test["head"].map(heads)
    by_variant = "variant" in df
    test["series"] = test["variant"] + " · " + test["head"] if by_variant else test["head"]
    facets = list(dict.fromkeys(df[facet])) if facet else [None]
    marker = "o" if df["epoch"].nunique() < 20 else None
    with sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(len(facets), 2, figsize=(10, 3.2 * len(facets)), squeeze=False)
        for (ax_loss, ax_acc), value in zip(axes, facets):
            part = df if value is None else df[df[facet] == value]
            test_part = test if value is None else test[test[facet] == value]
            sns.lineplot(part, x="epoch", y="train_loss", hue="variant" if by_variant else None,
                         hue_order=sorted(df["variant"].unique()) if by_variant else None,
                         errorbar="sd", marker=marker, ax=ax_loss)
            sns.lineplot(test_part, x="epoch", y="top1", hue="series", hue_order=sorted(test["series"].unique()),
                         errorbar="sd", marker=marker, ax=ax_acc)
            where = "" if value is None else f" — {value}"
            ax_loss.set(title=f"training loss (Eq. 7 total){where}", ylabel="loss")
            ax_acc.set(title=f"test top-1 of each head{where}", ylabel="top-1 (%)")
            for ax in (ax_loss, ax_acc):
                ax.xaxis.get_major_locator().set_params(integer=True)
                if ax.get_legend() is not None:
                    ax.legend(fontsize=7, title=None)
    fig.tight_layout()
    return fig


@dataclass
class Maps:
    """SAOL's outputs for a batch (CPU): the pieces of Fig. 5 and the explorer."""
    saol_probs: Tensor | None   # (B,K)
    gap_probs: Tensor | None    # (B,K)
    attention: Tensor | None    # (B,Ho,Wo) A, sums to 1
    spatial: Tensor | None      # (B,K,Ho,Wo) Y, sums to 1 over K


@torch.no_grad()
def saol_maps(model, images: Tensor) -> Maps:
    out = model.eval()(images)
    return Maps(None if out.saol_log_probs is None else out.saol_log_probs.exp(),
                None if out.gap_logits is None else out.gap_logits.softmax(1),
                out.attention, None if out.spatial_log_probs is None else out.spatial_log_probs.exp())


def _top2(maps: Maps, i: int) -> list[int]:
    probs = maps.saol_probs if maps.saol_probs is not None else maps.gap_probs
    return probs[i].topk(2).indices.tolist()


def attention_maps(model, images: Tensor, titles: Sequence[str], class_names: Sequence[str], denormalize,
                   boxes: Sequence[tuple[int, int, int, int] | None] | None = None):
    """Paper Fig. 5, a line per image: input (box drawn if given), A, then Y_k and A (.) Y_k of SAOL's
    top-2 classes. A is drawn in units of the uniform attention 1/(Ho·Wo) (1 = no preference), from 0 to
    at least 4 so that a near-uniform map looks flat, with a colorbar; Y on its [0, 1] scale; A (.) Y
    from 0 to the image's max of A.

    images: (B,C,H,W) normalized (e.g. CutMix-ed); titles: one per image (e.g. its true classes).
    """
    maps = saol_maps(model, images)
    if maps.attention is None:
        raise ValueError("attention_maps needs a model with a SAOL head (model.heads=saol or saol+gap)")
    shown = denormalize(images)
    b = images.shape[0]
    fig, axes = plt.subplots(b, 6, figsize=(10.4, 2.0 * b), squeeze=False)
    for i in range(b):
        k1, k2 = _top2(maps, i)
        p, a = maps.saol_probs[i], maps.attention[i]
        _show(axes[i, 0], shown[i], titles[i])
        _box(axes[i, 0], boxes[i] if boxes else None)
        rel = a * a.numel()
        _heat(axes[i, 1], shown[i], rel, f"A × uniform\n(max {rel.max():.1f})", vmax=max(4.0, float(rel.max())),
              colorbar=True)
        for col, k in ((2, k1), (3, k2)):
            _heat(axes[i, col], shown[i], maps.spatial[i, k], f"Y {short_name(class_names[k])}\np={p[k]:.2f}", vmax=1.0)
        for col, k in ((4, k1), (5, k2)):
            _heat(axes[i, col], shown[i], a * maps.spatial[i, k], f"A⊙Y {short_name(class_names[k])}",
                  vmax=float(a.max()))
    fig.tight_layout()
    return fig


def panels(fig) -> list:
    """A figure's panels in drawing order, without the colorbars (which ``fig.axes`` also lists)."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def paste(images: Tensor, i: int, j: int, box: tuple[int, int, int, int]) -> Tensor:
    """(1,C,H,W): image ``i`` with the (y0, y1, x0, x1) box region of image ``j`` pasted in (CutMix)."""
    y0, y1, x0, x1 = box
    mixed = images[i:i + 1].clone()
    mixed[:, :, y0:y1, x0:x1] = images[j:j + 1, :, y0:y1, x0:x1]
    return mixed


METRIC_LABELS = {"top1": "top-1 (%)", "top5": "top-5 (%)", "saol_top1": "SAOL top-1 (%)",
                 "gap_top1": "GAP-FC top-1 (%)", "saol_top5": "SAOL top-5 (%)", "gap_top5": "GAP-FC top-5 (%)"}


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
            ax.set_xlabel(" / ".join(METRIC_LABELS.get(m, m) for m in metrics), fontsize=8)
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


VERDICT_COLORS = {"reproduced": "C2", "same direction, larger": "C8", "same direction, smaller": "C8",
                  "smaller than the paper's": "C1", "inconclusive": "0.45", "contradicted": "C3", "differs": "C0",
                  "no difference seen": "0.65", "too few seeds": "0.45"}
"""One colour per verdict word of saol_core.study.stats.VERDICTS (the report's legend defines them)."""


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
                        color=VERDICT_COLORS.get(c.verdict, "0.45"), capsize=3,
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
                                color=VERDICT_COLORS.get(c["verdict"], "0.45"), label=f"ours: {c['verdict']}")
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


def save(fig, path: str | Path, source: str | None = None) -> Path:
    """Write ``fig`` as a PNG; ``source`` (e.g. the run a map was drawn from) goes into the file's
    metadata, so a report regenerated after the checkpoint is gone can still name it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Source": source} if source else None)
    return path


def figure_source(path: str | Path) -> str | None:
    """The ``source`` that :func:`save` wrote into a PNG, or None."""
    from PIL import Image
    with Image.open(path) as image:
        return image.info.get("Source")


def examples(cfg, n: int = 8, split: str = "test"):
    """(images (n,C,H,W) normalized, labels (n,), DataBundle): the first ``n`` images of a run's
    ``split`` (train: the first batch of epoch 0, augmented as in training) on the CPU."""
    from .data import build_data
    data = build_data(cfg.data, seed=cfg.seed, batch_size=min(n, cfg.train.batch_size), device="cpu",
                      eval_batch_size=n)
    loader = data.train if split == "train" else data.test
    images, labels, _ = next(iter(loader.epoch(0)))
    return images[:n], labels[:n], data


def cutmix_example(cfg, n: int = 8):
    """``cutmix_grid`` of a training batch of ``cfg``'s data, mixed with CutMix (p = 1, the run's beta)."""
    from .cutmix import cutmix
    images, labels, data = examples(cfg, n, "train")
    mix = cutmix(images, 1.0, cfg.loss.cutmix_beta, torch.Generator().manual_seed(cfg.seed))
    return cutmix_grid(images, labels, mix, data.class_names, data.denormalize, n)


def fig5(run_dir: str | Path, n: int = 4, which: str = "last"):
    """Paper Fig. 5 for a trained run: the first ``n`` test images, each CutMix-ed with the next one
    (a centred box of half the side), through ``attention_maps``."""
    from .train import load_run
    model, cfg = load_run(run_dir, which)
    images, labels, data = examples(cfg, n + 1)
    s = images.shape[-1]
    box = (s // 4, s // 4 + s // 2, s // 4, s // 4 + s // 2)
    mixed = torch.cat([paste(images, i, i + 1, box) for i in range(n)])
    names = data.class_names
    titles = [f"{names[int(labels[i])]} + {names[int(labels[i + 1])]} (box)" for i in range(n)]
    return attention_maps(model, mixed, titles, names, data.denormalize, boxes=[box] * n)


def explorer(run_dirs: Sequence[str | Path], n_images: int = 64):
    """ipywidgets explorer over trained runs: choose a run folder (its best checkpoint), two test images
    and a box; shows the CutMix-ed input, A, Y and A (.) Y for SAOL's top-2 classes, and both heads'
    top-3 predictions, redrawn on every change."""
    import ipywidgets as w

    from .train import load_run

    run_dirs = [str(r) for r in run_dirs]
    if not run_dirs:
        raise ValueError("explorer needs at least one run folder with a checkpoint")
    cache: dict[str, tuple] = {}

    def load(run_dir: str):
        if run_dir not in cache:
            model, cfg = load_run(run_dir, "best" if (Path(run_dir) / "best.pt").exists() else "last")
            images, labels, data = examples(cfg, n_images)
            cache[run_dir] = (model, images, labels, data)
        return cache[run_dir]

    size = load(run_dirs[0])[1].shape[-1]
    run = w.Dropdown(options=run_dirs, description="run", layout=w.Layout(width="95%"))
    img_a = w.IntSlider(0, 0, n_images - 1, description="image")
    img_b = w.IntSlider(1, 0, n_images - 1, description="pasted")
    rows = w.IntRangeSlider(value=(size // 4, size // 2), min=0, max=size, description="box rows")
    cols = w.IntRangeSlider(value=(size // 4, size // 2), min=0, max=size, description="box cols")

    def draw(run_dir, a, b, ys, xs):
        model, images, labels, data = load(run_dir)
        a, b = min(a, len(images) - 1), min(b, len(images) - 1)
        box = (ys[0], ys[1], xs[0], xs[1])
        mixed = paste(images, a, b, box)
        maps = saol_maps(model, mixed)
        names = data.class_names
        area = (ys[1] - ys[0]) * (xs[1] - xs[0]) / size ** 2
        lines = [f"label: {1 - area:.0%} {names[int(labels[a])]} (image {a}) + {area:.0%} {names[int(labels[b])]} "
                 f"(image {b}, pasted)"]
        for head, probs in (("SAOL", maps.saol_probs), ("GAP-FC", maps.gap_probs)):
            if probs is not None:
                top = probs[0].topk(3)
                lines.append(f"{head}: " + ", ".join(f"{names[k]} {p:.2f}" for p, k in
                                                     zip(top.values.tolist(), top.indices.tolist())))
        print("\n".join(lines))
        if maps.attention is None:
            _, ax = plt.subplots(figsize=(2.2, 2.2))
            _show(ax, data.denormalize(mixed)[0], "input (GAP-FC model: no maps)")
            _box(ax, box)
        else:
            attention_maps(model, mixed, [lines[0]], names, data.denormalize, boxes=[box])
        plt.show()

    out = w.interactive_output(draw, {"run_dir": run, "a": img_a, "b": img_b, "ys": rows, "xs": cols})
    return w.VBox([run, w.HBox([img_a, img_b]), w.HBox([rows, cols]), out])


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


def saol_runs(folder: str | Path) -> list[str]:
    """Run folders under ``folder`` that hold a checkpoint of a model with a SAOL head (sorted)."""
    import yaml
    found = []
    for best in sorted(Path(folder).glob("*/best.pt")):
        heads = yaml.safe_load((best.parent / "config.yaml").read_text())["model"]["heads"]
        if "saol" in heads:
            found.append(str(best.parent))
    return found
