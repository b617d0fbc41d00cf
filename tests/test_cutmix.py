"""CutMix: pixels, lambda, box geometry, randomness, and the soft box mask, checked by brute force."""
import math

import numpy as np
import pytest
import scipy.stats
import torch

from saol_core.cutmix import box_cells, box_mask, cutmix, paste, sample_beta


def distinct_images(B=6, C=2, H=12, W=20):
    """Every pixel of every image and channel holds a different value."""
    return torch.arange(B * C * H * W, dtype=torch.float32).reshape(B, C, H, W)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_box_holds_pasted_pixels_and_outside_is_original():
    images = distinct_images()
    before = images.clone()
    mix = cutmix(images, p=1.0, beta=1.0, generator=gen(3))
    y0, y1, x0, x1 = mix.box
    assert mix.applied and y1 > y0 and x1 > x0
    assert torch.equal(images, before)  # out of place
    src = images[mix.perm]
    inside = torch.zeros(images.shape[-2:], dtype=torch.bool)
    inside[y0:y1, x0:x1] = True
    for b in range(images.shape[0]):
        for y in range(images.shape[2]):
            for x in range(images.shape[3]):
                want = src[b, :, y, x] if inside[y, x] else images[b, :, y, x]
                assert torch.equal(mix.images[b, :, y, x], want)


def test_paste_with_cutmixs_box_and_pairing_gives_cutmixs_batch():
    images = torch.randn(5, 3, 12, 10)
    before = images.clone()
    mix = cutmix(images, 1.0, 1.0, torch.Generator().manual_seed(3))
    assert mix.applied and mix.box[1] > mix.box[0] and mix.box[3] > mix.box[2]
    mixed = paste(images, images[mix.perm], mix.box)
    assert torch.equal(mixed, mix.images)
    assert not torch.equal(mixed, images) and torch.equal(images, before)   # the input is left as it was


def test_lam_is_one_minus_changed_pixel_fraction():
    images = distinct_images()
    B, C, H, W = images.shape
    n_moved = 0
    for seed in range(10):
        mix = cutmix(images, p=1.0, beta=1.0, generator=gen(seed))
        # an image mapped to itself (perm[b] == b; seed 2 draws the identity) keeps every pixel
        moved = [b for b in range(B) if mix.perm[b] != b]
        n_moved += len(moved)
        for b in range(B):
            changed = (mix.images[b] != images[b]).all(dim=0).sum().item()  # all channels changed
            expected = (1 - mix.lam) * H * W if b in moved else 0
            assert changed == pytest.approx(expected, abs=1e-9)
        assert 0.0 <= mix.lam <= 1.0
    assert n_moved > 30  # the check is not vacuous


def test_box_follows_official_rand_bbox():
    """Replay the same host draws through the official clovaai rand_bbox (numpy clip)."""
    for seed in range(20):
        H, W = 24, 40
        images = torch.zeros(4, 1, H, W)
        mix = cutmix(images, p=0.7, beta=1.0, generator=gen(seed))
        g = gen(seed)
        r = torch.rand((), generator=g, dtype=torch.float64).item()
        if not r < 0.7:
            assert not mix.applied
            continue
        lam0 = torch.rand((), generator=g, dtype=torch.float64).item()  # Beta(1,1) == its uniform
        cut_rat = np.sqrt(1.0 - lam0)
        cut_h, cut_w = int(H * cut_rat), int(W * cut_rat)
        cy = torch.randint(H, (), generator=g).item()
        cx = torch.randint(W, (), generator=g).item()
        box = (np.clip(cy - cut_h // 2, 0, H), np.clip(cy + cut_h // 2, 0, H),
               np.clip(cx - cut_w // 2, 0, W), np.clip(cx + cut_w // 2, 0, W))
        assert mix.box == tuple(int(v) for v in box)
        assert torch.equal(mix.perm, torch.randperm(4, generator=g))
        assert mix.lam == pytest.approx(1 - (box[1] - box[0]) * (box[3] - box[2]) / (H * W))


def test_deterministic_from_generator():
    images = distinct_images()
    a = cutmix(images, 0.5, 1.0, gen(7))
    b = cutmix(images, 0.5, 1.0, gen(7))
    assert (a.applied, a.box, a.lam) == (b.applied, b.box, b.lam)
    assert torch.equal(a.images, b.images)
    assert a.perm is None and b.perm is None or torch.equal(a.perm, b.perm)
    boxes = {cutmix(images, 1.0, 1.0, gen(s)).box for s in range(10)}
    assert len(boxes) > 5  # the seed matters


def test_probability_zero_never_one_always():
    images = distinct_images()
    g = gen(0)
    for _ in range(50):
        mix = cutmix(images, 0.0, 1.0, g)
        assert not mix.applied and mix.lam == 1.0 and mix.perm is None and mix.box is None
        assert mix.images is images
    assert all(cutmix(images, 1.0, 1.0, g).applied for _ in range(50))
    rate = np.mean([cutmix(images, 0.3, 1.0, g).applied for _ in range(2000)])
    assert abs(rate - 0.3) < 0.04


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_sample_beta_distribution(beta):
    g = gen(11)
    draws = [sample_beta(beta, g) for _ in range(3000)]
    assert scipy.stats.kstest(draws, scipy.stats.beta(beta, beta).cdf).pvalue > 1e-3


def brute_box_mask(box, image_hw, out_hw):
    """Split each pixel into Ho x Wo sub-pixels so every output cell is a whole block; count."""
    (H, W), (Ho, Wo) = image_hw, out_hw
    y0, y1, x0, x1 = box
    pix = np.zeros((H, W))
    pix[y0:y1, x0:x1] = 1
    sub = np.kron(pix, np.ones((Ho, Wo)))  # (H*Ho, W*Wo); cell (i,j) = rows i*H:(i+1)*H, cols j*W:(j+1)*W
    return np.array([[sub[i * H:(i + 1) * H, j * W:(j + 1) * W].mean() for j in range(Wo)]
                     for i in range(Ho)])


@pytest.mark.parametrize("image_hw,out_hw", [((10, 13), (3, 4)), ((32, 32), (8, 8)),
                                             ((7, 9), (7, 9)), ((224, 224), (14, 14)), ((5, 6), (4, 4))])
def test_box_mask_matches_pixel_counting(image_hw, out_hw):
    g = np.random.default_rng(0)
    H, W = image_hw
    boxes = [(0, H, 0, W), (0, 0, 0, W), (2, 2, 1, 3)]
    for _ in range(10):
        y0, y1 = sorted(g.integers(0, H + 1, 2))
        x0, x1 = sorted(g.integers(0, W + 1, 2))
        boxes.append((int(y0), int(y1), int(x0), int(x1)))
    for box in boxes:
        got = box_mask(box, image_hw, out_hw, "cpu")
        assert got.dtype == torch.float32 and got.shape == out_hw
        np.testing.assert_allclose(got.numpy(), brute_box_mask(box, image_hw, out_hw), atol=1e-6)
        assert box_cells(box, image_hw, out_hw) == pytest.approx(got.sum().item(), abs=1e-4)


def test_box_mask_hand_values():
    # 8x8 image, 4x4 cells of 2x2 pixels; rows 1..4 cover half of cell 0, all of 1, half of 2
    got = box_mask((1, 5, 2, 4), (8, 8), (4, 4))
    want = torch.tensor([0.5, 1.0, 0.5, 0.0])[:, None] * torch.tensor([0.0, 1.0, 0.0, 0.0])[None, :]
    assert torch.equal(got, want)
    # 3 pixel rows onto 2 cells: cell 0 = rows [0, 1.5); the box row 1 covers 0.5/1.5 of it
    assert torch.allclose(box_mask((1, 2, 0, 1), (3, 1), (2, 1))[:, 0], torch.tensor([1 / 3, 1 / 3]))
    assert math.isclose(box_cells((1, 5, 2, 4), (8, 8), (4, 4)), 2.0)
