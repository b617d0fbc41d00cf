"""The training loop: CutMix -> forward -> SAOL losses -> SGD step, with evaluation, run folders and
exact resume. One entry point for one CPU, one GPU or many GPUs (torchrun + DistributedDataParallel):

    python -m saol_core.train params/default.yaml train.epochs=3 model.backbone=wrn40_2
    torchrun --nproc_per_node 8 -m saol_core.train params/table1_cifar10.yaml model.backbone=wrn40_2

GPU-first: data stay on the device, losses are accumulated on the device and read back only every
``CHECK_EVERY`` steps (finite check + progress bar), never with a per-step ``.item()``.
Determinism: every random stream is re-seeded from (seed, epoch, rank) at the start of each epoch, so
a run resumed from an epoch checkpoint replays exactly what an uninterrupted run would have done. A
checkpoint written inside an epoch (``train.checkpoint_minutes``) also holds the step reached and the
generators' states then; the loaders give any epoch's batches from any position, so the resume continues
from that step just as exactly.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from tqdm.auto import tqdm

from . import figrecords
from .config import ConfigError, ExperimentConfig, make_config
from .cutmix import cutmix
from .data import DatasetError, build_data
from .evaluate import evaluate
from .model import SAOLModel, build_model
from .runs import (CheckpointCorrupt, RecordCorrupt, RunFolder, RunLocked, RunWriteError, atomic_save, hardware_class,
                   atomic_write_text, hardware_record, load_checkpoint)
from .step import LossMeter, make_step, prepare_model
from .wsol.record import localization_record, scoring_split

CHECK_EVERY = 50  # steps between host reads of the running loss (finite check, progress bar)


class TrainingDiverged(FloatingPointError):
    """The loss or the weights became NaN/inf; the last good checkpoint is left untouched."""


# errors raised on purpose with a message that says what to do: one line for the user, no traceback
USER_ERRORS = (ConfigError, DatasetError, RunWriteError, RunLocked, CheckpointCorrupt, RecordCorrupt,
               TrainingDiverged, FileNotFoundError)


def default_threads(available: int) -> int:
    """Threads for a CPU run when ``train.threads`` is unset: torch's default (``available``), less the cores
    other processes keep busy (the 1-minute load average, rounded), at least 1. On shared cores torch's
    thread pool collapses (`reports/BENCHMARKS.md`, "Concurrent runs"), so a busy machine gets fewer threads,
    never more than the free cores."""
    try:
        busy = round(os.getloadavg()[0])
    except OSError:  # no load average on this platform
        return available
    return max(1, min(available, (os.cpu_count() or available) - busy))


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but no CUDA device is visible; use train.device=cpu")
    return device


def _distributed() -> tuple[int, int, int]:
    """(rank, world_size, local_rank); initializes the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend)
    return dist.get_rank(), world, local_rank


def _seed(cfg: ExperimentConfig, epoch: int, rank: int, stream: int) -> int:
    return ((cfg.seed * 1_000_003 + epoch) * 257 + rank) * 7 + stream


def _get_rng(device: torch.device) -> dict:
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def _set_rng(rng: dict, device: torch.device) -> None:
    torch.set_rng_state(rng["cpu"].cpu())
    if rng["cuda"] is not None:
        torch.cuda.set_rng_state(rng["cuda"].cpu(), device)


def _primary(metrics: dict) -> float:
    return metrics.get("saol_top1", metrics.get("gap_top1", 0.0))


def _checkpoint(model: SAOLModel, optimizer, scheduler, epoch: int, state: dict, data, metrics: list[dict]) -> dict:
    """Everything a resume needs, with the metrics rows of epochs 1..epoch (so a lost or emptied metrics.jsonl
    is restored) and the training split's size (so a resume on other data is refused)."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "epoch": epoch, "state": state, "metrics": metrics,
            "num_classes": data.num_classes, "class_names": data.class_names, "train_images": data.train.size}


def _load_weights(model: torch.nn.Module, weights: dict, path: Path, what: str) -> None:
    """``model.load_state_dict`` with a one-line ConfigError naming ``path`` when the shapes or keys differ."""
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        first = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), str(e))
        raise ConfigError(f"{path} holds weights of another model ({first}); {what}") from None


def _check_same_data(ckpt: dict, data, path: Path) -> None:
    """Refuse to resume a checkpoint on data other than it was trained on (a changed data.root, say)."""
    then = (ckpt.get("class_names"), ckpt.get("train_images"))
    now = (data.class_names, data.train.size)
    if ckpt.get("class_names") is not None and (then[0] != now[0] or then[1] not in (None, now[1])):
        raise ConfigError(f"{path} was trained on {then[1] or '?'} training images of {len(then[0])} classes, but "
                          f"this data gives {now[1]} of {len(now[0])}: resume with the data it was trained on "
                          f"(data.root), or pass --no-resume to start over")


def _all_finite(model: torch.nn.Module) -> bool:
    """Weights and floating buffers (BatchNorm running statistics) are all finite."""
    tensors = [*model.parameters(), *(b for b in model.buffers() if b.is_floating_point())]
    return bool(torch.stack([t.detach().float().abs().sum() for t in tensors]).isfinite().all())


def train(cfg: ExperimentConfig, *, resume: bool = True) -> dict:
    """Train ``cfg`` into its run folder (resuming from its checkpoint) and return the summary."""
    rank, world, local_rank = _distributed()
    device = resolve_device(cfg.train.device, local_rank)
    torch.set_num_threads(cfg.train.threads or default_threads(torch.get_num_threads()))
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(cfg.train.deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not cfg.train.deterministic
    if cfg.wsol.enabled and world > 1:
        raise ConfigError("wsol.enabled=true scores the whole test split in one process: run without torchrun, "
                          "or train with wsol.enabled=false and score the run folder with "
                          "notebooks/10_localization.ipynb (RUN_DIR=<run folder>)")
    if cfg.train.batch_size % world:
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} must divide by {world} processes")

    # everything that can fail on a bad config or bad data fails before the run folder is touched
    torch.manual_seed(cfg.seed)
    data = build_data(cfg.data, seed=cfg.seed, batch_size=cfg.train.batch_size // world, device=device,
                      rank=rank, world_size=world)
    if cfg.wsol.enabled:
        scoring_split(data, cfg.wsol)
    model = prepare_model(build_model(cfg.model, data.num_classes), cfg, device)
    if cfg.train.init_from:
        source = _weights_file(cfg.train.init_from)
        _load_weights(model, load_checkpoint(source)["model"], source,
                      "train.init_from must name a run of the same model (backbone, heads, head width, classes)")
    run = RunFolder(cfg.run_dir())
    if rank == 0:
        run.lock()
    try:
        ckpt = load_checkpoint(run.checkpoint, device) if resume and run.checkpoint.exists() else None
        if ckpt is not None:   # refused before start() records this attempt's settings
            _check_same_data(ckpt, data, run.checkpoint)
        if rank == 0:
            finished = run.start(cfg, device, resume)
        else:
            finished = run.read_summary() if resume else None
        if finished and finished.get("finished"):
            return finished
        return _loop(cfg, run, data, model, device, rank, world, local_rank, ckpt)
    finally:
        run.unlock()


def _loop(cfg: ExperimentConfig, run: RunFolder, data, model: SAOLModel, device: torch.device, rank: int,
          world: int, local_rank: int, ckpt: dict | None) -> dict:
    """The epochs of ``train`` from the run folder's checkpoint ``ckpt`` (None: from the start) to the end;
    the summary."""
    steps_per_epoch = len(data.train) if cfg.train.max_steps is None else min(len(data.train), cfg.train.max_steps)
    step_fn = make_step(cfg, model, device, steps_per_epoch, steps_per_epoch * cfg.train.epochs,
                        world_size=world, local_rank=local_rank)
    optimizer, scheduler = step_fn.optimizer, step_fn.scheduler

    start_epoch, state = 0, {"best": None, "best_epoch": None, "wall_time_s": 0.0, "images": 0,
                             "train_time_s": 0.0, "last_eval": None}
    history: list[dict] | None = []   # metrics rows of the epochs before start_epoch (None: unknown, older checkpoint)
    partial = None                    # where a checkpoint written inside epoch start_epoch + 1 left it
    if ckpt is not None:
        _load_weights(model, ckpt["model"], run.checkpoint,
                      "pass --no-resume to start this run over, or pick another name=...")
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, state, history, partial = ckpt["epoch"], ckpt["state"], ckpt.get("metrics"), ckpt.get("partial")
        if partial is not None and partial["world_size"] != world:
            raise ConfigError(f"{run.checkpoint} was written inside epoch {start_epoch + 1} by a run of "
                              f"{partial['world_size']} process(es); resume it with as many, or pass --no-resume")
        if rank == 0:
            where = f"epoch {start_epoch}" if partial is None else f"step {partial['step']} of epoch {start_epoch + 1}"
            print(f"[saol] resuming {run.path} from {where}", file=sys.stderr)
            _repair_best(run, ckpt)
    if rank == 0:
        history = _restore_metrics(run, start_epoch, history)

    show = cfg.train.progress and rank == 0
    # checkpoints inside an epoch: one process only, whose random state is all there is to save
    every_s = cfg.train.checkpoint_minutes * 60 if world == 1 else 0.0
    saved_at = time.perf_counter()

    for epoch in range(start_epoch, cfg.train.epochs):
        torch.manual_seed(_seed(cfg, epoch, rank, 0))         # dropout, ShakeDrop
        mix_gen = torch.Generator().manual_seed(_seed(cfg, epoch, rank, 1))
        meter = LossMeter()
        model.hold_backbone(epoch < cfg.train.freeze_backbone_epochs)
        model.train()
        first, images_seen, spent = 0, 0, 0.0
        if partial is not None:
            first, images_seen, spent = partial["step"], partial["images"], partial["train_time_s"]
            meter.load_state_dict(partial["meter"])
            mix_gen.set_state(partial["mix_rng"].cpu())
        t0 = time.perf_counter() - spent
        bar = tqdm(total=steps_per_epoch, initial=first, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", unit="step",
                   disable=not show, leave=False, dynamic_ncols=True)
        for step, (images, labels, _) in enumerate(data.train.epoch(epoch, first), start=first):
            if step >= steps_per_epoch:
                break
            if partial is not None:   # only now: starting a worker loader's pass draws from the global generator
                _set_rng(partial["rng"], device)
                partial = None
            meter.add(step_fn(images, labels, cutmix(images, cfg.loss.cutmix_prob, cfg.loss.cutmix_beta, mix_gen)))
            images_seen += labels.shape[0]
            if (step + 1) % CHECK_EVERY == 0 or step + 1 == steps_per_epoch:
                running = meter.running("total")
                if not math.isfinite(running):
                    raise TrainingDiverged(
                        f"loss became {running} in epoch {epoch + 1} by step {step + 1}; {_kept(run)}. Lower "
                        f"optim.lr, set optim.grad_clip, or check the data.")
                bar.set_postfix(loss=f"{running:.3f}", img_s=f"{images_seen * world / (time.perf_counter() - t0):.0f}")
            bar.update(1)
            if (every_s and step + 1 < steps_per_epoch and time.perf_counter() - saved_at >= every_s
                    and math.isfinite(meter.running("total")) and _all_finite(model)):   # never save a diverged state
                inside = {"step": step + 1, "images": images_seen, "train_time_s": time.perf_counter() - t0,
                          "meter": meter.state_dict(), "mix_rng": mix_gen.get_state(), "rng": _get_rng(device),
                          "world_size": world}
                atomic_save({**_checkpoint(model, optimizer, scheduler, epoch, state, data, history),
                             "partial": inside}, run.checkpoint)
                saved_at = time.perf_counter()
        bar.close()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_time = time.perf_counter() - t0
        if not _all_finite(model):
            raise TrainingDiverged(f"weights or BatchNorm statistics became NaN/inf in epoch {epoch + 1}; {_kept(run)}. "
                                   f"Lower optim.lr or set optim.grad_clip.")
        means = meter.means()
        row = {"epoch": epoch + 1, "lr": float(optimizer.param_groups[0]["lr"]), "train_loss": means.pop("total"),
               **{f"train_{k}": v for k, v in means.items()},
               "images_per_s": images_seen * world / train_time}
        last = epoch + 1 == cfg.train.epochs
        new_best = False
        if last or (epoch + 1) % cfg.train.eval_every == 0:
            metrics = evaluate(step_fn.forward, data.test, device, cfg.train.eval_batches, step_fn.dtype)
            row.update(metrics)
            state["last_eval"] = {"epoch": epoch + 1, **metrics}
            if state["best"] is None or _primary(metrics) > _primary(state["best"]):
                state["best"], state["best_epoch"], new_best = dict(metrics), epoch + 1, True
        state["wall_time_s"] += time.perf_counter() - t0
        state["train_time_s"] += train_time
        state["images"] += images_seen * world
        row["elapsed_s"] = state["wall_time_s"]
        if rank == 0:
            run.append_metrics(row)
            history.append(row)
            # the checkpoint first, then best.pt: a kill between them leaves a checkpoint whose own weights
            # are the best, which the resume copies into best.pt (_repair_best); never a best.pt of an epoch
            # the resume will run again
            if last or new_best or (epoch + 1) % cfg.train.checkpoint_every == 0:
                atomic_save(_checkpoint(model, optimizer, scheduler, epoch + 1, state, data, history), run.checkpoint)
                saved_at = time.perf_counter()
            if new_best:
                atomic_save(_best(model.state_dict(), epoch + 1, state["best"], data.num_classes, data.class_names),
                            run.best)
            shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
            print(f"[saol] {cfg.name} " + " ".join(f"{k}={v}" for k, v in shown.items()), flush=True)
        if world > 1:
            dist.barrier()

    final = dict(state["last_eval"])
    if cfg.wsol.enabled and rank == 0:   # scored once, in fp32, on the whole test split
        print(f"[saol] {cfg.name} scoring localization (wsol) on the test split", flush=True)
        final.update(localization_record(model, data, cfg.wsol, cfg.model, device))
        _save_figure_records(run, model, data, final, cfg)
    summary = {"name": cfg.name, "seed": cfg.seed, "finished": True, "epochs": cfg.train.epochs,
               "final": final, "best": state["best"], "best_epoch": state["best_epoch"],
               "wall_time_s": state["wall_time_s"],
               "images_per_s": state["images"] / max(state["train_time_s"], 1e-9),
               "device": str(device), "world_size": world, **step_fn.resolved(),
               "hardware": hardware_record(device), "run_dir": str(run.path)}
    summary["hardware_class"] = hardware_class(str(device), summary["hardware"], summary["amp"], torch.__version__)
    if rank == 0:
        run.write_summary(summary)
    return summary


def _save_figure_records(run: RunFolder, model: SAOLModel, data, final: dict, cfg: ExperimentConfig) -> None:
    """Fig. 5 and the boxes figure's arrays (saol_core.figrecords), so that reports redraw them from the run's
    committed files; only models with a SAOL head (and, for the boxes, a GAP-FC head for CAM)."""
    if model.saol is None:
        return
    figrecords.save(run.path / figrecords.FIG5, figrecords.fig5_record(model, data))
    if model.gap is not None and "saol_threshold" in final and "cam_threshold" in final:
        thresholds = {"saol": final["saol_threshold"], "cam": final["cam_threshold"]}
        figrecords.save(run.path / figrecords.BOXES,
                        figrecords.boxes_record(model, data, thresholds, eval_size=cfg.wsol.eval_size))


def _best(weights: dict, epoch: int, metrics: dict, num_classes: int, class_names: list[str]) -> dict:
    return {"model": weights, "epoch": epoch, "metrics": metrics, "num_classes": num_classes,
            "class_names": class_names}


def _kept(run: RunFolder) -> str:
    """What a diverged run leaves behind, for its error message."""
    if run.checkpoint.exists():
        return f"the last good checkpoint ({run.checkpoint}) is kept"
    return "no checkpoint was written yet (the run diverged before its first one)"


def _repair_best(run: RunFolder, ckpt: dict) -> None:
    """Make best.pt the checkpoint's best epoch: a kill after the checkpoint of a new best and before best.pt
    leaves the checkpoint's own weights as the best ones."""
    best_epoch = ckpt["state"].get("best_epoch")
    if best_epoch != ckpt["epoch"] or ckpt.get("partial") is not None:   # a step inside an epoch holds no epoch's weights
        return
    if run.best.exists() and load_checkpoint(run.best).get("epoch") == best_epoch:
        return
    atomic_save(_best(ckpt["model"], best_epoch, ckpt["state"]["best"], ckpt["num_classes"], ckpt["class_names"]),
                run.best)
    print(f"[saol] best.pt rewritten from the checkpoint (epoch {best_epoch}, its best)", file=sys.stderr)


def _restore_metrics(run: RunFolder, start_epoch: int, history: list[dict] | None) -> list[dict]:
    """metrics.jsonl = the rows of epochs 1..start_epoch, then what this process appends. The checkpoint's
    copy wins where the file lost rows (emptied, deleted, or left on another machine) and says so; a
    checkpoint from before the copy was kept leaves the file's rows, with a warning where epochs lack one."""
    on_file = [m for m in run.read_metrics() if m["epoch"] <= start_epoch]
    if history is None:
        missing = sorted(set(range(1, start_epoch + 1)) - {m["epoch"] for m in on_file})
        if missing:
            print(f"[saol] warning: {run.metrics} has no rows for epochs {missing} and the checkpoint keeps no copy "
                  f"(written by an older version): the curves will lack them", file=sys.stderr)
        history = on_file
    elif on_file != history:
        print(f"[saol] {run.metrics} held {len(on_file)} row(s) for epochs 1-{start_epoch}, the checkpoint "
              f"{len(history)}: restored from the checkpoint", file=sys.stderr)
    atomic_write_text(run.metrics, "".join(json.dumps(m) + "\n" for m in history))
    return list(history)


def _weights_file(path: str | Path) -> Path:
    """The weights a ``train.init_from`` names: a run folder's best.pt, or a checkpoint file."""
    path = Path(path)
    if path.is_dir():
        path = RunFolder(path).best
    if not path.exists():
        raise FileNotFoundError(f"train.init_from={path} does not exist: give a run folder or a .pt checkpoint")
    return path


def load_run(run_dir: str | Path, which: str = "last") -> tuple[SAOLModel, ExperimentConfig]:
    """Rebuild a trained model from its run folder (``which``: "last" or "best"); CPU, eval mode."""
    run = RunFolder(run_dir)
    path = {"last": run.checkpoint, "best": run.best}.get(which)
    if path is None:
        raise ValueError(f"which={which!r}; choose 'last' or 'best'")
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: train the run first (python -m saol_core.train)")
    cfg = make_config(yaml.safe_load(run.config.read_text()))
    ckpt = load_checkpoint(path)
    model = build_model(cfg.model, ckpt["num_classes"])
    model.load_state_dict(ckpt["model"])
    return model.eval(), cfg


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m saol_core.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("params", help="params YAML file (see params/), or - for the defaults")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.epochs=3")
    parser.add_argument("--no-resume", action="store_true", help="start over, discarding the checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (one line per epoch)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a reported error")
    args = parser.parse_intermixed_args(argv)  # flags may come before or after the overrides
    overrides = args.overrides + (["train.progress=false"] if args.quiet else [])
    try:
        cfg = make_config(None if args.params == "-" else args.params, overrides)
        summary = train(cfg, resume=not args.no_resume)
    except USER_ERRORS as e:
        if args.debug:
            raise
        parser.exit(2, f"error: {e}\n")
    except KeyboardInterrupt:
        parser.exit(130, "interrupted: run the same command again to resume from the last checkpoint\n")
    if int(os.environ.get("RANK", "0")) == 0:
        print(yaml.safe_dump({k: summary[k] for k in ("final", "best", "best_epoch", "wall_time_s",
                                                      "images_per_s", "run_dir")}, sort_keys=False))
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
