"""DeviceLoader: a whole split of small images kept on the device as one uint8 tensor.

Per epoch, the order, crop offsets and flips of ALL items are drawn on the host from a generator seeded
by ``(seed, epoch)`` (indexed by position in the global order, so they do not depend on the world
size) and copied to the device once. Each batch is then one gather from the resident tensor: random
crop with zero padding (``pad`` pixels, the CIFAR recipe's 4 at 32 px) and horizontal flip are folded
into the gather's row/column indices, with no per-image Python work and no device->host sync.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import Tensor

from .common import Loader, Normalizer, make_generator, rank_positions

_ORDER_STREAM = 0x5A01  # generator key of this loader's epoch plans (distinct from other seeded streams)


@dataclass
class EpochPlan:
    """One rank's epoch, host tensors of length n: what is visited, in order, and how it is augmented."""
    order: Tensor  # (n,) int64 dataset indices
    dy: Tensor  # (n,) int64 crop offset in [0, 2*pad] of the padded image (pad = no shift)
    dx: Tensor  # (n,) int64
    flip: Tensor  # (n,) bool horizontal flip (applied after the crop)


class DeviceLoader(Loader):
    """Batches of a device-resident uint8 split; see the module docstring.

    images: (N,H,W,C) uint8 (any device; moved to ``device``), labels: (N,) int64.
    ``train``: shuffle each epoch, augment (``pad`` > 0 crop, ``flip``), drop the last partial batch.
    """

    def __init__(self, images: Tensor, labels: Tensor, *, batch_size: int, mean: Sequence[float],
                 std: Sequence[float], seed: int, train: bool, pad: int = 0, flip: bool = False,
                 device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be (N,H,W,C) uint8, got {tuple(images.shape)} {images.dtype}")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(torch.int64).cpu()
        self._labels_dev = self.labels.to(self.device)
        self.size, self.batch_size, self.train, self.seed = len(images), batch_size, train, seed
        self.pad, self.flip = (pad, flip) if train else (0, False)
        self.rank, self.world_size = rank, world_size
        self.normalize = Normalizer(mean, std, self.device)
        H, W = images.shape[1:3]
        self._rows = torch.arange(H, device=self.device)
        self._cols = torch.arange(W, device=self.device)

    def plan(self, epoch: int) -> EpochPlan:
        """This rank's visiting order and augmentation for ``epoch`` (host tensors)."""
        g = make_generator(self.seed, _ORDER_STREAM, epoch)
        order = self._order(g)
        dy = torch.randint(0, 2 * self.pad + 1, (self.size,), generator=g)
        dx = torch.randint(0, 2 * self.pad + 1, (self.size,), generator=g)
        flip = (torch.rand(self.size, generator=g) < 0.5) & self.flip
        keep = rank_positions(self.size, self.batch_size, self.rank, self.world_size, self.train)
        return EpochPlan(order[keep], dy[keep], dx[keep], flip[keep])

    def gather(self, idx: Tensor, dy: Tensor, dx: Tensor, flip: Tensor) -> Tensor:
        """Cropped/flipped uint8 batch (B,H,W,C) of dataset indices ``idx`` (all args on the device).

        out[b, i, j] = img[idx_b][i + dy_b - pad, c_b(j)] (0 outside the image), where
        c_b(j) = j + dx_b - pad, or (W-1-j) + dx_b - pad when flipped (flip after crop).
        """
        if self.pad == 0 and not self.flip:
            return self.images[idx]
        H, W = self._rows.numel(), self._cols.numel()
        rows = dy[:, None] - self.pad + self._rows  # (B,H)
        cols = dx[:, None] - self.pad + self._cols  # (B,W)
        cols = torch.where(flip[:, None], cols.flip(1), cols)
        inside = ((rows >= 0) & (rows < H))[:, :, None] & ((cols >= 0) & (cols < W))[:, None, :]
        out = self.images[idx[:, None, None], rows.clamp(0, H - 1)[:, :, None], cols.clamp(0, W - 1)[:, None, :]]
        return out * inside[..., None]

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        plan = self.plan(epoch)
        pin = self.device.type == "cuda"
        order, dy, dx, flip = (t.pin_memory().to(self.device, non_blocking=True) if pin else t.to(self.device)
                               for t in (plan.order, plan.dy, plan.dx, plan.flip))
        bs = self.batch_size
        for b in range(start, len(self)):
            sl = slice(b * bs, (b + 1) * bs)
            idx = order[sl]
            x = self.gather(idx, dy[sl], dx[sl], flip[sl]).permute(0, 3, 1, 2).contiguous()
            yield self.normalize(x), self._labels_dev[idx], idx
