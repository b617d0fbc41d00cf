"""Box-based WSOL metrics with the semantics of clovaai/wsolevaluation (Choe et al., CVPR 2020).

Pure numpy/scipy: score maps in, accuracies out. The model side lives in `saol_core/wsol.py`.

Protocol, per image and per CAM threshold t in np.arange(0, 1, cam_step):
  * the score map (H, W) in [0, 1] is quantized like the reference, u = uint8(map * 255), and
    binarized as u > int(t * max(u));
  * connected foreground regions are found with 8-connectivity (the connectivity of the outer
    borders cv2.findContours traces);
  * the box of a region is xyxy in pixels. With `reference_box_extent=True` (default) it is built
    like the reference: cv2.boundingRect gives w = max_x - min_x + 1 and the reference stores
    x1 = x + w, clipped to W - 1, i.e. x1 = min(max_x + 1, W - 1) (same for y). So a predicted box
    is one pixel larger on the right/bottom unless it touches the border. `False` gives the tight
    inclusive box [min_x, min_y, max_x, max_y];
  * an empty binarization yields the box [0, 0, 0, 0] (a 1-pixel box at the origin), as in the
    reference;
  * IoU uses inclusive pixels (+1 on widths and heights); an image's IoU at t is the best over its
    ground-truth boxes (and, for the all-regions variant, over its predicted regions).
MaxBoxAcc: largest region, IoU >= 0.5, best t. MaxBoxAccV2: all regions, mean over IoU thresholds
(30/50/70 %) of the accuracy at each one's best t.

Deliberate deviations from the reference (documented, not silent):
  * "largest" = most pixels (ties: first in raster order). The reference ranks contours by
    cv2.contourArea, the polygon area through the boundary pixel centres, which discounts thin
    structures; both agree for blob-like maps.
  * the all-regions variant scores foreground regions only. cv2.RETR_TREE also returns hole
    borders, whose boxes lie inside the enclosing region's box; they only matter when a hole's box
    matches a ground-truth box better than every region's box.
  * NaN score-map values count as 0 (an all-NaN map gives the empty box) instead of raising, so one
    degenerate map cannot abort a dataset-wide evaluation; values outside [0, 1] still raise.
  * ground-truth boxes with x1 < x0 or y1 < y0 (or NaN) are invalid and never matched (IoU 0); an
    image without valid boxes counts as a miss. Zero width/height (x1 == x0) is a valid 1-pixel-wide
    box under the +1 convention.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
_EMPTY_BOX = np.zeros((1, 4), dtype=np.int64)
_RANGE_TOL = 1e-6  # float rounding of a min-max normalization must not raise


def threshold_grid(cam_step: float) -> np.ndarray:
    """CAM thresholds np.arange(0, 1, cam_step), float64 like the reference's list."""
    if not 0.0 < cam_step < 1.0:
        raise ValueError(f"cam_step must be in (0, 1), got {cam_step}")
    return np.arange(0, 1, cam_step)


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of xyxy inclusive-pixel boxes: (Na, 4) x (Nb, 4) -> (Na, Nb) float64.

    Areas are (x1 - x0 + 1) * (y1 - y0 + 1). Invalid boxes (x1 < x0, y1 < y0, NaN) have IoU 0.
    """
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)[:, None, :]
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)[None, :, :]
    with np.errstate(invalid="ignore"):
        valid = (a[..., 2] >= a[..., 0]) & (a[..., 3] >= a[..., 1]) \
            & (b[..., 2] >= b[..., 0]) & (b[..., 3] >= b[..., 1])
        iw = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1
        ih = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1
        inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
        area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
        area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
        union = area_a + area_b - inter
        ok = valid & (union > 0)
        return np.where(ok, inter / np.where(ok, union, 1.0), 0.0)


def resize_boxes(boxes: np.ndarray, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> np.ndarray:
    """Rescale xyxy boxes (n, 4) from an image of size from_hw to to_hw, truncating toward zero
    like the reference's resize_bbox (int(x * new_w / w)). Returns float64 (n, 4); NaN stays NaN."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    (fh, fw), (th, tw) = from_hw, to_hw
    return np.trunc(b * np.array([tw / fw, th / fh, tw / fw, th / fh]))


def _quantize(scoremap: np.ndarray) -> np.ndarray:
    """(H, W) float in [0, 1] -> uint8 like the reference; NaN -> 0 (see module docstring)."""
    m = np.asarray(scoremap, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"a score map must be 2-D (H, W), got shape {m.shape}")
    m = np.where(np.isnan(m), 0.0, m)
    if m.size and (m.min() < -_RANGE_TOL or m.max() > 1 + _RANGE_TOL):
        raise ValueError(f"score map values must lie in [0, 1], got [{m.min()}, {m.max()}]; "
                         "normalize it first (saol_core.wsol.normalize_maps)")
    return (np.clip(m, 0.0, 1.0) * 255).astype(np.uint8)


def region_boxes(scoremap: np.ndarray, thresholds: np.ndarray, *, reference_box_extent: bool = True
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes of the connected regions of a score map at every threshold.

    Args: scoremap (H, W) in [0, 1]; thresholds (T,) in [0, 1).
    Returns: largest (T, 4) int64 box of the largest region per threshold; boxes (M, 4) int64 of all
    regions; owner (M,) the threshold index of each of them, ascending, every threshold owning at
    least one box (the empty binarization owns [0, 0, 0, 0]).
    """
    u = _quantize(scoremap)
    h, w = u.shape
    thresholds = np.asarray(thresholds, dtype=np.float64)
    # int(t * max) of the reference: same float64 product, truncation == floor for t >= 0
    levels = np.floor(thresholds * float(u.max())).astype(np.int64)
    # masks at increasing levels are nested, so an equal pixel count means an identical mask:
    # label each distinct mask once (cheap counting via the 256-bin histogram)
    at_least = np.append(np.bincount(u.ravel(), minlength=256)[::-1].cumsum()[::-1], 0)
    n_above = at_least[levels + 1]
    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {0: (_EMPTY_BOX, _EMPTY_BOX[0])}
    row_max, col_max = u.max(1), u.max(0)
    largest, boxes, owner = [], [], []
    for t, (level, n) in enumerate(zip(levels, n_above)):
        if n not in cache:
            # label only the crop spanned by the foreground: much smaller at high thresholds
            rows, cols = np.flatnonzero(row_max > level), np.flatnonzero(col_max > level)
            y0, x0 = rows[0], cols[0]
            crop = u[y0:rows[-1] + 1, x0:cols[-1] + 1] > level
            labels, _ = ndimage.label(crop, structure=_EIGHT_CONNECTED)
            sizes = np.bincount(labels.ravel())[1:]
            found = np.array([[x0 + s[1].start, y0 + s[0].start, x0 + s[1].stop - 1, y0 + s[0].stop - 1]
                              for s in ndimage.find_objects(labels)], dtype=np.int64)
            if reference_box_extent:
                found[:, 2] = np.minimum(found[:, 2] + 1, w - 1)
                found[:, 3] = np.minimum(found[:, 3] + 1, h - 1)
            cache[n] = (found, found[int(np.argmax(sizes))])
        found, big = cache[n]
        largest.append(big)
        boxes.append(found)
        owner.append(np.full(len(found), t, dtype=np.int64))
    return np.stack(largest), np.concatenate(boxes), np.concatenate(owner)


def scoremap_ious(scoremap: np.ndarray, gt_boxes: np.ndarray, thresholds: np.ndarray, *,
                  reference_box_extent: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Best IoU against the ground-truth boxes (n, 4) at each threshold.

    Returns (largest (T,), all (T,)): with the largest region's box, and best over all regions.
    """
    largest, boxes, owner = region_boxes(scoremap, thresholds, reference_box_extent=reference_box_extent)
    gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    if len(gt) == 0:
        zero = np.zeros(len(largest))
        return zero, zero.copy()
    iou_largest = box_iou(largest, gt).max(1)
    starts = np.searchsorted(owner, np.arange(len(largest)))  # every threshold owns >= 1 box
    iou_all = np.maximum.reduceat(box_iou(boxes, gt).max(1), starts)
    return iou_largest, iou_all


class BoxEvaluator:
    """Accumulates box-localization hits over batches; compute() gives the metrics in percent.

    iou_thresholds: in percent, used for MaxBoxAccV2 (all regions). MaxBoxAcc always uses IoU 50
    with the largest region. multi_contour picks the box set (False: largest region, the SAOL
    paper's protocol; True: all regions) for GT-known Loc and Top-1 Loc.
    """

    def __init__(self, iou_thresholds: Sequence[int] = (30, 50, 70), cam_step: float = 0.01,
                 multi_contour: bool = False, reference_box_extent: bool = True):
        if not iou_thresholds or any(not 0 < i <= 100 for i in iou_thresholds):
            raise ValueError(f"iou_thresholds must be percentages in (0, 100], got {iou_thresholds}")
        self.iou_thresholds = tuple(int(i) for i in iou_thresholds)
        self.thresholds = threshold_grid(cam_step)
        self.multi_contour = multi_contour
        self.reference_box_extent = reference_box_extent
        self._ious = sorted(set(self.iou_thresholds) | {50})
        n_t = len(self.thresholds)
        # hits[mode][i, t]: images whose best IoU at CAM threshold t reaches self._ious[i]
        self._hits = {mode: np.zeros((len(self._ious), n_t), np.int64) for mode in ("largest", "all")}
        # images with the right class AND IoU >= 0.5 at CAM threshold t
        self._top1_hits = {mode: np.zeros(n_t, np.int64) for mode in ("largest", "all")}
        self.num_images = 0
        self.num_correct = 0

    def accumulate(self, scoremaps: np.ndarray, gt_boxes_list: Sequence[np.ndarray],
                   pred_correct: np.ndarray) -> None:
        """scoremaps (B, H, W) in [0, 1] at the evaluation size; gt_boxes_list: B arrays (n_i, 4)
        xyxy in the score map's pixels; pred_correct (B,) bool, class prediction right."""
        pred_correct = np.asarray(pred_correct, dtype=bool).reshape(-1)
        if not len(scoremaps) == len(gt_boxes_list) == len(pred_correct):
            raise ValueError(f"batch sizes differ: {len(scoremaps)} score maps, "
                             f"{len(gt_boxes_list)} box sets, {len(pred_correct)} predictions")
        cut = np.array(self._ious)[:, None] / 100.0
        for scoremap, gt, correct in zip(scoremaps, gt_boxes_list, pred_correct):
            ious = scoremap_ious(scoremap, gt, self.thresholds,
                                 reference_box_extent=self.reference_box_extent)
            for mode, iou in zip(("largest", "all"), ious):
                hit = iou[None, :] >= cut
                self._hits[mode] += hit
                if correct:
                    self._top1_hits[mode] += hit[self._ious.index(50)]
        self.num_images += len(pred_correct)
        self.num_correct += int(pred_correct.sum())

    def curves(self) -> dict[str, np.ndarray]:
        """Accuracy (%) versus CAM threshold: 'thresholds', 'largest_iou{i}', 'all_iou{i}',
        'top1_loc' (for the multi_contour box set)."""
        if self.num_images == 0:
            raise RuntimeError("BoxEvaluator.compute() before any accumulate()")
        scale = 100.0 / self.num_images
        out = {"thresholds": self.thresholds.copy()}
        for mode, hits in self._hits.items():
            for i, row in zip(self._ious, hits):
                out[f"{mode}_iou{i}"] = row * scale
        out["top1_loc"] = self._top1_hits[self._mode] * scale
        return out

    @property
    def _mode(self) -> str:
        return "all" if self.multi_contour else "largest"

    def _index(self, threshold: float) -> int:
        i = int(np.argmin(np.abs(self.thresholds - threshold)))
        if abs(self.thresholds[i] - threshold) > 1e-6:
            raise ValueError(f"threshold {threshold} is not on the CAM threshold grid "
                             f"np.arange(0, 1, {self.thresholds[1] - self.thresholds[0]:g})")
        return i

    def compute(self, threshold: float | None = None) -> dict[str, float]:
        """Metrics in percent. Keys:
        num_images, top1_cls; max_box_acc, max_box_acc_threshold (largest region, IoU 50);
        max_box_acc_v2 and per IoU max_box_acc_v2_iou{i}, max_box_acc_v2_iou{i}_threshold;
        best_threshold (maximizes GT-known Loc for the multi_contour box set), gt_known_loc_best and
        top1_loc_best at it; with `threshold` (must lie on the grid): threshold, gt_known_loc, top1_loc.
        Ties between thresholds go to the lowest one (np.argmax).
        """
        c = self.curves()
        t = self.thresholds
        res = {"num_images": float(self.num_images),
               "top1_cls": 100.0 * self.num_correct / self.num_images}
        res["max_box_acc"] = float(c["largest_iou50"].max())
        res["max_box_acc_threshold"] = float(t[np.argmax(c["largest_iou50"])])
        for i in self.iou_thresholds:
            res[f"max_box_acc_v2_iou{i}"] = float(c[f"all_iou{i}"].max())
            res[f"max_box_acc_v2_iou{i}_threshold"] = float(t[np.argmax(c[f"all_iou{i}"])])
        res["max_box_acc_v2"] = float(np.mean([res[f"max_box_acc_v2_iou{i}"] for i in self.iou_thresholds]))
        gt_known = c[f"{self._mode}_iou50"]
        best = int(np.argmax(gt_known))
        res["best_threshold"] = float(t[best])
        res["gt_known_loc_best"] = float(gt_known[best])
        res["top1_loc_best"] = float(c["top1_loc"][best])
        if threshold is not None:
            i = self._index(threshold)
            res["threshold"] = float(t[i])
            res["gt_known_loc"] = float(gt_known[i])
            res["top1_loc"] = float(c["top1_loc"][i])
        return res
