"""Localization maps per second: SAOL (forward only) vs CAM vs Grad-CAM (forward + backward) on the same
backbone.

    python -m saol_core.wsol.speed --out reports/localization/benchmark_measured.md
"""
from __future__ import annotations

import argparse
import datetime
import platform
import sys
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from .. import markdown
from ..bench import summarize, timed
from ..config import ModelConfig
from ..model import SAOLModel, build_model
from ..runs import hardware_record
from .maps import localization_maps, weighted_features
from .record import method_gmacs


def gradcam_full_backward(model: SAOLModel, images: torch.Tensor) -> torch.Tensor:
    """Grad-CAM as hook-based libraries compute it: ``score.backward()`` through the WHOLE network
    (parameter gradients included), then ReLU(Σ_c α_c X^L_c). Same maps as wsol's Grad-CAM, which
    back-propagates only to X^L; kept to time the common implementation. Returns (B, h, w)."""
    model.zero_grad(set_to_none=True)
    out = model(images)
    out.features.retain_grad()
    out.gap_logits.gather(1, out.gap_logits.argmax(1, keepdim=True)).sum().backward()
    alpha = out.features.grad.mean((2, 3))
    return F.relu(weighted_features(alpha, out.features.detach()))


BENCH_MODES = {
    "saol": ("SAOL A⊙Y_k", "forward", lambda m, x: localization_maps(m, x, "saol")),
    "cam": ("CAM", "forward + FC weights", lambda m, x: localization_maps(m, x, "cam")),
    "gradcam": ("Grad-CAM (saol_core.wsol)", "forward + backward to X^L", lambda m, x: localization_maps(m, x, "gradcam")),
    "gradcam_full": ("Grad-CAM (full backward)", "forward + backward of every layer", gradcam_full_backward),
}


def bench_maps(model: SAOLModel, images: torch.Tensor, repeats: int = 3, rounds: int = 3) -> dict:
    """Maps per second of every BENCH_MODES entry on ``images``: one untimed warm-up each, then
    ``rounds`` rounds (modes interleaved, so a load change on a shared machine hits all alike) of
    ``repeats`` calls; returns {mode: bench.Stats of maps/s}. Reporting only (never asserted)."""
    model.eval()
    for _, _, fn in BENCH_MODES.values():
        fn(model, images)
    rates: dict[str, list[float]] = {mode: [] for mode in BENCH_MODES}
    for _ in range(rounds):
        for mode, (_, _, fn) in BENCH_MODES.items():
            seconds = timed(lambda: [fn(model, images) for _ in range(repeats)], images.device)
            rates[mode].append(repeats * len(images) / seconds)
    return {mode: summarize(values) for mode, values in rates.items()}


BENCH_MODELS = {  # label: (model config, input side, batch, classes, calls per timed window)
    "resnet50": (dict(backbone="resnet50", heads="saol+gap", head_channels=64, separable=True, output_size=14),
                 224, 8, 200, 1),
    "resnet20": (dict(backbone="resnet20", heads="saol+gap", head_channels=64), 32, 64, 10, 4),
}
"""ResNet-50 with the Table 7 head (params/table7_wsol.yaml: separable, 64 wide, 14x14) on CUB-200;
CIFAR ResNet-20 with the CIFAR head (8x8)."""


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="localization maps per second: SAOL vs CAM vs Grad-CAM")
    ap.add_argument("--models", nargs="+", choices=list(BENCH_MODELS), default=list(BENCH_MODELS))
    ap.add_argument("--rounds", type=int, default=8, help="interleaved timed windows per method")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="write the markdown report here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # on a shared machine the best window is the closest to the method's own cost (timeit's rule);
    # the median shows what a loaded machine gave
    rows = []
    for name in args.models:
        spec, size, batch, classes, repeats = BENCH_MODELS[name]
        cfg = ModelConfig(**spec)
        model = build_model(cfg, classes)
        gm = method_gmacs(cfg, classes, size)
        stats = bench_maps(model, torch.randn(batch, 3, size, size), repeats, args.rounds)
        base = stats["saol"]
        for mode, (label, needs, _) in BENCH_MODES.items():
            s = stats[mode]
            rows.append([f"{name} ({cfg.head_channels}{' sep' if cfg.separable else ''}, "
                         f"{cfg.output_size or 'native'} out)", size, batch, f"{gm['saol']:.3f} / {gm['cam']:.3f}",
                         label, needs, f"{s.max:.1f}", f"{s.median:.1f} [{s.min:.1f}]",
                         f"{base.max / s.max:.2f}x / {base.median / s.median:.2f}x"])
            print(" | ".join(map(str, rows[-1])), flush=True)
    lines = markdown.table(["model", "input", "batch", "GMACs (SAOL / GAP-FC)", "method", "needs", "maps/s best",
                            "maps/s median [min]", "time per map vs SAOL (best / median)"], rows).splitlines()
    hw = hardware_record()
    command = "python -m saol_core.wsol.speed " + " ".join(sys.argv[1:] if argv is None else argv)
    report = (f"## Localization maps per second\n\n`{command.strip()}` on {datetime.date.today()}, "
              f"{hw['cpu']} ({hw['cpu_count']} cores, {args.threads} torch threads), torch "
              f"{torch.__version__}, Python {platform.python_version()}, fp32, eval mode, random weights; "
              f"one warm-up call per method, then {args.rounds} interleaved rounds of timed windows "
              f"of {', '.join(f'{n}: {BENCH_MODELS[n][4]}' for n in args.models)} call(s) each.\n\n"
              + "\n".join(lines) + "\n")
    print(report)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(report)


if __name__ == "__main__":
    main()
