"""Batch-level CutMix (Yun et al. 2019), as in the official clovaai/CutMix-PyTorch training loop.

One box per batch: the box region of every image ``b`` is replaced by the same region of image
``perm[b]``. Every random number (apply-or-not, lambda, box centre, permutation) is drawn on the host
from a CPU ``torch.Generator``, so a run is reproducible from its seed and the step never waits on the
device; only the pixel copy runs on the device. The box and lambda also travel to the device as small
tensors (``box_t``, ``lam_t``), which the losses read: a compiled or CUDA-graphed step then sees the same
graph for every box instead of one graph per box size.

Label convention (official code): the mixed image keeps a fraction ``lam`` of the ORIGINAL image, so
``loss = lam * CE(., labels) + (1 - lam) * CE(., labels[perm])``; ``lam`` is recomputed from the box
after clipping it to the image, ``lam = 1 - box_area / (H * W)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import scipy.special
import torch
from torch import Tensor


@dataclass
class CutMixBatch:
    images: Tensor
    """(B,C,H,W) mixed images (the input tensor itself when not applied)."""
    perm: Tensor | None
    """(B,) int64 on the images' device: image ``b`` received the box region of image ``perm[b]``."""
    box: tuple[int, int, int, int] | None
    """(y0, y1, x0, x1) half-open pixel box; may be empty when lambda ~ 1."""
    lam: float
    """Fraction of pixels from the ORIGINAL image = 1 - pasted area fraction (1.0 if not applied)."""
    applied: bool
    box_t: Tensor | None = field(init=False, default=None)
    """(4,) int64 on the images' device: ``box`` (applied batches only)."""
    lam_t: Tensor | None = field(init=False, default=None)
    """(2,) float32 on the images' device: (lam, 1 - lam), each rounded from the host's double."""

    def __post_init__(self):
        if self.applied:
            device = self.images.device
            self.box_t = torch.tensor(self.box, dtype=torch.int64).to(device, non_blocking=True)
            self.lam_t = torch.tensor([self.lam, 1.0 - self.lam], dtype=torch.float32).to(device, non_blocking=True)


def _uniform(generator: torch.Generator) -> float:
    # .item() of a CPU tensor is a host read, not a device sync
    return torch.rand((), generator=generator, dtype=torch.float64).item()


def _randint(high: int, generator: torch.Generator) -> int:
    return int(torch.randint(high, (), generator=generator).item())


def sample_beta(beta: float, generator: torch.Generator) -> float:
    """One draw of Beta(beta, beta) by inverting its CDF at a uniform from ``generator``.

    torch.distributions.Beta takes no generator; the inverse CDF needs a single uniform, so the
    stream of ``generator`` stays easy to follow (and Beta(1, 1) returns the uniform itself).
    """
    return float(scipy.special.betaincinv(beta, beta, _uniform(generator)))


def cutmix(images: Tensor, p: float, beta: float, generator: torch.Generator) -> CutMixBatch:
    """Mix a batch with probability ``p``; ``images`` (B,C,H,W) on any device is never modified.

    Box (official ``rand_bbox``): side ``int(H * sqrt(1 - lam0))`` x ``int(W * sqrt(1 - lam0))`` with
    ``lam0 ~ Beta(beta, beta)``, centre uniform over the pixels, clipped to the image; the returned
    ``lam`` is recomputed from the clipped box.
    """
    if generator.device.type != "cpu":
        raise ValueError("cutmix draws its random numbers on the host: pass a CPU torch.Generator")
    if _uniform(generator) >= p:  # official code: apply iff rand < cutmix_prob
        return CutMixBatch(images=images, perm=None, box=None, lam=1.0, applied=False)
    B, _, H, W = images.shape
    cut_rat = (1.0 - sample_beta(beta, generator)) ** 0.5
    cut_h, cut_w = int(H * cut_rat), int(W * cut_rat)
    cy, cx = _randint(H, generator), _randint(W, generator)
    y0, y1 = min(max(cy - cut_h // 2, 0), H), min(max(cy + cut_h // 2, 0), H)
    x0, x1 = min(max(cx - cut_w // 2, 0), W), min(max(cx + cut_w // 2, 0), W)
    lam = 1.0 - (y1 - y0) * (x1 - x0) / (H * W)
    perm = torch.randperm(B, generator=generator).to(images.device, non_blocking=True)
    mixed = images.clone()  # out of place: the caller keeps the clean batch (SS2's teacher input)
    mixed[:, :, y0:y1, x0:x1] = images[:, :, y0:y1, x0:x1].index_select(0, perm)
    return CutMixBatch(images=mixed, perm=perm, box=(y0, y1, x0, x1), lam=lam, applied=True)


def paste(target: Tensor, source: Tensor, box: tuple[int, int, int, int]) -> Tensor:
    """(B,C,H,W) copy of ``target`` with the (y0, y1, x0, x1) half-open box region of ``source`` (same shape)
    pasted in: CutMix's pixel step for a chosen box and pairing (figures, the explorer)."""
    y0, y1, x0, x1 = box
    mixed = target.clone()
    mixed[:, :, y0:y1, x0:x1] = source[:, :, y0:y1, x0:x1]
    return mixed


def _cover(lo: int | Tensor, hi: int | Tensor, size: int, n: int, device) -> Tensor:
    """(n,) fraction of each of ``n`` equal cells of [0, size) that lies inside [lo, hi).

    Coordinates are scaled by ``n`` so cell edges ``i * size / n`` become the integers ``i * size``:
    the overlap is exact integer arithmetic and only the final division rounds. ``lo``/``hi`` may be
    host ints or 0-dim int64 tensors on ``device`` (no host read either way).
    """
    edges = torch.arange(n + 1, device=device) * size
    overlap = edges[1:].clamp(max=hi * n) - edges[:-1].clamp(min=lo * n)
    return overlap.clamp(min=0).float() / size


def box_mask(box: tuple[int, int, int, int] | Tensor, image_hw: tuple[int, int], out_hw: tuple[int, int],
             device: torch.device | str | None = None) -> Tensor:
    """(Ho,Wo) float32 soft box mask: the fraction of each output cell's pixel area inside ``box``.

    Output cell (i, j) covers the pixel rectangle [i*H/Ho, (i+1)*H/Ho) x [j*W/Wo, (j+1)*W/Wo), which
    may cut through pixels when H is not a multiple of Ho. ``box`` is (y0, y1, x0, x1) half-open: host
    ints or a (4,) int64 tensor (``CutMixBatch.box_t``).
    """
    y0, y1, x0, x1 = box
    (H, W), (Ho, Wo) = image_hw, out_hw
    return _cover(y0, y1, H, Ho, device)[:, None] * _cover(x0, x1, W, Wo, device)[None, :]


def box_cells(box: tuple[int, int, int, int] | Tensor, image_hw: tuple[int, int],
              out_hw: tuple[int, int]) -> float | Tensor:
    """Sum of ``box_mask`` (box area in units of output cells): a host float for a host box, a 0-dim
    float64 tensor for a tensor box (integer area, then one correctly rounded division either way)."""
    y0, y1, x0, x1 = box
    (H, W), (Ho, Wo) = image_hw, out_hw
    area = (y1 - y0) * (x1 - x0) * Ho * Wo
    return area.double() / (H * W) if isinstance(area, Tensor) else area / (H * W)
