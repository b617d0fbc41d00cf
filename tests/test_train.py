"""The training loop: exact resume after a kill (eager and compiled), NaN stop, atomic run files, schedules,
torchrun."""
import functools
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import saol_core.runs as runs
import saol_core.step as step_mod
from saol_core.config import OptimConfig, make_config
from saol_core.step import lr_factor
from saol_core.train import TrainingDiverged, load_run, train
from saol_core.train import main as train_main

from kills import Killed, kill_at_step

TINY = ["model.backbone=resnet20", "data.train_size=192", "data.test_size=64", "train.batch_size=32",
        "train.epochs=3", "train.progress=false", "train.threads=2", "optim.lr=0.05"]
FULL_RECIPE = ["model.heads=saol+gap", "model.mask_head=true", "loss.cutmix_prob=0.5",
               "loss.w_ss1=1", "loss.w_ss2=1"]
TIMING_KEYS = {"images_per_s", "elapsed_s"}


def _cfg(tmp_path, name, *extra):
    return make_config(None, [*TINY, *FULL_RECIPE, f"out_dir={tmp_path}", f"name={name}", *extra])


def _metrics(run_dir):
    rows = [json.loads(l) for l in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_resume_after_kill_is_bit_exact(tmp_path, monkeypatch, compiled):
    """Also with train.compile (aot_eager here: the same graphs as inductor's less the code generation, in
    seconds; the generated code itself is the next test's): the compiled SGD step's lr tensors and momenta
    come back from the checkpoint."""
    extra = []
    if compiled:
        monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
        extra = ["train.compile=true"]
    summary = train(_cfg(tmp_path, "straight", *extra))
    steps_per_epoch = 192 // 32
    with monkeypatch.context() as m:
        kill_at_step(m, steps_per_epoch + 3)                  # dies inside epoch 2
        with pytest.raises(Killed):
            train(_cfg(tmp_path, "killed", *extra))
    assert runs.load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["epoch"] == 1
    resumed = train(_cfg(tmp_path, "killed", *extra))        # the same command again
    a = load_run(tmp_path / "straight")[0].state_dict()
    b = load_run(tmp_path / "killed")[0].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _metrics(tmp_path / "straight") == _metrics(tmp_path / "killed")
    assert summary["final"] == resumed["final"] and summary["best"] == resumed["best"]
    assert [r["epoch"] for r in _metrics(tmp_path / "killed")] == [1, 2, 3]


@pytest.mark.skipif(shutil.which("g++") is None, reason="inductor's CPU code generation needs a C++ compiler (g++)")
def test_an_inductor_compiled_cpu_run_resumes_bit_exact(tmp_path, monkeypatch):
    """The code the CPU studies run with train.compile (inductor's generated C++, bf16 autocast, one thread):
    killed inside epoch 2 and resumed from the checkpoint of the step before, it ends with the weights and
    metrics of the run that was not killed, so compiled runs are deterministic and resume exactly as eager
    ones do."""
    extra = ["train.compile=true", "train.amp=bf16", "train.threads=1", "train.epochs=2", "data.train_size=128",
             "train.checkpoint_minutes=1e-9", f"data.cache_dir={tmp_path / 'cache'}"]
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    summary = train(_cfg(tmp_path, "straight", *extra))
    with monkeypatch.context() as m:
        kill_at_step(m, 128 // 32 + 2)
        with pytest.raises(Killed):
            train(_cfg(tmp_path, "killed", *extra))
    assert runs.load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["partial"]["step"] == 1
    resumed = train(_cfg(tmp_path, "killed", *extra))
    a, b = (load_run(tmp_path / name)[0].state_dict() for name in ("straight", "killed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _metrics(tmp_path / "straight") == _metrics(tmp_path / "killed")
    assert summary["final"] == resumed["final"] and summary["compile"] is True


def test_run_folder_records_how_it_was_made(tmp_path):
    train(_cfg(tmp_path, "rec", "train.epochs=1"))
    run = tmp_path / "rec"
    env = json.loads((run / "environment.json").read_text())
    assert env["versions"]["torch"] == torch.__version__ and env["git_sha"] and env["hardware"]["cpu"]
    saved = make_config(str(run / "config.yaml"))
    assert saved.model.heads == "saol+gap" and saved.loss.w_ss2 == 1.0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["finished"] and set(summary["final"]) == {"epoch", "saol_top1", "saol_top5", "gap_top1", "gap_top5"}
    assert 0 <= summary["final"]["saol_top1"] <= summary["final"]["saol_top5"] <= 100
    model, _ = load_run(run, "best")
    assert not model.training


def test_changed_config_in_the_same_folder_is_refused(tmp_path):
    train(_cfg(tmp_path, "same", "train.epochs=1"))
    with pytest.raises(ValueError, match="optim.lr"):
        train(_cfg(tmp_path, "same", "train.epochs=1", "optim.lr=0.2"))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, "nan")
    real, calls = step_mod.compute_losses, {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        losses = real(*args, **kwargs)
        if calls["n"] > 192 // 32:                           # every step of epoch 2
            losses["total"] = losses["total"] * float("nan")
        return losses
    monkeypatch.setattr(step_mod, "compute_losses", poisoned)
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        train(cfg)
    ckpt = runs.load_checkpoint(tmp_path / "nan" / "checkpoint.pt")
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_full_disk_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    runs.atomic_save({"epoch": 1}, path)

    def no_space(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(runs.os, "fsync", no_space)  # the file system reports the full disk on flush
    with pytest.raises(runs.RunWriteError, match="No space left on device.*previous version is intact"):
        runs.atomic_save({"epoch": 2, "w": torch.zeros(1000)}, path)
    monkeypatch.undo()
    assert runs.load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]   # no temp file left behind


def test_lr_schedules():
    cos = OptimConfig(schedule="cosine", warmup_epochs=1)
    assert [lr_factor(s, 100, 10, cos) for s in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert lr_factor(10, 100, 10, cos) == 1.0
    assert math.isclose(lr_factor(55, 100, 10, cos), 0.5)            # half-way through the cosine
    assert lr_factor(99, 100, 10, cos) == pytest.approx(0.5 * (1 + math.cos(math.pi * 89 / 90)))
    step = OptimConfig(schedule="multistep", milestones=[150, 225], gamma=0.1)   # ABN: x0.1 at 150, 225
    assert [lr_factor(e * 10, 3000, 10, step) for e in (149, 150, 224, 225)] == pytest.approx([1, .1, .1, .01])
    frac = OptimConfig(schedule="multistep", milestones=[0.5, 0.75])
    assert [lr_factor(s, 100, 10, frac) for s in (49, 50, 75)] == pytest.approx([1, .1, .01])


@pytest.mark.slow
def test_torchrun_two_processes_match_the_global_batch(tmp_path):
    """DDP (gloo on CPU): 2 ranks x 16 images train and evaluate the same set as one 32-image process."""
    args = [*TINY, "train.epochs=1", "train.threads=1", f"out_dir={tmp_path}", "name=ddp"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           "-m", "saol_core.train", "-", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["finished"]
    assert 0 <= summary["final"]["saol_top1"] <= 100


def test_cli_takes_flags_before_or_after_the_overrides(capsys):
    for argv in (["-", "--quiet", "--no-resume", "train.epochs=0"], ["-", "train.epochs=0", "--quiet"]):
        with pytest.raises(SystemExit) as stop:
            train_main(argv)
        assert stop.value.code == 2 and "train.epochs must be >= 1" in capsys.readouterr().err


def test_head_lr_mult_steps_heads_and_backbone_at_their_own_lr():
    """One SGD step (no momentum, no decay) with optim.head_lr_mult=10: every backbone weight moves by
    -lr * grad, every head weight by -10 * lr * grad (computed by hand from the same gradients)."""
    from saol_core.config import make_config
    from saol_core.model import build_model
    from saol_core.step import make_optimizer
    cfg = make_config(None, ["optim.lr=0.01", "optim.head_lr_mult=10", "optim.momentum=0", "optim.nesterov=false",
                             "optim.weight_decay=0", "model.head_channels=8"])
    torch.manual_seed(0)
    model = build_model(cfg.model, 10)
    optimizer, scheduler = make_optimizer(cfg, model, 10, 100)
    out = model(torch.randn(4, 3, 32, 32))
    (out.saol_log_probs.sum() + out.gap_logits.sum()).backward()
    before = {n: (p.detach().clone(), p.grad.clone()) for n, p in model.named_parameters()}
    optimizer.step()
    assert [g["lr"] for g in optimizer.param_groups] == [0.01, pytest.approx(0.1)]
    for name, p in model.named_parameters():
        w, g = before[name]
        lr = 0.01 if name.startswith("backbone.") else 0.1
        torch.testing.assert_close(p.detach(), w - lr * g, msg=name)
    assert len(make_optimizer(make_config(None, []), model, 10, 100)[0].param_groups) == 1


def test_freeze_backbone_epochs_train_the_heads_alone_first(tmp_path, monkeypatch):
    """train.freeze_backbone_epochs=1 of 2: after epoch 1 the backbone (weights and BN statistics) is as
    built, the heads have moved; epoch 2 fine-tunes the backbone too."""
    import saol_core.train as train_mod
    built, states = {}, []
    real_build = train_mod.build_model

    def build(*args, **kwargs):
        built["model"] = real_build(*args, **kwargs)
        built["start"] = {k: v.clone() for k, v in built["model"].state_dict().items()}
        return built["model"]
    monkeypatch.setattr(train_mod, "build_model", build)
    real_append = runs.RunFolder.append_metrics

    def append(self, row):
        states.append({k: v.detach().cpu().clone() for k, v in built["model"].state_dict().items()})
        return real_append(self, row)
    monkeypatch.setattr(runs.RunFolder, "append_metrics", append)
    train(_cfg(tmp_path, "frozen", "train.epochs=2", "train.freeze_backbone_epochs=1"))
    start, (first, second) = built["start"], states
    backbone = [k for k in start if k.startswith("backbone.") and start[k].is_floating_point()]
    assert all(torch.equal(first[k], start[k]) for k in backbone)
    assert any(not torch.equal(first[k], start[k]) for k in start if k.startswith("saol."))
    assert any(not torch.equal(second[k], first[k]) for k in backbone)
    assert all(p.requires_grad for p in built["model"].backbone.parameters()) is True
    with pytest.raises(ValueError, match="freeze_backbone_epochs must be >= 0"):
        make_config(None, [*TINY, "train.freeze_backbone_epochs=-1"])
