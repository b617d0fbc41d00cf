"""Figure records: the arrays a figure of SAOL's maps is drawn from (``saol_core.viz.draw_maps``), kept in the
run folder so that a report redraws Fig. 5 and the boxes figure from committed files, without the checkpoint.

A record (a dict of numpy arrays, saved with ``save``) holds, per drawn image i of B:
- ``jpeg`` / ``jpeg_offsets``: the shown images (denormalized RGB), JPEG q90, concatenated (``load_images``
  decodes them into (B,H,W,3) uint8);
- ``titles`` (B,); ``attention`` (B,Ho,Wo) A in units of the uniform attention (1 = no preference);
- ``top2`` (B,2) class names of SAOL's top-2 classes, ``probs`` (B,2) their probabilities, ``spatial``
  (B,2,Ho,Wo) their Y_k;
- optional ``pasted`` (B,4) the pasted CutMix box (y0, y1, x0, x1, half-open pixels); ``gt_boxes`` (B,M,4)
  ground-truth xyxy boxes padded with -1, ``indices`` (B,) the images' test-split indices, ``saol_boxes`` /
  ``cam_boxes`` (B,4) predicted xyxy boxes and ``thresholds`` {"saol": t, "cam": t} as a (2,) array in that
  order.
Images are taken one per class (the first test image of each of the first classes met), so a grid shows
different classes. About 20 KB per 224-px image.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .cutmix import paste
from .runs import atomic_write_bytes
from .wsol.maps import localization_maps, predicted_box

FIG5 = "maps_fig5.npz"
BOXES = "maps_boxes.npz"
"""File names of the two records in a run folder."""


def one_per_class(loader, n: int) -> tuple[Tensor, Tensor, list[int]]:
    """(images (n,C,H,W) on the CPU, labels (n,), dataset indices): the first image of each of the first ``n``
    classes met in ``loader``'s epoch-0 order (fewer if the split has fewer classes)."""
    images, labels, indices, seen = [], [], [], set()
    for x, y, idx in loader.epoch(0):
        for i, k in enumerate(y.tolist()):
            if k not in seen:
                seen.add(k)
                images.append(x[i].cpu())
                labels.append(k)
                indices.append(int(idx[i]))
        if len(seen) >= n:
            break
    return torch.stack(images[:n]), torch.tensor(labels[:n]), indices[:n]


@dataclass
class Maps:
    """SAOL's outputs for a batch as probabilities: the pieces of Fig. 5 and the explorer."""
    saol_probs: Tensor | None   # (B,K)
    gap_probs: Tensor | None    # (B,K)
    attention: Tensor | None    # (B,Ho,Wo) A, sums to 1
    spatial: Tensor | None      # (B,K,Ho,Wo) Y, sums to 1 over K


@torch.no_grad()
def saol_maps(model, images: Tensor) -> Maps:
    """One eval-mode forward of ``images`` (B,C,H,W), moved to the model's device -> :class:`Maps` there
    (None for the parts of a head the model lacks)."""
    out = model.eval()(images.to(next(model.parameters()).device))
    return Maps(None if out.saol_log_probs is None else out.saol_log_probs.exp(),
                None if out.gap_logits is None else out.gap_logits.softmax(1),
                out.attention, None if out.spatial_log_probs is None else out.spatial_log_probs.exp())


@torch.no_grad()
def maps_record(model, images: Tensor, titles: Sequence[str], class_names: Sequence[str], denormalize,
                pasted: Sequence[tuple[int, int, int, int]] | None = None) -> dict[str, np.ndarray]:
    """The record of paper Fig. 5's panels for normalized ``images`` (B,C,H,W): input, A, and Y / A ⊙ Y of
    SAOL's top-2 classes (``pasted``: a CutMix box per image, drawn on the input)."""
    maps = saol_maps(model, images)
    if maps.attention is None:
        raise ValueError("a maps record needs a model with a SAOL head (model.heads=saol or saol+gap)")
    probs, attention, spatial = maps.saol_probs, maps.attention, maps.spatial
    top = probs.topk(2, dim=1).indices                                              # (B,2)
    shown = (denormalize(images).clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    record = {"titles": np.array(list(titles)),
              "attention": (attention * attention[0].numel()).float().cpu().numpy(),
              "top2": np.array([[class_names[k] for k in row] for row in top.tolist()]),
              "probs": probs.gather(1, top).float().cpu().numpy(),
              "spatial": torch.stack([spatial[i, top[i]] for i in range(len(images))]).float().cpu().numpy(),
              **_jpeg(shown)}
    if pasted is not None:
        record["pasted"] = np.array(pasted, np.int64)
    return record


def fig5_record(model, data, n: int = 4) -> dict[str, np.ndarray]:
    """Paper Fig. 5: ``n`` test images of different classes, each CutMix-ed with the next one (a centred box of
    half the side pasted in)."""
    images, labels, _ = one_per_class(data.test, n + 1)
    if len(images) < 2:
        raise ValueError("Fig. 5 pastes one image into another: the test split needs two classes")
    n = len(images) - 1
    s = images.shape[-1]
    box = (s // 4, s // 4 + s // 2, s // 4, s // 4 + s // 2)
    mixed = paste(images[:n], images[1:n + 1], box)
    names = data.class_names
    titles = [f"{names[int(labels[i])]} + {names[int(labels[i + 1])]} (box)" for i in range(n)]
    return maps_record(model, mixed, titles, names, data.denormalize, pasted=[box] * n)


def boxes_record(model, data, thresholds: dict[str, float], n: int = 4, eval_size: int = 224) -> dict[str, np.ndarray]:
    """Fig. 5's panels of ``n`` test images of different classes with their ground-truth boxes and the boxes
    SAOL (A ⊙ Y_k) and CAM predict for the predicted class at ``thresholds`` ("saol", "cam")."""
    images, labels, indices = one_per_class(data.test, n)
    images = images.to(next(model.parameters()).device)
    record = maps_record(model, images, [f"label {data.class_names[int(k)]}" for k in labels], data.class_names,
                         data.denormalize)
    size = images.shape[-1]
    for kind in ("saol", "cam"):
        maps = localization_maps(model, images, kind)[0]
        record[f"{kind}_boxes"] = predicted_box(maps.cpu(), thresholds[kind], size, eval_size)
    truth = [np.asarray(b, np.float64).reshape(-1, 4) for b in (data.test_boxes.at(size)[i] for i in indices)]
    padded = np.full((len(truth), max(len(t) for t in truth), 4), -1.0)
    for i, t in enumerate(truth):
        padded[i, :len(t)] = t
    record["gt_boxes"] = padded
    record["indices"] = np.array(indices, np.int64)
    record["thresholds"] = np.array([thresholds["saol"], thresholds["cam"]])
    return record


def _jpeg(images: np.ndarray) -> dict[str, np.ndarray]:
    chunks = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=90)
        chunks.append(np.frombuffer(buffer.getvalue(), np.uint8))
    return {"jpeg": np.concatenate(chunks), "jpeg_offsets": np.cumsum([0] + [len(c) for c in chunks])}


def save(path: str | Path, record: dict[str, np.ndarray]) -> None:
    """Write ``record`` as a compressed .npz, atomically (a kill leaves the old file or the new one)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **record)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load(path: str | Path) -> dict[str, np.ndarray]:
    """A saved record (the arrays as saved: ``load_images`` decodes its pictures)."""
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def load_images(record: dict[str, np.ndarray]) -> np.ndarray:
    """(B,H,W,3) uint8: the record's JPEGs decoded (a live record and a saved one show the same pixels)."""
    data, offsets = record["jpeg"], record["jpeg_offsets"]
    return np.stack([np.asarray(Image.open(io.BytesIO(data[a:b].tobytes())).convert("RGB"))
                     for a, b in zip(offsets[:-1], offsets[1:])])
