"""Faults a user meets: two processes on one run folder, divergence, corrupt or truncated files, killed
writes, bad configs and bad data. Each error is one line that says what to do."""
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import saol_core.runs as runs
from saol_core.config import ConfigError, DataConfig, make_config
from saol_core.data import DatasetError, build_data
from saol_core.study import ROOT
from saol_core.train import TrainingDiverged, train

from kills import Killed, kill_at_step

TINY = ["model.backbone=resnet20", "data.train_size=96", "data.test_size=32", "train.batch_size=32",
        "train.epochs=2", "train.progress=false", "train.threads=1", "optim.lr=0.05", "model.head_channels=8"]


def tiny(tmp_path, name, *extra):
    return make_config(None, [*TINY, f"out_dir={tmp_path}", f"name={name}", *extra])


def cli(*args, cwd=ROOT, timeout=300):
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------- run folders

def test_a_second_process_on_a_run_folder_is_refused_naming_the_holder(tmp_path):
    folder = runs.RunFolder(tmp_path / "r")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from saol_core.runs import RunFolder; "
                               f"r = RunFolder({str(folder.path)!r}); r.lock(); print('locked', flush=True); time.sleep(60)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(runs.RunLocked, match=f"in use by pid {holder.pid} "):
            train(tiny(tmp_path, "r"))
        out = cli("saol_core.train", "-", *TINY, f"out_dir={tmp_path}", "name=r")
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and f"pid {holder.pid}" in out.stderr
        assert not (folder.path / "metrics.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    train(tiny(tmp_path, "r"))  # the lock died with its process
    assert [m["epoch"] for m in folder.read_metrics()] == [1, 2]


@pytest.mark.parametrize("minutes", ["10", "1e-9"])   # also with a checkpoint after every finite step
def test_divergence_keeps_checkpoints_with_finite_batchnorm_statistics(tmp_path, minutes):
    with pytest.raises(TrainingDiverged, match=r"in epoch 1 ") as e:
        train(tiny(tmp_path, "div", "optim.lr=1e6", "optim.schedule=constant", "train.epochs=4",
                   "data.train_size=192", f"train.checkpoint_minutes={minutes}"))
    folder = runs.RunFolder(tmp_path / "div")
    assert ("no checkpoint was written yet" in str(e.value)) != folder.checkpoint.exists()   # the message says what is true
    from saol_core.train import _kept
    train(tiny(tmp_path, "ok", "train.epochs=1"))
    assert _kept(runs.RunFolder(tmp_path / "ok")).startswith("the last good checkpoint (")
    for path in (folder.checkpoint, folder.best):
        if path.exists():
            state = runs.load_checkpoint(path)["model"]
            assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), path


def test_a_corrupted_checkpoint_is_refused_with_how_to_start_over(tmp_path):
    cfg = tiny(tmp_path, "c", "train.epochs=1")
    train(cfg)
    folder = runs.RunFolder(tmp_path / "c")
    data = bytearray(folder.checkpoint.read_bytes())
    data[len(data) // 2] ^= 0xFF
    folder.checkpoint.write_bytes(bytes(data))
    folder.summary.unlink()  # as if it was killed before finishing
    with pytest.raises(runs.CheckpointCorrupt, match="--no-resume"):
        train(tiny(tmp_path, "c", "train.epochs=1"))
    out = cli("saol_core.train", "-", *TINY, f"out_dir={tmp_path}", "name=c", "train.epochs=1")
    assert out.returncode == 2 and out.stderr.startswith("error: ") and out.stderr.count("\n") == 1
    train(tiny(tmp_path, "c", "train.epochs=1"), resume=False)  # --no-resume starts over


def test_metrics_written_before_the_first_checkpoint_are_cleared_on_restart(tmp_path):
    folder = runs.RunFolder(tmp_path / "m")
    folder.path.mkdir()
    for epoch in (1, 2):  # a run killed after logging two epochs, before its first checkpoint
        folder.append_metrics({"epoch": epoch})
    train(tiny(tmp_path, "m", "train.checkpoint_every=3", "train.epochs=3"))
    assert [m["epoch"] for m in folder.read_metrics()] == [1, 2, 3]


def test_a_folder_without_progress_takes_a_corrected_config_and_a_finished_run_is_left_alone(tmp_path):
    with pytest.raises(ConfigError, match="unknown backbone"):
        train(tiny(tmp_path, "f", "model.backbone=resnet21"))
    assert not (tmp_path / "f").exists()  # nothing written before the config proved buildable
    folder = runs.RunFolder(tmp_path / "f")
    folder.path.mkdir()
    folder.config.write_text(yaml.safe_dump(tiny(tmp_path, "f", "optim.lr=0.3").to_dict()))
    summary = train(tiny(tmp_path, "f"))  # no checkpoint there: the corrected config is taken
    env = folder.environment.read_text()
    assert oct(folder.summary.stat().st_mode & 0o777) != "0o600"  # ordinary permissions
    assert train(tiny(tmp_path, "f")) == summary and folder.environment.read_text() == env  # not reopened


def test_leftover_temp_files_are_removed_on_start(tmp_path):
    folder = runs.RunFolder(tmp_path / "t")
    folder.path.mkdir()
    (folder.path / ".checkpoint.pt.abc.tmp").write_bytes(b"half")
    train(tiny(tmp_path, "t", "train.epochs=1"))
    assert not list(folder.path.glob(".*.tmp"))


def test_a_full_disk_during_a_checkpoint_gives_the_projects_message(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    runs.atomic_save({"epoch": 1}, path)
    real_open = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, b):
            self.f.write(b[:10])
            raise OSError(28, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()
    monkeypatch.setattr(runs.os, "fdopen", lambda fd, mode: Full(real_open(fd, mode)))
    with pytest.raises(runs.RunWriteError, match="No space left.*previous version is intact"):
        runs.atomic_save({"epoch": 2, "w": torch.zeros(10_000)}, path)
    monkeypatch.undo()
    assert runs.load_checkpoint(path)["epoch"] == 1 and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


KILLER = """
import os, random, signal, sys
import saol_core.runs as runs
import saol_core.step as step
random.seed(int(sys.argv[1]))
where, n = sys.argv[2], int(sys.argv[3])
calls = {"n": 0}
def maybe_die():
    calls["n"] += 1
    if calls["n"] == n:
        os.kill(os.getpid(), signal.SIGKILL)
if where == "write":       # in the middle of an atomic write: temp file half written, not renamed
    real = runs._atomic
    def dying(path, write, mode):
        def half(f):
            f.write(b"x" * 100 if "b" in mode else "x" * 100)
            maybe_die()
            f.seek(0)
            f.truncate()
            write(f)
        real(path, half, mode)
    runs._atomic = dying
else:                      # in the middle of a training step
    real = step.compute_losses
    def dying(*a, **k):
        maybe_die()
        return real(*a, **k)
    step.compute_losses = dying
from saol_core.train import main
main(sys.argv[4:])
"""


@pytest.mark.slow
# checkpoints at epoch ends; or after every step as well (each kill then loses less: more epochs to kill in)
@pytest.mark.parametrize("minutes, epochs", [("10", 3), ("1e-9", 6)])
def test_random_kills_including_during_writes_resume_bit_identical(tmp_path, minutes, epochs):
    """SIGKILL at random moments (mid-step, mid checkpoint/metrics/summary write), then the same command
    until it finishes: weights and metrics equal an uninterrupted run's."""
    args = ["-", *TINY, f"train.checkpoint_minutes={minutes}", f"train.epochs={epochs}", "data.train_size=128", "model.heads=saol+gap", "model.mask_head=true",
            "loss.cutmix_prob=0.5", "loss.w_ss1=1", "loss.w_ss2=1", f"out_dir={tmp_path}", "--quiet"]
    assert cli("saol_core.train", *args, "name=straight").returncode == 0
    rng = random.Random(0)
    kills = 0
    for attempt in range(12):
        where = rng.choice(["write", "step"])
        n = rng.randint(1, 6 if where == "write" else 12)
        out = subprocess.run([sys.executable, "-c", KILLER, str(attempt), where, str(n), *args, "name=killed"],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
        if out.returncode == 0:
            break
        assert out.returncode == -signal.SIGKILL, out.stderr[-2000:]
        kills += 1
    else:
        assert cli("saol_core.train", *args, "name=killed").returncode == 0
    assert kills >= 3
    a, b = runs.RunFolder(tmp_path / "straight"), runs.RunFolder(tmp_path / "killed")
    wa, wb = runs.load_checkpoint(a.checkpoint)["model"], runs.load_checkpoint(b.checkpoint)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("images_per_s", "elapsed_s")} for r in rows]
    assert strip(a.read_metrics()) == strip(b.read_metrics())
    assert not list(b.path.glob(".*.tmp"))


@pytest.mark.parametrize("data", ["resident", "streamed"])
def test_a_kill_inside_an_epoch_resumes_from_its_last_step_bit_identical(tmp_path, monkeypatch, capsys, data):
    """With a checkpoint after every step (checkpoint_minutes ~ 0), a kill in epoch 2 resumes from the step
    before it, not from the epoch's start, and weights, metrics and best.pt equal an uninterrupted run's.
    ShakeDrop draws from the global generator, CutMix from its own and a worker loader's pass from the global
    one again: all of them must come back."""
    extra = ["model.backbone=pyramidnet11_24", "model.shakedrop=0.5", "model.heads=saol+gap", "loss.cutmix_prob=0.5",
             "loss.w_ss2=1", "train.eval_every=1"]
    if data == "streamed":   # 12 training images in batches of 4: 3 steps per epoch, as the resident 96 in 32s
        extra += [f"data.root={folder_dataset(tmp_path / 'ds')}", "data.dataset=folder", "data.device_resident=false",
                  "data.workers=2", "train.batch_size=4", f"data.cache_dir={tmp_path / 'cache'}"]
    train(tiny(tmp_path, "straight", *extra))
    cfg = tiny(tmp_path, "killed", *extra, "train.checkpoint_minutes=1e-9")
    kill_at_step(monkeypatch, 5)   # epoch 2's second step
    with pytest.raises(Killed):
        train(cfg)
    monkeypatch.undo()
    a, b = runs.RunFolder(tmp_path / "straight"), runs.RunFolder(tmp_path / "killed")
    ckpt = runs.load_checkpoint(b.checkpoint)
    assert ckpt["epoch"] == 1 and ckpt["partial"]["step"] == 1
    train(cfg)
    assert f"resuming {b.path} from step 1 of epoch 2" in capsys.readouterr().err
    for name in ("checkpoint", "best"):
        wa, wb = (runs.load_checkpoint(getattr(f, name))["model"] for f in (a, b))
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("images_per_s", "elapsed_s")} for r in rows]
    assert strip(a.read_metrics()) == strip(b.read_metrics())
    assert "partial" not in runs.load_checkpoint(b.checkpoint)


def test_a_checkpoint_from_inside_an_epoch_is_refused_by_another_number_of_processes(tmp_path, monkeypatch):
    cfg = tiny(tmp_path, "w", "train.checkpoint_minutes=1e-9", "train.epochs=1")
    kill_at_step(monkeypatch, 2)
    with pytest.raises(Killed):
        train(cfg)
    folder = runs.RunFolder(tmp_path / "w")
    ckpt = runs.load_checkpoint(folder.checkpoint)
    runs.atomic_save({**ckpt, "partial": {**ckpt["partial"], "world_size": 2}}, folder.checkpoint)
    with pytest.raises(ConfigError, match="written inside epoch 1 by a run of 2 process"):
        train(cfg)


# ---------------------------------------------------------------- configs

@pytest.mark.parametrize("override, message", [
    ("train.eval_every=0", "train.eval_every must be >= 1"),
    ("train.checkpoint_every=0", "train.checkpoint_every must be >= 1"),
    ("train.eval_batches=0", "train.eval_batches must be >= 1"),
    ("data.test_size=0", "data.test_size must be >= 1"),
    ("train.max_steps=0", "train.max_steps must be >= 1"),
    ("train.max_steps=-1", "train.max_steps must be >= 1"),
    ("train.device=gpu", "train.device='gpu' is not valid"),
])
def test_values_that_failed_after_training_are_refused_up_front(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        make_config(None, [override])


def test_yaml_readings_that_surprised_users():
    cfg = make_config(None, ["optim.lr=1e-3", "train.amp=off", "optim.weight_decay=5e-4"])
    assert (cfg.optim.lr, cfg.train.amp, cfg.optim.weight_decay) == (0.001, "off", 0.0005)


def test_extends_cycles_empty_files_and_scalar_sections(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    (tmp_path / "self.yaml").write_text("extends: self.yaml\n")
    for name in ("a", "self"):
        with pytest.raises(ConfigError, match="cycle"):
            make_config(tmp_path / f"{name}.yaml")
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match="is empty"):
        make_config(tmp_path / "empty.yaml")
    (tmp_path / "scalar.yaml").write_text("model: resnet20\n")
    for overrides in ([], ["model.heads=gap"]):
        with pytest.raises(ConfigError, match="model must be a mapping"):
            make_config(tmp_path / "scalar.yaml", overrides)


def test_cli_errors_are_one_line_and_debug_shows_the_traceback(tmp_path):
    out = cli("saol_core.train", "-", "train.eval_every=0", f"out_dir={tmp_path}")
    assert out.returncode == 2 and out.stderr == "error: train.eval_every must be >= 1 (the last epoch is always evaluated)\n"
    out = cli("saol_core.train", "-", "data.dataset=cub", "data.root=/nonexistent/cub", f"out_dir={tmp_path}")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "/nonexistent/cub" in out.stderr
    out = cli("saol_core.train", "-", "train.eval_every=0", "--debug")
    assert out.returncode == 1 and "Traceback" in out.stderr
    out = cli("saol_core.study", str(tmp_path / "missing.yaml"))
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "does not exist" in out.stderr


# ---------------------------------------------------------------- data

def folder_dataset(root: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for k in range(n):
                Image.fromarray(rng.integers(0, 255, (16, 16, 3), np.uint8)).save(root / split / cls / f"{k}.png")
    return root


def test_a_tar_cut_at_a_member_boundary_is_refused(tmp_path):
    root = folder_dataset(tmp_path / "ds")
    archive = tmp_path / "ds.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(root, arcname="ds")
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
    cut = members[len(members) - 3].offset  # the start of a member's header: a clean boundary
    (tmp_path / "cut.tar").write_bytes(archive.read_bytes()[:cut])
    with pytest.raises(DatasetError, match="truncated"):
        build_data(DataConfig(dataset="folder", root=str(tmp_path / "cut.tar"), image_size=16,
                              cache_dir=str(tmp_path / "cache")), seed=0, batch_size=4)
    assert not [p for p in (tmp_path / "cache/unpacked").iterdir()]  # nothing half-unpacked is cached
    b = build_data(DataConfig(dataset="folder", root=str(archive), image_size=16, cache_dir=str(tmp_path / "cache")),
                   seed=0, batch_size=4)
    assert b.train.size == 12


def test_half_unpacked_folders_of_dead_processes_are_removed(tmp_path):
    root = folder_dataset(tmp_path / "ds")
    archive = tmp_path / "ds.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="ds")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    leftover = tmp_path / "cache/unpacked" / f".ds-{dead}-abc123"
    leftover.mkdir(parents=True)
    build_data(DataConfig(dataset="folder", root=str(archive), image_size=16, cache_dir=str(tmp_path / "cache")),
               seed=0, batch_size=4)
    assert not leftover.exists()


def test_bad_images_are_reported_all_at_once_before_training(tmp_path):
    root = folder_dataset(tmp_path / "ds")
    bad = [root / "train/a/1.png", root / "train/b/4.png", root / "test/a/0.png"]
    for path in bad:
        path.write_bytes(b"not an image")
    for resident in (True, False):
        with pytest.raises(DatasetError, match="3 unreadable image file") as e:
            build_data(DataConfig(dataset="folder", root=str(root), image_size=16, device_resident=resident,
                                  workers=0, cache_dir=str(tmp_path / f"c{resident}")), seed=0, batch_size=4)
        assert all(str(p) in str(e.value) for p in bad)


def cub_with_box(tmp_path: Path, index: int, line: str) -> tuple[Path, Path]:
    """A small CUB folder whose bounding_boxes.txt has ``line`` at 0-based ``index``; (root, box file)."""
    from test_data import write_cub
    root = tmp_path / "cub"
    write_cub(root, np.random.default_rng(0))
    meta = root / "bounding_boxes.txt"
    lines = meta.read_text().splitlines()
    lines[index] = line
    meta.write_text("\n".join(lines) + "\n")
    return root, meta


@pytest.mark.parametrize("layout", ["cub", "wsol"])
def test_inverted_boxes_and_bad_numbers_name_file_and_line(tmp_path, layout):
    if layout == "cub":
        root, meta = cub_with_box(tmp_path, 2, "3 10 6 -20 15")
        expected = [f"{meta} line 3: inverted box"]
        bad_number = (root / "image_class_labels.txt", "2 three", "line 2: expected 1 integer")
    else:
        root = tmp_path / "wsol"
        folder_dataset(root / "img", n=1)
        for split, ids in (("train", ["img/train/a/0.png", "img/train/b/0.png"]),
                           ("test", ["img/test/a/0.png", "img/test/b/0.png"])):
            meta_dir = root / "metadata" / split
            meta_dir.mkdir(parents=True)
            (meta_dir / "image_ids.txt").write_text("".join(f"{i}\n" for i in ids))
            (meta_dir / "class_labels.txt").write_text("".join(f"{i},{k}\n" for k, i in enumerate(ids)))
        meta = root / "metadata/test/localization.txt"
        meta.write_text("img/test/a/0.png,1,1,8,8\nimg/test/b/0.png,9,1,4,8\n")
        expected = [f"{meta} line 2: inverted box"]
        bad_number = (root / "metadata/train/class_labels.txt", "img/train/a/0.png,x", "line 1: expected 1 integer")
    cfg = DataConfig(dataset=layout, root=str(root), image_size=16, workers=0, device_resident=False,
                     cache_dir=str(tmp_path / "c"))
    with pytest.raises(DatasetError, match=expected[0].replace("/", ".")):
        build_data(cfg, seed=0, batch_size=1)
    path, line, message = bad_number
    rows = path.read_text().splitlines()
    rows[int(message.split()[1].rstrip(":")) - 1] = line
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DatasetError, match=message):
        build_data(cfg, seed=0, batch_size=1)


def test_default_threads_leave_busy_cores_alone(monkeypatch):
    from saol_core import train as train_mod
    monkeypatch.setattr(train_mod.os, "cpu_count", lambda: 8)
    for load, expected in ((0.2, 8), (2.6, 5), (7.9, 1), (30.0, 1)):
        monkeypatch.setattr(train_mod.os, "getloadavg", lambda load=load: (load, load, load))
        assert train_mod.default_threads(8) == expected
    monkeypatch.setattr(train_mod.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert train_mod.default_threads(4) == 4   # never more than torch's own default


# ---------------------------------------------------------------- Reliability II

def test_a_nan_in_a_box_file_names_file_and_line(tmp_path):
    root, meta = cub_with_box(tmp_path, 0, "1 30.7 13.8 nan 15.6")
    with pytest.raises(DatasetError, match=f"{meta} line 1: non-finite number".replace("/", ".")):
        build_data(DataConfig(dataset="cub", root=str(root), image_size=16, workers=0, device_resident=False,
                              cache_dir=str(tmp_path / "c")), seed=0, batch_size=1)


@pytest.mark.parametrize("workers", [0, 1])
def test_truncated_jpegs_of_a_streamed_dataset_are_listed_in_one_line(tmp_path, workers):
    from test_data import write_cub
    root = tmp_path / "cub"
    write_cub(root, np.random.default_rng(0))
    bad = [root / "images/003.c/x2.jpg", root / "images/005.e/x3.jpg"]   # both training images
    for path in bad:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 2 // 3])   # the header survives: the pre-training check passes
    data = build_data(DataConfig(dataset="cub", root=str(root), image_size=16, workers=workers,
                                 device_resident=False, cache_dir=str(tmp_path / "c")), seed=0, batch_size=1)
    with pytest.raises(DatasetError) as e:
        list(data.train.epoch(0))
    message = str(e.value)
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith("2 unreadable image file(s)") and all(str(p) in message for p in bad)


def test_a_run_folder_that_cannot_be_written_is_one_line(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    out = cli("saol_core.train", "-", *TINY, f"out_dir={tmp_path / 'file' / 'runs'}", "name=r")
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("error: cannot write in the run folder") and "out_dir" in out.stderr


@pytest.mark.parametrize("override, message", [
    ("optim.momentum=-1", "optim.momentum must be in [0, 1)"),
    ("train.threads=-2", "train.threads must be >= 1"),
    ("data.workers=-1", "data.workers must be >= 0"),
    ("optim.weight_decay=-0.1", "optim.weight_decay must be >= 0"),
    ("loss.w_ss2=-1", "loss weights"),
])
def test_more_values_are_refused_before_the_run_folder_exists(tmp_path, override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        train(tiny(tmp_path, "v", override))
    assert not (tmp_path / "v").exists()


def test_a_params_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("source: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=f"params file {path} is not UTF-8".replace("/", ".")):
        make_config(path)


def test_a_corrupt_summary_names_the_file_in_one_line(tmp_path):
    train(tiny(tmp_path, "s", "train.epochs=1"))
    summary = tmp_path / "s/summary.json"
    summary.write_text('{"finished": tru')
    with pytest.raises(runs.RecordCorrupt, match=f"{summary} is not valid JSON".replace("/", ".")):
        train(tiny(tmp_path, "s", "train.epochs=1"))
    out = cli("saol_core.train", "-", *TINY, "train.epochs=1", f"out_dir={tmp_path}", "name=s")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and str(summary) in out.stderr


def test_weights_of_another_model_size_are_refused_in_one_line(tmp_path):
    train(tiny(tmp_path, "small", "train.epochs=1"))
    with pytest.raises(ConfigError, match=r"small.best.pt holds weights of another model .*train.init_from"):
        train(tiny(tmp_path, "wide", "train.epochs=1", "model.head_channels=16", f"train.init_from={tmp_path / 'small'}"))
    (tmp_path / "copied").mkdir()   # a checkpoint copied into a folder of another model
    (tmp_path / "copied/checkpoint.pt").write_bytes((tmp_path / "small/checkpoint.pt").read_bytes())
    out = cli("saol_core.train", "-", *TINY, "train.epochs=1", "model.head_channels=16", f"out_dir={tmp_path}",
              "name=copied")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "--no-resume" in out.stderr
    assert "copied/checkpoint.pt holds weights of another model" in out.stderr


def test_resuming_on_other_data_is_refused(tmp_path, capsys):
    small, large = folder_dataset(tmp_path / "small"), folder_dataset(tmp_path / "large", n=8)
    common = [*TINY, "data.dataset=folder", "data.image_size=16", "data.device_resident=true",
              f"data.cache_dir={tmp_path / 'cache'}", "train.batch_size=4"]
    cfg = make_config(None, [*common, f"data.root={small}", f"out_dir={tmp_path}", "name=d"])
    train(cfg)
    (tmp_path / "d/summary.json").unlink()   # as if killed before the summary: a resumable run
    other = make_config(None, [*common, f"data.root={large}", f"out_dir={tmp_path}", "name=d"])
    with pytest.raises(ConfigError, match="was trained on 12 training images of 2 classes, but this data gives 16 of 2"):
        train(other)
    assert yaml.safe_load((tmp_path / "d/config.yaml").read_text())["data"]["root"] == str(small)  # untouched
    moved = tmp_path / "moved"
    shutil.copytree(small, moved)   # the same data elsewhere (another machine, say): resumes, and says so
    train(make_config(None, [*common, f"data.root={moved}", f"out_dir={tmp_path}", "name=d"]))
    assert f"was trained with data.root={small}, resuming with data.root={moved}" in capsys.readouterr().err


def test_the_checkpoint_restores_a_lost_metrics_history_and_best_pt(tmp_path, capsys):
    cfg = tiny(tmp_path, "h", "train.eval_every=1")
    train(cfg)
    folder = runs.RunFolder(tmp_path / "h")
    rows = folder.read_metrics()
    ckpt = runs.load_checkpoint(folder.checkpoint)
    assert ckpt["metrics"] == rows and [m["epoch"] for m in rows] == [1, 2]
    assert ckpt["state"]["best_epoch"] == 2, "this test needs epoch 2 to be the best"
    # killed after the epoch-2 checkpoint, before its best.pt; the metrics file emptied (or left elsewhere)
    runs.atomic_save({**runs.load_checkpoint(folder.best), "epoch": 1}, folder.best)
    folder.metrics.write_text("")
    folder.summary.unlink()
    train(cfg)
    err = capsys.readouterr().err
    assert folder.read_metrics() == rows and "held 0 row(s) for epochs 1-2, the checkpoint 2: restored" in err
    best = runs.load_checkpoint(folder.best)
    assert best["epoch"] == 2 and all(torch.equal(best["model"][k], ckpt["model"][k]) for k in ckpt["model"])
    assert "best.pt rewritten from the checkpoint (epoch 2" in err


def test_caches_follow_the_umask(tmp_path):
    root = folder_dataset(tmp_path / "ds")
    archive = tmp_path / "ds.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="ds")
    build_data(DataConfig(dataset="folder", root=str(archive), image_size=16, device_resident=True,
                          cache_dir=str(tmp_path / "cache")), seed=0, batch_size=4)
    unpacked = next((tmp_path / "cache/unpacked").iterdir())
    decoded = next((tmp_path / "cache/decoded").iterdir())
    assert unpacked.stat().st_mode & 0o777 == 0o777 & ~runs.UMASK
    assert decoded.stat().st_mode & 0o777 == 0o666 & ~runs.UMASK


def test_the_record_names_the_command_as_typed_not_this_machines_paths(tmp_path):
    out = cli("saol_core.train", "-", *TINY, "train.epochs=1", f"out_dir={tmp_path}", "name=cmd", "--quiet")
    assert out.returncode == 0, out.stderr
    command = json.loads((tmp_path / "cmd/environment.json").read_text())["command"]
    assert command.startswith("python -m saol_core.train - model.backbone=resnet20") and str(ROOT) not in command
