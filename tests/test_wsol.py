"""Numeric tests for saol_core.wsol on hand-built toy models returning ModelOutput-like objects."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from saol_core.wsol import GroundTruthBoxes, evaluate_localization, factor_results, localization_maps, normalize_maps


def saol_output(feats, weight, bias, att_logits):
    """ModelOutput-like object: GAP-FC head with (weight, bias); SAOL head with attention logits
    (B,h,w) and spatial logits = the 1x1 conv with the same weights."""
    log_a = att_logits.flatten(1).log_softmax(1).view_as(att_logits)
    log_y = (torch.einsum("kc,bchw->bkhw", weight, feats) + bias.view(1, -1, 1, 1)).log_softmax(1)
    return SimpleNamespace(saol_log_probs=(log_a[:, None] + log_y).flatten(2).logsumexp(2),
                           gap_logits=F.linear(feats.mean((2, 3)), weight, bias),
                           log_attention=log_a, spatial_log_probs=log_y, mask_logits=None, features=feats)


class RandomToy(nn.Module):
    """conv backbone (3 -> C), GAP-FC head, SAOL head with a conv attention branch."""

    def __init__(self, c=5, k=4):
        super().__init__()
        self.body = nn.Conv2d(3, c, 3, padding=1)
        self.att = nn.Conv2d(c, 1, 1)
        self.gap = nn.Module()
        self.gap.fc = nn.Linear(c, k)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        feats = torch.relu(self.body(x))
        return saol_output(feats, self.gap.fc.weight, self.gap.fc.bias, self.att(feats)[:, 0])


@pytest.fixture
def toy():
    torch.manual_seed(0)
    return RandomToy().eval(), torch.randn(3, 3, 6, 7)


def test_saol_map_is_attention_times_class_map(toy):
    model, x = toy
    out = model(x)
    maps, pred = localization_maps(model, x, "saol")
    np.testing.assert_array_equal(pred, out.saol_log_probs.argmax(1))
    for b in range(len(x)):
        expected = torch.exp(out.log_attention[b] + out.spatial_log_probs[b, pred[b]])
        torch.testing.assert_close(maps[b], expected)
    # Eq. 2: the map sums over positions to the SAOL probability of its class
    torch.testing.assert_close(maps.sum((1, 2)), out.saol_log_probs.exp()[torch.arange(3), pred])
    target = torch.tensor([3, 0, 1])
    maps, _ = localization_maps(model, x, "saol", target)
    torch.testing.assert_close(maps[0], out.log_attention[0].exp() * out.spatial_log_probs[0, 3].exp())
    att, _ = localization_maps(model, x, "attention")
    torch.testing.assert_close(att, out.log_attention.exp())


def test_saol_maps_take_one_forward_and_no_backward(toy):
    model, x = toy
    localization_maps(model, x, "saol")
    assert model.calls == 1
    assert all(p.grad is None for p in model.parameters())


def test_cam_is_the_weighted_sum_of_features(toy):
    model, x = toy
    out = model(x)
    maps, pred = localization_maps(model, x, "cam")
    np.testing.assert_array_equal(pred, out.gap_logits.argmax(1))
    w = model.gap.fc.weight
    for b in range(len(x)):
        expected = sum(w[pred[b], c] * out.features[b, c] for c in range(w.shape[1]))
        torch.testing.assert_close(maps[b], expected)


@pytest.mark.parametrize("target", [None, torch.tensor([2, 2, 0])])
def test_gradcam_equals_relu_cam_over_area_for_gap_fc(toy, target):
    model, x = toy
    cam, pred_cam = localization_maps(model, x, "cam", target)
    grad_cam, pred = localization_maps(model, x, "gradcam", target)
    np.testing.assert_array_equal(pred, pred_cam)
    h, w = x.shape[-2:]
    torch.testing.assert_close(grad_cam, torch.relu(cam) / (h * w))
    assert grad_cam.min() == 0 and grad_cam.max() > 0          # the ReLU did cut something
    assert all(p.grad is None for p in model.parameters())     # no gradient left on the weights
    for p in model.parameters():                               # frozen backbone: same maps
        p.requires_grad_(False)
    torch.testing.assert_close(localization_maps(model, x, "gradcam", target)[0], grad_cam)


def test_missing_head_and_bad_kind(toy):
    model, x = toy
    out = model(x)
    no_saol = SimpleNamespace(**{**vars(out), "saol_log_probs": None, "log_attention": None})
    model.forward = lambda images: no_saol
    with pytest.raises(ValueError, match="SAOL"):
        localization_maps(model, x, "saol")
    with pytest.raises(ValueError, match="valid: saol, attention, spatial, cam, gradcam"):
        localization_maps(model, x, "gradient")


def test_normalize_maps():
    torch.manual_seed(0)
    raw = torch.randn(4, 7, 7)
    raw[2] = 3.0                                   # constant
    raw[3, 1, 2] = float("nan")
    out = normalize_maps(raw, (28, 20))
    assert out.shape == (4, 28, 20) and out.dtype == torch.float64
    for b in (0, 1):   # torch's float64 bicubic (an independent implementation of the same kernel, a = -0.75)
        up = F.interpolate(raw[b][None, None].double(), size=(28, 20), mode="bicubic", align_corners=False)[0, 0]
        torch.testing.assert_close(out[b], (up - up.min()) / (up.max() - up.min()), atol=1e-5, rtol=0)
        assert out[b].min() == 0.0 and out[b].max() == 1.0
    # exactly the reference's arithmetic: float64, cv2.resize (dsize is width, height), min-max
    import cv2
    ref = cv2.resize(raw[0].double().numpy(), (20, 28), interpolation=cv2.INTER_CUBIC)
    np.testing.assert_array_equal(out[0].numpy(), (ref - ref.min()) / (ref.max() - ref.min()))
    assert (out[2] == 0).all() and (out[3] == 0).all()
    # min-max normalization is invariant to a positive affine map of the raw scores
    torch.testing.assert_close(normalize_maps(2.5 * raw[:2] - 7.0, (28, 20)), out[:2])
    # at the same size bicubic is the identity: a two-level map becomes exactly {0, 1}
    two_level = torch.zeros(1, 5, 5)
    two_level[0, 1:3, 2:4] = 0.3
    np.testing.assert_array_equal(normalize_maps(two_level, (5, 5))[0], (two_level[0] > 0).double())
    inf_map = torch.ones(1, 3, 3)
    inf_map[0, 0, 0] = float("inf")
    assert (normalize_maps(inf_map, (6, 6)) == 0).all()


class BlobToy(nn.Module):
    """features = the image: channel 0 a {0,1} blob, channel 1 a constant c = +-0.5. FC weights
    [[1, -1], [1, 1]] -> logits (m - c, m + c): predicts class 1 iff c > 0. Attention = softmax(5 * blob),
    Y is spatially constant (the blob adds equally to both classes), so every map kind is a two-level
    map whose only region is the blob, for either target class (blob +- 0.5 stays two-level after ReLU)."""

    def __init__(self):
        super().__init__()
        self.gap = nn.Module()
        self.gap.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.gap.fc.weight.copy_(torch.tensor([[1.0, -1.0], [1.0, 1.0]]))
            self.gap.fc.bias.zero_()

    def forward(self, x):
        return saol_output(x, self.gap.fc.weight, self.gap.fc.bias, 5 * x[:, 0])


def blob_image(y0, y1, x0, x1, c, size=16):
    img = torch.zeros(2, size, size)
    img[0, y0:y1 + 1, x0:x1 + 1] = 1.0
    img[1] = c
    return img


def blob_dataset():
    """Hand-computed (reference box = tight box with max+1, clipped at 15):
    idx0 blob y2..9 x3..8 -> box [3,2,9,10]; gt the same -> IoU 1; c=+.5 label 1: right
    idx1 same blob; c=-.5 -> predicts 0, label 1: wrong; gt [3,2,9,10] -> IoU 1
    idx2 blob y0..3 x0..3 -> [0,0,4,4]; gt [8,8,15,15] -> IoU 0; label 1: right
    idx3 blob y4..11 x4..11 -> [4,4,12,12] (81 px); gt [4,4,12,7] (36 px) -> IoU 36/81 = 0.44; label 0: right
    => top1_cls 75, MaxBoxAcc 50, V2: IoU30 75, IoU50 50, IoU70 50, GT-known 50, Top-1 Loc 25."""
    images = torch.stack([blob_image(2, 9, 3, 8, 0.5), blob_image(2, 9, 3, 8, -0.5),
                          blob_image(0, 3, 0, 3, 0.5), blob_image(4, 11, 4, 11, -0.5)])
    labels = torch.tensor([1, 1, 1, 0])
    boxes = [np.array([[3, 2, 9, 10]]), np.array([[3, 2, 9, 10]]), np.array([[8, 8, 15, 15]]),
             np.array([[4, 4, 12, 7]])]
    # batches visit the dataset out of order: boxes must be looked up by index
    order = [torch.tensor([2, 0]), torch.tensor([3, 1])]
    loader = [(images[i], labels[i], i) for i in order]
    return loader, GroundTruthBoxes.square(boxes, 16)


def test_evaluate_localization_golden():
    loader, boxes = blob_dataset()
    res = evaluate_localization(BlobToy(), loader, boxes, kinds=("saol", "attention", "cam", "gradcam"),
                                eval_size=16, cam_step=0.05, threshold=0.5, progress=False)
    for kind, r in res.items():
        assert r["num_images"] == 4, kind
        assert r["top1_cls"] == 75.0, kind
        assert r["max_box_acc"] == 50.0, kind
        v2 = (r["max_box_acc_v2_iou30"], r["max_box_acc_v2_iou50"], r["max_box_acc_v2_iou70"])
        assert v2 == (75.0, 50.0, 50.0), kind
        assert r["max_box_acc_v2"] == pytest.approx(175 / 3), kind
        assert r["gt_known_loc"] == r["gt_known_loc_best"] == 50.0, kind
        assert r["top1_loc"] == r["top1_loc_best"] == 25.0, kind
        assert r["best_threshold"] == 0.0 and r["threshold"] == 0.5, kind
    # target='pred' changes which class is mapped, not the boxes here, and not Top-1 Loc
    res_pred = evaluate_localization(BlobToy(), loader, boxes, kinds=("cam",), eval_size=16,
                                     cam_step=0.05, target="pred", progress=False)
    assert res_pred["cam"]["top1_loc_best"] == 25.0 and res_pred["cam"]["gt_known_loc_best"] == 50.0


def test_evaluate_localization_rescales_boxes_and_limits_batches():
    loader, boxes = blob_dataset()
    # at 2x the blob edges are smooth, but the best threshold still recovers each blob within a
    # pixel: idx0/idx1 reach IoU 1, idx3 about 0.41 (between 0.3 and 0.5), idx2 at most 0.22
    # (the whole-image box at t = 0, where the bicubic ringing lifts the background)
    res = evaluate_localization(BlobToy(), loader, boxes, kinds=("saol", "cam"), eval_size=32,
                                cam_step=0.01, progress=False)
    for r in res.values():
        assert r["max_box_acc"] == 50.0
        assert (r["max_box_acc_v2_iou30"], r["max_box_acc_v2_iou70"]) == (75.0, 50.0)
    one = evaluate_localization(BlobToy(), loader, boxes, kinds=("cam",), eval_size=16, cam_step=0.05,
                                max_batches=1, progress=False)["cam"]
    # first batch = idx2 (miss, right class) and idx0 (hit, right class)
    assert one["num_images"] == 2 and one["top1_cls"] == 100.0 and one["top1_loc_best"] == 50.0


def test_evaluate_shares_one_forward_and_restores_mode(toy):
    model, x = toy
    model.train()
    loader = [(x, torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]))]
    boxes = GroundTruthBoxes.square([np.array([[0, 0, 3, 3]])] * 3, x.shape[-1])
    evaluate_localization(model, loader, boxes, eval_size=12, progress=False)
    assert model.calls == 2            # one forward for saol + cam, one forward+backward for gradcam
    assert model.training
    with pytest.raises(ValueError, match="valid: label, pred"):
        evaluate_localization(model, loader, boxes, target="true", progress=False)


def test_factor_results_score_a_y_and_their_product_for_the_true_class():
    loader, boxes = blob_dataset()
    res = factor_results(BlobToy(), loader, boxes, eval_size=16, cam_step=0.05)
    # A = softmax(5 * blob) localizes each blob; Y_k is spatially constant, so A ⊙ Y_k = A up to scale
    assert set(res) == {"A", "Y_k", "A ⊙ Y_k"}
    for name in ("A", "A ⊙ Y_k"):
        assert res[name]["max_box_acc"] == 50.0 and res[name]["max_box_acc_v2_iou30"] == 75.0, name
    # a constant map gives the whole image at every threshold: IoU >= 0.5 only where the box is large
    whole = np.array([0, 0, 15, 15])
    expected = 100 * np.mean([wsol_iou(b[0], whole) >= 0.5 for b in boxes.at(16)])
    assert res["Y_k"]["max_box_acc"] == expected


def wsol_iou(a, b):
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1) * max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    area = lambda x: (x[2] - x[0] + 1) * (x[3] - x[1] + 1)
    return inter / (area(a) + area(b) - inter)
