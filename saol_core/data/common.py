"""Shared pieces of the data package: the DataBundle / Loader contract, seeding, DDP sharding, normalization.

Every loader yields ``(images, labels, indices)``: images float32 (B,C,H,W) normalized on the loader's
device, labels int64 (B,), indices int64 (B,) into the split's dataset. All randomness of an epoch comes
from a generator seeded by ``(seed, epoch)``, so epoch ``e`` is the same whether or not epochs ``0..e-1``
ran before it (exact resume), and whatever the world size or worker count.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from .boxes import GroundTruthBoxes

# CutMix / PyramidNet code (which the paper builds on) uses these for CIFAR-10 and CIFAR-100 alike.
CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DatasetError(RuntimeError):
    """Missing, empty, corrupt or wrongly laid out data; the message names the path and the expected layout."""


def selection_mask(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray | None:
    """(N,) bool: ``per_class`` images of each class (all of a class that has fewer), drawn with ``seed``
    alone, so every run of a study holds out the same images; None for ``per_class`` 0."""
    if per_class == 0:
        return None
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), bool)
    for k in np.unique(labels):
        members = np.flatnonzero(labels == k)
        mask[rng.permutation(members)[:per_class]] = True
    return mask


def data_root(dataset: str, root: str | None) -> Path | None:
    """Where ``data.root`` points: ``$SAOL_DATA`` (default ``data``) and other ``$VAR``s expanded; None
    = the dataset's default under $SAOL_DATA (``config.DEFAULT_ROOTS``). Raises DatasetError for an
    unset variable."""
    from ..config import DEFAULT_ROOTS
    home = os.environ.get("SAOL_DATA", "data")
    if root is None:
        default = DEFAULT_ROOTS.get(dataset)
        return Path(home) / default if default else None
    text = os.path.expandvars(root.replace("${SAOL_DATA}", home).replace("$SAOL_DATA", home))
    unset = re.search(r"[$][{]?(\w+)", text)
    if unset:
        raise DatasetError(f"data.root={root!r}: environment variable {unset[1]} is not set; set it or give "
                           f"the path")
    return Path(text).expanduser()


def make_generator(seed: int, *keys: int) -> torch.Generator:
    """CPU generator seeded from ``(seed, *keys)`` via SeedSequence, so nearby seeds give unrelated streams."""
    entropy = [int(k) & (2**64 - 1) for k in (seed, *keys)]
    state = np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def rank_positions(n: int, batch_size: int, rank: int, world_size: int, drop_last: bool) -> Tensor:
    """Positions (into an epoch's global order of ``n`` items) that ``rank`` visits, in order.

    Strided sharding (``rank::world_size``): global batch b of a W-rank run is the single-process batch
    of size B*W. With ``drop_last`` every rank gets the same number of full batches (DDP steps must agree);
    without it the shards are disjoint and cover all ``n`` items (sizes differ by at most one).
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
    positions = torch.arange(rank, n, world_size)
    if drop_last:
        positions = positions[: (n // world_size) // batch_size * batch_size]
    return positions


def num_batches(n: int, batch_size: int, rank: int, world_size: int, drop_last: bool) -> int:
    shard = len(range(rank, n, world_size))
    return (n // world_size) // batch_size if drop_last else math.ceil(shard / batch_size)


class Normalizer:
    """uint8 (B,C,H,W) on the device -> float32 ``(x/255 [+ offset] - mean) / std`` in one fused pass."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device):
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.scale = (1.0 / (255.0 * std_t)).to(device)
        self.shift = (-mean_t / std_t).to(device)
        self.inv_std = (1.0 / std_t).to(device)

    def __call__(self, x: Tensor, offset: Tensor | None = None) -> Tensor:
        """x: (B,C,H,W) uint8; offset: (B,C) float added in [0,1] units (PCA lighting) or None."""
        out = x.to(torch.float32).mul_(self.scale)
        shift = self.shift if offset is None else self.shift + offset[:, :, None, None] * self.inv_std
        return out.add_(shift)


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean/std in [0,1] units of uint8 images (N,H,W,C), via 256-bin histograms."""
    levels = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for c in range(images.shape[-1]):
        counts = np.bincount(images[..., c].ravel(), minlength=256).astype(np.float64)
        mean = counts @ levels / counts.sum()
        means.append(float(mean))
        stds.append(float(np.sqrt(counts @ (levels - mean) ** 2 / counts.sum())))
    return tuple(means), tuple(stds)


class Loader:
    """One split's batches (base class of DeviceLoader and StreamLoader).

    Attributes: ``size`` images in the split (all ranks); ``labels`` (size,) int64 CPU by dataset index;
    ``batch_size``; ``train`` (shuffled, augmented, drops the last partial batch); ``device``.
    """

    size: int
    labels: Tensor
    batch_size: int
    train: bool
    device: torch.device
    rank: int
    world_size: int

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return num_batches(self.size, self.batch_size, self.rank, self.world_size, self.train)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """Batches ``start``, ``start`` + 1, ... of ``epoch``: (B,C,H,W) normalized images, (B,) labels, (B,)
        dataset indices. A batch depends only on (seed, epoch, position), so ``start`` > 0 gives the same
        batches as skipping that many (a resume inside an epoch)."""
        raise NotImplementedError

    def _order(self, generator: torch.Generator) -> Tensor:
        """The epoch's global order of dataset indices (drawn first from ``generator``)."""
        return torch.randperm(self.size, generator=generator) if self.train else torch.arange(self.size)


@dataclass
class DataBundle:
    train: Loader
    test: Loader
    num_classes: int
    class_names: list[str]
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    test_boxes: GroundTruthBoxes | None
    """The test split's boxes (saol_core.data.boxes): ``test_boxes.at(size)`` gives them in a size x size
    evaluated image."""

    def denormalize(self, images: Tensor) -> Tensor:
        """(B,C,H,W) or (C,H,W) normalized images -> [0,1] (clamped) for plotting."""
        shape = (-1, 1, 1)
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(shape)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(shape)
        return (images * std + mean).clamp(0.0, 1.0)
