"""Parameters and multiply-accumulates (MACs) per backbone x head.

    python -m saol_core.macs                                   # the default grid -> reports/costs.md
    python -m saol_core.macs --backbones resnet101 --heads gap saol --size 224 --num-classes 1000
    python -m saol_core.macs --list                            # registered backbone names

MACs = ``torch.utils.flop_counter.FlopCounterMode`` total / 2 (it counts a multiply-add as 2 FLOPs).
Only convs, linears and matmuls are counted (BN, pooling, resizing, softmax are not), which is the
convention of the paper's "GFLOPs" (torchvision ResNet-50 = 4.09 G). Models are built on the meta
device, so even PyramidNet-200 or ResNet-200 is counted in well under a second, without memory.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from saol_core import markdown
from saol_core.config import ModelConfig
from saol_core.heads import pair
from saol_core.model import HEADS, build_model

CIFAR_NETS = ["resnet110", "wrn40_2", "wrn28_10", "densenet_bc100", "pyramidnet200_240"]
IMAGENET_NETS = ["resnet50", "resnet101", "resnet152", "resnet200", "resnext101_32x4d"]
IMAGENET_MID_CHANNELS = 256
"""SAOL head width chosen for ImageNet nets (separable): +1.6% MACs on ResNet-101 (goal <= +5%)."""


@contextlib.contextmanager
def shape_only_batchnorm():
    """BatchNorm as the identity while shapes are traced on the meta device: its meta kernel is a
    Python decomposition (~5 ms a call, most of a whole-table count), and the flop counter counts
    convolutions and matmuls only, so the counts do not change (tested)."""
    forward = nn.modules.batchnorm._BatchNorm.forward
    nn.modules.batchnorm._BatchNorm.forward = lambda self, x: x
    try:
        yield
    finally:
        nn.modules.batchnorm._BatchNorm.forward = forward


def count_macs(model: nn.Module, input_size: int | Sequence[int], in_channels: int = 3) -> tuple[int, int]:
    """(parameters, MACs) of one eval-mode forward of a single (1, in_channels, H, W) image.

    Runs on the model's device and dtype; a model built under ``torch.device("meta")`` costs nothing.
    """
    p = next(model.parameters())
    x = torch.zeros(1, in_channels, *pair(input_size), device=p.device, dtype=p.dtype)
    was_training = model.training
    model.eval()
    fast = shape_only_batchnorm() if p.device.type == "meta" else contextlib.nullcontext()
    try:
        with torch.no_grad(), fast, FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return sum(q.numel() for q in model.parameters()), counter.get_total_flops() // 2


def build_meta(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """``build_model`` on the meta device (shapes only: no memory, no init cost, no pretrained weights)."""
    with torch.device("meta"):
        return build_model(dataclasses.replace(cfg, pretrained=None), num_classes)


@dataclass
class Cost:
    backbone: str
    heads: str
    size: int
    num_classes: int
    head: str          # head settings, e.g. "64" or "sep 256"
    output: str        # SAOL output resolution, e.g. "7x7"
    params: int
    macs: int
    overhead: float | None = None   # % MACs over the same backbone with GAP-FC
    note: str = ""


def measure(backbone: str, heads: str, size: int, num_classes: int, *, mid_channels: int,
            separable: bool, output_size: int | None = None, output_stride: int | None = None) -> Cost:
    cfg = ModelConfig(backbone=backbone, heads=heads, head_channels=mid_channels, separable=separable,
                      output_size=output_size, output_stride=output_stride)
    key = f"{cfg!r} classes={num_classes} size={size}"
    cache = _cache()
    if key not in cache.entries:
        model = build_meta(cfg, num_classes)
        params, macs = count_macs(model, size)
        out = "-"
        if model.saol is not None:
            with torch.no_grad(), shape_only_batchnorm():
                h, w = model(torch.zeros(1, 3, size, size, device="meta")).log_attention.shape[-2:]
            out = f"{h}x{w}"
        cache.put(key, [params, macs, out])
    params, macs, out = cache.entries[key]
    head = "-" if heads == "gap" else f"{'sep ' if separable else ''}{mid_channels}"
    if output_stride:
        head += f", os{output_stride}"
    return Cost(backbone, heads, size, num_classes, head, out, params, macs)


class _Counts:
    """Counts already made, in ``.cache/saol/macs-<code hash>.json``: the hash covers torch's version and
    every source file the model is built from, so a code change starts a new file."""

    def __init__(self):
        import hashlib
        digest = hashlib.sha1(torch.__version__.encode())
        here = Path(__file__).resolve().parent
        for path in sorted([*here.glob("backbones/*.py"), here / "heads.py", here / "model.py", Path(__file__)]):
            digest.update(path.read_bytes())
        self.path = Path(".cache/saol") / f"macs-{digest.hexdigest()[:16]}.json"
        try:
            self.entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}

    def put(self, key: str, value: list) -> None:
        from .runs import atomic_write_text
        self.entries[key] = value
        try:
            atomic_write_text(self.path, json.dumps(self.entries))
        except OSError:  # a read-only checkout still counts, just not faster next time
            pass


_COUNTS: _Counts | None = None


def _cache() -> _Counts:
    global _COUNTS
    if _COUNTS is None:
        _COUNTS = _Counts()
    return _COUNTS


def _versus(c: Cost, base: int, note: str = "") -> Cost:
    c.overhead, c.note = 100 * (c.macs / base - 1), note
    return c


def kind_defaults(backbone: str) -> dict:
    """What ``auto`` means for a net. ImageNet nets (total stride 32): 224 px, the separable head of
    width IMAGENET_MID_CHANNELS, 1000 classes; CIFAR nets: 32 px, conv3x3 head of width 64."""
    imagenet = max(build_meta(ModelConfig(backbone=backbone, heads="gap"), 2).backbone.stage_strides) >= 32
    return {"imagenet": imagenet, "size": 224 if imagenet else 32, "separable": imagenet,
            "mid_channels": IMAGENET_MID_CHANNELS if imagenet else 64}


def grid(backbones: Sequence[str], heads: Sequence[str], size: int | None, num_classes: Sequence[int] | None,
         separable: str, mid_channels: str, output_size: int | None, output_stride: int | None) -> list[Cost]:
    """backbones x num_classes x heads; ``auto`` settings follow the net's kind (ImageNet = total stride 32)."""
    rows = []
    for name in backbones:
        auto = kind_defaults(name)
        sz = size or auto["size"]
        sep = auto["separable"] if separable == "auto" else separable == "true"
        mid = auto["mid_channels"] if mid_channels == "auto" else int(mid_channels)
        for k in num_classes or ([1000] if auto["imagenet"] else [10, 100]):
            base = measure(name, "gap", sz, k, mid_channels=mid, separable=sep, output_stride=output_stride)
            rows += [_versus(measure(name, h, sz, k, mid_channels=mid, separable=sep, output_size=output_size,
                                     output_stride=output_stride), base.macs) for h in heads]
    return rows


def default_grid() -> tuple[list[Cost], list[Cost]]:
    """(main table, the paper's cost anchors: head-width sweeps and the 14x14 WSOL variant)."""
    rows = grid(CIFAR_NETS + IMAGENET_NETS, list(HEADS), None, None, "auto", "auto", None, None)
    gap = {(c.backbone, c.num_classes): c.macs for c in rows if c.heads == "gap"}
    extra = []
    for sep in (True, False):
        for mid in (64, 128, 256, 512, 1024):
            c = measure("resnet101", "saol", 224, 1000, mid_channels=mid, separable=sep)
            hit = sep and mid == 1024
            extra.append(_versus(c, gap["resnet101", 1000], "= paper's 7.8 -> 8.3 (+6.4%)" if hit else ""))
    for sep, mid in ((True, IMAGENET_MID_CHANNELS), (False, 64)):
        for os_, note in ((None, "last tap enlarged bilinearly"), (16, "dilated last stage (output_stride=16)")):
            c = measure("resnet50", "saol", 224, 1000, mid_channels=mid, separable=sep, output_size=14,
                        output_stride=os_)
            extra.append(_versus(c, gap["resnet50", 1000], note + "; paper: 4.62"))
    for mid in (64, 128, 256):
        c = measure("resnet110", "saol", 32, 10, mid_channels=mid, separable=False)
        extra.append(_versus(c, gap["resnet110", 10], "paper's '1.7 -> 2.1 GFLOPs' = params?" if mid == 256
                             else ""))
    return rows, extra


def table(rows: list[Cost]) -> str:
    return markdown.table(
        ["backbone", "head", "input", "K", "SAOL conv width", "SAOL output", "params (M)", "GMACs",
         "overhead vs GAP-FC", "note"],
        [[c.backbone, c.heads, c.size, c.num_classes, c.head, c.output, f"{c.params / 1e6:.2f}",
          f"{c.macs / 1e9:.3f}", "-" if c.overhead is None else f"{c.overhead:+.2f}%", c.note] for c in rows])


NOTES = """\
Notes
- MACs = `torch.utils.flop_counter.FlopCounterMode` total / 2, one 1 x 3 x H x W image, eval mode;
  convs / linears / matmuls only (BN, pooling, resizing, softmax uncounted), as in the paper's
  "GFLOPs" (which are MACs: torchvision ResNet-50 = 4.09 G, ResNet-101 = 7.80 G).
- Params include every head present (SAOL, GAP-FC); `saol+gap` = SAOL trained with the
  self-distilled GAP-FC head. At test time the GAP-FC head alone costs exactly the `gap` row.
- SAOL head: taps = every stage, output = last tap's resolution, conv3x3+BN+ReLU per branch
  (CIFAR nets, width 64) or depthwise-separable (ImageNet nets, width 256: the paper's ImageNet
  variant; width chosen to keep the overhead <= 5% on ResNet-101).
- Paper anchors: ResNet-101 7.8 -> 8.3 GMACs with SAOL (+6.4%); ResNet-50 + SAOL at 14x14 4.62 vs
  4.09. CIFAR ResNet-110 is 0.253 GMACs / 1.73 M params here: the paper's "1.7 GFLOPs" for it (2.1
  with SAOL, 5.7 with ABN) matches the parameter count, not a FLOP or MAC count, so compare
  overheads as ratios.
- What the anchors suggest (the paper gives no head widths): a separable head of width 1024 gives
  ResNet-101 exactly 8.30 G (+6.37%); the 14x14 ResNet-50 (4.62) fits a head run at 14x14 on the
  native-stride backbone (last tap enlarged: 4.59 G at separable width 256), not a dilated
  output_stride=16 backbone (6.7 G); ResNet-110 + SAOL of width 256 has 2.14 M params, the
  paper's "2.1". We use width 256 on ImageNet (+1.6% on ResNet-101, goal <= 5%) and 64 on CIFAR.
- DenseNet-BC-100's overhead (+15%) is large because its taps are wide (216/300/342 channels)
  relative to its 0.29 GMACs.
"""


def report(rows: list[Cost], extra: list[Cost], command: str) -> str:
    today = datetime.date.today().isoformat()
    parts = [f"# Parameters and MACs per backbone x head\n\nMade by `{command}` on {today} with torch "
             f"{torch.__version__} (Python {platform.python_version()}), models on the meta device.\n",
             table(rows), ""]
    if extra:
        parts += ["## The paper's cost anchors: SAOL head widths and the 14x14 WSOL variant\n",
                  "SAOL alone (no GAP-FC head); overhead vs the GAP-FC model of the same backbone.\n",
                  table(extra), ""]
    parts.append(NOTES)
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbones", nargs="+", help="default: the paper's CIFAR and ImageNet nets")
    ap.add_argument("--heads", nargs="+", choices=HEADS, default=list(HEADS))
    ap.add_argument("--size", type=int, help="input side; default 224 for ImageNet nets, else 32")
    ap.add_argument("--num-classes", type=int, nargs="+", help="default 1000 (ImageNet nets) / 10 100")
    ap.add_argument("--separable", choices=["auto", "true", "false"], default="auto",
                    help="depthwise-separable SAOL convs; auto = ImageNet nets only")
    ap.add_argument("--mid-channels", default="auto",
                    help=f"SAOL conv width; auto = {IMAGENET_MID_CHANNELS} for ImageNet nets, else 64")
    ap.add_argument("--output-size", type=int, help="SAOL output side (default: last tap's)")
    ap.add_argument("--output-stride", type=int, help="backbone output stride (default: native)")
    ap.add_argument("--out", help="also write a markdown report here (default grid: reports/costs.md)")
    ap.add_argument("--list", action="store_true", help="print the registered backbone names")
    args = ap.parse_args(argv)
    if args.list:
        from saol_core.backbones import available_backbones
        print("\n".join(available_backbones()))
        return
    if args.backbones:
        rows = grid(args.backbones, args.heads, args.size, args.num_classes, args.separable,
                    args.mid_channels, args.output_size, args.output_stride)
        extra, out = [], args.out
    else:
        (rows, extra), out = default_grid(), args.out or "reports/costs.md"
    command = "python -m saol_core.macs " + " ".join(sys.argv[1:] if argv is None else argv)
    print(table(rows + extra))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(report(rows, extra, command.strip()))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
