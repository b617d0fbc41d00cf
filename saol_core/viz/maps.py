"""Figures of images and SAOL's maps: CutMix-ed batches, paper Fig. 5 (input, A, Y and A ⊙ Y_k of the top-2
classes) and the ipywidgets explorer of a trained run."""
from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.patches import Rectangle
from torch import Tensor

from .. import figrecords
from ..cutmix import cutmix, paste
from ..figrecords import saol_maps
from ..data import build_data

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


CLASS_FOLDER = re.compile(r"\b\d+\.([A-Za-z]\w*)")
"""A class named by its dataset folder, e.g. CUB's "001.Black_footed_Albatross"."""


def readable(text: str) -> str:
    """Every folder-style class name in ``text`` as a reader writes it: "label 001.Black_footed_Albatross" ->
    "label Black footed Albatross"."""
    return CLASS_FOLDER.sub(lambda m: m.group(1).replace("_", " "), text)


def short_name(name: str, width: int = 14) -> str:
    """A class name fit for a panel title: "001.Black_footed_Albatross" -> "Black footed Al…"."""
    name = readable(name).replace("_", " ")
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


def attention_maps(model, images: Tensor, titles: Sequence[str], class_names: Sequence[str], denormalize,
                   boxes: Sequence[tuple[int, int, int, int] | None] | None = None):
    """Paper Fig. 5 of ``images`` (B,C,H,W) normalized (e.g. CutMix-ed), titles one per image, ``boxes`` a
    pasted (y0, y1, x0, x1) box per image or None: :func:`draw_maps` of ``figrecords.maps_record``."""
    pasted = None if boxes is None else [b if b is not None else (0, 0, 0, 0) for b in boxes]
    return draw_maps(figrecords.maps_record(model, images, titles, class_names, denormalize, pasted))


def draw_maps(record: dict[str, np.ndarray]):
    """A figure record (``saol_core.figrecords``: from a model or a run folder's .npz), a line per image:
    input (pasted box in cyan if any), A, then Y_k and A ⊙ Y_k of SAOL's top-2 classes. A is drawn in units
    of the uniform attention 1/(Ho·Wo) (1 = no preference), from 0 to at least 4 so that a near-uniform map
    looks flat, with a colorbar; Y on its [0, 1] scale; A ⊙ Y from 0 to the image's max of A. With boxes:
    ground truth (cyan) on the input, SAOL's predicted box (lime) on the input and on A ⊙ Y of the top-1
    class, CAM's (orange) on the input."""
    images = figrecords.load_images(record)
    b = len(record["titles"])
    fig, axes = plt.subplots(b, 6, figsize=(10.4, 2.0 * b), squeeze=False)
    for i in range(b):
        shown = torch.from_numpy(np.ascontiguousarray(images[i])).permute(2, 0, 1).float() / 255
        rel = torch.from_numpy(record["attention"][i])
        a = rel / rel.numel()
        _show(axes[i, 0], shown, textwrap.fill(readable(str(record["titles"][i])), 28))
        if "pasted" in record:
            _box(axes[i, 0], tuple(int(v) for v in record["pasted"][i]))
        _heat(axes[i, 1], shown, rel, f"A × uniform\n(max {rel.max():.1f})", vmax=max(4.0, float(rel.max())),
              colorbar=True)
        for j in range(2):
            name, y = short_name(str(record["top2"][i, j])), torch.from_numpy(record["spatial"][i, j])
            _heat(axes[i, 2 + j], shown, y, f"Y {name}\np={record['probs'][i, j]:.2f}", vmax=1.0)
            _heat(axes[i, 4 + j], shown, a * y, f"A⊙Y {name}", vmax=float(a.max()))
        if "gt_boxes" in record:
            for gt in record["gt_boxes"][i]:
                if gt[0] >= 0:
                    _outline(axes[i, 0], gt, "cyan")
            for ax in (axes[i, 0], axes[i, 4]):
                _outline(ax, record["saol_boxes"][i], "lime")
            _outline(axes[i, 0], record["cam_boxes"][i], "orange")
    if "thresholds" in record:
        saol, cam = record["thresholds"]
        fig.suptitle(f"boxes: ground truth (cyan), SAOL A⊙Y_k at {saol:.2f} (lime), CAM at {cam:.2f} (orange)",
                     fontsize=9)
    fig.tight_layout()
    return fig


def panels(fig) -> list:
    """A figure's panels in drawing order, without the colorbars (which ``fig.axes`` also lists)."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def examples(cfg, n: int = 8, split: str = "test"):
    """(images (n,C,H,W) normalized, labels (n,), DataBundle): the first ``n`` images of a run's
    ``split`` (train: the first batch of epoch 0, augmented as in training) on the CPU."""
    data = build_data(cfg.data, seed=cfg.seed, batch_size=min(n, cfg.train.batch_size), device="cpu",
                      eval_batch_size=n)
    loader = data.train if split == "train" else data.test
    images, labels, _ = next(iter(loader.epoch(0)))
    return images[:n], labels[:n], data


def cutmix_example(cfg, n: int = 8):
    """``cutmix_grid`` of a training batch of ``cfg``'s data, mixed with CutMix (p = 1, the run's beta)."""
    images, labels, data = examples(cfg, n, "train")
    mix = cutmix(images, 1.0, cfg.loss.cutmix_beta, torch.Generator().manual_seed(cfg.seed))
    return cutmix_grid(images, labels, mix, data.class_names, data.denormalize, n)


def fig5(run_dir: str | Path, n: int = 4, which: str = "last"):
    """Paper Fig. 5 for a trained run: ``n`` test images of different classes, each CutMix-ed with the next one
    (a centred box of half the side), drawn from the run's record (``maps_fig5.npz``) where it has one, else
    computed from its checkpoint (``which``)."""
    record = Path(run_dir) / figrecords.FIG5
    if record.exists():
        return draw_maps(figrecords.load(record))
    from ..train import load_run
    model, cfg = load_run(run_dir, which)
    data = build_data(cfg.data, seed=cfg.seed, batch_size=min(n + 1, cfg.train.batch_size), device="cpu",
                      eval_batch_size=n + 1)
    return draw_maps(figrecords.fig5_record(model, data, n))


def explorer(run_dirs: Sequence[str | Path], n_images: int = 64):
    """ipywidgets explorer over trained runs: choose a run folder (its best checkpoint), two test images
    and a box; shows the CutMix-ed input, A, Y and A (.) Y for SAOL's top-2 classes, and both heads'
    top-3 predictions, redrawn on every change."""
    import ipywidgets as w

    from ..train import load_run

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
        mixed = paste(images[a:a + 1], images[b:b + 1], box)
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


def saol_runs(*folders: str | Path) -> list[str]:
    """Run folders anywhere under ``folders`` (in that order) that hold a best.pt of a model with a SAOL
    head, sorted within each folder."""
    import yaml
    found = []
    for folder in folders:
        for best in sorted(Path(folder).glob("**/best.pt")):
            config = best.parent / "config.yaml"
            if config.exists() and "saol" in yaml.safe_load(config.read_text())["model"]["heads"]:
                found.append(str(best.parent))
    return list(dict.fromkeys(found))


def _outline(ax, box: np.ndarray, color: str) -> None:
    """Outline an xyxy inclusive-pixel box on an image axis."""
    x0, y0, x1, y1 = box
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, color=color, lw=1.5))


def qualitative_grid(model, data, thresholds: dict[str, float], n: int = 4, eval_size: int = 224):
    """:func:`draw_maps` of ``n`` test images of different classes with the ground-truth boxes and the boxes
    SAOL and CAM predict at ``thresholds`` (per map kind, "saol" and "cam")."""
    return draw_maps(figrecords.boxes_record(model, data, thresholds, n, eval_size))
