"""End to end (data + training step): the public CutMix code's pipeline (DataLoader, per-image
torchvision transforms, host CutMix) vs this project's device-resident loader + device CutMix, and
optionally the public code's whole loop (its pipeline + its model and step, ``official``)."""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision import transforms

from ..backbones import cifar_resnet_depth
from ..cutmix import CutMixBatch, cutmix
from ..data import build_data
from ..step import LossMeter
from .measure import Clock, summarize, timed
from .official import OfficialStep
from .recipes import BenchSettings, bench_step, recipe_config


class UInt8Images(torch.utils.data.Dataset):
    """(N,H,W,C) uint8 images + labels, served like torchvision's CIFAR10: PIL image -> ``transform``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def official_paste(images: Tensor, lam: float, cx: int, cy: int, rand_index: Tensor) -> CutMixBatch:
    """clovaai/CutMix-PyTorch ``rand_bbox`` + paste, IN PLACE on ``images``, with its draws passed in.

    As in the official code, its "W" is dim 2 (rows) and "H" dim 3, so ``cx`` is the row centre; the
    returned box is (row0, row1, col0, col1) in ``saol_core.cutmix``'s (y0, y1, x0, x1) order.
    """
    W, H = images.size(2), images.size(3)
    cut_rat = np.sqrt(1.0 - lam)
    cut_w, cut_h = int(W * cut_rat), int(H * cut_rat)
    bbx1, bby1 = int(np.clip(cx - cut_w // 2, 0, W)), int(np.clip(cy - cut_h // 2, 0, H))
    bbx2, bby2 = int(np.clip(cx + cut_w // 2, 0, W)), int(np.clip(cy + cut_h // 2, 0, H))
    images[:, :, bbx1:bbx2, bby1:bby2] = images[rand_index, :, bbx1:bbx2, bby1:bby2]
    lam = 1 - ((bbx2 - bbx1) * (bby2 - bby1) / (images.size(-1) * images.size(-2)))
    return CutMixBatch(images, rand_index, (bbx1, bbx2, bby1, bby2), lam, True)


def official_cutmix(images: Tensor, p: float, beta: float, rng: np.random.RandomState) -> CutMixBatch:
    """The official training loop's draws (numpy, in its order) + ``official_paste`` on the host batch."""
    if not (beta > 0 and rng.rand() < p):
        return CutMixBatch(images, None, None, 1.0, False)
    lam = rng.beta(beta, beta)
    rand_index = torch.randperm(images.size(0))
    return official_paste(images, lam, rng.randint(images.size(2)), rng.randint(images.size(3)), rand_index)


def bench_pipelines(settings: BenchSettings, device: torch.device, clock: Clock = timed) -> dict:
    """End-to-end images/s (data + step) of the conventional and resident pipelines: per repeat one epoch
    of ``settings.e2e_images`` images (the offline digits set of that size, or that many images drawn
    from the ``settings.e2e_data`` image folder, e.g. CIFAR-10, with its crop + flip augmentation).

    With ``settings.official_loop`` also the official loop (the conventional pipeline feeding
    ``official.OfficialStep``: its ResNet of the same depth, fp32, NCHW) and, when the project's step runs
    in bf16, the resident pipeline in fp32 too (the same-precision comparison). All pipelines alternate
    within each repeat. ``ratio``: resident / conventional; ``vs_official``: each pipeline / official loop
    (medians of images/s).
    """
    def config(bf16: bool):
        return recipe_config(settings.conventional_backbone, "gap+cutmix", batch_size=settings.batch_size,
                             cutmix_prob=settings.cutmix_prob, device=str(device), bf16=bf16,
                             channels_last=settings.channels_last, compile=settings.compile,
                             deterministic=not settings.nondeterministic)
    cfg = config(settings.bf16)
    cfg.data.train_size, cfg.data.test_size = settings.e2e_images, settings.batch_size  # the test split is unused
    if settings.e2e_data:
        cfg.data.dataset, cfg.data.root = "folder", settings.e2e_data
    data = build_data(cfg.data, seed=0, batch_size=settings.batch_size, device=device)
    train = data.train
    steps = min(len(train), settings.e2e_images // settings.batch_size)
    n = steps * settings.batch_size
    S = data.image_size
    tf = [transforms.RandomCrop(S, padding=train.pad)] if train.pad else []
    tf += [transforms.RandomHorizontalFlip()] if train.flip else []
    tf += [transforms.ToTensor(), transforms.Normalize(data.mean, data.std)]
    dataset = UInt8Images(train.images.cpu().numpy(), train.labels.numpy(), transforms.Compose(tf))
    sampler = torch.utils.data.RandomSampler(dataset, num_samples=n, generator=torch.Generator().manual_seed(0))
    loader = torch.utils.data.DataLoader(dataset, batch_size=settings.batch_size, sampler=sampler, drop_last=True,
                                         num_workers=settings.workers, pin_memory=device.type == "cuda")
    step = bench_step(cfg, data.num_classes, device, steps)
    p, beta = cfg.loss.cutmix_prob, cfg.loss.cutmix_beta

    def conventional(epoch: int) -> None:
        rng, meter = np.random.RandomState(epoch), LossMeter()
        for images, labels in loader:
            mix = official_cutmix(images, p, beta, rng)
            x = mix.images.to(device, non_blocking=True)
            mix = CutMixBatch(x, None if mix.perm is None else mix.perm.to(device), mix.box, mix.lam, mix.applied)
            meter.add(step(x, labels.to(device, non_blocking=True), mix))

    def resident(step) -> Callable[[int], None]:
        def epoch_of(epoch: int) -> None:
            mix_gen, meter = torch.Generator().manual_seed(epoch), LossMeter()
            for images, labels, _ in itertools.islice(train.epoch(epoch), steps):
                meter.add(step(images, labels, cutmix(images, p, beta, mix_gen)))
        return epoch_of

    pipelines = {"conventional": conventional, "resident": resident(step)}
    if settings.official_loop:
        depth = cifar_resnet_depth(cfg.model.backbone)
        if depth is None:
            raise ValueError(f"the official loop's model is a CIFAR ResNet; --conventional-backbone "
                             f"{cfg.model.backbone} is not one (use resnet20/32/44/56/110)")
        torch.manual_seed(cfg.seed)
        official_step = OfficialStep(depth, data.num_classes, device, cfg.optim.lr, cfg.optim.momentum,
                                     cfg.optim.weight_decay)

        def official(epoch: int) -> None:
            rng = np.random.RandomState(epoch)
            for images, labels in loader:
                mix = official_cutmix(images.to(device), p, beta, rng)
                official_step(mix.images, labels.to(device), mix)
        pipelines["official loop"] = official
        if settings.bf16:
            pipelines["resident (fp32)"] = resident(bench_step(config(False), data.num_classes, device, steps))
    for fn in pipelines.values():  # warm-up epoch (allocator, oneDNN primitives, page cache)
        clock(lambda: fn(0), device)
    seconds: dict[str, list[float]] = {k: [] for k in pipelines}
    for r in range(settings.e2e_repeats):
        for k, fn in pipelines.items():
            seconds[k].append(clock(lambda: fn(r + 1), device))
    ips = {k: summarize([n / s for s in v]) for k, v in seconds.items()}
    return {"backbone": cfg.model.backbone, "cutmix_prob": p, "images": n, "steps": steps,
            "data": Path(settings.e2e_data).name if settings.e2e_data else "offline digits",
            "augment": [type(x).__name__ for x in tf], "ips": ips,
            "ratio": ips["resident"].median / ips["conventional"].median,
            "precision": "bf16 autocast" if settings.bf16 else "fp32",
            "vs_official": ({k: v.median / ips["official loop"].median for k, v in ips.items()}
                            if settings.official_loop else None)}
