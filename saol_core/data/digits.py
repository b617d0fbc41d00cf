"""Offline "cluttered digits": real handwritten digits (sklearn's 8x8 set) pasted on a larger canvas.

Each canvas holds one digit at a random position and scale plus ``clutter`` distractor fragments
(crops of OTHER source digits, half the digit's side), so the class is only readable at the digit's
location -- the spirit of cluttered MNIST -- and every image has an exact ground-truth box: the tight
inclusive box of the pasted digit's ink. Canvases are colored with a random per-canvas background /
foreground tint plus mild Gaussian noise.

The 1797 source digits are split once, stratified and with a fixed seed (``SPLIT_SEED``), into train
and test sources; train canvases only use train sources, test canvases only test sources (digit and
fragments alike). Everything else is a deterministic function of ``seed``. Generation is vectorized per
distinct digit size (a handful of sizes): ~0.1 s for 6000 canvases at 32 px.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

SPLIT_SEED = 20200614  # fixed: which source digits are train and which are test never changes
TEST_FRACTION = 0.2
INK = 0.15  # resampled digit intensities below this are dropped, so "ink" (and the box) is exact
FRAGMENT_FRACTION = 0.5  # fragment side / digit side
CLASS_NAMES = [str(k) for k in range(10)]


@dataclass
class Digits:
    images: np.ndarray  # (N,S,S,3) uint8
    labels: np.ndarray  # (N,) int64
    boxes: np.ndarray  # (N,4) float32 xyxy, inclusive corners, tight box of the digit's ink
    sources: np.ndarray  # (N,) int64 index into sklearn's load_digits() of the pasted digit


@lru_cache(maxsize=1)
def source_digits() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's digits: intensities (1797,8,8) float32 in [0,1] and labels (1797,) int64."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    return (raw.images / 16.0).astype(np.float32), raw.target.astype(np.int64)


@lru_cache(maxsize=1)
def source_split() -> tuple[np.ndarray, np.ndarray]:
    """Fixed stratified split of the source digits: sorted (train_ids, test_ids), disjoint."""
    _, labels = source_digits()
    rng = np.random.default_rng(SPLIT_SEED)
    train, test = [], []
    for k in range(10):
        ids = rng.permutation(np.flatnonzero(labels == k))
        n_test = round(len(ids) * TEST_FRACTION)
        test.append(ids[:n_test])
        train.append(ids[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _resample(ids: np.ndarray, side: int) -> np.ndarray:
    """Source digits ``ids`` resized to (len(ids), side, side) float32, faint pixels zeroed (exact ink)."""
    images, _ = source_digits()
    x = torch.from_numpy(images[ids])[:, None]
    x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True)[:, 0]
    return torch.where(x >= INK, x, 0.0).numpy()


def _paste_max(canvas: np.ndarray, rows: np.ndarray, y: np.ndarray, x: np.ndarray, patch: np.ndarray):
    """canvas[rows, y:y+h, x:x+w] = max(canvas, patch) for each row (rows distinct): (n,h,w) patches."""
    h, w = patch.shape[1:]
    yy = y[:, None, None] + np.arange(h)[None, :, None]
    xx = x[:, None, None] + np.arange(w)[None, None, :]
    r = rows[:, None, None]
    canvas[r, yy, xx] = np.maximum(canvas[r, yy, xx], patch)


def make_digits(n: int, *, split: str, seed: int, image_size: int = 32, clutter: int = 4,
                digit_scale: tuple[float, float] = (0.3, 0.5), noise: float = 0.04,
                tint: bool = True) -> Digits:
    """``n`` cluttered-digit canvases of side ``image_size`` from the ``split`` ("train"/"test") sources.

    Labels are balanced (``n // 10`` or one more per class). ``noise`` is the Gaussian noise std in
    [0,1] units; ``tint=False`` gives white ink on black (with ``noise=0``: ink pixels are exactly the
    nonzero ones). The digit layout (class, source, scale, position) uses its own random stream, so the
    same seed gives the same digits and boxes whatever ``clutter``, ``noise`` and ``tint`` are.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r} must be 'train' or 'test'")
    lo, hi = digit_scale
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"digit_scale={digit_scale} must satisfy 0 < min <= max <= 1")
    S = image_size
    pool = source_split()[0 if split == "train" else 1]
    _, source_labels = source_digits()
    layout_rng, clutter_rng, color_rng = (np.random.default_rng(s) for s in
                                          np.random.SeedSequence([seed, split == "test"]).spawn(3))

    # Layout: balanced labels, a uniformly drawn source digit of that class, side, top-left corner.
    labels = layout_rng.permutation(np.arange(n) % 10)
    by_class = [pool[source_labels[pool] == k] for k in range(10)]
    counts = np.array([len(c) for c in by_class])
    table = np.stack([np.resize(c, counts.max()) for c in by_class])  # (10, max) padded by repetition
    sources = table[labels, (layout_rng.random(n) * counts[labels]).astype(np.int64)]
    sides = np.clip(np.rint(layout_rng.uniform(lo, hi, n) * S), 4, S).astype(np.int64)
    ys = (layout_rng.random(n) * (S - sides + 1)).astype(np.int64)
    xs = (layout_rng.random(n) * (S - sides + 1)).astype(np.int64)

    canvas = np.zeros((n, S, S), np.float32)
    boxes = np.zeros((n, 4), np.float32)
    for side in np.unique(sides):
        rows = np.flatnonzero(sides == side)
        patch = _resample(sources[rows], int(side))
        _paste_max(canvas, rows, ys[rows], xs[rows], patch)
        ink_y, ink_x = patch.any(axis=2), patch.any(axis=1)  # (m, side) rows / columns holding ink
        first_y, last_y = ink_y.argmax(1), side - 1 - ink_y[:, ::-1].argmax(1)
        first_x, last_x = ink_x.argmax(1), side - 1 - ink_x[:, ::-1].argmax(1)
        boxes[rows] = np.stack([xs[rows] + first_x, ys[rows] + first_y,
                                xs[rows] + last_x, ys[rows] + last_y], 1)

    # Clutter: per slot, a crop of another source digit (resampled at the canvas's digit scale).
    for _ in range(clutter):
        other = pool[(clutter_rng.random(n) * len(pool)).astype(np.int64)]
        other = np.where(other == sources, pool[(np.searchsorted(pool, other) + 1) % len(pool)], other)
        u = clutter_rng.random((4, n))
        for side in np.unique(sides):
            rows = np.flatnonzero(sides == side)
            f = max(2, int(round(side * FRAGMENT_FRACTION)))
            full = _resample(other[rows], int(side))
            cy, cx = (u[:2, rows] * (side - f + 1)).astype(np.int64)
            crop = full[np.arange(len(rows))[:, None, None], cy[:, None, None] + np.arange(f)[None, :, None],
                        cx[:, None, None] + np.arange(f)[None, None, :]]
            py, px = (u[2:, rows] * (S - f + 1)).astype(np.int64)
            _paste_max(canvas, rows, py, px, crop)

    if tint:
        background = color_rng.uniform(0.0, 0.3, (n, 1, 1, 3)).astype(np.float32)
        foreground = color_rng.uniform(0.6, 1.0, (n, 1, 1, 3)).astype(np.float32)
    else:
        background, foreground = np.zeros((1, 1, 1, 3), np.float32), np.ones((1, 1, 1, 3), np.float32)
    rgb = (foreground - background) * canvas[..., None]
    rgb += background
    if noise > 0:
        rgb += noise * color_rng.standard_normal(rgb.shape, dtype=np.float32)
    rgb = np.clip(rgb, 0.0, 1.0, out=rgb)
    images = np.rint(rgb * 255.0, out=rgb).astype(np.uint8)
    return Digits(images=images, labels=labels.astype(np.int64), boxes=boxes, sources=sources)
