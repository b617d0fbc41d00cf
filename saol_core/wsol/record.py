"""A trained run's localization record (``wsol`` config section): each map kind scored on the test split
with its threshold chosen on a held-out selection part of it, flattened into ``<kind>_<metric>`` numbers
that the training loop writes into the run's summary (so study tables read them like accuracies).
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
from torch import nn

from ..config import ConfigError, ModelConfig, WsolConfig
from ..data.common import selection_mask
from ..macs import build_meta, count_macs
from .maps import available_kinds, center_baseline, evaluate_localization

RECORD_KEYS = ("top1_loc", "gt_known_loc", "max_box_acc", "max_box_acc_v2", "threshold", "top1_loc_best",
               "gt_known_loc_best", "top1_cls")
"""Per kind: Top-1 / GT-known Loc at the threshold chosen on the selection images, MaxBoxAcc and
MaxBoxAccV2 (threshold-free by definition), the chosen threshold, the best-on-test Top-1 / GT-known Loc
(labelled as such wherever shown) and the accuracy of the head behind the map."""
BACKWARD = {"gradcam": True}
"""Map kinds that need a backward pass (the others: one forward)."""


def method_gmacs(model_cfg: ModelConfig, num_classes: int, image_size: int) -> dict[str, float]:
    """GMACs per image of what each map kind needs (saol_core.macs conventions): CAM and Grad-CAM the
    GAP-FC model (``heads=gap``, Grad-CAM adds a backward through that head), SAOL and its factors the
    backbone with its SAOL head alone (``heads=saol``). Same backbone settings (output_stride, ...) as
    ``model_cfg``."""
    def gmacs(heads: str) -> float:
        cfg = dataclasses.replace(model_cfg, heads=heads, mask_head=False, pretrained=None)
        return count_macs(build_meta(cfg, num_classes), image_size)[1] / 1e9
    gap, saol = gmacs("gap"), gmacs("saol")
    return {"saol": saol, "attention": saol, "spatial": saol, "cam": gap, "gradcam": gap}


def scoring_split(data, cfg: WsolConfig) -> np.ndarray | None:
    """The selection mask of ``data``'s test split (selection_mask), or ConfigError where localization
    cannot be scored: no test boxes, or a selection that leaves no image to score."""
    if data.test_boxes is None:
        raise ConfigError("wsol.enabled=true needs a dataset with test boxes (cub, wsol or digits); "
                          "set wsol.enabled=false")
    select = selection_mask(data.test.labels.numpy(), cfg.select_per_class, cfg.select_seed)
    if select is not None and select.all():
        raise ConfigError(f"wsol.select_per_class={cfg.select_per_class} takes every one of the "
                          f"{len(select)} test images to choose thresholds, leaving none to score: lower it")
    return select


def localization_record(model: nn.Module, data, cfg: WsolConfig, model_cfg: ModelConfig,
                        device: torch.device | str = "cpu") -> dict[str, float]:
    """``cfg.kinds`` (those ``model`` can give; with ``cfg.factors`` also A and Y_k) and, with ``cfg.center``,
    the centre-Gaussian baseline (``center_<RECORD_KEYS>``, and ``center_top1_loc_<kind>``: its box judged
    with the classification of the head behind each kind), scored on ``data.test`` (a DataBundle with test boxes):
    ``<kind>_<RECORD_KEYS>`` plus ``<kind>_gmacs`` and ``<kind>_backward`` (0/1), ``wsol_selection_images``,
    ``wsol_scored_images`` and ``wsol_time_s``."""

    start = time.perf_counter()
    select = scoring_split(data, cfg)
    kinds = list(dict.fromkeys(cfg.kinds + (["attention", "spatial"] if cfg.factors else [])))
    kinds = available_kinds(model, kinds)
    correct: dict[str, np.ndarray] = {}
    results = evaluate_localization(model, data.test, data.test_boxes, kinds, cfg.eval_size, cfg.cam_step,
                                    device=device, progress=False, select=select, correct=correct) if kinds else {}
    gmacs = method_gmacs(model_cfg, data.num_classes, data.image_size)
    record = {}
    for kind, res in results.items():
        record.update({f"{kind}_{key}": res[key] for key in RECORD_KEYS})
        record[f"{kind}_gmacs"] = gmacs[kind]
        record[f"{kind}_backward"] = float(BACKWARD.get(kind, False))
    if cfg.center:
        res = center_baseline(data.test, data.test_boxes, cfg.eval_size, cfg.cam_step, select=select,
                              correct=correct)
        record.update({f"center_{key}": res[key] for key in RECORD_KEYS if key != "top1_cls"})
        record.update({f"center_top1_loc_{kind}": res[f"top1_loc_{kind}"] for kind in correct})
        record.update(center_gmacs=0.0, center_backward=0.0)
        results["center"] = res
    first = next(iter(results.values()), None)
    record["wsol_selection_images"] = first["selection_images"] if first else 0.0
    record["wsol_scored_images"] = first["num_images"] if first else 0.0
    record["wsol_time_s"] = time.perf_counter() - start
    return record
