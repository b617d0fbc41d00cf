"""The Table 7 experiment (paper Sec. 4.2): the run behind the maps (trained, or loaded, optionally fine-tuned
with a larger head resolution as the paper enlarged 7x7 to 14x14), each method's GMACs, the no-model
baseline, and the table in the paper's layout, called by notebooks/10_localization.ipynb.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..config import ExperimentConfig, make_config
from ..model import SAOLModel
from ..runs import RunFolder
from ..train import load_run, train
from ..data.boxes import GroundTruthBoxes
from .maps import center_gaussian
from .metrics import SelectedThresholdEvaluator

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
def center_baseline(loader, boxes: GroundTruthBoxes, eval_size: int = 224, cam_step: float = 0.01,
                    threshold: float | None = None, max_batches: int | None = None,
                    select: np.ndarray | None = None) -> dict[str, float]:
    """The no-model baseline of wsolevaluation (Choe et al. 2020): the same centred Gaussian score map
    (maps.center_gaussian) for every image of ``loader`` (as evaluate_localization walks it, ``select``
    included), so the threshold sweep picks the best centred box size. Large objects (CUB birds) make it
    strong. Keys as BoxEvaluator.compute; Top-1 Loc is meaningless here (no classifier: counted as wrong)."""
    gauss = center_gaussian(eval_size)
    evaluator = SelectedThresholdEvaluator(select, cam_step=cam_step)
    gt_all = boxes.at(eval_size)
    for step, (_, _, indices) in enumerate(loader.epoch(0)):
        if max_batches is not None and step >= max_batches:
            break
        indices = indices.cpu().numpy()
        gt = [gt_all[i] for i in indices.tolist()]
        evaluator.accumulate(np.broadcast_to(gauss, (len(gt), eval_size, eval_size)), gt, np.zeros(len(gt), bool),
                             indices)
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
