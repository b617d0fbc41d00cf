"""One optimizer step of a recipe (CutMix'd batch -> SS2 teacher -> forward -> losses -> backward ->
SGD), shared by the training loop (``saol_core.train``) and the benchmark (``saol_core.bench``), so
that what is timed is what trains.

GPU-first: the step reads nothing back to the host (no ``.item()``, no data-dependent Python branch:
CutMix's box and lambda are host numbers drawn before the step, handed to the losses as small device
tensors), and the losses are summed on the device by :class:`LossMeter`. ``tests/test_step.py`` checks
this on CPU by counting the host reads of tensor values (``aten._local_scalar_dense``) inside a
full-recipe step.

``train.compile``: the student forward with the losses, the SS2 teacher's forward, and the update
(gradient clipping + SGD, its learning rates held in device tensors that the schedule fills) are each
torch.compile'd; on one CUDA device with ``mode="reduce-overhead"``, so each is replayed as a CUDA graph
and a step launches a handful of graphs instead of hundreds of kernels. Every box size and lambda gives
the same graphs (two sets: mixed and clean batches). On the CPU the same compiled code runs without
graphs, which is how the tests check it against the eager step.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from .config import ExperimentConfig, OptimConfig
from .cutmix import CutMixBatch
from .losses import compute_losses, ss2_teacher
from .model import SAOLModel


def lr_factor(step: int, total_steps: int, steps_per_epoch: int, cfg: OptimConfig) -> float:
    """Multiplier of the base lr at optimizer step ``step`` (0-based): linear warm-up, then the schedule."""
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "cosine":
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if cfg.schedule == "multistep":
        bounds = [m * total_steps if m < 1 else m * steps_per_epoch for m in cfg.milestones]
        return cfg.gamma ** sum(step >= b for b in bounds)
    return 1.0


@lru_cache(maxsize=None)
def _cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX in the CPU flags (Linux); elsewhere assume not (bf16 would be emulated)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (so bf16 autocast is faster there, not emulated)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and _cpu_has_native_bf16()


def amp_dtype(cfg: ExperimentConfig, device: torch.device) -> torch.dtype | None:
    """The step's autocast dtype: ``train.amp`` (``auto`` = bf16 on GPU, fp32 on CPU). An explicit bf16
    where the device only emulates it (a CPU without AVX512-BF16/AMX; reports/BENCHMARKS.md) is kept, with a
    warning that says so."""
    if cfg.train.amp == "bf16" and not native_bf16(device):
        warnings.warn(f"train.amp=bf16 on {device.type}, which has no native bf16 (no AVX512-BF16/AMX on a CPU): "
                      "autocast emulates it, many times slower than fp32; set train.amp=off unless you need "
                      "bf16 numerics", RuntimeWarning, stacklevel=2)
    if cfg.train.amp == "bf16" or (cfg.train.amp == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def teacher_amp_dtype(cfg: ExperimentConfig, device: torch.device) -> torch.dtype | None:
    """Autocast dtype of SS2's teacher forward (``loss.ss2_teacher_amp``); None = the step's own."""
    choice = cfg.loss.ss2_teacher_amp
    if choice == "bf16" or (choice == "auto" and native_bf16(device)):
        return torch.bfloat16
    return None


def dtype_name(dtype: torch.dtype | None) -> str:
    """"fp32" for None (no autocast), else the dtype's short name ("bfloat16")."""
    return "fp32" if dtype is None else str(dtype).split(".")[-1]


def autocast(device: torch.device, dtype: torch.dtype | None):
    """A context manager factory: bf16/fp16 autocast on ``device``, or nothing for None."""
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


def make_optimizer(cfg: ExperimentConfig, model: torch.nn.Module, steps_per_epoch: int, total_steps: int):
    """SGD (lr scaled to the global batch when ``optim.lr_ref_batch`` is set; the heads' lr ``optim.head_lr_mult``
    times the backbone's, in a second parameter group) and its per-step LambdaLR."""
    o = cfg.optim
    lr = o.lr * (cfg.train.batch_size / o.lr_ref_batch if o.lr_ref_batch else 1.0)
    groups = [{"params": list(model.parameters())}]
    if o.head_lr_mult != 1.0:
        backbone = {id(p) for p in model.backbone.parameters()}
        groups = [{"params": [p for p in model.parameters() if id(p) in backbone]},
                  {"params": [p for p in model.parameters() if id(p) not in backbone], "lr": lr * o.head_lr_mult}]
    optimizer = torch.optim.SGD(groups, lr=lr, momentum=o.momentum, nesterov=o.nesterov,
                                weight_decay=o.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, steps_per_epoch, o))
    return optimizer, scheduler


def uses_channels_last(cfg: ExperimentConfig, device: torch.device) -> bool:
    """``train.channels_last`` resolved (None = GPU only)."""
    return cfg.train.channels_last if cfg.train.channels_last is not None else device.type == "cuda"


def prepare_model(model: SAOLModel, cfg: ExperimentConfig, device: torch.device) -> SAOLModel:
    """Move ``model`` to ``device`` in the configured memory format."""
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if uses_channels_last(cfg, device) else model


@dataclass
class TrainStep:
    """``step(images, labels, mix)`` runs one optimizer step and returns the detached loss terms
    (``compute_losses``' dict: 0-dim float32 tensors on the device).

    images: (B,C,H,W) the clean batch (the SS2 teacher's input); mix: ``cutmix(images, ...)``.
    ``forward`` is the model as called outside training (compiled if ``train.compile``): by SS2's
    teacher (a no-grad forward must not go through DDP) and by evaluation; ``student_forward`` is it
    wrapped in DistributedDataParallel when training on several processes. ``student_losses``
    (student forward + ``compute_losses``) and ``update`` (clip + SGD) are compiled with ``train.compile``;
    ``graphed``: they replay as CUDA graphs (one CUDA device), so the step marks each new iteration and
    the returned losses are copies that outlive the next replay.
    """
    cfg: ExperimentConfig
    model: SAOLModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    forward: Callable
    student_forward: Callable
    device: torch.device
    channels_last: bool
    graphed: bool = False
    dtype: torch.dtype | None = field(init=False)          # the step's autocast dtype (None: fp32)
    teacher_dtype: torch.dtype | None = field(init=False)  # the SS2 teacher's (None: the step's)
    amp: Callable = field(init=False)
    teacher_amp: Callable = field(init=False)
    student_losses: Callable = field(init=False)
    update: Callable = field(init=False)

    def __post_init__(self):
        self.dtype = amp_dtype(self.cfg, self.device)
        self.teacher_dtype = teacher_amp_dtype(self.cfg, self.device)
        self.amp = autocast(self.device, self.dtype)
        self.teacher_amp = autocast(self.device, self.teacher_dtype)
        self.student_losses, self.update = self._student_losses, self._update
        if self.cfg.train.compile:
            mode = "reduce-overhead" if self.graphed else None
            self.student_losses = torch.compile(self._student_losses, mode=mode)
            self.update = torch.compile(self._update, mode=mode)

    def _student_losses(self, mixed: Tensor, labels: Tensor, mix: CutMixBatch, teacher: Tensor | None):
        return compute_losses(self.student_forward(mixed), labels, mix, self.cfg.loss, teacher)

    def _update(self) -> None:
        if self.cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.optimizer.step()

    def memory_format(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def __call__(self, images: Tensor, labels: Tensor, mix: CutMixBatch) -> dict[str, Tensor]:
        loss_cfg = self.cfg.loss
        teacher = None
        if self.graphed:
            torch.compiler.cudagraph_mark_step_begin()
        with self.amp():
            if mix.applied and loss_cfg.w_ss2:  # else no teacher, and no copy of its input either
                with self.teacher_amp():  # nested: a nullcontext keeps the step's own autocast
                    teacher = ss2_teacher(self.forward, self.memory_format(images), mix,
                                          loss_cfg.ss2_teacher_bn, loss_cfg.w_ss2)
            losses = self.student_losses(self.memory_format(mix.images), labels, mix, teacher)
        self.optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        self.update()
        self.scheduler.step()
        return {k: v.detach().clone() if self.graphed else v.detach() for k, v in losses.items()}

    def resolved(self) -> dict:
        """What this step actually runs with (for run summaries and benchmark reports)."""
        return {"amp": dtype_name(self.dtype), "ss2_teacher_amp": dtype_name(self.teacher_dtype or self.dtype),
                "channels_last": self.channels_last, "compile": self.cfg.train.compile}


def make_step(cfg: ExperimentConfig, model: SAOLModel, device: torch.device, steps_per_epoch: int,
              total_steps: int, *, world_size: int = 1, local_rank: int = 0) -> TrainStep:
    """Optimizer, schedule, torch.compile and (world_size > 1) DDP around ``model`` (already on
    ``device`` and in its memory format: :func:`prepare_model`)."""
    optimizer, scheduler = make_optimizer(cfg, model, steps_per_epoch, total_steps)
    graphed = cfg.train.compile and device.type == "cuda" and world_size == 1
    forward = model
    if cfg.train.compile:
        forward = torch.compile(model, mode="reduce-overhead" if graphed else None)
        # the schedule's values go into device tensors (fill_, no host read): a compiled SGD step then
        # reads its lr from them instead of recompiling for every new Python float
        for group in optimizer.param_groups:
            group["lr"] = torch.tensor(float(group["lr"]), device=device)
    student = (torch.nn.parallel.DistributedDataParallel(
        forward, device_ids=[local_rank] if device.type == "cuda" else None,
        find_unused_parameters=model.mask is not None) if world_size > 1 else forward)
    return TrainStep(cfg, model, optimizer, scheduler, forward, student, device, uses_channels_last(cfg, device),
                     graphed)


class LossMeter:
    """Device-side running sums of the loss terms; one host read per :meth:`means` / :meth:`running`."""

    def __init__(self):
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, losses: dict[str, Tensor]) -> None:
        for k, v in losses.items():
            v = v.float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v
            self.counts[k] = self.counts.get(k, 0) + 1

    def state_dict(self) -> dict:
        return {"sums": dict(self.sums), "counts": dict(self.counts)}

    def load_state_dict(self, state: dict) -> None:
        self.sums, self.counts = dict(state["sums"]), dict(state["counts"])

    def running(self, key: str = "total") -> float:
        """Mean of ``key`` so far (a host read)."""
        return self.sums[key].item() / self.counts[key]

    def means(self) -> dict[str, float]:
        """Mean of every term so far (one host read)."""
        keys = list(self.sums)
        values = torch.stack([self.sums[k] for k in keys]).tolist() if keys else []
        return {k: v / self.counts[k] for k, v in zip(keys, values)}
