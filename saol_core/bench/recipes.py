"""Model-only throughput of backbones x recipes (synthetic device-resident batches), and where a
training step's time goes (torch.profiler)."""
from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from .. import step as step_mod
from ..config import ExperimentConfig, make_config
from ..cutmix import cutmix
from ..macs import build_meta, count_macs, kind_defaults
from ..model import build_model
from ..step import LossMeter, TrainStep, make_step, prepare_model
from .measure import Clock, Stats, flop_fraction, summarize, timed

_FULL = {"model": {"heads": "saol+gap", "mask_head": True},
         "loss": {"cutmix_prob": None, "w_ss1": 1.0, "w_ss2": 1.0}}
RECIPES: dict[str, dict] = {
    "gap": {"model": {"heads": "gap"}},
    "gap+cutmix": {"model": {"heads": "gap"}, "loss": {"cutmix_prob": None}},
    "saol": {"model": {"heads": "saol+gap"}},
    "full": _FULL,
    "full-step-teacher": {"model": _FULL["model"], "loss": {**_FULL["loss"], "ss2_teacher_amp": "step"}},
}
"""``cutmix_prob: None`` = filled with the backbone's CutMix p."""
PAPER_CUTMIX_P = {"wrn40_2": 0.5, "wrn28_10": 0.5, "resnet110": 1.0, "densenet_bc100": 0.5,
                  "pyramidnet200_240": 0.5}
"""docs/method.md §5 (CutMix p per recipe); other backbones (ImageNet nets: 1.0 too) get 1.0."""
PROFILE_PASSES = 3  # profiler passes per recipe (median per part: one pass is at the mercy of the load)
SYNTHETIC_BATCHES = 4  # distinct synthetic batches cycled through (the step never reuses its input)
COMPILED = " compiled"
"""Suffix of a recipe's compiled row when eager and compiled are timed side by side."""


@dataclass
class BenchSettings:
    """How a benchmark runs (the command line's options; notebooks build one directly)."""
    batch_size: int = 64
    num_classes: int = 10
    cutmix_prob: Optional[float] = None
    """None: the paper's p for each backbone (PAPER_CUTMIX_P)."""
    steps: int = 8
    """Timed steps per repeat."""
    warmup: int = 3
    """Untimed steps per recipe before the repeats."""
    repeats: int = 3
    mode: str = "train"
    """train, infer or both."""
    bf16: bool = False
    compile: bool = False
    eager_vs_compiled: bool = False
    """Time every recipe both eager and compiled (rows "<recipe> compiled"), interleaved in one process."""
    channels_last: bool = True
    nondeterministic: bool = False
    image_size: Optional[int] = None
    """None: the net's kind (32 px CIFAR nets, 224 px ImageNet nets: ``saol_core.macs.kind_defaults``)."""
    params: Optional[str] = None
    """A params file whose model section (head width, separable, output_stride, taps ...) the recipes run
    on instead of the net's kind defaults (its pretrained weights are not loaded: synthetic batches)."""
    conventional_backbone: str = "resnet20"
    e2e_images: int = 5000
    """Training images per end-to-end epoch (pipeline comparison)."""
    e2e_data: Optional[str] = None
    """Image folder or .tar.gz (ImageFolder layout, e.g. CIFAR-10) for the pipeline comparison; None =
    the offline digits set."""
    e2e_repeats: int = 3
    official_loop: bool = False
    """Also time the public CutMix code's loop (its model and step) end to end (``official``)."""
    workers: int = 2
    """DataLoader workers of the conventional pipeline."""


def recipe_config(backbone: str, recipe: str, *, batch_size: int, cutmix_prob: float | None = None,
                  device: str = "cpu", bf16: bool = False, channels_last: bool = True,
                  compile: bool = False, deterministic: bool = True, params: str | None = None) -> ExperimentConfig:
    """The ExperimentConfig of ``recipe`` on ``backbone`` (CutMix p: ``cutmix_prob`` or the paper's;
    SAOL head as ``saol_core.macs`` counts it: separable width 256 on ImageNet nets, conv3x3 64 else, or
    the model section of the ``params`` file)."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe {recipe!r} is not valid; choose one of {list(RECIPES)}")
    p = PAPER_CUTMIX_P.get(backbone, 1.0) if cutmix_prob is None else cutmix_prob
    tree = {k: dict(v) for k, v in RECIPES[recipe].items()}
    tree.setdefault("loss", {}).update({k: p for k, v in tree["loss"].items() if v is None})
    if params is None:
        auto = kind_defaults(backbone)
        tree["model"].update(backbone=backbone, separable=auto["separable"], head_channels=auto["mid_channels"])
    else:
        base = dataclasses.asdict(make_config(params).model)
        tree["model"] = {**base, **tree["model"], "backbone": backbone, "pretrained": None}
    tree["train"] = {"batch_size": batch_size, "device": device, "amp": "bf16" if bf16 else "off",
                     "channels_last": channels_last, "compile": compile, "deterministic": deterministic}
    return make_config({"name": f"bench-{backbone}-{recipe}"}, tree)


def bench_step(cfg: ExperimentConfig, num_classes: int, device: torch.device, steps_per_epoch: int = 100
               ) -> TrainStep:
    """The training loop's step (model, SGD, schedule, autocast, memory format) for ``cfg``."""
    torch.manual_seed(cfg.seed)
    model = prepare_model(build_model(cfg.model, num_classes), cfg, device)
    return make_step(cfg, model, device, steps_per_epoch, steps_per_epoch * cfg.train.epochs)


@dataclass
class Row:
    backbone: str
    recipe: str
    mode: str
    cutmix_prob: float
    mixed: str           # mixed steps / all timed steps
    macs: int            # per image, forward
    ips: Stats           # images/s over repeats
    teacher: str = "-"   # precision of SS2's teacher forward ("-": no teacher)
    fraction: float | None = None  # of peak FLOP/s (add_fractions)


def add_fractions(rows: list[Row], peak_flops: float) -> None:
    """Set each row's fraction of peak (3 passes for training, 1 for inference)."""
    for row in rows:
        row.fraction = flop_fraction(row.macs, row.ips.median, peak_flops, 3 if row.mode == "train" else 1)


def bench_backbone(backbone: str, recipes: Sequence[str], settings: BenchSettings, device: torch.device,
                   profiles: dict | None = None, clock: Clock = timed) -> list[Row]:
    """Train and/or inference rows of ``backbone`` x ``recipes`` (interleaved repeats).

    With ``profiles`` (a dict), also profiles ``settings.steps`` training steps per recipe into
    ``profiles[(backbone, recipe)]`` (see ``profile_phases``). Row.fraction is left for ``add_fractions``.
    """
    B, num_classes = settings.batch_size, settings.num_classes
    size = settings.image_size or kind_defaults(backbone)["size"]
    compiled = ({r: False for r in recipes} | {f"{r}{COMPILED}": True for r in recipes} if settings.eager_vs_compiled
                else {r: settings.compile for r in recipes})
    cfgs = {name: recipe_config(backbone, name.removesuffix(COMPILED), batch_size=B, cutmix_prob=settings.cutmix_prob,
                                device=str(device), bf16=settings.bf16, channels_last=settings.channels_last,
                                compile=flag, deterministic=not settings.nondeterministic, params=settings.params)
            for name, flag in compiled.items()}
    recipes = list(cfgs)
    steps = {r: bench_step(cfg, num_classes, device) for r, cfg in cfgs.items()}
    macs = {r: count_macs(build_meta(cfg.model, num_classes), size)[1] for r, cfg in cfgs.items()}
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(B, 3, size, size, generator=g).to(device), torch.randint(num_classes, (B,), generator=g).to(device))
               for _ in range(SYNTHETIC_BATCHES)]
    rows = []
    for mode in (["train", "infer"] if settings.mode == "both" else [settings.mode]):
        # one mixing stream per recipe, all seeded alike: at every repeat all recipes draw the same boxes
        gens = {r: torch.Generator().manual_seed(1) for r in recipes}
        done, mixed = dict.fromkeys(recipes, 0), dict.fromkeys(recipes, 0)
        torch.manual_seed(2)

        def window(r: str, n: int, count: bool) -> None:
            s = steps[r]
            if mode == "infer":
                s.model.eval()
                with torch.inference_mode(), s.amp():
                    for i in range(done[r], done[r] + n):
                        s.forward(s.memory_format(batches[i % SYNTHETIC_BATCHES][0]))
                s.model.train()
            else:
                meter = LossMeter()
                for i in range(done[r], done[r] + n):
                    images, labels = batches[i % SYNTHETIC_BATCHES]
                    mix = cutmix(images, s.cfg.loss.cutmix_prob, s.cfg.loss.cutmix_beta, gens[r])
                    mixed[r] += count and mix.applied
                    meter.add(s(images, labels, mix))
            done[r] += n

        for r in recipes:
            clock(lambda: window(r, settings.warmup, False), device)
        seconds: dict[str, list[float]] = {r: [] for r in recipes}
        for _ in range(settings.repeats):
            for r in recipes:
                seconds[r].append(clock(lambda: window(r, settings.steps, True), device))
        for r in recipes:
            ips = summarize([settings.steps * B / s for s in seconds[r]])
            p = cfgs[r].loss.cutmix_prob if mode == "train" else 0.0  # inference does not mix
            teacher = steps[r].resolved()["ss2_teacher_amp"] if mode == "train" and cfgs[r].loss.w_ss2 else "-"
            rows.append(Row(backbone, r, mode, p, f"{mixed[r]}/{settings.steps * settings.repeats}" if p else "-",
                            macs[r], ips, teacher))
    if profiles is not None:  # PROFILE_PASSES passes, recipes interleaved; median of each part
        recipes = [r for r in recipes if not r.endswith(COMPILED)]   # the profiler's module labels need eager code
        passes: dict[str, list[dict]] = {r: [] for r in recipes}
        for _ in range(PROFILE_PASSES):
            for r in recipes:
                passes[r].append(profile_phases(steps[r], batches, settings.steps, gens[r]))
        for r in recipes:
            keys = dict.fromkeys(k for p in passes[r] for k in p)
            profiles[(backbone, r)] = {k: statistics.median(p.get(k, 0.0) for p in passes[r]) for k in keys}
    return rows


@contextlib.contextmanager
def _labelled(module, names: dict[str, str]):
    """Temporarily wrap ``module.<name>`` so that each call is a profiler range called ``label``."""
    from torch.profiler import record_function

    def label(name: str, fn: Callable) -> Callable:
        def wrapped(*a, **k):
            with record_function(name):
                return fn(*a, **k)
        return wrapped
    saved = {n: getattr(module, n) for n in names}
    try:
        for n, text in names.items():
            setattr(module, n, label(text, saved[n]))
        yield
    finally:
        for n, fn in saved.items():
            setattr(module, n, fn)


def profile_phases(s: TrainStep, batches: Sequence[tuple[Tensor, Tensor]], steps: int,
                   mix_gen: torch.Generator) -> dict[str, float]:
    """ms per step of each part of a training step (torch.profiler CPU time; CPU device only).

    Forward parts are labelled by module hooks (eval-mode calls are SS2's teacher forward); the
    teacher and the losses by wrapping ``saol_core.step``'s names for them during the profile.
    Backward = the autograd engine's top-level events; "other" = wall time minus the parts.
    """
    from torch.profiler import ProfilerActivity, profile, record_function

    handles, open_ranges = [], {}
    for name in ("backbone", "saol", "gap", "mask"):
        module = getattr(s.model, name)
        if module is None:
            continue

        def enter(m, _, name=name):
            open_ranges[name] = record_function(f"forward {name}" + ("" if m.training else " (teacher)"))
            open_ranges[name].__enter__()
        handles += [module.register_forward_pre_hook(enter),
                    module.register_forward_hook(lambda m, i, o, name=name: open_ranges.pop(name).__exit__(None, None, None))]
    meter = LossMeter()
    try:
        with _labelled(step_mod, {"ss2_teacher": "ss2 teacher", "compute_losses": "losses"}), \
                profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            for i in range(steps):
                images, labels = batches[i % len(batches)]
                with record_function("cutmix"):
                    mix = cutmix(images, s.cfg.loss.cutmix_prob, s.cfg.loss.cutmix_beta, mix_gen)
                meter.add(s(images, labels, mix))
            wall = time.perf_counter() - t0
    finally:
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
