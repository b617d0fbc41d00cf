"""Run folders: resolved config, environment record, metrics log and atomic, checksummed checkpoints.

A run folder is the unit of reproducibility: `config.yaml` + `environment.json` say how a result was
made; `metrics.jsonl` and `summary.json` say what it was. Files are replaced atomically (temp file +
fsync + rename) so a run killed at any moment, or a full disk, never leaves a torn checkpoint or report;
checkpoints end with a SHA-256 of their bytes, checked before a resume; one process at a time holds a
folder (an advisory lock on `.lock`, released by the kernel when the process dies).
"""
from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from .config import RETIRED, ConfigError, ExperimentConfig, flatten


class RunWriteError(OSError):
    """Writing a run file failed (e.g. disk full); the previous version of the file is intact."""

    def __str__(self) -> str:  # the message alone, without OSError's "[Errno n]" prefix
        return self.strerror or super().__str__()


class RunLocked(RuntimeError):
    """Another process is training in this run folder."""


class CheckpointCorrupt(RuntimeError):
    """A checkpoint's bytes do not match the checksum written with them."""


class RecordCorrupt(RuntimeError):
    """A run record (summary.json, environment.json) that cannot be parsed."""


def read_json(path: str | Path) -> Any:
    """A JSON run record; RecordCorrupt naming the file (and what to do) when it cannot be parsed."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RecordCorrupt(f"{path} is not valid JSON ({e}); restore it (e.g. git checkout -- {path}) or delete "
                            f"the run folder {path.parent} to run it again") from None


_CHECKSUM_TAG = b"SAOLSHA2"  # trailer: tag + SHA-256 of everything before it
UMASK = os.umask(0)  # read once at import (setting it is the only way to read it); files we create honour it
os.umask(UMASK)


def _atomic(path: Path, write: Callable[[Any], None], mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600; run files are ordinary files
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise RunWriteError(e.errno, f"could not write {path} ({e.strerror or e}); the previous "
                                f"version is intact. Free disk space or choose another out_dir.") from e
        raise


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save + a SHA-256 trailer, written to a temp file in the same folder, then renamed over ``path``.
    Serialized in memory first, so a full disk fails in the write (a RunWriteError), not inside torch."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payload = buffer.getvalue()
    _atomic(Path(path), lambda f: f.write(payload + _CHECKSUM_TAG + hashlib.sha256(payload).digest()), "wb")


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> Any:
    """Load a file written by ``atomic_save`` after checking its checksum (files without one, from older
    versions, load as they are). Raises CheckpointCorrupt."""
    path = Path(path)
    data = path.read_bytes()
    payload, tag, digest = data[:-40], data[-40:-32], data[-32:]
    if tag == _CHECKSUM_TAG:
        if hashlib.sha256(payload).digest() != digest:
            raise CheckpointCorrupt(f"{path} is corrupt (its bytes do not match the checksum written with "
                                    f"them); delete it, or rerun with --no-resume to start over")
    else:
        payload = data
    try:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=False)
    except Exception as e:  # torch's unpickling / zip errors have many types
        raise CheckpointCorrupt(f"{path} cannot be read ({type(e).__name__}: {e}); delete it, or rerun "
                                f"with --no-resume to start over") from None


def atomic_write_text(path: str | Path, text: str) -> None:
    _atomic(Path(path), lambda f: f.write(text), "w")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    _atomic(Path(path), lambda f: f.write(data), "wb")


def _git_sha() -> str:
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha + ("-dirty" if dirty else "")) if sha else "unknown"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_record(device: torch.device | str | None = None) -> dict:
    """What the numbers were measured on: CPU, the vector instructions torch uses on it (AVX2, AVX512, ...:
    the same CPU name covers machines that differ several-fold), thread count, GPU name if any."""
    from .step import native_bf16
    rec = {"cpu": _cpu_name(), "cpu_count": os.cpu_count(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "cpu_native_bf16": native_bf16(torch.device("cpu")), "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        rec["gpu"] = torch.cuda.get_device_name(device if device is not None and
                                                torch.device(device).type == "cuda" else None)
        rec["gpu_count"] = torch.cuda.device_count()
    return rec


def hardware_class(device: str | None, hardware: dict | None, amp: str | None, torch_version: str | None) -> str | None:
    """The class a run's numbers belong to: device type, the GPU model (or, on a CPU, the vector ISA torch
    computes with), precision and torch's major.minor, e.g. "cpu AVX512 · bfloat16 · torch 2.13" or
    "cuda NVIDIA H200 · bfloat16 · torch 2.11". Runs of one study are paired only within a class. None
    where the record lacks a part (older CPU records kept no ISA): such a run pairs with none."""
    if not (device and hardware and amp and torch_version):
        return None
    kind = str(device).split(":")[0]
    chip = hardware.get("gpu") if kind == "cuda" else hardware.get("cpu_capability") if kind == "cpu" else kind
    if not chip:
        return None
    if kind == "cpu" and amp == "bfloat16" and hardware.get("cpu_native_bf16") is False:
        chip += " (bf16 emulated)"  # records before this field was kept do not say
    return f"{kind} {chip} · {amp} · torch {'.'.join(torch_version.split('+')[0].split('.')[:2])}"


def cpu_name(hardware: dict | None) -> str:
    """A hardware record's CPU name as a reader writes it ("Intel Xeon Processor", no (R)/(TM)); "" when unrecorded."""
    return ((hardware or {}).get("cpu") or "").replace("(R)", "").replace("(TM)", "")


def cpu_vendor(hardware: dict | None) -> str | None:
    """"AMD", "Intel", ... from a hardware record's CPU name (None when unrecorded)."""
    name = cpu_name(hardware).split()
    return name[0] if name else None


def command_line() -> str:
    """This process's command as it was typed (``python -m saol_core.train ...``, not the module's path on
    this machine); inside a notebook kernel (papermill, Jupyter), what the run came from."""
    if sys.argv and "ipykernel" in sys.argv[0]:
        return "notebook kernel (the run's notebook and config.yaml say what ran)"
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        return " ".join(["python", "-m", spec.name.removesuffix(".__main__"), *sys.argv[1:]])
    return " ".join([Path(sys.executable).name, *sys.argv])


def environment_record(device: torch.device | str | None = None) -> dict:
    """Git SHA, package versions, hardware and command line of this process."""
    import numpy
    import torchvision
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_sha": _git_sha(),
        "command": command_line(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__,
                     "numpy": numpy.__version__, "cuda": torch.version.cuda},
        "hardware": hardware_record(device),
        "device": str(device) if device is not None else None,
    }


class RunFolder:
    """``<out_dir>/<name>/``: config.yaml, environment.json, metrics.jsonl, checkpoint.pt, best.pt,
    summary.json."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config = self.path / "config.yaml"
        self.environment = self.path / "environment.json"
        self.metrics = self.path / "metrics.jsonl"
        self.checkpoint = self.path / "checkpoint.pt"
        self.best = self.path / "best.pt"
        self.summary = self.path / "summary.json"

    def lock(self) -> None:
        """Hold this folder for this process (until ``unlock`` or the process ends); RunLocked names the
        holder if another process has it."""
        try:
            import fcntl
        except ImportError:  # no advisory locks on this platform: run unlocked
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            f = open(self.path / ".lock", "a+")
        except OSError as e:
            raise RunWriteError(e.errno, f"cannot write in the run folder {self.path} ({e.strerror or e}); make it "
                                f"writable or choose another out_dir=...") from None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise RunLocked(f"run folder {self.path} is in use by {holder}; wait for it to finish, or pick "
                            f"another name=...") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                f"{datetime.datetime.now().isoformat(timespec='seconds')} ({command_line()})\n")
        f.flush()
        self._lock = f

    def unlock(self) -> None:
        lock = self.__dict__.pop("_lock", None)
        if lock is not None:
            import fcntl
            # explicitly: data-loader workers forked while it was held share the descriptor, and closing ours
            # alone would leave the folder locked while they live (e.g. after a KeyboardInterrupt in a notebook)
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()

    def start(self, cfg: ExperimentConfig, device: torch.device | str, resume: bool) -> dict | None:
        """Prepare the (locked) folder for ``cfg``: refuse a different experiment where there is progress
        to resume; a folder without a checkpoint takes the new config (nothing of the old one survives),
        ``resume=False`` clears it. Leftover temp files of killed writes are removed. Returns the summary
        of a finished run of the same experiment (then nothing is written), else None."""
        for tmp in self.path.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        has_progress = self.checkpoint.exists() or self.summary.exists()
        if resume and has_progress and self.config.exists():
            saved = yaml.safe_load(self.config.read_text())
            changed = config_changes(saved, cfg.to_dict())
            root = (saved.get("data") or {}).get("root")
            if not changed and root != cfg.data.root and self.checkpoint.exists():
                print(f"[saol] note: {self.path} was trained with data.root={root}, resuming with "
                      f"data.root={cfg.data.root} (the resume checks that it holds the same data)", file=sys.stderr)
            if changed:
                raise ConfigError(f"run folder {self.path} holds a different experiment (changed: {changed}); "
                                  f"pick another name=..., or pass --no-resume to restart it")
            summary = self.read_summary()
            if summary and summary.get("finished"):
                return summary
        if not resume or not self.checkpoint.exists():
            for f in (self.checkpoint, self.best, self.metrics, self.summary):
                f.unlink(missing_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.config, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        atomic_write_text(self.environment, json.dumps(environment_record(device), indent=2))
        return None

    def read_metrics(self) -> list[dict]:
        if not self.metrics.exists():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]

    def append_metrics(self, row: dict) -> None:
        atomic_write_text(self.metrics, "".join(json.dumps(m) + "\n" for m in [*self.read_metrics(), row]))

    def write_summary(self, summary: dict) -> None:
        atomic_write_text(self.summary, json.dumps(summary, indent=2))

    def read_summary(self) -> dict | None:
        return read_json(self.summary) if self.summary.exists() else None


# Settings that change how a run is executed, displayed or described, not what it computes.
_EXECUTION_KEYS = {"progress", "threads", "workers", "device", "eval_batches", "cache_dir", "root",
                   "out_dir", "download", "source", "checkpoint_every", "checkpoint_minutes", "compile"}


def _comparable(flat: dict) -> dict:
    scored = flat.get("wsol.enabled", False)   # localization settings matter only where it is scored
    return {k: v for k, v in flat.items() if k.rsplit(".", 1)[-1] not in _EXECUTION_KEYS and k not in RETIRED
            and (scored or not k.startswith("wsol."))}


def config_changes(old: dict, new: dict) -> list[str]:
    """Dotted keys where two config trees describe different experiments (execution settings such as
    device, threads or out_dir ignored), sorted; [] = the same experiment. A key one tree lacks counts
    as its default (a setting added to the code later, at its default, is what older runs did)."""
    defaults = flatten(ExperimentConfig().to_dict())
    old, new = _comparable({**defaults, **flatten(old)}), _comparable({**defaults, **flatten(new)})
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
