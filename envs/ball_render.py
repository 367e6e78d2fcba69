"""Rasterisation of BouncingBalls states: grayscale observations and RGB frames for humans.

Image convention: row 0 is the top of the box (``y = h``), column 0 its left (``x = 0``);
pixel ``(r, c)`` samples the point at its centre. Discs are anti-aliased: a pixel's value is
the clipped signed distance ``(radius - distance) / pixel + 0.5`` to the disc edge, so the
image moves smoothly with sub-pixel positions.
"""

from __future__ import annotations

import numpy as np

# Ball colours of the rgb_array frames (cycled when N > 8), on a dark background.
PALETTE = np.array(
    [
        [230, 75, 60],
        [60, 160, 230],
        [250, 200, 50],
        [90, 200, 110],
        [190, 110, 220],
        [250, 140, 40],
        [60, 210, 200],
        [240, 240, 240],
    ],
    dtype=np.float64,
)
BACKGROUND = np.array([20, 20, 28], dtype=np.float64)


def disc_coverage(
    pos: np.ndarray, radius: np.ndarray, box: tuple[float, float], shape: tuple[int, int]
) -> np.ndarray:
    """Per-ball anti-aliased coverage in [0, 1].

    pos: [E, N, 2] ball centres; radius: [N]; box: (w, h); shape: (H, W).
    Returns [E, N, H, W] float64.
    """
    height, width = shape
    pixel_w, pixel_h = box[0] / width, box[1] / height
    pixel = np.sqrt(pixel_w * pixel_h)  # one length per pixel for the anti-aliasing ramp
    xs = (np.arange(width) + 0.5) * pixel_w  # [W] pixel centres
    ys = box[1] - (np.arange(height) + 0.5) * pixel_h  # [H], top row first
    dx2 = (xs - pos[..., 0:1]) ** 2  # [E, N, W]
    dy2 = (ys - pos[..., 1:2]) ** 2  # [E, N, H]
    distance = np.sqrt(dy2[..., :, None] + dx2[..., None, :])  # [E, N, H, W]
    coverage = (radius[:, None, None] - distance) / pixel + 0.5
    return np.clip(coverage, 0.0, 1.0, out=coverage)


def render_gray(
    pos: np.ndarray, radius: np.ndarray, box: tuple[float, float], shape: tuple[int, int]
) -> np.ndarray:
    """pos [E, N, 2] -> float32 [E, H, W] in [0, 1]: white balls on black."""
    return disc_coverage(pos, radius, box, shape).max(axis=1).astype(np.float32)


def render_rgb(
    pos: np.ndarray, radius: np.ndarray, box: tuple[float, float], size: int
) -> np.ndarray:
    """pos [N, 2] of one env -> uint8 [size, size, 3], one colour per ball."""
    coverage = disc_coverage(pos[None], radius, box, (size, size))[0]  # [N, S, S]
    image = np.broadcast_to(BACKGROUND, (size, size, 3)).copy()
    for ball, alpha in enumerate(coverage):
        colour = PALETTE[ball % len(PALETTE)]
        image += alpha[..., None] * (colour - image)
    return np.round(image).astype(np.uint8)
