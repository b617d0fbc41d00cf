"""Study glue of the weakly-supervised localization experiment (paper Sec. 4.2, Table 7), called by
notebooks/10_localization.ipynb; the maps and the box metrics themselves live in saol_core/wsol.py
and saol_core/wsol_metrics.py.

- :func:`prepare`: train (or load) a SAOL + GAP-FC run, optionally fine-tune it (e.g. a larger head
  resolution through ``model.output_stride``, as the paper enlarged 7x7 to 14x14), return the model.
- :func:`method_gmacs` / :func:`center_baseline` / :func:`table7` / :func:`markdown` / :func:`scraps`:
  the Table 7 layout (ours beside the paper, with wsolevaluation's no-model baseline).
- :func:`qualitative_grid`: image + ground-truth box, A, Y of the top-2 classes, A ⊙ Y, predicted boxes.
- ``python -m saol_core.localize --out reports/localization/benchmark_measured.md``: localization maps
  per second, SAOL (forward only) vs CAM vs Grad-CAM (forward + backward) on the same backbone.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import platform
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.patches import Rectangle

from saol_core import viz
from saol_core.bench import summarize, timed
from saol_core.config import ExperimentConfig, ModelConfig, make_config
from saol_core.macs import build_meta, count_macs
from saol_core.model import SAOLModel, build_model
from saol_core.runs import RunFolder, hardware_record
from saol_core.train import load_run, train
from saol_core.wsol import localization_maps, normalize_maps
from saol_core.wsol_metrics import BoxEvaluator, region_boxes, resize_boxes

METHODS = {"saol": "SAOL (A⊙Y_k)", "cam": "CAM", "gradcam": "Grad-CAM", "center": "centre Gaussian (no model)"}
"""Map kinds of saol_core.wsol (and the no-model baseline) in the table's row order, with row labels."""
MAP_KINDS = ["saol", "cam", "gradcam"]
"""The kinds evaluate_localization measures (the baseline: :func:`center_baseline`)."""
PAPER_TABLE7 = pd.DataFrame(
    [("CAM", 49.41, 46.30, 4.09), ("CAM + CutMix", 54.81, 47.25, 4.09), ("ABN", 56.91, 44.65, 7.62),
     ("SAOL + CutMix", 52.39, 45.01, 4.62)],
    columns=["method", "CUB Top-1 Loc", "ImageNet Top-1 Loc", "GMACs"])
"""Paper Table 7: ResNet-50, Top-1 Loc (%) on CUB-200-2011 / ImageNet, GMACs at 224 x 224."""
PAPER_ROW = {"saol": "SAOL + CutMix", "cam": "CAM + CutMix"}
"""Our rows come from one model trained with CutMix, so they sit beside the paper's CutMix rows."""


# ------------------------------------------------------------------------------ runs
def finetune_config(cfg: ExperimentConfig, run_dir: str | Path, overrides: Sequence[str]) -> ExperimentConfig:
    """The fine-tuning run of the trained run ``run_dir`` (config ``cfg``): the same experiment named
    ``<name>-ft``, started from the run's last weights (``checkpoint.pt``), then ``overrides``."""
    tree = cfg.to_dict()
    tree["name"] = f"{cfg.name}-ft"
    tree["train"]["init_from"] = str(RunFolder(run_dir).checkpoint)
    return make_config(tree, list(overrides))


def prepare(params: str | None, overrides: Sequence[str] = (), run_dir: str | None = None,
            finetune_overrides: Sequence[str] = ()) -> tuple[SAOLModel, ExperimentConfig, dict]:
    """Train ``params`` + ``overrides`` (a finished run folder is reused, a partial one resumed) or
    load the trained run ``run_dir`` (then params/overrides are ignored); with ``finetune_overrides``
    fine-tune it (:func:`finetune_config`). Returns (the last run's model on the CPU in eval mode, its
    config, {"train": summary, "finetune": summary} of the runs involved)."""
    if run_dir is None:
        cfg = make_config(params, list(overrides))
        summaries = {"train": train(cfg)}
        run_dir = cfg.run_dir()
    else:
        if not RunFolder(run_dir).checkpoint.exists():
            raise FileNotFoundError(f"run_dir={run_dir} holds no checkpoint.pt: give a trained run folder")
        cfg = make_config(RunFolder(run_dir).config)
        summaries = {"train": RunFolder(run_dir).read_summary()}
    if finetune_overrides:
        ft = finetune_config(cfg, run_dir, finetune_overrides)
        summaries["finetune"] = train(ft)
        run_dir = ft.run_dir()
    model, cfg = load_run(run_dir, "last")
    return model, cfg, summaries


# ------------------------------------------------------------------------------ Table 7
def method_gmacs(model_cfg: ModelConfig, num_classes: int, image_size: int) -> dict[str, float]:
    """GMACs per image of what each map kind needs (saol_core.macs conventions): CAM and Grad-CAM the
    GAP-FC model (``heads=gap``, Grad-CAM adds a backward through that head), SAOL the backbone with
    its SAOL head alone (``heads=saol``). Same backbone settings (output_stride, ...) as ``model_cfg``."""
    def gmacs(heads: str) -> float:
        cfg = dataclasses.replace(model_cfg, heads=heads, mask_head=False, pretrained=None)
        return count_macs(build_meta(cfg, num_classes), image_size)[1] / 1e9
    gap = gmacs("gap")
    return {"saol": gmacs("saol"), "cam": gap, "gradcam": gap}


def center_baseline(loader, boxes: Sequence[np.ndarray], eval_size: int = 224, cam_step: float = 0.01,
                    threshold: float | None = None, max_batches: int | None = None) -> dict[str, float]:
    """The no-model baseline of wsolevaluation (Choe et al. 2020): the same centred Gaussian score map
    (sigma = eval_size / 4) for every image of ``loader`` (as evaluate_localization walks it), so the
    threshold sweep picks the best centred box size. Large objects (CUB birds) make it strong. Keys as
    BoxEvaluator.compute; Top-1 Loc is meaningless here (no classifier: counted as wrong)."""
    grid = np.arange(eval_size) - (eval_size - 1) / 2
    gauss = np.exp(-(grid[:, None] ** 2 + grid[None, :] ** 2) / (2 * (eval_size / 4) ** 2))
    gauss = (gauss - gauss.min()) / (gauss.max() - gauss.min())
    evaluator = BoxEvaluator(cam_step=cam_step)
    for step, (images, _, indices) in enumerate(loader.epoch(0)):
        if max_batches is not None and step >= max_batches:
            break
        gt = [resize_boxes(boxes[i], tuple(images.shape[-2:]), (eval_size, eval_size)) for i in indices.tolist()]
        evaluator.accumulate(np.broadcast_to(gauss, (len(gt), eval_size, eval_size)), gt, np.zeros(len(gt), bool))
    return evaluator.compute(threshold)


def table7(results: dict[str, dict[str, float]], gmacs: dict[str, float], threshold: float | None = None
           ) -> pd.DataFrame:
    """One row per map kind of ``results`` (evaluate_localization output) in the paper's layout.

    Top-1 / GT-known Loc at ``threshold`` (on the CAM grid), or, with None, at each method's best
    threshold for GT-known Loc (the MaxBoxAcc operating point: chosen on the evaluated images).
    """
    rows = []
    for kind, label in METHODS.items():
        if kind not in results:
            continue
        r = results[kind]
        at = "" if threshold is not None else "_best"
        paper = PAPER_TABLE7.set_index("method").reindex([PAPER_ROW.get(kind)]).iloc[0]
        model_free = kind == "center"
        rows.append({"method": label, "Top-1 Loc": np.nan if model_free else r["top1_loc" + at],
                     "GT-known Loc": r["gt_known_loc" + at],
                     "MaxBoxAcc": r["max_box_acc"], "MaxBoxAccV2": r["max_box_acc_v2"],
                     "threshold": r["threshold"] if threshold is not None else r["best_threshold"],
                     "top-1 cls": np.nan if model_free else r["top1_cls"],
                     "GMACs": 0.0 if model_free else gmacs[kind], "backward": kind == "gradcam",
                     "paper row": PAPER_ROW.get(kind, "-"), "paper CUB Top-1 Loc": paper["CUB Top-1 Loc"],
                     "paper ImageNet Top-1 Loc": paper["ImageNet Top-1 Loc"], "paper GMACs": paper["GMACs"]})
    return pd.DataFrame(rows)


SCRAPS = {"top1_loc": "Top-1 Loc", "gt_known_loc": "GT-known Loc", "max_box_acc": "MaxBoxAcc",
          "max_box_acc_v2": "MaxBoxAccV2", "threshold": "threshold", "top1_cls": "top-1 cls", "gmacs": "GMACs"}


def scraps(table: pd.DataFrame) -> dict[str, float]:
    """The numbers of a :func:`table7` frame as flat ``<kind>_<metric>`` floats (scrapbook), e.g.
    ``saol_top1_loc``, ``cam_max_box_acc``, ``gradcam_gmacs``; undefined (NaN) cells are left out."""
    kinds = {label: kind for kind, label in METHODS.items()}
    return {f"{kinds[row['method']]}_{name}": float(row[column])
            for _, row in table.iterrows() for name, column in SCRAPS.items() if not pd.isna(row[column])}


def _cell(value, digits: int) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return "-" if np.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def markdown(df: pd.DataFrame, digits: dict[str, int] | None = None) -> str:
    """A DataFrame as a GitHub markdown table; floats with 2 decimals unless ``digits[column]`` says."""
    digits = {"GMACs": 4, **(digits or {})}
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v, digits.get(c, 2)) for c, v in zip(df.columns, row)) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ qualitative grid
def predicted_box(maps: torch.Tensor, threshold: float, image_size: int, eval_size: int) -> np.ndarray:
    """(B, h, w) raw maps -> (B, 4) xyxy box of the largest region at ``threshold``, found as the
    evaluator finds it (eval_size x eval_size, min-max normalized), scaled back to image pixels."""
    scores = normalize_maps(maps, (eval_size, eval_size)).cpu().numpy()
    boxes = np.stack([region_boxes(s, np.array([threshold]))[0][0] for s in scores]).astype(np.float64)
    return boxes * image_size / eval_size


def _outline(ax, box: np.ndarray, color: str) -> None:
    """Outline an xyxy inclusive-pixel box on an image axis."""
    x0, y0, x1, y1 = box
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, color=color, lw=1.5))


def qualitative_grid(model: SAOLModel, data, thresholds: dict[str, float], n: int = 4, eval_size: int = 224):
    """viz.attention_maps of the first ``n`` test images (input, A, Y and A ⊙ Y of SAOL's top-2 classes)
    with the ground-truth boxes (cyan) and the predicted boxes for the predicted class: SAOL (lime, on
    the input and on A ⊙ Y of the top-1 class) and CAM (orange, on the input). ``thresholds``: per map
    kind ("saol", "cam"), the CAM threshold used for the boxes."""
    images, labels, indices = next(iter(data.test.epoch(0)))
    images, labels, indices = images[:n].cpu(), labels[:n], indices[:n].tolist()
    names = [name.split(".", 1)[-1][:16] for name in data.class_names]   # "001.Black_footed_Albatross"
    fig = viz.attention_maps(model, images, [f"label {names[int(k)]}" for k in labels], names, data.denormalize)
    axes = np.array(fig.axes).reshape(len(images), -1)
    size = images.shape[-1]
    boxes = {kind: predicted_box(localization_maps(model, images, kind)[0], thresholds[kind], size, eval_size)
             for kind in ("saol", "cam")}
    for i, index in enumerate(indices):
        for gt in data.test_boxes[index]:
            _outline(axes[i, 0], gt, "cyan")
        _outline(axes[i, 0], boxes["saol"][i], "lime")
        _outline(axes[i, 4], boxes["saol"][i], "lime")
        _outline(axes[i, 0], boxes["cam"][i], "orange")
    fig.suptitle(f"boxes: ground truth (cyan), SAOL A⊙Y_k at {thresholds['saol']:.2f} (lime), "
                 f"CAM at {thresholds['cam']:.2f} (orange)", fontsize=9)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------ throughput
def gradcam_full_backward(model: SAOLModel, images: torch.Tensor) -> torch.Tensor:
    """Grad-CAM as hook-based libraries compute it: ``score.backward()`` through the WHOLE network
    (parameter gradients included), then ReLU(Σ_c α_c X^L_c). Same maps as wsol's Grad-CAM, which
    back-propagates only to X^L; kept to time the common implementation. Returns (B, h, w)."""
    model.zero_grad(set_to_none=True)
    out = model(images)
    out.features.retain_grad()
    out.gap_logits.gather(1, out.gap_logits.argmax(1, keepdim=True)).sum().backward()
    alpha = out.features.grad.mean((2, 3))
    return F.relu(torch.einsum("bc,bchw->bhw", alpha, out.features.detach()))


BENCH_MODES = {
    "saol": ("SAOL A⊙Y_k", "forward", lambda m, x: localization_maps(m, x, "saol")),
    "cam": ("CAM", "forward + FC weights", lambda m, x: localization_maps(m, x, "cam")),
    "gradcam": ("Grad-CAM (wsol.py)", "forward + backward to X^L", lambda m, x: localization_maps(m, x, "gradcam")),
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
    lines = ["| model | input | batch | GMACs (SAOL / GAP-FC) | method | needs | maps/s best | maps/s median "
             "[min] | time per map vs SAOL (best / median) |", "|---|---|---|---|---|---|---|---|---|"]
    for name in args.models:
        spec, size, batch, classes, repeats = BENCH_MODELS[name]
        cfg = ModelConfig(**spec)
        model = build_model(cfg, classes)
        gm = method_gmacs(cfg, classes, size)
        stats = bench_maps(model, torch.randn(batch, 3, size, size), repeats, args.rounds)
        base = stats["saol"]
        for mode, (label, needs, _) in BENCH_MODES.items():
            s = stats[mode]
            lines.append(f"| {name} ({cfg.head_channels}{' sep' if cfg.separable else ''}, "
                         f"{cfg.output_size or 'native'} out) | {size} | {batch} | {gm['saol']:.3f} / "
                         f"{gm['cam']:.3f} | {label} | {needs} | {s.max:.1f} | {s.median:.1f} [{s.min:.1f}] | "
                         f"{base.max / s.max:.2f}x / {base.median / s.median:.2f}x |")
        print("\n".join(lines[-len(BENCH_MODES):]), flush=True)
    hw = hardware_record()
    command = "python -m saol_core.localize " + " ".join(sys.argv[1:] if argv is None else argv)
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
