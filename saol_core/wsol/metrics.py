"""Box-based WSOL metrics, equal to clovaai/wsolevaluation's (Choe et al., CVPR 2020) on the same maps.

Score maps and boxes in, accuracies out (the model side: ``saol_core.wsol.maps``).
Protocol, per image and per CAM threshold t in np.arange(0, 1, cam_step), as the reference computes it:
  * the score map (H, W) in [0, 1] becomes u = uint8(map * 255), binarized as u > int(t * max(u));
  * regions (``regions="contours"``, the default and the reference's definition): every border
    ``cv2.findContours(RETR_TREE, CHAIN_APPROX_SIMPLE)`` returns, i.e. the outer border of each
    8-connected foreground region AND the border of each hole in it; the "largest" is the first one
    with the largest ``cv2.contourArea`` (the polygon area through the border pixels' centres: near
    0 for one-pixel-wide lines however long, and exact ties go to the first contour OpenCV lists);
  * a border's box is cv2.boundingRect's (x, y, w, h) stored as [x, y, min(x + w, W - 1),
    min(y + h, H - 1)]: one pixel beyond the region on the right/bottom unless clipped;
  * an empty binarization yields the box [0, 0, 0, 0];
  * IoU on inclusive pixels (+1 on widths and heights); an image's IoU at t is its best over the
    ground-truth boxes (and, with all regions, over its boxes).
MaxBoxAcc: largest region, IoU >= 0.5, best t. MaxBoxAccV2: all regions, mean over IoU thresholds
(30/50/70 %) of the accuracy at each one's best t. tests/test_wsol_metrics.py checks every per-threshold
IoU against the reference's own output (tests/data/wsol_reference.json) on holes, lines, ties and real
CAM maps: the difference is 0.

``regions="components"`` is a named variant, not the reference: 8-connected foreground regions only
(no hole borders), the largest by pixel count (ties: first in raster order), same box extent.

Where the reference would raise, this module is lenient so that one degenerate map cannot abort a
dataset-wide evaluation: NaN score-map values count as 0 (values outside [0, 1] still raise), and a
ground-truth box with x1 < x0 or y1 < y0 (or NaN) is never matched (IoU 0).
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
from scipy import ndimage

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
_EMPTY_BOX = np.zeros((1, 4), dtype=np.int64)
REGIONS = ("contours", "components")
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


def _contour_boxes(binary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference's boxes of a non-empty uint8 0/255 mask: (all (M, 4), largest (4,))."""
    h, w = binary.shape
    contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
    largest = max(range(len(contours)), key=lambda i: cv2.contourArea(contours[i]))
    found = np.array([cv2.boundingRect(c) for c in contours], dtype=np.int64)   # x, y, w, h
    found[:, 2] = np.minimum(found[:, 0] + found[:, 2], w - 1)
    found[:, 3] = np.minimum(found[:, 1] + found[:, 3], h - 1)
    return found, found[largest]


def _component_boxes(binary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The "components" variant's boxes of a non-empty mask: (all (M, 4), largest (4,))."""
    h, w = binary.shape
    labels, _ = ndimage.label(binary > 0, structure=_EIGHT_CONNECTED)
    sizes = np.bincount(labels.ravel())[1:]
    found = np.array([[s[1].start, s[0].start, min(s[1].stop, w - 1), min(s[0].stop, h - 1)]
                      for s in ndimage.find_objects(labels)], dtype=np.int64)
    return found, found[int(np.argmax(sizes))]


def region_boxes(scoremap: np.ndarray, thresholds: np.ndarray, *, regions: str = "contours"
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes of a score map's regions at every threshold (module docstring: ``regions``).

    Args: scoremap (H, W) in [0, 1]; thresholds (T,) in [0, 1).
    Returns: largest (T, 4) int64 box of the largest region per threshold; boxes (M, 4) int64 of all
    regions; owner (M,) the threshold index of each of them, ascending, every threshold owning at
    least one box (the empty binarization owns [0, 0, 0, 0]).
    """
    if regions not in REGIONS:
        raise ValueError(f"regions={regions!r}; choose one of {REGIONS}")
    boxes_of = _contour_boxes if regions == "contours" else _component_boxes
    u = _quantize(scoremap)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    # int(t * max) of the reference: same float64 product, truncation == floor for t >= 0
    levels = np.floor(thresholds * float(u.max())).astype(np.int64)
    # masks at increasing levels are nested, so an equal pixel count means an identical mask:
    # find each distinct mask's regions once (cheap counting via the 256-bin histogram)
    at_least = np.append(np.bincount(u.ravel(), minlength=256)[::-1].cumsum()[::-1], 0)
    n_above = at_least[levels + 1]
    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {0: (_EMPTY_BOX, _EMPTY_BOX[0])}
    largest, boxes, owner = [], [], []
    for t, (level, n) in enumerate(zip(levels, n_above)):
        if n not in cache:
            cache[n] = boxes_of(cv2.threshold(u, int(level), 255, cv2.THRESH_BINARY)[1])
        found, big = cache[n]
        largest.append(big)
        boxes.append(found)
        owner.append(np.full(len(found), t, dtype=np.int64))
    return np.stack(largest), np.concatenate(boxes), np.concatenate(owner)


def scoremap_ious(scoremap: np.ndarray, gt_boxes: np.ndarray, thresholds: np.ndarray, *,
                  regions: str = "contours") -> tuple[np.ndarray, np.ndarray]:
    """Best IoU against the ground-truth boxes (n, 4) at each threshold.

    Returns (largest (T,), all (T,)): with the largest region's box, and best over all regions.
    """
    largest, boxes, owner = region_boxes(scoremap, thresholds, regions=regions)
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
    paper's protocol; True: all regions) for GT-known Loc and Top-1 Loc. regions: "contours" (the
    reference) or "components" (module docstring).
    """

    def __init__(self, iou_thresholds: Sequence[int] = (30, 50, 70), cam_step: float = 0.01,
                 multi_contour: bool = False, regions: str = "contours"):
        if not iou_thresholds or any(not 0 < i <= 100 for i in iou_thresholds):
            raise ValueError(f"iou_thresholds must be percentages in (0, 100], got {iou_thresholds}")
        self.iou_thresholds = tuple(int(i) for i in iou_thresholds)
        self.thresholds = threshold_grid(cam_step)
        self.multi_contour = multi_contour
        if regions not in REGIONS:
            raise ValueError(f"regions={regions!r}; choose one of {REGIONS}")
        self.regions = regions
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
            ious = scoremap_ious(scoremap, gt, self.thresholds, regions=self.regions)
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
        n = float(self.num_images)   # hits * 100 / n in the reference's order of operations
        out = {"thresholds": self.thresholds.copy()}
        for mode, hits in self._hits.items():
            for i, row in zip(self._ious, hits):
                out[f"{mode}_iou{i}"] = row * 100.0 / n
        out["top1_loc"] = self._top1_hits[self._mode] * 100.0 / n
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


class SelectedThresholdEvaluator:
    """A method's box metrics with its threshold chosen on images that are not scored (wsolevaluation's
    small box-annotated selection split, held out of the score).

    ``select`` (N,) bool by dataset index: True = the image chooses the threshold (the one that maximizes
    its GT-known Loc), False = it is scored. None = no selection split: every image is scored, at the
    threshold that is best on them (then top1_loc equals top1_loc_best).
    Other keyword arguments go to both BoxEvaluators.
    """

    def __init__(self, select: np.ndarray | None = None, **kwargs):
        self.select = None if select is None else np.asarray(select, dtype=bool)
        self.scored = BoxEvaluator(**kwargs)
        self.selection = BoxEvaluator(**kwargs) if self.select is not None else None

    def accumulate(self, scoremaps: np.ndarray, gt_boxes_list: Sequence[np.ndarray], pred_correct: np.ndarray,
                   indices: np.ndarray) -> None:
        """As BoxEvaluator.accumulate, plus each image's dataset index (B,) that routes it."""
        if self.select is None:
            return self.scored.accumulate(scoremaps, gt_boxes_list, pred_correct)
        chosen = self.select[np.asarray(indices)]
        correct = np.asarray(pred_correct, dtype=bool).reshape(-1)
        for part, mask in ((self.selection, chosen), (self.scored, ~chosen)):
            if mask.any():
                part.accumulate(scoremaps[mask], [g for g, m in zip(gt_boxes_list, mask) if m], correct[mask])

    def compute(self, threshold: float | None = None) -> dict[str, float]:
        """BoxEvaluator.compute of the scored images at the selection's best threshold (or ``threshold``),
        with ``selection_images`` (0 without a selection split: the scored images' best threshold)."""
        if threshold is None:
            chooser = self.scored if self.selection is None else self.selection
            if chooser.num_images == 0:
                raise RuntimeError("no image was evaluated to choose the threshold from")
            threshold = chooser.compute()["best_threshold"]
        res = self.scored.compute(threshold)
        res["selection_images"] = float(self.selection.num_images if self.selection is not None else 0)
        return res
