"""Ground-truth boxes of a test split, kept in each image's original pixels and mapped onto an evaluated
image of any size in one step, as clovaai/wsolevaluation does (never clipped or rounded on the way)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .stream import EvalTransform


def resize_boxes(boxes: np.ndarray, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> np.ndarray:
    """Rescale xyxy boxes (n, 4) from an image of size from_hw to to_hw like the reference's resize_bbox:
    int(x * new_w / w) in float64, multiplied before dividing (166 * 224 / 332 = 112, whereas
    166 * (224 / 332) truncates to 111). Returns float64 (n, 4) integers; NaN stays NaN."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    (fh, fw), (th, tw) = from_hw, to_hw
    return np.trunc(b * np.array([tw, th, tw, th], np.float64) / np.array([fw, fh, fw, fh], np.float64))


@dataclass
class GroundTruthBoxes:
    """Per test index: (n, 4) float64 xyxy inclusive-corner boxes in the ORIGINAL image's pixels.

    sizes: (N, 2) original (width, height). center_crop: None when the evaluated image is the whole image
    resized to S x S (wsolevaluation's protocol), else S for "resize the short side to round(S / 0.875),
    centre-crop S" (the ImageNet classification protocol; boxes are cut to the crop).
    """
    boxes: list[np.ndarray]
    sizes: np.ndarray
    center_crop: int | None = None

    @classmethod
    def square(cls, boxes: Sequence[np.ndarray], size: int) -> "GroundTruthBoxes":
        """Boxes already in the pixels of size x size images (e.g. generated data)."""
        return cls([np.asarray(b, np.float64).reshape(-1, 4) for b in boxes], np.full((len(boxes), 2), size))

    def __len__(self) -> int:
        return len(self.boxes)

    def at(self, size: int) -> list[np.ndarray]:
        """The boxes in an evaluated image of size x size: per index (n, 4) float64 whole pixels."""
        if self.center_crop is None:
            return [resize_boxes(b, (int(h), int(w)), (size, size)) for b, (w, h) in zip(self.boxes, self.sizes)]
        crop = EvalTransform(self.center_crop, "center")
        out = []
        for b, (w, h) in zip(self.boxes, self.sizes):
            new_w, new_h, top, left = crop.geometry(int(w), int(h))
            scaled = b * np.array([new_w, new_h] * 2, np.float64) / np.array([w, h] * 2, np.float64)
            cut = np.clip(scaled - np.array([left, top] * 2, np.float64), 0, self.center_crop - 1)
            out.append(resize_boxes(cut, (self.center_crop, self.center_crop), (size, size)))
        return out
