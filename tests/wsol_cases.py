"""Score maps and boxes on which tests/data/wsol_reference.json holds clovaai/wsolevaluation's answers.

Every map is u / 255 for an integer image u in 0..255 (float division is exact IEEE arithmetic, so the
reference's uint8(map * 255) gives the same u on any machine). The synthetic maps target the cases where
a pixel-count reading of the protocol differs from the reference's OpenCV contours: holes (RETR_TREE
returns their borders too), thin lines (cv2.contourArea near 0 however many pixels), exact ties between
regions, noise, touching borders. tests/data/wsol_cam_maps.npz adds real CAM maps of an ImageNet
EfficientNet-Lite0 on ImageNet validation photos with their official boxes (see its ``source`` entry).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data"
SIZE = 224


def _grid():
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    return y, x


def _ring(cy, cx, r_in, r_out, value=255):
    y, x = _grid()
    d2 = (y - cy) ** 2 + (x - cx) ** 2
    return np.where((d2 >= r_in ** 2) & (d2 <= r_out ** 2), value, 0)


def synthetic_cases() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """[(name, u (224, 224) uint8, gt boxes (n, 4) int xyxy)]."""
    y, x = _grid()
    cases = []
    # a ring whose hole's box matches a ground-truth box better than the ring's box
    u = _ring(112, 112, 40, 70)
    cases.append(("ring", u, np.array([[75, 75, 149, 149], [30, 30, 190, 190]])))
    # nested plateaus: the hole appears only at some thresholds
    u = np.maximum(_ring(100, 120, 25, 60, 200), np.where((y - 100) ** 2 + (x - 120) ** 2 < 15 ** 2, 255, 0))
    u = np.maximum(u, _ring(100, 120, 62, 80, 90))
    cases.append(("nested", u, np.array([[95, 75, 145, 125], [40, 20, 200, 180]])))
    # two identical squares: an exact tie for the largest region
    u = np.zeros((SIZE, SIZE), int)
    u[20:60, 30:70] = 255
    u[150:190, 140:180] = 255
    cases.append(("tie", u, np.array([[30, 20, 70, 60]])))
    cases.append(("tie_other", u, np.array([[140, 150, 180, 190]])))
    # a one-pixel-wide line with more pixels than a compact blob (contourArea ~ 0 for the line)
    u = np.zeros((SIZE, SIZE), int)
    u[100, 10:214] = 255
    u[20:30, 20:30] = 230
    cases.append(("thin_line", u, np.array([[20, 20, 30, 30]])))
    # a diagonal staircase line and a small blob
    u = np.zeros((SIZE, SIZE), int)
    idx = np.arange(20, 200)
    u[idx, idx] = 255
    u[150:165, 30:45] = 240
    cases.append(("diagonal", u, np.array([[30, 150, 45, 165], [20, 20, 200, 200]])))
    # regions touching the right and bottom borders
    u = np.zeros((SIZE, SIZE), int)
    u[180:, 150:] = 255
    u[:40, :30] = 128
    cases.append(("borders", u, np.array([[150, 180, 223, 223]])))
    # hash noise (many small regions and holes) on a smooth ramp
    h = ((x * 73856093) ^ (y * 19349663)) % 97
    u = np.clip((x + y) // 2 + h - 48, 0, 255)
    cases.append(("noise_ramp", u, np.array([[100, 100, 223, 223], [0, 0, 60, 60]])))
    # separable smooth bumps (integer arithmetic only)
    bump = lambda c, w: np.clip(w * w - (np.arange(SIZE) - c) ** 2, 0, None)  # noqa: E731
    u = (np.outer(bump(70, 50), bump(80, 60)) / (50 ** 2 * 60 ** 2) * 255
         + np.outer(bump(160, 30), bump(150, 40)) / (30 ** 2 * 40 ** 2) * 200).astype(int)
    cases.append(("bumps", np.clip(u, 0, 255), np.array([[20, 20, 140, 120], [110, 130, 190, 190]])))
    # a checkerboard block: 8-connected diagonal touching
    u = np.zeros((SIZE, SIZE), int)
    u[60:120, 60:120] = np.where(((x[60:120, 60:120] // 4) + (y[60:120, 60:120] // 4)) % 2 == 0, 255, 60)
    cases.append(("checker", u, np.array([[60, 60, 119, 119]])))
    # constant and empty maps (the reference's empty box [0, 0, 0, 0])
    cases.append(("zeros", np.zeros((SIZE, SIZE), int), np.array([[0, 0, 10, 10]])))
    return [(name, np.asarray(u, np.uint8), boxes) for name, u, boxes in cases]


def cam_cases() -> tuple[np.ndarray, list[np.ndarray], str]:
    """Real CAM maps: (u (N, 224, 224) uint8, boxes per map (n, 4) xyxy at 224, source)."""
    with np.load(DATA / "wsol_cam_maps.npz") as f:
        maps, boxes, counts, source = f["maps"], f["boxes"], f["counts"], str(f["source"])
    return maps, np.split(boxes, np.cumsum(counts)[:-1]), source


def as_scoremap(u: np.ndarray) -> np.ndarray:
    """uint8 image -> float64 score map in [0, 1] with uint8(map * 255) == u."""
    return np.asarray(u, np.float64) / 255.0
