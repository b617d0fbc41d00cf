"""Localization on trained runs: the run behind the maps (trained, or loaded, optionally fine-tuned with a
larger head resolution as the paper enlarged 7x7 to 14x14), the boxes figure of a run folder and a study
report's map figures. The metrics themselves (saol_core.wsol) know nothing of training; this module joins
the two.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from . import figrecords
from .config import ExperimentConfig, make_config
from .data import build_data
from .model import SAOLModel
from .runs import RunFolder
from .study import maps_run, project_path
from .train import load_run, train
from .viz import draw_maps, fig5, figure_source, qualitative_grid, save

MAP_FIGURES = {"fig5.png": "Fig. 5-style maps", "boxes.png": "Ground-truth and predicted boxes beside SAOL's maps"}
"""A study report's figures of SAOL's maps (file name in ``<report>/figures`` -> title)."""


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


def localization_figure(run_dir, n: int = 4):
    """Ground-truth and predicted boxes beside SAOL's maps for ``n`` test images of different classes, at the
    thresholds a trained run folder's localization record chose (``summary.final``: saol_threshold,
    cam_threshold): drawn from the run's figure record (``maps_boxes.npz``) where it has one, else computed
    from its checkpoint (``saol_core.viz.qualitative_grid``); None for a run without both thresholds
    (wsol.enabled=false, or a model without a SAOL or a GAP-FC head)."""
    final = (RunFolder(run_dir).read_summary() or {}).get("final") or {}
    if "saol_threshold" not in final or "cam_threshold" not in final:
        return None
    if (Path(run_dir) / figrecords.BOXES).exists():
        return draw_maps(figrecords.load(Path(run_dir) / figrecords.BOXES))
    model, cfg = load_run(run_dir)
    data = build_data(cfg.data, seed=cfg.seed, batch_size=n)
    return qualitative_grid(model, data, {"saol": final["saol_threshold"], "cam": final["cam_threshold"]}, n,
                            cfg.wsol.eval_size)


def map_figures(out: str | Path, results, n: int = 4) -> dict[str, Path]:
    """A study report's map figures (MAP_FIGURES) for report folder ``out`` and its ``results``
    (saol_core.study.collect): drawn from the run ``maps_run`` picks, each PNG stamped with that run; returns
    {title naming the run: path} of those to show. A figure kept from before (a run whose checkpoint is gone,
    from before runs kept figure records) is shown while the run it names is still finished here, and deleted
    once it is not (rerun or removed): it would show a model the tables no longer hold."""
    figures = project_path(out) / "figures"
    run = maps_run(out, results)
    if run:
        folder = project_path(out) / "runs" / run
        save(fig5(folder, n=n), figures / "fig5.png", source=run)
        boxes = localization_figure(folder, n=n)   # None without a localization record
        if boxes is not None:
            save(boxes, figures / "boxes.png", source=run)
    finished = set(results[results.status == "finished"].run)
    shown = {}
    for name, title in MAP_FIGURES.items():
        path = figures / name
        if not path.exists():
            continue
        source = figure_source(path)
        if source and source not in finished:
            path.unlink()
        else:
            shown[f"{title} of {source}" if source else
                  f"{title} (drawn from a run whose checkpoint is gone: records keep none)"] = path
    return shown
