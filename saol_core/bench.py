"""Training / inference throughput of backbones x recipes, and of the data pipeline, in one process.

    python -m saol_core.bench --backbones wrn40_2 resnet110 --steps 8 --repeats 3
    python -m saol_core.bench --backbones resnet20 --recipes gap+cutmix --conventional --mode train
    python -m saol_core.bench --device cuda --bf16 --channels-last --compile

Recipes (each a ``make_config`` override set, trained by the training loop's own functions):
``gap`` GAP-FC + CE; ``gap+cutmix`` GAP-FC + CutMix; ``saol`` SAOL + self-distilled GAP-FC, no CutMix;
``full`` SAOL + self-distilled GAP-FC + CutMix + L_SS1 (mask head) + L_SS2 (incl. its teacher forward).
CutMix p: the paper's value for the backbone (SAOL.md §5; 1.0 where the paper has none) unless
``--cutmix-prob`` is given. Every recipe of a backbone has its own mixing stream, all seeded alike, so
in every repeat all recipes draw the same boxes ("mixed" column: mixed / timed steps).

Method. Model-only figures: synthetic device-resident batches (no data loading), ``--warmup`` untimed
steps per recipe, then ``--repeats`` windows of ``--steps`` steps, recipes interleaved within each
repeat so that a load change on a shared machine hits all recipes alike; median [min-max] images/s.
Timing: torch.cuda.Event on GPU, time.perf_counter on CPU. Cost ratios are time per image relative to
a baseline (> 1 = slower), the median over repeats of the ratio within each repeat. "% peak" = MACs/image x 2 FLOP x passes x images/s / peak FLOP/s, with
passes = 3 for training (forward + backward ~ 3 forwards; the SS2 teacher forward of ``full`` is NOT
counted) and 1 for inference; MACs = ``saol_core.macs.count_macs`` (eval-mode forward, every head the
recipe carries). Peak = the best of a large matmul and a large 3x3 convolution measured in this
process at the start and at the end (fp32 on CPU, bf16 on GPU or with ``--bf16``): on AMD CPUs oneDNN's convolutions beat MKL's
sgemm, so the matmul alone is not the device's best GEMM rate.

``--conventional``: the same model and batch size trained end to end (data + step) from (a) the public
CutMix code's pipeline: a torch DataLoader over the uint8 images with per-image torchvision transforms
and CutMix on the host batch, and (b) this project's device-resident loader + device CutMix; one full
epoch of the offline digits set per repeat (worker start-up included, as in training).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import Tensor
from torchvision import transforms

from .config import ExperimentConfig, make_config
from .cutmix import CutMixBatch, cutmix
from .data import build_data
from .losses import compute_losses, ss2_teacher
from .macs import build_meta, count_macs
from .model import SAOLModel, build_model
from .runs import atomic_write_text, hardware_record
from .train import _amp_dtype, lr_factor, resolve_device

RECIPES: dict[str, dict] = {
    "gap": {"model": {"heads": "gap"}},
    "gap+cutmix": {"model": {"heads": "gap"}, "loss": {"cutmix_prob": None}},
    "saol": {"model": {"heads": "saol+gap"}},
    "full": {"model": {"heads": "saol+gap", "mask_head": True},
             "loss": {"cutmix_prob": None, "w_ss1": 1.0, "w_ss2": 1.0}},
}
"""``cutmix_prob: None`` = filled with the backbone's CutMix p."""
PAPER_CUTMIX_P = {"wrn40_2": 0.5, "wrn28_10": 0.5, "resnet110": 1.0, "densenet_bc100": 0.5,
                  "pyramidnet200_240": 0.5}
"""SAOL.md §5 (CutMix p per recipe); other backbones (ImageNet nets: 1.0 too) get 1.0."""
TARGETS = {"resident_vs_conventional": 1.2, "saol_vs_gap": 1.10, "full_vs_gap_cutmix": 1.35}
PROFILE_PASSES = 3  # profiler passes per recipe (median per part: one pass is at the mercy of the load)
SYNTHETIC_BATCHES = 4  # distinct synthetic batches cycled through (the step never reuses its input)


# ---------------------------------------------------------------- measurement bookkeeping (tested)
@dataclass
class Stats:
    median: float
    min: float
    max: float
    values: list[float]


def summarize(values: Sequence[float]) -> Stats:
    """Median, min and max of per-repeat figures (images/s)."""
    if not values:
        raise ValueError("no repeats to summarize")
    return Stats(statistics.median(values), min(values), max(values), list(values))


def cost_ratio(images_per_s: Sequence[float], baseline_images_per_s: Sequence[float]) -> float:
    """Time per image relative to the baseline (> 1 = slower): the median over repeats of the ratio
    within each repeat, where recipe and baseline ran back to back (robust to load drifting between
    repeats on a shared machine)."""
    if len(images_per_s) != len(baseline_images_per_s):
        raise ValueError("recipe and baseline need the same repeats")
    return statistics.median(b / v for v, b in zip(images_per_s, baseline_images_per_s))


def flop_fraction(macs_per_image: float, images_per_s: float, peak_flops: float, passes: int) -> float:
    """Achieved fraction of peak: MACs x 2 FLOP/MAC x passes (3 = forward + backward) x images/s / peak."""
    return macs_per_image * 2 * passes * images_per_s / peak_flops


def recipe_config(backbone: str, recipe: str, *, batch_size: int, cutmix_prob: float | None = None,
                  device: str = "cpu", bf16: bool = False, channels_last: bool = False,
                  compile: bool = False, deterministic: bool = True) -> ExperimentConfig:
    """The ExperimentConfig of ``recipe`` on ``backbone`` (CutMix p: ``cutmix_prob`` or the paper's)."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe {recipe!r} is not valid; choose one of {list(RECIPES)}")
    p = PAPER_CUTMIX_P.get(backbone, 1.0) if cutmix_prob is None else cutmix_prob
    tree = {k: dict(v) for k, v in RECIPES[recipe].items()}
    tree.setdefault("loss", {}).update({k: p for k, v in tree["loss"].items() if v is None})
    tree["model"]["backbone"] = backbone
    tree["train"] = {"batch_size": batch_size, "device": device, "amp": "bf16" if bf16 else "off",
                     "channels_last": channels_last, "compile": compile, "deterministic": deterministic}
    return make_config({"name": f"bench-{backbone}-{recipe}"}, tree)


# ---------------------------------------------------------------- the training step
@dataclass
class Trainer:
    """A model with the training loop's optimizer, schedule, autocast and memory format."""
    cfg: ExperimentConfig
    model: SAOLModel
    forward: Callable
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    amp: Callable
    channels_last: bool


def make_trainer(cfg: ExperimentConfig, num_classes: int, device: torch.device, steps_per_epoch: int = 100,
                 ) -> Trainer:
    """Model, SGD and LambdaLR(lr_factor) built as ``saol_core.train.train`` builds them."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, num_classes).to(device)
    channels_last = cfg.train.channels_last if cfg.train.channels_last is not None else device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    o = cfg.optim
    optimizer = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov,
                                weight_decay=o.weight_decay)
    total = steps_per_epoch * cfg.train.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, steps_per_epoch, o))
    forward = torch.compile(model) if cfg.train.compile else model
    dtype = _amp_dtype(cfg, device)
    amp = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext
    return Trainer(cfg, model, forward, optimizer, scheduler, amp, channels_last)


def train_step(t: Trainer, images: Tensor, labels: Tensor, mix: CutMixBatch,
               sums: dict[str, Tensor]) -> None:
    """One optimizer step: the calls of ``saol_core.train.train``'s step, in its order (see report)."""
    x = mix.images.contiguous(memory_format=torch.channels_last) if t.channels_last else mix.images
    with t.amp():
        teacher = ss2_teacher(t.forward, images, mix, t.cfg.loss.ss2_teacher_bn, t.cfg.loss.w_ss2)
        out = t.forward(x)
        losses = compute_losses(out, labels, mix, t.cfg.loss, teacher)
    t.optimizer.zero_grad(set_to_none=True)
    losses["total"].backward()
    if t.cfg.optim.grad_clip:
        torch.nn.utils.clip_grad_norm_(t.model.parameters(), t.cfg.optim.grad_clip)
    t.optimizer.step()
    t.scheduler.step()
    for k, v in losses.items():
        sums[k] = sums[k] + v.detach().float() if k in sums else v.detach().float()


def timed(fn: Callable[[], None], device: torch.device) -> float:
    """Seconds taken by ``fn`` (device events on GPU: the queued work is included)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure_peak(device: torch.device, dtype: torch.dtype, trials: int = 4) -> dict[str, float]:
    """Best FLOP/s of a large matmul and of a large 3x3 convolution (an implicit GEMM); ``peak`` = max."""
    n, (b, c, s) = (8192, (256, 256, 32)) if device.type == "cuda" else (2048, (64, 256, 16))
    a, m = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    x = torch.randn(b, c, s, s, device=device, dtype=dtype)
    w = torch.randn(c, c, 3, 3, device=device, dtype=dtype)
    out = {}
    with torch.no_grad():
        for name, fn, flops in (("matmul", lambda: torch.mm(a, m), 2 * n**3),
                                ("conv3x3", lambda: torch.nn.functional.conv2d(x, w, padding=1),
                                 2 * b * c * c * 9 * s * s)):
            fn()
            out[name] = flops / min(timed(fn, device) for _ in range(trials))
    out["peak"] = max(out.values())
    return out


def profile_phases(t: Trainer, batches: Sequence[tuple[Tensor, Tensor]], steps: int,
                   mix_gen: torch.Generator) -> dict[str, float]:
    """ms per step of each part of ``train_step`` (torch.profiler CPU time; CPU device only).

    Forward parts are labelled by module hooks (eval-mode calls are SS2's teacher forward); the
    callees of ``train_step`` are labelled by temporarily wrapping this module's names for them.
    Backward = the autograd engine's top-level events; "other" = wall time minus the parts.
    """
    from torch.profiler import ProfilerActivity, profile, record_function

    def label(name: str, fn: Callable) -> Callable:
        def wrapped(*a, **k):
            with record_function(name):
                return fn(*a, **k)
        return wrapped

    handles, open_ranges = [], {}
    for name in ("backbone", "saol", "gap", "mask"):
        module = getattr(t.model, name)
        if module is None:
            continue
        def enter(m, _, name=name):
            open_ranges[name] = record_function(f"forward {name}" + ("" if m.training else " (teacher)"))
            open_ranges[name].__enter__()
        handles += [module.register_forward_pre_hook(enter),
                    module.register_forward_hook(lambda m, i, o, name=name: open_ranges.pop(name).__exit__(None, None, None))]
    names = {"ss2_teacher": "ss2 teacher", "compute_losses": "losses"}
    saved = {n: globals()[n] for n in names}
    globals().update({n: label(v, saved[n]) for n, v in names.items()})
    sums: dict[str, Tensor] = {}
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            for i in range(steps):
                images, labels = batches[i % len(batches)]
                with record_function("cutmix"):
                    mix = cutmix(images, t.cfg.loss.cutmix_prob, t.cfg.loss.cutmix_beta, mix_gen)
                train_step(t, images, labels, mix, sums)
            wall = time.perf_counter() - t0
    finally:
        globals().update(saved)
        for h in handles:
            h.remove()
    totals = {e.key: e.cpu_time_total / 1e3 / steps for e in prof.key_averages()}  # ms per step
    parts = {k: v for k, v in totals.items() if k.startswith("forward ") or k in ("cutmix", "ss2 teacher", "losses")}
    teacher_parts = sum(v for k, v in parts.items() if k.endswith("(teacher)"))
    parts = {k: v for k, v in parts.items() if not k.endswith("(teacher)")}  # inside "ss2 teacher"
    parts["backward"] = sum(v for k, v in totals.items() if k.startswith("autograd::engine::evaluate_function"))
    parts["optimizer"] = sum(v for k, v in totals.items() if k.startswith("Optimizer."))
    parts["other"] = 1e3 * wall / steps - sum(parts.values())
    parts["step (wall, profiled)"] = 1e3 * wall / steps
    if teacher_parts:
        parts["  of which teacher backbone + heads"] = teacher_parts
    return parts


# ---------------------------------------------------------------- model-only throughput
@dataclass
class Row:
    backbone: str
    recipe: str
    mode: str
    cutmix_prob: float
    mixed: str           # mixed steps / all timed steps
    macs: int            # per image, forward
    ips: Stats           # images/s over repeats
    fraction: float | None = None  # of peak FLOP/s (add_fractions)


def add_fractions(rows: list[Row], peak_flops: float) -> None:
    """Set each row's fraction of peak (3 passes for training, 1 for inference)."""
    for row in rows:
        row.fraction = flop_fraction(row.macs, row.ips.median, peak_flops, 3 if row.mode == "train" else 1)


def bench_backbone(backbone: str, recipes: Sequence[str], args, device: torch.device, num_classes: int,
                   profiles: dict | None = None) -> list[Row]:
    """Train and/or inference rows of ``backbone`` x ``recipes`` (interleaved repeats).

    With ``profiles`` (a dict), also profiles ``args.steps`` training steps per recipe into
    ``profiles[(backbone, recipe)]`` (see ``profile_phases``). Row.fraction is left for ``add_fractions``.
    """
    B = args.batch_size
    cfgs = {r: recipe_config(backbone, r, batch_size=B, cutmix_prob=args.cutmix_prob, device=str(device),
                             bf16=args.bf16, channels_last=args.channels_last, compile=args.compile,
                             deterministic=not args.nondeterministic) for r in recipes}
    trainers = {r: make_trainer(cfg, num_classes, device) for r, cfg in cfgs.items()}
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(B, 3, 32, 32, generator=g).to(device), torch.randint(num_classes, (B,), generator=g).to(device))
               for _ in range(SYNTHETIC_BATCHES)]
    rows = []
    for mode in (["train", "infer"] if args.mode == "both" else [args.mode]):
        # one mixing stream per recipe, all seeded alike: at every repeat all recipes draw the same boxes
        gens = {r: torch.Generator().manual_seed(1) for r in recipes}
        done, mixed = dict.fromkeys(recipes, 0), dict.fromkeys(recipes, 0)
        torch.manual_seed(2)

        def window(r: str, n: int, count: bool) -> None:
            t, sums = trainers[r], {}
            if mode == "infer":
                t.model.eval()
                with torch.inference_mode(), t.amp():
                    for i in range(done[r], done[r] + n):
                        x = batches[i % SYNTHETIC_BATCHES][0]
                        t.forward(x.contiguous(memory_format=torch.channels_last) if t.channels_last else x)
                t.model.train()
            else:
                for i in range(done[r], done[r] + n):
                    images, labels = batches[i % SYNTHETIC_BATCHES]
                    mix = cutmix(images, t.cfg.loss.cutmix_prob, t.cfg.loss.cutmix_beta, gens[r])
                    mixed[r] += count and mix.applied
                    train_step(t, images, labels, mix, sums)
            done[r] += n

        for r in recipes:
            timed(lambda: window(r, args.warmup, False), device)
        seconds: dict[str, list[float]] = {r: [] for r in recipes}
        for _ in range(args.repeats):
            for r in recipes:
                seconds[r].append(timed(lambda: window(r, args.steps, True), device))
        for r in recipes:
            macs = count_macs(build_meta(cfgs[r].model, num_classes), 32)[1]
            ips = summarize([args.steps * B / s for s in seconds[r]])
            p = cfgs[r].loss.cutmix_prob if mode == "train" else 0.0  # inference does not mix
            rows.append(Row(backbone, r, mode, p, f"{mixed[r]}/{args.steps * args.repeats}" if p else "-",
                            macs, ips))
    if profiles is not None:  # PROFILE_PASSES passes, recipes interleaved; median of each part
        passes: dict[str, list[dict]] = {r: [] for r in recipes}
        for _ in range(PROFILE_PASSES):
            for r in recipes:
                passes[r].append(profile_phases(trainers[r], batches, args.steps, gens[r]))
        for r in recipes:
            keys = dict.fromkeys(k for p in passes[r] for k in p)
            profiles[(backbone, r)] = {k: statistics.median(p.get(k, 0.0) for p in passes[r]) for k in keys}
    return rows


# ---------------------------------------------------------------- conventional vs device-resident pipeline
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


def bench_pipelines(args, device: torch.device) -> dict:
    """End-to-end images/s (data + step, one epoch per repeat) of the conventional and resident pipelines."""
    cfg = recipe_config(args.conventional_backbone, "gap+cutmix", batch_size=args.batch_size,
                        cutmix_prob=args.cutmix_prob, device=str(device), bf16=args.bf16,
                        channels_last=args.channels_last, compile=args.compile,
                        deterministic=not args.nondeterministic)
    cfg.data.train_size, cfg.data.test_size = args.e2e_images, args.batch_size  # the test split is unused
    data = build_data(cfg.data, seed=0, batch_size=args.batch_size, device=device)
    train = data.train
    S = data.image_size
    tf = [transforms.RandomCrop(S, padding=train.pad)] if train.pad else []
    tf += [transforms.RandomHorizontalFlip()] if train.flip else []
    tf += [transforms.ToTensor(), transforms.Normalize(data.mean, data.std)]
    dataset = UInt8Images(train.images.cpu().numpy(), train.labels.numpy(), transforms.Compose(tf))
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         num_workers=args.workers, pin_memory=device.type == "cuda",
                                         generator=torch.Generator().manual_seed(0))
    t = make_trainer(cfg, data.num_classes, device, len(train))
    p, beta = cfg.loss.cutmix_prob, cfg.loss.cutmix_beta

    def conventional(epoch: int) -> None:
        rng, sums = np.random.RandomState(epoch), {}
        for images, labels in loader:
            mix = official_cutmix(images, p, beta, rng)
            x = mix.images.to(device, non_blocking=True)
            mix = CutMixBatch(x, None if mix.perm is None else mix.perm.to(device), mix.box, mix.lam, mix.applied)
            train_step(t, x, labels.to(device, non_blocking=True), mix, sums)

    def resident(epoch: int) -> None:
        mix_gen, sums = torch.Generator().manual_seed(epoch), {}
        for images, labels, _ in train.epoch(epoch):
            train_step(t, images, labels, cutmix(images, p, beta, mix_gen), sums)

    pipelines = {"conventional": conventional, "resident": resident}
    for fn in pipelines.values():  # warm-up epoch (allocator, oneDNN primitives, page cache)
        timed(lambda: fn(0), device)
    seconds: dict[str, list[float]] = {k: [] for k in pipelines}
    for r in range(args.e2e_repeats):
        for k, fn in pipelines.items():
            seconds[k].append(timed(lambda: fn(r + 1), device))
    n = len(train) * args.batch_size
    ips = {k: summarize([n / s for s in v]) for k, v in seconds.items()}
    return {"backbone": cfg.model.backbone, "cutmix_prob": p, "images": n, "steps": len(train),
            "augment": [type(x).__name__ for x in tf], "ips": ips,
            "ratio": ips["resident"].median / ips["conventional"].median}


# ---------------------------------------------------------------- report
MARK = "<!-- bench-section: {} -->"
HEADER = """# Throughput benchmarks

Made by `python -m saol_core.bench` (see its docstring for the method). One section per (device,
command); re-running a command on the same device replaces its section and keeps the others.
"""


def fmt_stats(s: Stats, digits: int = 0) -> str:
    return f"{s.median:.{digits}f} [{s.min:.{digits}f}-{s.max:.{digits}f}]"


def rows_table(rows: list[Row]) -> str:
    out = ["| backbone | recipe | CutMix p (mixed steps) | GMACs/img | img/s median [min-max] | "
           "x GAP-FC | x GAP-FC+CutMix | % peak |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        base = {r.recipe: r.ips.values for r in rows if r.backbone == row.backbone and r.mode == row.mode}
        ratio = {k: f"{cost_ratio(row.ips.values, base[k]):.3f}" if k in base else "-" for k in ("gap", "gap+cutmix")}
        p = f"{row.cutmix_prob:g} ({row.mixed})" if row.cutmix_prob else "-"
        out.append(f"| {row.backbone} | {row.recipe} | {p} | {row.macs / 1e9:.4f} | {fmt_stats(row.ips)} | "
                   f"{ratio['gap']} | {ratio['gap+cutmix']} | {'-' if row.fraction is None else f'{100 * row.fraction:.1f}'} |")
    return "\n".join(out)


PROFILE_ORDER = ["cutmix", "forward backbone", "forward saol", "forward gap", "forward mask", "losses",
                 "ss2 teacher", "  of which teacher backbone + heads", "backward", "optimizer", "other",
                 "step (wall, profiled)"]


def profile_table(profiles: dict) -> str:
    """One table per backbone: parts of the step (rows) x recipes (columns), ms per step."""
    out = []
    for backbone in dict.fromkeys(b for b, _ in profiles):
        recipes = [r for b, r in profiles if b == backbone]
        seen = {k for r in recipes for k in profiles[(backbone, r)]}
        parts = [k for k in PROFILE_ORDER if k in seen] + sorted(seen - set(PROFILE_ORDER))
        out += [f"| {backbone}: ms/step | " + " | ".join(recipes) + " |", "|---" * (len(recipes) + 1) + "|"]
        out += [f"| {k} | " + " | ".join(f"{profiles[(backbone, r)][k]:.1f}" if k in profiles[(backbone, r)] else "-"
                                          for r in recipes) + " |" for k in parts]
        out.append("")
    return "\n".join(out)


def target_lines(rows: list[Row], pipes: dict | None) -> list[str]:
    """'met' / 'missed' for each target that the measured rows allow checking."""
    lines = []
    for row in (r for r in rows if r.mode == "train"):
        base = {r.recipe: r.ips.values for r in rows if r.backbone == row.backbone and r.mode == "train"}
        for recipe, ref, key in (("saol", "gap", "saol_vs_gap"), ("full", "gap+cutmix", "full_vs_gap_cutmix")):
            if row.recipe == recipe and ref in base:
                v = cost_ratio(row.ips.values, base[ref])
                lines.append(f"- {row.backbone}: {recipe} / {ref} = {v:.3f} (target <= {TARGETS[key]}): "
                             f"{'met' if v <= TARGETS[key] else 'MISSED'}")
    if pipes:
        v, goal = pipes["ratio"], TARGETS["resident_vs_conventional"]
        lines.append(f"- {pipes['backbone']}: resident / conventional pipeline = {v:.2f}x (target >= {goal}x): "
                     f"{'met' if v >= goal else 'MISSED'}")
    return lines


def render_section(key: str, command: str, env: dict, settings: dict, rows: list[Row], pipes: dict | None,
                   profiles: dict | None = None) -> str:
    hw = env["hardware"]
    parts = [MARK.format(key), f"## {env['device_label']}: `{command}`", "",
             f"- date: {env['date']}; load average (1 min) before / after: {env['load'][0]:.2f} / {env['load'][1]:.2f}",
             f"- hardware: {hw.get('gpu', hw['cpu'])}; CPU {hw['cpu']}, {hw['cpu_count']} cores, "
             f"{hw['torch_threads']} torch threads",
             f"- software: torch {torch.__version__}, torchvision {torchvision.__version__}, "
             f"Python {platform.python_version()}",
             "- settings: " + ", ".join(f"{k} {v}" for k, v in settings.items()),
             f"- peak ({env['peak_dtype']}): " + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in env["peak"].items()),
             ""]
    for mode in ("train", "infer"):
        sub = [r for r in rows if r.mode == mode]
        if sub:
            what = "training step (CutMix + forward + losses + backward + SGD)" if mode == "train" else "inference forward"
            parts += [f"### Model-only {what}, synthetic device-resident batches", "", rows_table(sub), ""]
    if pipes:
        ips = pipes["ips"]
        parts += ["### End to end (data + training step): conventional vs device-resident pipeline", "",
                  f"{pipes['backbone']}, GAP-FC + CutMix p={pipes['cutmix_prob']:g}, offline digits, "
                  f"{pipes['images']} images ({pipes['steps']} steps) per repeat; conventional augmentation: "
                  f"{', '.join(pipes['augment'])} per image in DataLoader workers + host CutMix "
                  f"(the resident loader applies the same crop/flip as one gather on the device).", "",
                  "| pipeline | img/s median [min-max] | x conventional |", "|---|---|---|",
                  f"| conventional (DataLoader, {settings['workers']} workers) | {fmt_stats(ips['conventional'])} | 1.00 |",
                  f"| device-resident (saol_core.data) | {fmt_stats(ips['resident'])} | {pipes['ratio']:.2f} |", ""]
    if profiles:
        parts += ["### Where a training step's time goes (torch.profiler, CPU time, ms per step)", "",
                  f"Median of {PROFILE_PASSES} profiled passes of --steps steps (mixed and clean steps "
                  "averaged). forward <part> = the training forward of that module; ss2 teacher = SS2's "
                  "no-grad clean forward (the teacher's parts are inside it); backward = autograd engine.", "",
                  profile_table(profiles)]
    targets = target_lines(rows, pipes)
    if targets:
        parts += ["Targets:", *targets, ""]
    return "\n".join(parts).rstrip() + "\n"


def update_report(path: str | Path, key: str, section: str) -> str:
    """Replace the section marked ``key`` in ``path`` (or append it); other sections are kept verbatim."""
    path = Path(path)
    text = path.read_text() if path.exists() else HEADER
    marks = list(re.finditer(re.escape(MARK.format("")[:-4]) + r"(.*?) -->\n", text))
    chunks = {m.group(1): text[m.start(): marks[i + 1].start() if i + 1 < len(marks) else len(text)]
              for i, m in enumerate(marks)}
    head = text[: marks[0].start()] if marks else text
    chunks[key] = section
    out = head.rstrip() + "\n\n" + "\n".join(c.rstrip() + "\n" for c in chunks.values())
    atomic_write_text(path, out)
    return out


# ---------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m saol_core.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbones", nargs="+", default=["wrn40_2", "resnet110"])
    ap.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--num-classes", type=int, default=10)
    ap.add_argument("--cutmix-prob", type=float, help="default: the paper's p for each backbone")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per repeat")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per recipe before the repeats")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (peak measured in bf16)")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--nondeterministic", action="store_true", help="train.deterministic=false (cudnn autotune)")
    ap.add_argument("--mode", choices=["train", "infer", "both"], default="train")
    ap.add_argument("--conventional", action="store_true", help="also time conventional vs resident pipelines")
    ap.add_argument("--conventional-backbone", default="resnet20")
    ap.add_argument("--e2e-images", type=int, default=5000, help="digits training images per end-to-end epoch")
    ap.add_argument("--e2e-repeats", type=int, default=3, help="end-to-end epochs timed per pipeline")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the conventional pipeline")
    ap.add_argument("--profile", action="store_true", help="also profile the parts of each training step (CPU)")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--out", default="reports/BENCHMARKS.md", help="report to update ('' = print only)")
    args = ap.parse_args(argv)
    command = "python -m saol_core.bench " + " ".join(sys.argv[1:] if argv is None else argv)

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(not args.nondeterministic, warn_only=True)  # as train() does
    torch.backends.cudnn.benchmark = args.nondeterministic
    load0 = os.getloadavg()[0]
    peak_dtype = torch.bfloat16 if (device.type == "cuda" or args.bf16) else torch.float32
    first = measure_peak(device, peak_dtype)
    rows: list[Row] = []
    profiles = {} if args.profile and device.type == "cpu" else None
    for backbone in args.backbones:
        rows += bench_backbone(backbone, args.recipes, args, device, args.num_classes, profiles)
        print(rows_table([r for r in rows if r.backbone == backbone]), flush=True)
    pipes = bench_pipelines(args, device) if args.conventional else None
    last = measure_peak(device, peak_dtype)  # again at the end: the best of both (a shared machine's load varies)
    peak = {k: max(first[k], last[k]) for k in first}
    add_fractions(rows, peak["peak"])

    hw = hardware_record(device)
    label = (f"{hw['gpu']}" if device.type == "cuda" else f"CPU {hw['cpu']} ({hw['cpu_count']} cores)")
    env = {"hardware": hw, "device_label": label, "peak": peak, "peak_dtype": str(peak_dtype).split(".")[-1],
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "load": (load0, os.getloadavg()[0])}
    settings = {"device": str(device), "batch": args.batch_size, "classes": args.num_classes,
                "dtype": "bf16 autocast" if args.bf16 else "fp32", "channels_last": args.channels_last,
                "compile": args.compile, "deterministic": not args.nondeterministic,
                "warm-up steps": args.warmup, "timed steps x repeats": f"{args.steps} x {args.repeats}",
                "end-to-end epochs x repeats": f"1 x {args.e2e_repeats}" if args.conventional else "-",
                "workers": args.workers}
    section = render_section(f"{label} | {command}", command, env, settings, rows, pipes, profiles)
    print(section)
    if args.out:
        update_report(args.out, f"{label} | {command}", section)
        print(f"updated {args.out}")


if __name__ == "__main__":
    main()
