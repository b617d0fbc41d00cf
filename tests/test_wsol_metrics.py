"""Tests of saol_core.wsol.metrics: the reference's own answers (clovaai/wsolevaluation, run on
tests/wsol_cases.py into tests/data/wsol_reference.json), hand-made maps worked out by hand, and a
brute-force flood fill for the "components" variant."""
import json

import numpy as np
import pytest
import wsol_cases

from saol_core.wsol import resize_boxes
from saol_core.wsol.metrics import BoxEvaluator, box_iou, region_boxes, scoremap_ious, threshold_grid

T = threshold_grid(0.01)


def blob_map(h, w, *rects, value=1.0):
    """Zero map with rectangles (y0, y1, x0, x1) inclusive set to `value`."""
    m = np.zeros((h, w))
    for y0, y1, x0, x1 in rects:
        m[y0:y1 + 1, x0:x1 + 1] = value
    return m


# ---------------------------------------------------------------- IoU (+1 convention)
def test_box_iou_inclusive_pixels():
    a = np.array([[0, 0, 9, 9]])                       # 10 x 10 = 100 pixels
    b = np.array([[0, 0, 4, 9], [5, 5, 14, 14], [10, 0, 12, 9], [0, 0, 9, 9]])
    # 50/100; 25/(100+100-25); disjoint (x starts at 10); identical
    np.testing.assert_allclose(box_iou(a, b), [[0.5, 25 / 175, 0.0, 1.0]])
    # a 1-pixel box vs itself is 1, vs a 2x2 box containing it 1/4
    np.testing.assert_allclose(box_iou([[3, 3, 3, 3]], [[3, 3, 3, 3], [3, 3, 4, 4]]), [[1.0, 0.25]])


def test_box_iou_degenerate_boxes():
    # zero width under +1 = 1-pixel-wide column: valid. x1 < x0, y1 < y0, NaN: invalid -> IoU 0
    pred = np.array([[3, 2, 3, 5]])
    gt = np.array([[3, 2, 3, 5], [3, 2, 3, 2], [5, 2, 3, 5], [3, 5, 3, 2], [np.nan, 2, 3, 5]])
    np.testing.assert_allclose(box_iou(pred, gt), [[1.0, 0.25, 0.0, 0.0, 0.0]])
    # invalid predicted box against a valid gt is 0 too (symmetry of the rule)
    assert box_iou([[5, 0, 2, 0]], [[0, 0, 9, 9]])[0, 0] == 0.0


def test_resize_boxes_truncates_like_reference():
    # int(x * new / old) on each coordinate; x scales with width, y with height
    out = resize_boxes(np.array([[4, 8, 11, 15], [3, 3, 5, 7]]), (32, 16), (64, 24))
    np.testing.assert_array_equal(out, [[6, 16, 16, 30], [4, 6, 7, 14]])


# ---------------------------------------------------------------- boxes from score maps
def test_single_blob_box_extends_one_pixel():
    m = blob_map(10, 12, (2, 4, 3, 6))
    largest, boxes, owner = region_boxes(m, T)
    # reference: x1 = max_x + 1, y1 = max_y + 1 (cv2.boundingRect width added to x)
    np.testing.assert_array_equal(largest, np.tile([3, 2, 7, 5], (len(T), 1)))
    np.testing.assert_array_equal(owner, np.arange(len(T)))


def test_blob_touching_border_is_clipped():
    m = blob_map(10, 10, (6, 9, 7, 9))             # touches the right and bottom borders
    largest, _, _ = region_boxes(m, T)
    np.testing.assert_array_equal(largest[0], [7, 6, 9, 9])   # max+1 clipped to W-1 / H-1
    m = blob_map(10, 10, (0, 2, 0, 1))             # touches top-left: nothing to clip
    np.testing.assert_array_equal(region_boxes(m, T)[0][0], [0, 0, 2, 3])


def test_two_blobs_largest_versus_all():
    m = blob_map(12, 12, (0, 2, 0, 3), (8, 9, 8, 9))   # 12 pixels vs 4 pixels
    for regions in ("contours", "components"):
        largest, boxes, owner = region_boxes(m, T, regions=regions)
        np.testing.assert_array_equal(largest[0], [0, 0, 4, 3])
        assert sorted(boxes[owner == 0].tolist()) == [[0, 0, 4, 3], [8, 8, 10, 10]]
        # ground truth = the small blob's box: missed by the largest region, found by "all regions"
        il, ia = scoremap_ious(m, np.array([[8, 8, 10, 10]]), T, regions=regions)
        np.testing.assert_allclose(il, 0.0)
        np.testing.assert_allclose(ia, 1.0)
    # the tight box of the small blob [8, 8, 9, 9] against the predicted [8, 8, 10, 10]: IoU 4/9
    _, ia = scoremap_ious(m, np.array([[8, 8, 9, 9]]), T)
    np.testing.assert_allclose(ia, 4 / 9)


def test_diagonal_pixels_are_connected():
    # 8-connectivity: a diagonal staircase is one region, box spans it
    m = np.zeros((6, 6))
    m[[1, 2, 3], [1, 2, 3]] = 1.0
    for regions in ("contours", "components"):
        largest, boxes, owner = region_boxes(m, T, regions=regions)
        np.testing.assert_array_equal(boxes[owner == 0], [[1, 1, 4, 4]])


def test_empty_and_constant_maps():
    # all zero: the binarization is empty at every threshold -> [0,0,0,0] (a 1-pixel box at the origin)
    largest, boxes, owner = region_boxes(np.zeros((8, 8)), T)
    np.testing.assert_array_equal(largest, np.zeros((len(T), 4)))
    assert len(boxes) == len(T)
    il, ia = scoremap_ious(np.zeros((8, 8)), np.array([[0, 0, 1, 1]]), T)
    np.testing.assert_allclose(il, 0.25)           # 1 pixel / 4 pixels
    np.testing.assert_allclose(ia, 0.25)
    # constant 0.7: uint8 178 > floor(t*178) for every t < 1 -> the whole image at every threshold
    largest, _, _ = region_boxes(np.full((8, 10), 0.7), T)
    np.testing.assert_array_equal(largest, np.tile([0, 0, 9, 7], (len(T), 1)))


def test_nan_map_counts_as_zero_and_range_is_checked():
    largest, _, _ = region_boxes(np.full((8, 8), np.nan), T)
    np.testing.assert_array_equal(largest, np.zeros((len(T), 4)))
    m = blob_map(8, 8, (2, 3, 2, 5))
    m[0, 0] = np.nan                                 # a NaN pixel is background
    np.testing.assert_array_equal(region_boxes(m, T)[0][0], [2, 2, 6, 4])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        region_boxes(m * 2, T)


def test_quantization_follows_reference():
    # value 0.5 -> uint8 127, max 255: pixel kept iff 127 > floor(t * 255), i.e. t*255 < 127 -> t <= 0.49
    m = blob_map(8, 8, (1, 6, 1, 6), value=0.5)
    m[3:5, 3:5] = 1.0
    largest, _, _ = region_boxes(m, T)
    i = int(np.argmin(np.abs(T - 0.49)))
    np.testing.assert_array_equal(largest[i], [1, 1, 7, 7])       # floor(0.49*255)=124 < 127
    np.testing.assert_array_equal(largest[i + 1], [3, 3, 5, 5])   # floor(0.50*255)=127, not > 127


def test_multiple_gt_boxes_take_the_best():
    m = blob_map(20, 20, (2, 11, 2, 11))             # predicted box [2, 2, 12, 12], 11 x 11
    gt = np.array([[15, 15, 19, 19], [2, 2, 6, 12], [2, 2, 12, 12]])
    il, _ = scoremap_ious(m, gt, T)
    np.testing.assert_allclose(il, 1.0)
    il, _ = scoremap_ious(m, gt[:2], T)
    np.testing.assert_allclose(il, 55 / 121)
    il, _ = scoremap_ious(m, np.array([[2, 2, 11, 11]]), T)
    np.testing.assert_allclose(il, 100 / 121)
    il, ia = scoremap_ious(m, np.zeros((0, 4)), T)   # no ground truth: never a hit
    assert il.max() == ia.max() == 0.0


# ---------------------------------------------------------------- the evaluator
def pyramid():
    """Outer ring 0.3 (uint8 76), inner square 0.6 (153), core 1.0 (255) on a 20 x 20 map.
    Inner square alone survives for 76 <= floor(t*255) < 153, i.e. t in [0.30, 0.59]."""
    m = blob_map(20, 20, (2, 17, 2, 17), value=0.3)
    m[5:15, 5:15] = 0.6
    m[9:11, 9:11] = 1.0
    return m, np.array([[5, 5, 15, 15]])   # = the inner square's reference-extent box: IoU 1


def test_threshold_sweep_picks_the_right_threshold():
    m, gt = pyramid()
    ev = BoxEvaluator(cam_step=0.01)
    ev.accumulate(m[None], [gt], np.array([True]))
    curve = ev.curves()["largest_iou50"]
    expected = np.where((T >= 0.295) & (T < 0.595), 100.0, 0.0)
    np.testing.assert_allclose(curve, expected)
    res = ev.compute(threshold=0.2)
    assert res["max_box_acc"] == 100.0
    assert res["max_box_acc_threshold"] == pytest.approx(0.30)
    assert res["best_threshold"] == pytest.approx(0.30)
    assert res["gt_known_loc"] == 0.0 and res["threshold"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="grid"):
        ev.compute(threshold=0.205)


def test_evaluator_golden_accuracies():
    """Four 20x20 images, hand-computed:
    img0: blob box (tight) [2,2,11,11], ref [2,2,12,12]; gt = ref box -> IoU 1, class right
    img1: same blob, gt [2,2,12,7] -> IoU 66/121 = 0.545 (hit at 30, 50), class wrong
    img2: two blobs, big [0,0,9,4] (50 px) + small [14,14,17,17]; gt = small's ref box [14,14,18,18]
          largest: IoU 0; all regions: IoU 1. class right
    img3: empty map -> [0,0,0,0] vs gt [10,10,19,19] -> IoU 0. class right
    """
    maps = np.stack([blob_map(20, 20, (2, 11, 2, 11)), blob_map(20, 20, (2, 11, 2, 11)),
                     blob_map(20, 20, (0, 4, 0, 9), (14, 17, 14, 17)), np.zeros((20, 20))])
    gts = [np.array([[2, 2, 12, 12]]), np.array([[2, 2, 12, 7]]), np.array([[14, 14, 18, 18]]),
           np.array([[10, 10, 19, 19]])]
    correct = np.array([True, False, True, True])
    ev = BoxEvaluator(iou_thresholds=(30, 50, 70), cam_step=0.1)
    ev.accumulate(maps[:2], gts[:2], correct[:2])   # two batches accumulate like one
    ev.accumulate(maps[2:], gts[2:], correct[2:])
    res = ev.compute(threshold=0.5)
    assert res["num_images"] == 4 and res["top1_cls"] == 75.0
    assert res["max_box_acc"] == 50.0                   # img0, img1
    assert res["max_box_acc_threshold"] == 0.0          # constant over t: first threshold
    # all regions: IoU30 {0,1,2}, IoU50 {0,1,2}, IoU70 {0,2}
    assert res["max_box_acc_v2_iou30"] == 75.0 and res["max_box_acc_v2_iou50"] == 75.0
    assert res["max_box_acc_v2_iou70"] == 50.0
    assert res["max_box_acc_v2"] == pytest.approx((75 + 75 + 50) / 3)
    assert res["gt_known_loc"] == 50.0 and res["gt_known_loc_best"] == 50.0
    assert res["top1_loc"] == 25.0 and res["top1_loc_best"] == 25.0   # img1 has the wrong class
    ev_all = BoxEvaluator(cam_step=0.1, multi_contour=True)
    ev_all.accumulate(maps, gts, correct)
    res_all = ev_all.compute()
    assert res_all["gt_known_loc_best"] == 75.0 and res_all["top1_loc_best"] == 50.0
    assert res_all["max_box_acc"] == 50.0               # MaxBoxAcc is always the largest region


def test_top1_loc_requires_the_right_class():
    m, gt = pyramid()
    ev = BoxEvaluator()
    ev.accumulate(np.stack([m, m]), [gt, gt], np.array([True, False]))
    res = ev.compute(threshold=0.4)
    assert res["gt_known_loc"] == 100.0 and res["top1_loc"] == 50.0 and res["top1_cls"] == 50.0


def test_bad_inputs():
    with pytest.raises(ValueError):
        BoxEvaluator(iou_thresholds=(0, 50))
    with pytest.raises(ValueError):
        BoxEvaluator(cam_step=0.0)
    ev = BoxEvaluator()
    with pytest.raises(ValueError, match="batch sizes"):
        ev.accumulate(np.zeros((2, 4, 4)), [np.zeros((1, 4))], np.array([True, True]))
    with pytest.raises(RuntimeError):
        ev.compute()


# ---------------------------------------------------------------- brute force on random maps
def _flood_regions(mask):
    """8-connected regions of a boolean mask by explicit BFS: list of (pixel count, tight box)."""
    h, w = mask.shape
    seen = np.zeros_like(mask)
    out = []
    for y in range(h):
        for x in range(w):
            if mask[y, x] and not seen[y, x]:
                stack, pix = [(y, x)], []
                seen[y, x] = True
                while stack:
                    cy, cx = stack.pop()
                    pix.append((cy, cx))
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            ny, nx = cy + dy, cx + dx
                            if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                                seen[ny, nx] = True
                                stack.append((ny, nx))
                ys, xs = zip(*pix)
                out.append((len(pix), [min(xs), min(ys), max(xs), max(ys)]))
    return out


def _iou_scalar(a, b):
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    inter = max(iw, 0) * max(ih, 0)
    union = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter
    return inter / union


def test_components_variant_matches_brute_force_on_random_maps():
    rng = np.random.default_rng(0)
    thresholds = threshold_grid(0.05)
    for _ in range(12):
        h, w = rng.integers(5, 13, size=2)
        m = rng.random((h, w)) ** 2
        m /= m.max()
        gt = np.sort(rng.integers(0, min(h, w), size=(2, 2, 2)), axis=1).transpose(0, 2, 1).reshape(2, 4)
        gt = gt[:, [0, 2, 1, 3]]        # x0, y0, x1, y1 with x0 <= x1, y0 <= y1
        il, ia = scoremap_ious(m, gt, thresholds, regions="components")
        u = (m * 255).astype(np.uint8)
        for t, thr in enumerate(thresholds):
            regions = _flood_regions(u > int(thr * u.max()))
            boxes = [[b[0], b[1], min(b[2] + 1, w - 1), min(b[3] + 1, h - 1)] for _, b in regions]
            if not regions:
                boxes, big = [[0, 0, 0, 0]], [0, 0, 0, 0]
            else:
                big = boxes[max(range(len(regions)), key=lambda i: regions[i][0])]
            assert il[t] == pytest.approx(max(_iou_scalar(big, g) for g in gt))
            assert ia[t] == pytest.approx(max(_iou_scalar(b, g) for b in boxes for g in gt))


# ---------------------------------------------------------------- equal to the reference
REFERENCE = json.loads((wsol_cases.DATA / "wsol_reference.json").read_text())
GRID = threshold_grid(REFERENCE["cam_step"])


@pytest.mark.parametrize("name,u,gt", wsol_cases.synthetic_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_equals_reference_on_holes_lines_ties_and_noise(name, u, gt):
    ref = REFERENCE["synthetic"][name]
    m = wsol_cases.as_scoremap(u)
    largest, _, _ = region_boxes(m, GRID)
    np.testing.assert_array_equal(largest, np.array(ref["boxes_largest"])[:, 0])
    il, ia = scoremap_ious(m, gt, GRID)
    np.testing.assert_array_equal(il, ref["iou_largest"])
    np.testing.assert_array_equal(ia, ref["iou_all"])


def test_components_variant_is_not_the_reference():
    """What the named variant changes, on the cases built for it: hole borders (ring), contour area
    against pixel count (thin line) and the tie rule (two equal squares)."""
    cases = {name: (u, gt) for name, u, gt in wsol_cases.synthetic_cases()}
    for name, mode in (("ring", 1), ("thin_line", 0), ("tie_other", 0)):
        u, gt = cases[name]
        ious = scoremap_ious(wsol_cases.as_scoremap(u), gt, GRID, regions="components")
        ref = REFERENCE["synthetic"][name]["iou_all" if mode else "iou_largest"]
        assert not np.array_equal(ious[mode], ref), name


def test_equals_reference_boxevaluator_on_real_cam_maps():
    """60 real CAM maps with the official boxes: every per-threshold IoU, every hit count of the
    unmodified reference BoxEvaluator and its MaxBoxAcc at IoU 30/50/70, both box sets."""
    maps, boxes, source = wsol_cases.cam_cases()
    ref = REFERENCE["cam"]
    assert "ImageNet" in source and len(maps) == len(ref["iou_largest"]) == 60
    scores = np.stack([wsol_cases.as_scoremap(u) for u in maps])
    for i, (m, gt) in enumerate(zip(scores, boxes)):
        il, ia = scoremap_ious(m, gt, GRID)
        np.testing.assert_array_equal(il, ref["iou_largest"][i])
        np.testing.assert_array_equal(ia, ref["iou_all"][i])
    for multi, key in ((False, "largest"), (True, "all")):
        ev = BoxEvaluator(cam_step=REFERENCE["cam_step"], multi_contour=multi)
        ev.accumulate(scores, boxes, np.ones(len(scores), bool))
        curves = ev.curves()
        for iou, counts in ref[f"num_correct_{key}"].items():
            np.testing.assert_array_equal(np.rint(curves[f"{key}_iou{iou}"] * len(scores) / 100), counts)
            assert curves[f"{key}_iou{iou}"].max() == ref[f"max_box_acc_{key}"][[30, 50, 70].index(int(iou))]
    res = BoxEvaluator(cam_step=REFERENCE["cam_step"])
    res.accumulate(scores, boxes, np.ones(len(scores), bool))
    out = res.compute()
    assert out["max_box_acc"] == ref["max_box_acc_largest"][1]
    assert out["max_box_acc_v2"] == np.mean(ref["max_box_acc_all"])


def test_resize_boxes_equals_reference_resize_bbox():
    """The official boxes of the 60 photos in their stored sizes -> 224 x 224, as the reference resized them."""
    for (_, (w, h), original), expected in zip(REFERENCE["cam"]["original"], REFERENCE["cam"]["gt_boxes_224"]):
        np.testing.assert_array_equal(resize_boxes(np.array(original), (h, w), (224, 224)), expected)
    # multiply before dividing: 166 * 224 / 332 = 112 exactly; 166 * (224 / 332) truncates to 111
    np.testing.assert_array_equal(resize_boxes([[166, 0, 166, 0]], (100, 332), (224, 224)), [[112, 0, 112, 0]])


def test_selected_threshold_scores_the_rest_at_the_selection_best():
    """SelectedThresholdEvaluator equals two plain BoxEvaluators fed by hand: the threshold maximizing
    GT-known Loc on the selection images, the metrics of the other images at it."""
    from saol_core.wsol import SelectedThresholdEvaluator
    rng = np.random.default_rng(3)
    n, size = 24, 32
    maps = rng.random((n, size, size)) ** 3
    boxes = [np.array([[x, y, x + w, y + w]]) for x, y, w in rng.integers(0, 16, (n, 3))]
    correct = rng.random(n) < 0.7
    select = np.zeros(n, bool)
    select[rng.permutation(n)[:8]] = True
    split = SelectedThresholdEvaluator(select, cam_step=0.05)
    for lo in range(0, n, 5):   # batches of dataset indices in a shuffled order
        idx = np.arange(n)[::-1][lo:lo + 5]
        split.accumulate(maps[idx], [boxes[i] for i in idx], correct[idx], idx)
    chooser, scored = BoxEvaluator(cam_step=0.05), BoxEvaluator(cam_step=0.05)
    chooser.accumulate(maps[select], [b for b, s in zip(boxes, select) if s], correct[select])
    scored.accumulate(maps[~select], [b for b, s in zip(boxes, select) if not s], correct[~select])
    threshold = chooser.compute()["best_threshold"]
    got = split.compute()
    assert got == {**scored.compute(threshold), "selection_images": 8.0}
    assert got["num_images"] == 16 and got["threshold"] == threshold
    # no selection split: the scored images choose their own threshold
    every = SelectedThresholdEvaluator(None, cam_step=0.05)
    every.accumulate(maps, boxes, correct, np.arange(n))
    plain = BoxEvaluator(cam_step=0.05)
    plain.accumulate(maps, boxes, correct)
    best = plain.compute()["best_threshold"]
    assert every.compute() == {**plain.compute(best), "selection_images": 0.0}
