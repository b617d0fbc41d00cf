"""Weakly-supervised object localization (paper Sec. 4.2, Table 7), in one place:

- ``maps``: localization maps of a model (SAOL's A ⊙ Y_k, A, Y_k, CAM, Grad-CAM), their normalization, the
  dataset-level evaluation, which factor of A ⊙ Y_k localizes (:func:`factor_results`) and the
  centre-Gaussian no-model baseline.
- ``metrics``: boxes from score maps and the box metrics (MaxBoxAcc, MaxBoxAccV2, Top-1 / GT-known
  Loc), equal to clovaai/wsolevaluation's on the same maps and boxes; thresholds chosen on held-out images.
- ``record``: a trained run's localization numbers (``wsol`` config section), written into its summary.
- ``table``: the Table 7 layout. (The runs behind the maps, trained, loaded or fine-tuned, and a run
  folder's boxes figure: ``saol_core.localize``, which joins this package to the training loop.)
- ``speed``: maps per second of each method (``python -m saol_core.wsol.speed``).
"""
from .maps import (FACTOR_KINDS, KINDS, available_kinds, center_baseline, center_gaussian, evaluate_localization,
                   factor_results, localization_maps, maps_from_output, normalize_maps, predicted_box)
from ..data.boxes import GroundTruthBoxes, resize_boxes
from .metrics import REGIONS, BoxEvaluator, SelectedThresholdEvaluator, box_iou, region_boxes, scoremap_ious, threshold_grid
from .record import RECORD_KEYS, localization_record, method_gmacs, selection_mask
from .table import MAP_KINDS, METHODS, PAPER_TABLE7, markdown, scraps, table7

__all__ = ["BoxEvaluator", "FACTOR_KINDS", "GroundTruthBoxes", "REGIONS", "KINDS", "MAP_KINDS", "METHODS", "PAPER_TABLE7",
           "RECORD_KEYS", "SelectedThresholdEvaluator", "available_kinds", "box_iou", "center_baseline", "center_gaussian",
           "evaluate_localization", "factor_results", "localization_maps",
           "localization_record",
           "maps_from_output", "markdown", "method_gmacs", "normalize_maps", "predicted_box",
           "region_boxes", "resize_boxes", "scoremap_ious", "scraps", "selection_mask", "table7", "threshold_grid"]
