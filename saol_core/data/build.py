"""build_data: DataConfig -> DataBundle (train/test loaders, classes, normalization, test boxes).

Which loader:
* small images (digits, CIFAR, folders of <= 64 px images, or ``data.device_resident=true``): the
  whole split lives on the device as uint8 (DeviceLoader); train aug = random crop with zero padding
  S//8 + horizontal flip (no flip for digits: a mirrored digit is not a digit). File datasets are
  decoded once, resized directly to S x S if needed, and cached as .npy under ``data.cache_dir``.
* large images (cub, imagenet, wsol, big folders): DataLoader workers (StreamLoader); train aug =
  RandomResizedCrop(S, or data.train_crop) + flip (+ ColorJitter 0.4 and PCA lighting 0.1 for imagenet); eval geometry =
  direct resize to S x S for the localization datasets cub/wsol (wsolevaluation's protocol, boxes
  scaled with the image), resize to S/0.875 + center crop S for imagenet/folder (the paper's ImageNet
  eval; boxes scaled, shifted and clipped).
Normalization: ``data.mean``/``data.std`` when set (a pretrained backbone's own, filled in by
make_config); else CutMix's CIFAR constants; ImageNet constants for streamed sets; otherwise the exact
per-channel mean/std of the (resident, decoded) train split.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError, DataConfig
from .boxes import GroundTruthBoxes
from .common import (CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD, DataBundle, DatasetError, channel_stats,
                     data_root)
from .digits import CLASS_NAMES as DIGIT_NAMES
from .digits import make_digits
from .files import UnreadableImages, decoded_cached, image_size_of, is_archive, raise_all, unpack_once
from .layouts import LAYOUTS, FileSplit, Layout, hold_out, read_cub, read_folder, read_imagenet, read_wsol, require
from .resident import DeviceLoader
from .stream import EvalTransform, StreamLoader, TrainTransform

READERS = {"folder": read_folder, "cifar10_jpeg": read_folder, "cub": read_cub, "wsol": read_wsol, "imagenet": read_imagenet}
EVAL_MODE = {"folder": "center", "cifar10_jpeg": "center", "imagenet": "center", "cub": "direct", "wsol": "direct"}
SMALL_IMAGE = 64  # images with both sides <= this are device-resident by default


def build_data(cfg: DataConfig, *, seed: int, batch_size: int, device: torch.device | str = "cpu",
               rank: int = 0, world_size: int = 1, eval_batch_size: int | None = None) -> DataBundle:
    """Build the train/test loaders of ``cfg.dataset``; see the module docstring for the choices made.

    ``batch_size`` is per rank; train loaders of all ranks share ``seed`` (same global order, disjoint
    strided shards). Raises DatasetError for missing/empty/corrupt data.
    """
    common = dict(seed=seed, batch_size=batch_size, device=torch.device(device), rank=rank,
                  world_size=world_size, eval_batch_size=eval_batch_size or batch_size)
    if cfg.train_crop is not None and cfg.dataset in ("digits", "cifar10", "cifar100"):
        raise ConfigError(f"data.train_crop is for streamed large-image datasets; {cfg.dataset} trains at "
                          f"data.image_size: remove data.train_crop")
    if cfg.holdout_per_class and cfg.dataset not in READERS:
        raise ConfigError(f"data.holdout_per_class is for file datasets ({', '.join(READERS)}); {cfg.dataset} "
                          f"has none: set it to 0")
    if cfg.dataset == "digits":
        return _digits(cfg, **common)
    if cfg.dataset in ("cifar10", "cifar100"):
        return _cifar(cfg, **common)
    if cfg.dataset not in READERS:
        raise ConfigError(f"data.dataset={cfg.dataset!r} is not valid; choose one of "
                          f"{['digits', 'cifar10', 'cifar100', *READERS]}")
    return _files(cfg, **common)


def _resident_bundle(cfg: DataConfig, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                     class_names: list[str], mean, std, test_boxes, *, flip: bool = True, seed, batch_size,
                     device, rank, world_size, eval_batch_size) -> DataBundle:
    """Device loaders over (images (N,H,W,C) uint8, labels (N,)) arrays of both splits."""
    pad = cfg.image_size // 8 if cfg.augment else 0
    mean, std = cfg.mean or mean, cfg.std or std
    shared = dict(mean=mean, std=std, seed=seed, device=device, rank=rank, world_size=world_size)
    train_loader = DeviceLoader(torch.from_numpy(train[0]), torch.from_numpy(train[1]), batch_size=batch_size,
                                train=True, pad=pad, flip=flip and cfg.augment, **shared)
    test_loader = DeviceLoader(torch.from_numpy(test[0]), torch.from_numpy(test[1]), batch_size=eval_batch_size,
                               train=False, **shared)
    _check_batches(train_loader, batch_size, world_size)
    return DataBundle(train_loader, test_loader, len(class_names), class_names, cfg.image_size,
                      tuple(mean), tuple(std), test_boxes)


def _check_batches(loader, batch_size: int, world_size: int) -> None:
    if len(loader) == 0:
        raise ConfigError(f"train.batch_size={batch_size} x world size {world_size} exceeds the {loader.size} "
                          f"training images: no full batch per epoch; lower the batch size")


def _digits(cfg: DataConfig, **common) -> DataBundle:
    kwargs = dict(seed=cfg.seed, image_size=cfg.image_size, clutter=cfg.clutter,
                  digit_scale=tuple(cfg.digit_scale))
    train = make_digits(cfg.train_size, split="train", **kwargs)
    test = make_digits(cfg.test_size, split="test", **kwargs)
    mean, std = channel_stats(train.images)
    return _resident_bundle(cfg, (train.images, train.labels), (test.images, test.labels), DIGIT_NAMES,
                            mean, std, GroundTruthBoxes.square([b[None] for b in test.boxes], cfg.image_size),
                            flip=False, **common)


def _cifar(cfg: DataConfig, **common) -> DataBundle:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls, folder = (CIFAR10, "cifar-10-batches-py") if cfg.dataset == "cifar10" else (CIFAR100, "cifar-100-python")
    root = data_root(cfg.dataset, cfg.root)
    try:
        splits = [cls(str(root), train=t, download=cfg.download) for t in (True, False)]
    except (RuntimeError, OSError) as e:
        raise DatasetError(f"{cfg.dataset} not found or unreadable under {root} ({e}); expected torchvision's "
                           f"{root / folder}/. Pass data.root=<folder holding {folder}> or data.download=true") from None
    train, test = ((ds.data, np.asarray(ds.targets, np.int64)) for ds in splits)
    return _resident_bundle(cfg, train, test, list(splits[0].classes), CIFAR_MEAN, CIFAR_STD, None, **common)


def _original_sizes(split: FileSplit) -> np.ndarray:
    """(N,2) (width, height) from the file headers; metadata sizes (wsolevaluation's image_sizes.txt), which
    rescale the boxes, must agree with them."""
    found = _headers(split.paths)
    if split.sizes is not None:
        wrong = np.flatnonzero((split.sizes != found).any(1))
        if len(wrong):
            i = wrong[0]
            raise DatasetError(f"image_sizes.txt gives {split.sizes[i][0]}x{split.sizes[i][1]} for {split.paths[i]}, but the "
                               f"file is {found[i][0]}x{found[i][1]} ({len(wrong)} such entries); fix or delete "
                               "image_sizes.txt (without it the sizes are read from the files)")
    return found


def _headers(paths: list[Path]) -> np.ndarray:
    """(N,2) (width, height) of every file from its header; one DatasetError listing every unreadable or
    missing file, before any training starts."""
    def size(path: Path) -> tuple[tuple[int, int], str | None]:
        try:
            return image_size_of(path), None
        except DatasetError as e:
            return (0, 0), str(e)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(size, paths))
    raise_all([e for _, e in results if e])
    return np.array([s for s, _ in results], np.int64).reshape(-1, 2)


def _files(cfg: DataConfig, **common) -> DataBundle:
    root = data_root(cfg.dataset, cfg.root)
    if root is None:
        raise DatasetError(f"data.dataset={cfg.dataset} needs data.root=<dataset folder or .tar.gz>")
    root = require(root, f"{LAYOUTS[cfg.dataset]} (or a .tar.gz of that folder)")
    cache_dir = Path(cfg.cache_dir).expanduser()
    if is_archive(root):
        root = unpack_once(root, cache_dir)
    layout: Layout = READERS[cfg.dataset](root)
    if cfg.holdout_per_class:
        layout = hold_out(layout, cfg.holdout_per_class, cfg.seed)
    S = cfg.image_size
    resident = cfg.device_resident
    if resident is None:
        resident = max(image_size_of(layout.train.paths[0])) <= SMALL_IMAGE
    eval_geometry = EvalTransform(S, "direct" if resident else EVAL_MODE[cfg.dataset])
    boxes = None
    if layout.test.boxes is not None:
        boxes = GroundTruthBoxes([b.astype(np.float64) for b in layout.test.boxes], _original_sizes(layout.test),
                                 None if eval_geometry.mode == "direct" else S)

    if resident:
        if cfg.train_crop is not None:
            raise ConfigError("data.train_crop is for streamed images; device-resident data train at "
                              "data.image_size: remove data.train_crop or set data.device_resident=false")
        tag = f"{cfg.dataset}-{root.name}"
        decoded, errors = {}, []
        for split in ("train", "test"):  # both splits before reporting, so every bad file is named at once
            try:
                decoded[split] = decoded_cached(getattr(layout, split).paths, S, cache_dir, f"{tag}-{split}")
            except UnreadableImages as e:
                errors += e.errors
        raise_all(errors)
        train, test = decoded["train"], decoded["test"]
        mean, std = channel_stats(train)
        return _resident_bundle(cfg, (train, layout.train.labels), (test, layout.test.labels), layout.class_names,
                                mean, std, boxes, **common)

    # streamed images are decoded mid-epoch: check every header now (_original_sizes read the test split's)
    _headers(layout.train.paths + (layout.test.paths if boxes is None else []))
    mean, std = cfg.mean or IMAGENET_MEAN, cfg.std or IMAGENET_STD
    shared = dict(mean=mean, std=std, seed=common["seed"], device=common["device"],
                  rank=common["rank"], world_size=common["world_size"], workers=cfg.workers)
    crop = cfg.train_crop or S
    if cfg.augment:
        train_tf = TrainTransform(crop, jitter=cfg.dataset == "imagenet")
    else:
        train_tf = eval_geometry if crop == S else EvalTransform(crop, eval_geometry.mode)
    train_loader = StreamLoader(layout.train, train_tf, batch_size=common["batch_size"], train=True, **shared)
    test_loader = StreamLoader(layout.test, eval_geometry, batch_size=common["eval_batch_size"], train=False, **shared)
    _check_batches(train_loader, common["batch_size"], common["world_size"])
    return DataBundle(train_loader, test_loader, len(layout.class_names), layout.class_names, S,
                      tuple(mean), tuple(std), boxes)
