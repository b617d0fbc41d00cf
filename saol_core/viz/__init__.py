"""Figures for the notebooks (seaborn/matplotlib) and the ipywidgets explorer; notebooks only call these.

- ``maps``: images and SAOL's maps — :func:`cutmix_grid` (a CutMix-ed batch with its box and lambda),
  :func:`attention_maps` (paper Fig. 5: input, attention A, spatial logits Y of the top-2 classes and
  A ⊙ Y_k, the class-wise localization map of Sec. 4.2), :func:`qualitative_grid` (ground-truth and
  predicted boxes beside those maps), :func:`draw_maps` (either, from a figure record: ``saol_core.figrecords``,
  which run folders keep so that reports redraw them without checkpoints), :func:`explorer` (pick a run folder, two test images and a box;
  see the mixed input, A, Y and both heads' predictions update live).
- ``study``: a study's numbers — :func:`training_curves`, :func:`results_plot` (ours per seed, mean with
  its 95 % interval, beside the paper's), :func:`comparisons_plot`, :func:`budget_plot`, :func:`costs_plot`.
- ``files``: :func:`save` and :func:`figure_source` (a PNG that names the run it was drawn from).
"""
from ..figrecords import Maps, saol_maps
from .maps import (HEAT, attention_maps, cutmix_example, cutmix_grid, draw_maps, examples, explorer, fig5, panels,
                   qualitative_grid, saol_runs, short_name)
from .study import (VERDICT_COLORS, budget_plot, comparisons_plot, costs_plot, metric_label, results_plot,
                    training_curves, verdict_style)
from .files import figure_source, save

__all__ = ["HEAT", "Maps", "VERDICT_COLORS", "attention_maps", "budget_plot", "comparisons_plot", "costs_plot",
           "cutmix_example", "cutmix_grid", "draw_maps", "examples", "explorer", "fig5", "figure_source", "metric_label", "panels",
           "qualitative_grid", "results_plot", "saol_maps", "saol_runs", "save", "short_name",
           "training_curves", "verdict_style"]
