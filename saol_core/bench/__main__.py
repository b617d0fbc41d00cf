"""``python -m saol_core.bench``: see the package docstring for the method."""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import sys
from typing import Sequence

import torch

from ..config import make_config
from ..runs import hardware_record
from ..train import resolve_device
from . import __doc__ as DOC
from .measure import measure_peak
from .parallel import bench_layouts, layouts_table, parse_layout
from .pipelines import bench_pipelines
from .recipes import RECIPES, BenchSettings, Row, add_fractions, bench_backbone
from .report import render_section, rows_table, update_report


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m saol_core.bench", description=DOC.split("\n\n")[0])
    d = BenchSettings()
    ap.add_argument("--backbones", nargs="+", help="default: the --params file's backbone, else wrn40_2 resnet110")
    ap.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--num-classes", type=int, default=d.num_classes)
    ap.add_argument("--image-size", type=int, help="default: 32 for CIFAR nets, 224 for ImageNet nets")
    ap.add_argument("--params", help="run the recipes on this params file's model section (head width, "
                                     "output_stride ...) instead of the net's kind defaults")
    ap.add_argument("--cutmix-prob", type=float, help="default: the paper's p for each backbone")
    ap.add_argument("--steps", type=int, default=d.steps, help="timed steps per repeat")
    ap.add_argument("--warmup", type=int, default=d.warmup, help="untimed steps per recipe before the repeats")
    ap.add_argument("--repeats", type=int, default=d.repeats)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (peak measured in bf16)")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--eager-vs-compiled", action="store_true",
                    help="time every recipe eager and compiled, interleaved in this process (rows '<recipe> compiled')")
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=d.channels_last,
                    help="channels_last memory format (the training default)")
    ap.add_argument("--nondeterministic", action="store_true", help="train.deterministic=false (cudnn autotune)")
    ap.add_argument("--mode", choices=["train", "infer", "both"], default=d.mode)
    ap.add_argument("--conventional", action="store_true", help="also time conventional vs resident pipelines")
    ap.add_argument("--conventional-backbone", default=d.conventional_backbone)
    ap.add_argument("--official-loop", action="store_true",
                    help="also time the public CutMix code's loop (its model and step; implies --conventional)")
    ap.add_argument("--e2e-images", type=int, default=d.e2e_images, help="training images per end-to-end epoch")
    ap.add_argument("--e2e-data", help="image folder or .tar.gz (ImageFolder layout, e.g. CIFAR-10) for the "
                                       "pipeline comparison; default: the offline digits set")
    ap.add_argument("--e2e-repeats", type=int, default=d.e2e_repeats, help="end-to-end epochs timed per pipeline")
    ap.add_argument("--workers", type=int, default=d.workers, help="DataLoader workers of the conventional pipeline")
    ap.add_argument("--profile", action="store_true", help="also profile the parts of each training step (CPU)")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--layouts", nargs="+", metavar="JOBSxTHREADS",
                    help="also time concurrent runs, e.g. 1x2 2x1 on a CPU or 1x1 4x1 12x1 sharing a GPU: "
                         "aggregate img/s of the first recipe")
    ap.add_argument("--out", default="reports/BENCHMARKS.md", help="report to update ('' = print only)")
    args = ap.parse_args(argv)
    if args.backbones is None:
        args.backbones = [make_config(args.params).model.backbone] if args.params else ["wrn40_2", "resnet110"]
    args.conventional |= args.official_loop
    command = "python -m saol_core.bench " + " ".join(sys.argv[1:] if argv is None else argv)
    if os.environ.get("SAOL_DATA"):  # the report names the data as users set it, not this machine's path
        command = command.replace(os.environ["SAOL_DATA"].rstrip("/"), "$SAOL_DATA")

    settings = BenchSettings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(BenchSettings)})
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
        rows += bench_backbone(backbone, args.recipes, settings, device, profiles)
        print(rows_table([r for r in rows if r.backbone == backbone]), flush=True)
    pipes = bench_pipelines(settings, device) if args.conventional else None
    layouts = None
    if args.layouts:
        found = {b: bench_layouts(b, args.recipes[0], [parse_layout(l) for l in args.layouts], settings,
                                  device=str(device)) for b in args.backbones}
        layouts = "\n\n".join(layouts_table(b, args.recipes[0], r) for b, r in found.items())
        print(layouts, flush=True)
    last = measure_peak(device, peak_dtype)  # again at the end: the best of both (a shared machine's load varies)
    peak = {k: max(first[k], last[k]) for k in first}
    add_fractions(rows, peak["peak"])

    hw = hardware_record(device)
    label = (f"{hw['gpu']}" if device.type == "cuda" else f"CPU {hw['cpu']} ({hw['cpu_count']} cores, {hw['cpu_capability']})")
    env = {"hardware": hw, "device_label": label, "peak": peak, "peak_dtype": str(peak_dtype).split(".")[-1],
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "load": (load0, os.getloadavg()[0])}
    shown = {"device": str(device), "batch": args.batch_size, "classes": args.num_classes,
                "image size": args.image_size or "the net's kind (32 or 224 px)",
                "model settings": args.params or "the net's kind defaults",
                "dtype": "bf16 autocast" if args.bf16 else "fp32", "channels_last": args.channels_last,
                "compile": "eager and compiled, interleaved" if args.eager_vs_compiled else args.compile,
                "deterministic": not args.nondeterministic,
                "warm-up steps": args.warmup, "timed steps x repeats": f"{args.steps} x {args.repeats}",
                "end-to-end epochs x repeats": f"1 x {args.e2e_repeats}" if args.conventional else "-",
                "workers": args.workers}
    section = render_section(f"{label} | {command}", command, env, shown, rows, pipes, profiles, layouts)
    print(section)
    if args.out:
        update_report(args.out, f"{label} | {command}", section)
        print(f"updated {args.out}")


if __name__ == "__main__":
    main()
