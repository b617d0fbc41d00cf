"""StreamLoader: large images decoded and augmented by torch DataLoader workers, normalized on the device.

Determinism: the batch sampler draws, per epoch, the order and one 62-bit seed per item from a generator
seeded by ``(seed, epoch)``; each item's augmentation uses its own generator seeded from that number.
So a batch's pixels depend only on (seed, epoch, position) -- not on the number of workers, their
scheduling, or persistent workers' RNG state -- and epoch ``e`` is reproducible on resume.

Workers return uint8 (B,C,S,S) plus a per-image RGB offset (PCA lighting; zero otherwise); the float
conversion and normalization run on the loader's device.
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .common import DatasetError, Loader, Normalizer, make_generator, rank_positions
from .files import decode_file, raise_all, undecodable
from .layouts import FileSplit

_ORDER_STREAM = 0x5A02
# ImageNet PCA lighting (fb.resnet.torch / CutMix code): eigen-decomposition of the RGB covariance.
_EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
_EIGVEC = torch.tensor([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])


class EvalTransform:
    """Deterministic eval geometry: ``direct`` resize to S x S (wsolevaluation's protocol for
    localization), or ``center``: resize the short side to round(S/0.875) (256 for 224), center crop S."""

    def __init__(self, size: int, mode: str):
        if mode not in ("direct", "center"):
            raise ValueError(f"mode={mode!r} must be 'direct' or 'center'")
        self.size, self.mode = size, mode

    def geometry(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(resized width, resized height, crop top, crop left) for an image of that size."""
        S = self.size
        if self.mode == "direct":
            return S, S, 0, 0
        short = round(S / 0.875)  # torchvision's Resize(int) rule: the long side is truncated
        new_w, new_h = (short, int(short * height / width)) if width <= height else (int(short * width / height), short)
        return new_w, new_h, int(round((new_h - S) / 2.0)), int(round((new_w - S) / 2.0))

    def __call__(self, img: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(3,H,W) uint8 -> (3,S,S) uint8 and a zero (3,) offset (``generator`` unused)."""
        new_w, new_h, top, left = self.geometry(img.shape[2], img.shape[1])
        img = TF.resize(img, [new_h, new_w], antialias=True)
        return TF.crop(img, top, left, self.size, self.size), torch.zeros(3)


class TrainTransform:
    """RandomResizedCrop(S, scale=(0.08,1), ratio=(3/4,4/3)) + horizontal flip; with ``jitter`` also
    ColorJitter(0.4, 0.4, 0.4) in random order and PCA lighting 0.1 (the CutMix ImageNet recipe)."""

    def __init__(self, size: int, jitter: bool):
        self.size, self.jitter = size, jitter

    @staticmethod
    def crop_params(height: int, width: int, g: torch.Generator) -> tuple[int, int, int, int]:
        """torchvision's RandomResizedCrop.get_params with an explicit generator: (top, left, h, w)."""
        area = height * width
        log_ratio = (math.log(3 / 4), math.log(4 / 3))
        for _ in range(10):
            u = torch.rand(4, generator=g).tolist()
            target = area * (0.08 + u[0] * (1 - 0.08))
            aspect = math.exp(log_ratio[0] + u[1] * (log_ratio[1] - log_ratio[0]))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                return int(u[2] * (height - h + 1)), int(u[3] * (width - w + 1)), h, w
        ratio = width / height  # fallback: central crop, aspect clamped to the range (as torchvision)
        if ratio < 3 / 4:
            w, h = width, round(width / (3 / 4))
        elif ratio > 4 / 3:
            w, h = round(height * 4 / 3), height
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, img: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """(3,H,W) uint8 -> (3,S,S) uint8 and a (3,) RGB offset in [0,1] units (PCA lighting)."""
        top, left, h, w = self.crop_params(img.shape[1], img.shape[2], g)
        img = TF.resized_crop(img, top, left, h, w, [self.size, self.size], antialias=True)
        if torch.rand(1, generator=g).item() < 0.5:
            img = TF.horizontal_flip(img)
        offset = torch.zeros(3)
        if self.jitter:
            factors = (1.0 + 0.4 * (2 * torch.rand(3, generator=g) - 1)).tolist()
            adjust = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
            for k in torch.randperm(3, generator=g).tolist():
                img = adjust[k](img, factors[k])
            offset = _EIGVEC @ (torch.randn(3, generator=g) * 0.1 * _EIGVAL)
        return img, offset


class _Files(Dataset):
    """Keys are ``(index, sample_seed)``; items ``(uint8 (3,S,S), label, index, offset (3,))``."""

    def __init__(self, split: FileSplit, transform):
        self.paths, self.labels, self.transform = [str(p) for p in split.paths], split.labels.tolist(), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: tuple[int, int]):
        index, sample_seed = key
        img, offset = self.transform(decode_file(self.paths[index]), torch.Generator().manual_seed(sample_seed))
        return img, self.labels[index], index, offset


class _PlanSampler:
    """Batch sampler replaying ``loader.plan(epoch)`` from batch ``start``; the loader sets both before
    iterating."""

    def __init__(self, loader: "StreamLoader"):
        self.loader, self.epoch, self.start = loader, 0, 0

    def __len__(self) -> int:
        return len(self.loader) - self.start

    def __iter__(self):
        order, seeds = self.loader.plan(self.epoch)
        keys = list(zip(order.tolist(), seeds.tolist()))
        bs = self.loader.batch_size
        for b in range(self.start, len(self.loader)):
            yield keys[b * bs:(b + 1) * bs]


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # one decode per worker process; intra-op threads would oversubscribe


class StreamLoader(Loader):
    """Batches of image files; ``train``: shuffled, drops the last partial batch. See the module docstring."""

    def __init__(self, split: FileSplit, transform, *, batch_size: int, mean: Sequence[float],
                 std: Sequence[float], seed: int, train: bool, device: torch.device | str = "cpu",
                 rank: int = 0, world_size: int = 1, workers: int = 2):
        self.device = torch.device(device)
        self.size, self.batch_size, self.train, self.seed = len(split.paths), batch_size, train, seed
        self.labels = torch.as_tensor(split.labels, dtype=torch.int64)
        self.rank, self.world_size, self.workers = rank, world_size, workers
        self.normalize = Normalizer(mean, std, self.device)
        self._dataset = _Files(split, transform)
        self._sampler = _PlanSampler(self)
        self._loader: DataLoader | None = None  # built on first use: constructing spawns no processes

    def plan(self, epoch: int) -> tuple[Tensor, Tensor]:
        """This rank's (dataset indices, per-item augmentation seeds) for ``epoch``, host int64 tensors."""
        g = make_generator(self.seed, _ORDER_STREAM, epoch)
        order = self._order(g)
        seeds = torch.randint(0, 2**62, (self.size,), generator=g)
        keep = rank_positions(self.size, self.batch_size, self.rank, self.world_size, self.train)
        return order[keep], seeds[keep]

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        if self._loader is None:
            self._loader = DataLoader(self._dataset, batch_sampler=self._sampler, num_workers=self.workers,
                                      persistent_workers=self.workers > 0, worker_init_fn=_worker_init,
                                      pin_memory=self.device.type == "cuda")
        self._sampler.epoch, self._sampler.start = epoch, start
        try:
            for img, label, index, offset in self._loader:
                img, label, index, offset = (t.to(self.device, non_blocking=True) for t in (img, label, index, offset))
                yield self.normalize(img, offset), label, index
        except DatasetError as e:
            # a worker met a file the header check passed (e.g. a truncated JPEG); its error arrives wrapped in
            # the worker's traceback. Check every file of the split, so that one pass fixes them all
            raise_all(undecodable(self._dataset.paths))
            raise DatasetError(str(e).rstrip().splitlines()[-1].split(": ", 1)[-1]) from None
