"""Readers of on-disk dataset layouts -> lists of files, labels and (for localization) boxes.

Boxes are returned in ORIGINAL image pixels (xyxy, inclusive corners); build_data maps them to the
evaluated image. Labels are remapped to 0..K-1 in sorted order of the labels present.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import ConfigError
from .common import DatasetError, selection_mask
from .files import IMAGE_EXTENSIONS

FOLDER_LAYOUT = "<root>/train/<class>/*.jpg and <root>/test/<class>/*.jpg (or val/ instead of test/)"
IMAGENET_LAYOUT = ("<root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/*.JPEG (val boxes optionally from "
                   "<root>/metadata/val/localization.txt, the wsolevaluation format)")
CUB_LAYOUT = ("the CUB-200-2011 release: <root>/images.txt, image_class_labels.txt, train_test_split.txt, "
              "bounding_boxes.txt, classes.txt and images/")
WSOL_LAYOUT = ("the wsolevaluation metadata format: <root>/metadata/{train,test or val}/image_ids.txt, "
               "class_labels.txt (id,label), image_sizes.txt (id,w,h), localization.txt (id,x0,y0,x1,y1); "
               "images at <root>/<image id>; optionally <root>/classes.txt naming the labels, one per line: "
               "'<label> <name>' or '<index> <wnid> <label> <name>'")

LAYOUTS = {"folder": FOLDER_LAYOUT, "cifar10_jpeg": FOLDER_LAYOUT, "imagenet": IMAGENET_LAYOUT, "cub": CUB_LAYOUT, "wsol": WSOL_LAYOUT}


@dataclass
class FileSplit:
    paths: list[Path]
    labels: np.ndarray  # (N,) int64 in 0..K-1
    boxes: list[np.ndarray] | None = None  # per image (n,4) float64 xyxy in original pixels
    sizes: np.ndarray | None = None  # (N,2) int64 original (width, height), when the layout records it


@dataclass
class Layout:
    train: FileSplit
    test: FileSplit
    class_names: list[str]


def _subset(split: FileSplit, keep: np.ndarray) -> FileSplit:
    return FileSplit([p for p, k in zip(split.paths, keep) if k], split.labels[keep],
                     None if split.boxes is None else [b for b, k in zip(split.boxes, keep) if k],
                     None if split.sizes is None else split.sizes[keep])


def hold_out(layout: Layout, per_class: int, seed: int) -> Layout:
    """``layout`` with ``per_class`` training images of each class (``selection_mask`` with ``seed``) moved
    out of training to become the test split: a validation split that leaves the test images unseen."""
    held = selection_mask(layout.train.labels, per_class, seed)
    counts = np.bincount(layout.train.labels, minlength=len(layout.class_names))
    kept = np.bincount(layout.train.labels[~held], minlength=len(layout.class_names))
    if ((counts > 0) & (kept == 0)).any():
        fewest = int(counts[counts > 0].min())
        raise ConfigError(f"data.holdout_per_class={per_class} leaves a class without training images (the "
                          f"smallest has {fewest}); choose fewer than {fewest}")
    return Layout(_subset(layout.train, ~held), _subset(layout.train, held), layout.class_names)


def require(path: Path, layout: str, what: str = "") -> Path:
    if not path.exists():
        raise DatasetError(f"{what or 'dataset path'} {path} does not exist; expected {layout}. "
                           f"Pass data.root=<path of the dataset>")
    return path


def _remap(labels: np.ndarray, present: np.ndarray) -> np.ndarray:
    return np.searchsorted(present, labels).astype(np.int64)


def _scan_classes(split_dir: Path, layout: str) -> dict[str, list[Path]]:
    """class name -> sorted image files (recursive) of an ImageFolder split directory."""
    classes = sorted(d.name for d in os.scandir(split_dir) if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DatasetError(f"{split_dir} has no class subfolders; expected {layout}")
    files = {}
    for name in classes:
        found = [Path(dirpath) / f for dirpath, _, names in os.walk(split_dir / name)
                 for f in names if f.lower().endswith(IMAGE_EXTENSIONS)]
        if not found:
            raise DatasetError(f"class folder {split_dir / name} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                               f"expected {layout}")
        files[name] = sorted(found)
    return files


def read_folder(root: Path, test_names: tuple[str, ...] = ("test", "val"), layout: str = FOLDER_LAYOUT) -> Layout:
    """ImageFolder layout with train/ and test/ (or val/) splits; class names from train's subfolders."""
    require(root, layout)
    test_dir = next((root / n for n in test_names if (root / n).is_dir()), None)
    if not (root / "train").is_dir() or test_dir is None:
        found = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
        raise DatasetError(f"{root} does not have train/ and {'/ or '.join(test_names)}/ folders (found {found[:10]}); "
                           f"expected {layout}")
    train, test = _scan_classes(root / "train", layout), _scan_classes(test_dir, layout)
    names = sorted(train)
    label_of = {n: k for k, n in enumerate(names)}
    unknown = sorted(set(test) - set(train))
    if unknown:
        raise DatasetError(f"{test_dir} has classes missing from {root / 'train'}: {unknown[:10]}; expected {layout}")

    def split(files: dict[str, list[Path]]) -> FileSplit:
        paths = [p for n in sorted(files) for p in files[n]]
        labels = np.array([label_of[n] for n in sorted(files) for _ in files[n]], np.int64)
        return FileSplit(paths, labels)

    return Layout(split(train), split(test), names)


class _Line(list):
    """The fields of one metadata line, with where it came from (for error messages)."""

    def __init__(self, fields: list[str], path: Path, number: int):
        super().__init__(fields)
        self.path, self.number = path, number

    def numbers(self, start: int, stop: int, kind: type = float) -> list:
        try:
            values = [kind(v) for v in self[start:stop]]
        except ValueError:
            raise DatasetError(f"{self.path} line {self.number}: expected {stop - start} "
                               f"{'integer' if kind is int else 'number'}(s) in fields {start + 1}-{stop}, got "
                               f"{self[start:stop]}") from None
        if not all(math.isfinite(v) for v in values):  # float() reads "nan" and "inf" without a word
            raise DatasetError(f"{self.path} line {self.number}: non-finite number in fields {start + 1}-{stop} "
                               f"{self[start:stop]}; fix or remove the line")
        return values

    def box(self, start: int, xywh: bool) -> list[float]:
        """x0, y0, x1, y1 from ``x y w h`` (xywh) or ``x0 y0 x1 y1``; an inverted box is an error."""
        a, b, c, d = self.numbers(start, start + 4)
        x1, y1 = (a + c, b + d) if xywh else (c, d)
        if x1 < a or y1 < b:
            what = f"width {c} / height {d}" if xywh else f"x1 {c} < x0 {a} or y1 {d} < y0 {b}"
            raise DatasetError(f"{self.path} line {self.number}: inverted box ({what}); fix or remove the line")
        return [a, b, x1, y1]


def _read_table(path: Path, layout: str, sep: str | None, min_cols: int) -> list[_Line]:
    require(path, layout, "metadata file")
    rows = [_Line([c.strip() for c in line.split(sep)], path, i + 1)
            for i, line in enumerate(path.read_text().splitlines()) if line.strip()]
    bad = next((r for r in rows if len(r) < min_cols), None)
    if bad is not None or not rows:
        where = f"line {bad.number}: {list(bad)}" if bad is not None else "no rows"
        hint = " (an id may not contain spaces)" if bad is not None and sep == "," and len(bad) == 1 and " " in bad[0] else ""
        raise DatasetError(f"{path} is malformed ({where}){hint}; expected {layout}")
    return rows


def read_cub(root: Path) -> Layout:
    """CUB-200-2011; boxes ``x y w h`` -> xyxy ``(x, y, x+w, y+h)`` as in wsolevaluation's metadata."""
    require(root, CUB_LAYOUT)
    images = {r[0]: r[1] for r in _read_table(root / "images.txt", CUB_LAYOUT, None, 2)}
    labels = {r[0]: r.numbers(1, 2, int)[0] for r in _read_table(root / "image_class_labels.txt", CUB_LAYOUT, None, 2)}
    is_train = {r[0]: r[1] == "1" for r in _read_table(root / "train_test_split.txt", CUB_LAYOUT, None, 2)}
    boxes = {r[0]: r.box(1, xywh=True) for r in _read_table(root / "bounding_boxes.txt", CUB_LAYOUT, None, 5)}
    names = {r.numbers(0, 1, int)[0]: r[1] for r in _read_table(root / "classes.txt", CUB_LAYOUT, None, 2)}
    missing = [i for i in images if i not in labels or i not in is_train]
    if missing:
        raise DatasetError(f"{root}: image ids {missing[:5]} lack a label or split entry; expected {CUB_LAYOUT}")
    present = np.unique(list(labels[i] for i in images))
    image_dir = require(root / "images", CUB_LAYOUT, "image folder")

    def split(train: bool) -> FileSplit:
        ids = [i for i in images if is_train[i] == train]
        split_boxes = None
        if not train:
            lacking = [i for i in ids if i not in boxes]
            if lacking:
                raise DatasetError(f"{root / 'bounding_boxes.txt'} lacks test ids {lacking[:5]}; expected {CUB_LAYOUT}")
            split_boxes = [np.array([boxes[i]], np.float64) for i in ids]
        return FileSplit([image_dir / images[i] for i in ids],
                         _remap(np.array([labels[i] for i in ids]), present), split_boxes)

    return Layout(split(True), split(False), [names.get(int(k), str(k)) for k in present])


def _read_wsol_split(root: Path, meta: Path, need_boxes: bool) -> FileSplit:
    """One metadata split; labels as written (remapped by the caller)."""
    # one id per line, spaces included (wsolevaluation strips only the newline)
    ids = [r[0] for r in _read_table(meta / "image_ids.txt", WSOL_LAYOUT, "\n", 1)]
    labels = {r[0]: r.numbers(1, 2, int)[0] for r in _read_table(meta / "class_labels.txt", WSOL_LAYOUT, ",", 2)}
    lacking = [i for i in ids if i not in labels]
    if lacking:
        raise DatasetError(f"{meta / 'class_labels.txt'} lacks ids {lacking[:5]}; expected {WSOL_LAYOUT}")
    split = FileSplit([root / i for i in ids], np.array([labels[i] for i in ids], np.int64))
    if (meta / "image_sizes.txt").is_file():
        sizes = {r[0]: tuple(r.numbers(1, 3, int)) for r in _read_table(meta / "image_sizes.txt", WSOL_LAYOUT, ",", 3)}
        if all(i in sizes for i in ids):
            split.sizes = np.array([sizes[i] for i in ids], np.int64)
    if need_boxes:
        boxes: dict[str, list[list[float]]] = {}
        for r in _read_table(meta / "localization.txt", WSOL_LAYOUT, ",", 5):
            boxes.setdefault(r[0], []).append(r.box(1, xywh=False))
        lacking = [i for i in ids if i not in boxes]
        if lacking:
            raise DatasetError(f"{meta / 'localization.txt'} lacks ids {lacking[:5]}; expected {WSOL_LAYOUT}")
        split.boxes = [np.array(boxes[i], np.float64) for i in ids]
    return split


def read_wsol(root: Path) -> Layout:
    """wsolevaluation metadata: train split ``train``, test split ``test`` (else ``val``), boxes for test."""
    meta = require(root / "metadata", WSOL_LAYOUT, "metadata folder")
    test_meta = next((meta / n for n in ("test", "val") if (meta / n).is_dir()), meta / "test")
    train = _read_wsol_split(root, require(meta / "train", WSOL_LAYOUT, "metadata folder"), False)
    test = _read_wsol_split(root, require(test_meta, WSOL_LAYOUT, "metadata folder"), True)
    train_labels, test_labels = train.labels, test.labels
    present = np.unique(train_labels)
    unknown = sorted(set(np.unique(test_labels)) - set(present))
    if unknown:
        raise DatasetError(f"{test_meta / 'class_labels.txt'} has labels absent from train: {unknown[:10]}")
    train.labels, test.labels = _remap(train_labels, present), _remap(test_labels, present)
    names = _wsol_class_names(root / "classes.txt") if (root / "classes.txt").is_file() else {}
    return Layout(train, test, [names.get(int(k), str(k)) for k in present])


def _wsol_class_names(path: Path) -> dict[int, str]:
    """label -> name from a wsol layout's classes.txt: '<label> <name>', or ImageNet subsets' '<index> <wnid>
    <label> <name, synonyms>' (the name is the first synonym: 'tench, Tinca tinca' -> 'tench')."""
    names = {}
    for r in _read_table(path, WSOL_LAYOUT, None, 2):
        wnid = len(r) >= 4 and re.fullmatch(r"n\d{8}", r[1]) is not None
        label, first = (r.numbers(2, 3, int)[0], 3) if wnid else (r.numbers(0, 1, int)[0], 1)
        names[label] = " ".join(r[first:]).split(",")[0].strip()
    return names


def read_imagenet(root: Path) -> Layout:
    """ImageNet folders; val boxes from a wsolevaluation ``localization.txt`` matched by file name."""
    layout = read_folder(root, ("val",), IMAGENET_LAYOUT)
    for meta in (root / "metadata" / "val", root / "metadata" / "ILSVRC" / "val"):
        if (meta / "localization.txt").is_file():
            boxes: dict[str, list[list[float]]] = {}
            for r in _read_table(meta / "localization.txt", WSOL_LAYOUT, ",", 5):
                boxes.setdefault(Path(r[0]).name, []).append(r.box(1, xywh=False))
            lacking = [p.name for p in layout.test.paths if p.name not in boxes]
            if lacking:
                raise DatasetError(f"{meta / 'localization.txt'} lacks val images {lacking[:5]}")
            layout.test.boxes = [np.array(boxes[p.name], np.float64) for p in layout.test.paths]
            break
    return layout
