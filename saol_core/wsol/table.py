"""The Table 7 table in the paper's layout (our methods beside the paper's rows, GMACs, the no-model
baseline), called by notebooks/10_localization.ipynb; the run behind the maps comes from
saol_core.localize."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import markdown as md

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


# ------------------------------------------------------------------------------ Table 7
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
    return md.table(df.columns, [[_cell(v, digits.get(c, 2)) for c, v in zip(df.columns, row)]
                                 for row in df.itertuples(index=False)])
