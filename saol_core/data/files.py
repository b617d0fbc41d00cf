"""Image files on disk: archive unpacking (once, atomically), decoding with clear errors, and the
decode-once cache of small-image splits as one uint8 array.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image, read_file

from ..runs import UMASK
from .common import DatasetError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def unpack_once(archive: Path, cache_dir: Path) -> Path:
    """Unpack ``archive`` under ``cache_dir/unpacked/<name>-<size>-<mtime>`` once; return the data root.

    Extracts into a temporary folder beside the target and renames it into place, so an interrupted
    unpack never leaves a half-filled cache. If the archive holds a single top-level folder, that
    folder is the data root.
    """
    st = archive.stat()
    stem = archive.name
    for suffix in ARCHIVE_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    target = cache_dir / "unpacked" / f"{stem}-{st.st_size}-{st.st_mtime_ns}"
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(target.parent)
        tmp = Path(tempfile.mkdtemp(prefix=f".{stem}-{os.getpid()}-", dir=target.parent))
        try:
            os.chmod(tmp, 0o777 & ~UMASK)  # mkdtemp makes 0700; the cache is shared like any folder
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
                _check_end_marker(tar)
            os.rename(tmp, target)
        except (tarfile.TarError, OSError, EOFError) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if not target.is_dir():  # a concurrent process may have won the rename race
                raise DatasetError(f"cannot unpack {archive}: {e}. Expected a readable .tar.gz/.tar of the "
                                   f"dataset folder; re-download it or pass data.root=<unpacked folder>") from e
    entries = [p for p in target.iterdir() if not p.name.startswith(".")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else target


def _check_end_marker(tar: tarfile.TarFile) -> None:
    """A complete tar ends with zero blocks after its last member; an archive cut at a member boundary
    lacks them, and ``tarfile`` would silently read it as a smaller, complete one."""
    tar.fileobj.seek(tar.offset)
    if tar.fileobj.read(tarfile.BLOCKSIZE) != tarfile.NUL * tarfile.BLOCKSIZE:
        raise tarfile.ReadError(f"the archive is truncated after {len(tar.getmembers())} members (no "
                                f"end-of-archive blocks)")


def _remove_abandoned(folder: Path) -> None:
    """Delete half-unpacked temp folders (``.<name>-<pid>-*``) of processes that no longer run."""
    for tmp in folder.glob(".*-*-*"):
        pid = tmp.name.split("-")[-2]
        if tmp.is_dir() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def decode_file(path: Path | str) -> Tensor:
    """(3,H,W) uint8 RGB of an image file; DatasetError naming the file if it cannot be decoded."""
    try:
        return decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
    except (RuntimeError, OSError, ValueError) as e:
        raise DatasetError(f"cannot decode image {path}: {e}. Replace or delete the file") from None


def image_size_of(path: Path | str) -> tuple[int, int]:
    """(width, height) from the file header (no full decode)."""
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read image {path}: {e}. Replace or delete the file") from None


def _decode_chunk(paths: Sequence[Path], size: int) -> tuple[np.ndarray, list[str]]:
    """(n,size,size,3) uint8: decoded, resized directly to size x size when not already that size; and
    the errors of the files that could not be decoded (their slots stay zero)."""
    out = np.zeros((len(paths), size, size, 3), np.uint8)
    errors = []
    for i, p in enumerate(paths):
        try:
            img = decode_file(p)
        except DatasetError as e:
            errors.append(str(e))
            continue
        if img.shape[1:] != (size, size):
            img = TF.resize(img, [size, size], antialias=True)
        out[i] = img.permute(1, 2, 0).numpy()
    return out, errors


class UnreadableImages(DatasetError):
    """Image files that cannot be read, all of them (``errors``: one message per file)."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        shown = "; ".join(errors[:3]) + (f"; and {len(errors) - 3} more" if len(errors) > 3 else "")
        super().__init__(f"{len(errors)} unreadable image file(s): {shown}")


def raise_all(errors: list[str]) -> None:
    """One UnreadableImages listing every bad file (the first few in full), so one fix-up pass suffices."""
    if errors:
        raise UnreadableImages(errors)


def undecodable(paths: Sequence[Path | str], threads: int | None = None) -> list[str]:
    """The error of every file among ``paths`` that cannot be decoded in full (a truncated JPEG passes the
    header check and fails only here), decoded in parallel threads."""
    def error(path) -> str | None:
        try:
            decode_file(path)
        except DatasetError as e:
            return str(e)
        return None
    with ThreadPoolExecutor(threads or min(8, os.cpu_count() or 1)) as pool:
        return [e for e in pool.map(error, paths) if e]


def decode_all(paths: Sequence[Path], size: int, threads: int | None = None) -> np.ndarray:
    """Decode ``paths`` into one (N,size,size,3) uint8 array, chunks in parallel threads."""
    threads = threads or min(8, os.cpu_count() or 1)
    chunk = max(256, len(paths) // (4 * threads) + 1)
    parts = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the threads already use the cores; avoid oversubscription inside resize
    try:
        with ThreadPoolExecutor(threads) as pool:
            results = list(pool.map(_decode_chunk, parts, [size] * len(parts)))
    finally:
        torch.set_num_threads(torch_threads)
    raise_all([e for _, errors in results for e in errors])
    return np.concatenate([a for a, _ in results]) if results else np.empty((0, size, size, 3), np.uint8)


def decoded_cached(paths: Sequence[Path], size: int, cache_dir: Path, tag: str) -> np.ndarray:
    """``decode_all`` memoized as ``cache_dir/decoded/<tag>-<size>px-<key>.npy``.

    The key hashes every file's path, byte size and mtime, so an edited or replaced file invalidates it.
    Written to a temporary file and renamed, so a killed run never leaves a truncated cache.
    """
    h = hashlib.sha1(f"{size}".encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"\0{p}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    target = cache_dir / "decoded" / f"{tag}-{size}px-{h.hexdigest()[:16]}.npy"
    if target.is_file():
        return np.load(target)
    images = decode_all(paths, size)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".npy", dir=target.parent)
    try:
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600
        with os.fdopen(fd, "wb") as f:
            np.save(f, images)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return images
