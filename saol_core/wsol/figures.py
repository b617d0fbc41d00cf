"""The qualitative figure of the localization study: images with ground-truth and predicted boxes beside
SAOL's maps (A, Y and A ⊙ Y of the top-2 classes)."""
from __future__ import annotations

import numpy as np
import torch
from matplotlib.patches import Rectangle

from .. import viz
from ..model import SAOLModel
from .maps import localization_maps, normalize_maps
from .metrics import region_boxes


def predicted_box(maps: torch.Tensor, threshold: float, image_size: int, eval_size: int) -> np.ndarray:
    """(B, h, w) raw maps -> (B, 4) xyxy box of the largest region at ``threshold``, found as the
    evaluator finds it (eval_size x eval_size, min-max normalized), scaled back to image pixels."""
    scores = normalize_maps(maps, (eval_size, eval_size)).cpu().numpy()
    boxes = np.stack([region_boxes(s, np.array([threshold]))[0][0] for s in scores]).astype(np.float64)
    return boxes * image_size / eval_size


def _outline(ax, box: np.ndarray, color: str) -> None:
    """Outline an xyxy inclusive-pixel box on an image axis."""
    x0, y0, x1, y1 = box
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, color=color, lw=1.5))


def qualitative_grid(model: SAOLModel, data, thresholds: dict[str, float], n: int = 4, eval_size: int = 224):
    """viz.attention_maps of the first ``n`` test images (input, A, Y and A ⊙ Y of SAOL's top-2 classes)
    with the ground-truth boxes (cyan) and the predicted boxes for the predicted class: SAOL (lime, on
    the input and on A ⊙ Y of the top-1 class) and CAM (orange, on the input). ``thresholds``: per map
    kind ("saol", "cam"), the CAM threshold used for the boxes."""
    images, labels, indices = next(iter(data.test.epoch(0)))
    images, labels, indices = images[:n].cpu(), labels[:n], indices[:n].tolist()
    names = [viz.short_name(name) for name in data.class_names]
    fig = viz.attention_maps(model, images, [f"label {names[int(k)]}" for k in labels], names, data.denormalize)
    axes = np.array(viz.panels(fig)).reshape(len(images), -1)
    size = images.shape[-1]
    boxes = {kind: predicted_box(localization_maps(model, images, kind)[0], thresholds[kind], size, eval_size)
             for kind in ("saol", "cam")}
    ground_truth = data.test_boxes.at(size)
    for i, index in enumerate(indices):
        for gt in ground_truth[index]:
            _outline(axes[i, 0], gt, "cyan")
        _outline(axes[i, 0], boxes["saol"][i], "lime")
        _outline(axes[i, 4], boxes["saol"][i], "lime")
        _outline(axes[i, 0], boxes["cam"][i], "orange")
    fig.suptitle(f"boxes: ground truth (cyan), SAOL A⊙Y_k at {thresholds['saol']:.2f} (lime), "
                 f"CAM at {thresholds['cam']:.2f} (orange)", fontsize=9)
    fig.tight_layout()
    return fig


def localization_figure(run_dir, n: int = 4):
    """``qualitative_grid`` of a trained run folder's first ``n`` test images at the thresholds its
    localization record chose (``summary.final``: saol_threshold, cam_threshold); None for a run without
    both (wsol.enabled=false, or a model without a SAOL or a GAP-FC head)."""
    from ..data import build_data
    from ..runs import RunFolder
    from ..train import load_run   # the training loop imports saol_core.wsol lazily, and so does this

    final = (RunFolder(run_dir).read_summary() or {}).get("final") or {}
    if "saol_threshold" not in final or "cam_threshold" not in final:
        return None
    model, cfg = load_run(run_dir)
    data = build_data(cfg.data, seed=cfg.seed, batch_size=n)
    return qualitative_grid(model, data, {"saol": final["saol_threshold"], "cam": final["cam_threshold"]}, n,
                            cfg.wsol.eval_size)
