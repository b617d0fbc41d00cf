"""Weakly-supervised object localization (paper Sec. 4.2, Table 7): localization maps from a model and
their dataset-level box evaluation (box metrics: ``saol_core.wsol.metrics``).

Map kinds (raw maps at the head's resolution, (B, h, w)):
  saol       A ⊙ Y_k, the SAOL class-wise map: exp(log A + log Y_k). One forward pass, no backward.
  attention  A, the class-agnostic spatial attention.
  spatial    Y_k, SAOL's spatial class probability alone (A ⊙ Y_k without A).
  cam        CAM (Zhou et al. 2016): Σ_c w_kc X^L_c with the GAP-FC weights (no bias, no ReLU, as in
             wsolevaluation; min-max normalization makes both irrelevant to the boxes).
  gradcam    Grad-CAM (Selvaraju et al. 2017): ReLU(Σ_c α_c X^L_c), α_c = mean_ij ∂logit_k/∂X^L_cij of
             the GAP-FC logit. Needs a backward pass. With GAP and a linear head α_c = w_kc / (H·W),
             so Grad-CAM = ReLU(CAM) / (H·W).
Evaluation follows wsolevaluation: maps upsampled bicubically to eval_size x eval_size, min-max
normalized per map, boxes from ``metrics.BoxEvaluator``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..data.boxes import GroundTruthBoxes
from .metrics import SelectedThresholdEvaluator, region_boxes, scoremap_ious

KINDS = ("saol", "attention", "spatial", "cam", "gradcam")
HEAD_OF_KIND = {"saol": "saol", "attention": "saol", "spatial": "saol", "cam": "gap", "gradcam": "gap"}
"""The head each map kind comes from: the model's ``saol`` or ``gap`` head."""
TARGETS = ("label", "pred")


def _check(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(choices)}")


def _head_missing(kind: str, head: str) -> ValueError:
    return ValueError(f"map kind {kind!r} needs the model's {head} head, which this model does not have")


@torch.no_grad()
def maps_from_output(model: nn.Module, out, kind: str, target: Tensor | None = None
                     ) -> tuple[Tensor, Tensor]:
    """Forward-only maps ('saol', 'attention', 'spatial', 'cam') from an existing ModelOutput.

    Args: out: ModelOutput of `model` (log_attention (B,Ho,Wo), spatial_log_probs (B,K,Ho,Wo),
    saol_log_probs (B,K), gap_logits (B,K), features (B,C,H,W)); target (B,) classes or None for the
    head's prediction. Returns (maps (B,h,w) float32 without grad, predicted classes (B,) of the
    head used: SAOL head for saol/attention/spatial, GAP-FC head for cam).
    """
    _check("map kind", kind, KINDS[:4])
    if kind in ("saol", "attention", "spatial"):
        if out.saol_log_probs is None or out.log_attention is None or out.spatial_log_probs is None:
            raise _head_missing(kind, "SAOL")
        pred = out.saol_log_probs.argmax(1)
        if kind == "attention":
            return out.log_attention.float().exp(), pred
        k = pred if target is None else target
        ho, wo = out.log_attention.shape[-2:]
        log_y = out.spatial_log_probs.gather(1, k.view(-1, 1, 1, 1).expand(-1, 1, ho, wo)).squeeze(1)
        if kind == "spatial":
            return log_y.float().exp(), pred
        # add in log space: A and Y_k are both small after softmaxes, their product can underflow bf16
        return (out.log_attention.float() + log_y.float()).exp(), pred
    if out.gap_logits is None or getattr(model, "gap", None) is None:
        raise _head_missing(kind, "GAP-FC")
    pred = out.gap_logits.argmax(1)
    k = pred if target is None else target
    weight = model.gap.fc.weight[k]                                  # (B, C)
    return weighted_features(weight, out.features), pred


def weighted_features(weights: Tensor, features: Tensor) -> Tensor:
    """Σ_c w_bc X_bc: (B, C) weights (FC rows for CAM, pooled gradients for Grad-CAM) and (B, C, h, w)
    features -> (B, h, w) float32 maps, computed in float32 even under autocast (which runs einsum in bf16)."""
    with torch.autocast(features.device.type, enabled=False):
        return torch.einsum("bc,bchw->bhw", weights.float(), features.float())


def _gradcam(model: nn.Module, images: Tensor, target: Tensor | None) -> tuple[Tensor, Tensor]:
    with torch.enable_grad():
        # a leaf input that requires grad keeps the features in the graph even for a frozen backbone
        out = model(images.detach().requires_grad_(True))
        if out.gap_logits is None:
            raise _head_missing("gradcam", "GAP-FC")
        pred = out.gap_logits.argmax(1)
        k = pred if target is None else target
        # samples do not interact in eval mode, so one backward of the summed scores gives every
        # per-sample gradient at once
        score = out.gap_logits.gather(1, k.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(score, out.features)
    alpha = grad.float().mean(dim=(2, 3))                             # (B, C)
    return F.relu(weighted_features(alpha, out.features.detach())), pred.detach()


def localization_maps(model: nn.Module, images: Tensor, kind: str, target: Tensor | None = None
                      ) -> tuple[Tensor, Tensor]:
    """Raw localization maps of `images` (B, C, H, W).

    kind: one of KINDS; target (B,) int64 class per image, None for the
    predicted class. Returns (maps (B, h, w) float32 detached, predicted classes (B,) of the head used:
    SAOL head for saol/attention/spatial, GAP-FC head for cam/gradcam). Put the model in eval() first.
    """
    _check("map kind", kind, KINDS)
    if kind == "gradcam":
        return _gradcam(model, images, target)
    with torch.no_grad():
        out = model(images)
    return maps_from_output(model, out, kind, target)


def normalize_maps(maps: Tensor, size: tuple[int, int] = (224, 224)) -> Tensor:
    """(B, h, w) raw maps -> (B, *size) float64 in [0, 1] on the CPU, as wsolevaluation computes them: each
    map cast to float64 (its ``t2n``), upsampled with OpenCV's bicubic ``cv2.resize``, then min-max
    normalized. (Bicubic in float32, or torch's in float64, differs by up to 1e-5 before normalization,
    which a nearly constant map stretches into visible differences.) A constant map (judged before
    upsampling, whose rounding would otherwise be stretched to [0, 1]) or one with a NaN/inf gives all
    zeros: no localization, the empty box downstream.
    """
    import cv2
    raw = maps.detach().to("cpu", torch.float64).numpy()
    out = np.zeros((len(raw), *size), np.float64)
    for i, m in enumerate(raw):
        if not np.isfinite(m).all() or m.max() == m.min():
            continue
        up = cv2.resize(m, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
        span = up.max() - up.min()
        if span > 0 and np.isfinite(span):
            out[i] = (up - up.min()) / span
    return torch.from_numpy(out)


def available_kinds(model: nn.Module, kinds: Sequence[str]) -> list[str]:
    """The map kinds of ``kinds`` that ``model``'s heads can give (SAOL head: saol, attention, spatial;
    GAP-FC head: cam, gradcam)."""
    return [k for k in kinds if getattr(model, HEAD_OF_KIND[k], None) is not None]


def evaluate_localization(model: nn.Module, loader, boxes: GroundTruthBoxes,
                          kinds: Sequence[str] = ("saol", "cam", "gradcam"), eval_size: int = 224,
                          cam_step: float = 0.01, threshold: float | None = None,
                          device: torch.device | str = "cpu", max_batches: int | None = None,
                          target: str = "label", multi_contour: bool = False, progress: bool = True,
                          select: np.ndarray | None = None,
                          correct: dict[str, np.ndarray] | None = None) -> dict[str, dict[str, float]]:
    """Box localization metrics per map kind (see BoxEvaluator.compute for the keys, in percent).

    loader: a saol_core.data Loader (its epoch(0) is used) or any iterable of (images (B,C,H,W)
    normalized at the model's input size, labels (B,), indices (B,)). boxes: the split's ground truth
    (DataBundle.test_boxes), mapped from original pixels to eval_size in one step like the reference.
    target: 'label' maps the true class (wsolevaluation's GT-known protocol), 'pred' the head's
    prediction; Top-1 Loc is the same either way (it only counts images whose prediction is right).
    top1_cls is the accuracy of the head behind each kind. select: (N,) bool by dataset index, the
    images that choose each kind's threshold and are left out of its scores
    (SelectedThresholdEvaluator; ``threshold``, if given, overrides the choice). The model is moved
    to `device` and run in eval mode (its train/eval mode is restored afterwards). ``correct``, if given, is
    filled with each kind's (N,) bool "the head behind it classified the image right", by dataset index
    (N = len(boxes); False where not walked), for center_baseline's Top-1 Loc.
    """
    for kind in kinds:
        _check("map kind", kind, KINDS)
    _check("target", target, TARGETS)
    evaluators = {kind: SelectedThresholdEvaluator(select, cam_step=cam_step, multi_contour=multi_contour)
                  for kind in kinds}
    gt_all = boxes.at(eval_size)
    forward_kinds = [k for k in kinds if k != "gradcam"]
    batches = loader.epoch(0) if hasattr(loader, "epoch") else iter(loader)
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    was_training = model.training
    model.to(device).eval()
    try:
        for step, (images, labels, indices) in enumerate(tqdm(batches, total=total, desc="wsol",
                                                              disable=not progress)):
            if max_batches is not None and step >= max_batches:
                break
            images, labels = images.to(device), labels.to(device)
            indices = indices.cpu().numpy()
            gt = [gt_all[i] for i in indices.tolist()]
            tgt = labels if target == "label" else None
            if forward_kinds:
                with torch.no_grad():
                    out = model(images)     # one forward serves every forward-only kind
            for kind in kinds:
                if kind == "gradcam":
                    maps, pred = localization_maps(model, images, kind, tgt)
                else:
                    maps, pred = maps_from_output(model, out, kind, tgt)
                scores = normalize_maps(maps, (eval_size, eval_size)).cpu().numpy()
                right = (pred == labels).cpu().numpy()
                evaluators[kind].accumulate(scores, gt, right, indices)
                if correct is not None:
                    correct.setdefault(kind, np.zeros(len(gt_all), bool))[indices] = right
    finally:
        model.train(was_training)
    return {kind: ev.compute(threshold) for kind, ev in evaluators.items()}


def center_gaussian(eval_size: int) -> np.ndarray:
    """The no-model score map of wsolevaluation's baseline: a centred Gaussian, sigma = eval_size / 4,
    min-max normalized, (eval_size, eval_size) float64."""
    grid = np.arange(eval_size) - (eval_size - 1) / 2
    gauss = np.exp(-(grid[:, None] ** 2 + grid[None, :] ** 2) / (2 * (eval_size / 4) ** 2))
    return (gauss - gauss.min()) / (gauss.max() - gauss.min())


FACTOR_KINDS = {"A": "attention", "Y_k": "spatial", "A ⊙ Y_k": "saol"}
"""SAOL's class map and its two factors, as map kinds."""


def factor_results(model: nn.Module, loader, boxes: GroundTruthBoxes, eval_size: int = 224,
                   cam_step: float = 0.01, max_batches: int | None = None, **kwargs) -> dict[str, dict[str, float]]:
    """Which factor of SAOL's class map localizes? Box metrics (``BoxEvaluator.compute``) of the attention
    A alone, the spatial class probability Y_k alone and their product A ⊙ Y_k, k = the ground-truth class
    (so classification errors do not enter), each evaluated like any localization map. Other keyword
    arguments go to evaluate_localization (device, select, progress, ...)."""
    res = evaluate_localization(model, loader, boxes, list(FACTOR_KINDS.values()), eval_size, cam_step,
                                max_batches=max_batches, target="label", **{"progress": False, **kwargs})
    return {name: res[kind] for name, kind in FACTOR_KINDS.items()}


def center_baseline(loader, boxes: GroundTruthBoxes, eval_size: int = 224, cam_step: float = 0.01,
                    threshold: float | None = None, max_batches: int | None = None,
                    select: np.ndarray | None = None,
                    correct: Mapping[str, np.ndarray] | None = None) -> dict[str, float]:
    """The no-model baseline of wsolevaluation (Choe et al. 2020): the same centred Gaussian score map
    (maps.center_gaussian) for every image of ``loader`` (as evaluate_localization walks it, ``select``
    included), so the threshold sweep picks the best centred box size. Large objects (CUB birds) make it
    strong. Keys as BoxEvaluator.compute; its own top1_loc counts every image as misclassified (no
    classifier). ``correct`` {name: (N,) bool by dataset index}, e.g. evaluate_localization's, adds
    ``top1_loc_<name>``: the scored images that head classified right AND whose centred box (at the chosen
    threshold) reaches IoU 0.5 - the Top-1 Loc of a head that ignores the image when it draws its box."""
    gauss = center_gaussian(eval_size)
    evaluator = SelectedThresholdEvaluator(select, cam_step=cam_step)
    gt_all = boxes.at(eval_size)
    walked = []
    for step, (_, _, indices) in enumerate(loader.epoch(0)):
        if max_batches is not None and step >= max_batches:
            break
        indices = indices.cpu().numpy()
        gt = [gt_all[i] for i in indices.tolist()]
        evaluator.accumulate(np.broadcast_to(gauss, (len(gt), eval_size, eval_size)), gt, np.zeros(len(gt), bool),
                             indices)
        walked.extend(indices.tolist())
    res = evaluator.compute(threshold)
    if correct:
        scored = np.array([i for i in walked if select is None or not select[i]], np.int64)
        at = np.array([res["threshold"]])
        hit = np.array([scoremap_ious(gauss, gt_all[i], at)[0][0] >= 0.5 for i in scored.tolist()], bool)
        for name, right in correct.items():
            res[f"top1_loc_{name}"] = float((hit & np.asarray(right, bool)[scored]).sum() * 100.0 / len(scored))
    return res


def predicted_box(maps: torch.Tensor, threshold: float, image_size: int, eval_size: int) -> np.ndarray:
    """(B, h, w) raw maps -> (B, 4) xyxy box of the largest region at ``threshold``, found as the
    evaluator finds it (eval_size x eval_size, min-max normalized), scaled back to image pixels."""
    scores = normalize_maps(maps, (eval_size, eval_size)).cpu().numpy()
    boxes = np.stack([region_boxes(s, np.array([threshold]))[0][0] for s in scores]).astype(np.float64)
    return boxes * image_size / eval_size
