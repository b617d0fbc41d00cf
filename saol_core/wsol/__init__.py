"""Weakly-supervised object localization (paper Sec. 4.2, Table 7), in one place:

- ``maps``: localization maps of a model (SAOL's A ⊙ Y_k, A, CAM, Grad-CAM), their normalization, the
  dataset-level evaluation, and which factor of A ⊙ Y_k localizes (:func:`factor_results`).
- ``metrics``: boxes from score maps and the box metrics (MaxBoxAcc, MaxBoxAccV2, Top-1 / GT-known
  Loc), equal to clovaai/wsolevaluation's on the same maps and boxes.
- ``table``: the experiment's runs (train / load / fine-tune), GMACs per method, the centre-Gaussian
  baseline and the Table 7 layout.
- ``figures``: images with ground-truth and predicted boxes beside SAOL's maps.
- ``speed``: maps per second of each method (``python -m saol_core.wsol.speed``).
"""
from .figures import predicted_box, qualitative_grid
from .maps import (FACTORS, KINDS, evaluate_localization, factor_results, localization_maps, maps_from_output,
                   normalize_maps)
from ..data.boxes import GroundTruthBoxes, resize_boxes
from .metrics import REGIONS, BoxEvaluator, box_iou, region_boxes, scoremap_ious, threshold_grid
from .table import (MAP_KINDS, METHODS, PAPER_TABLE7, center_baseline, finetune_config, markdown, method_gmacs,
                    prepare, scraps, table7)

__all__ = ["BoxEvaluator", "FACTORS", "GroundTruthBoxes", "REGIONS", "KINDS", "MAP_KINDS", "METHODS", "PAPER_TABLE7", "box_iou", "center_baseline",
           "evaluate_localization", "factor_results", "finetune_config", "localization_maps", "maps_from_output",
           "markdown", "method_gmacs", "normalize_maps", "predicted_box", "prepare", "qualitative_grid",
           "region_boxes", "resize_boxes", "scoremap_ious", "scraps", "table7", "threshold_grid"]
