"""Rasterisation of BouncingBalls states: grayscale observations, one channel per ball, and RGB
frames for humans.

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
RENDER_CHUNK = 128  # envs rendered at a time by render_gray


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
    """pos [E, N, 2] -> float32 [E, H, W] in [0, 1]: white balls on black.

    Same values as ``disc_coverage(...).max(axis=1)``, computed only in a window around each
    ball (pixels farther than ``radius + pixel / 2`` from the centre are 0), a chunk of
    ``RENDER_CHUNK`` envs at a time so that the temporaries stay in cache.
    """
    out = np.empty((pos.shape[0], *shape), dtype=np.float32)
    for start in range(0, pos.shape[0], RENDER_CHUNK):
        chunk = slice(start, start + RENDER_CHUNK)
        out[chunk] = _render_windows(pos[chunk], radius, box, shape, per_ball=False)
    return out


def render_ball_channels(
    pos: np.ndarray, radius: np.ndarray, box: tuple[float, float], shape: tuple[int, int]
) -> np.ndarray:
    """pos [E, N, 2] -> float32 [E, N, H, W] in [0, 1]: channel n holds ball n alone.

    Same values as ``disc_coverage(...)`` (anti-aliased), computed in a window per ball like
    ``render_gray``: which ball is which is readable from one frame, overlaps included.
    """
    out = np.empty((pos.shape[0], pos.shape[1], *shape), dtype=np.float32)
    for start in range(0, pos.shape[0], RENDER_CHUNK):
        chunk = slice(start, start + RENDER_CHUNK)
        out[chunk] = _render_windows(pos[chunk], radius, box, shape, per_ball=True)
    return out


def _render_windows(
    pos: np.ndarray,
    radius: np.ndarray,
    box: tuple[float, float],
    shape: tuple[int, int],
    *,
    per_ball: bool,
) -> np.ndarray:
    """pos [E, N, 2] -> float64 coverage in a window per ball: [E, H, W] (maximum over balls)
    or, with ``per_ball``, [E, N, H, W] (one channel per ball)."""
    height, width = shape
    num_envs, num_balls = pos.shape[:2]
    pixel_w, pixel_h = box[0] / width, box[1] / height
    pixel = np.sqrt(pixel_w * pixel_h)
    reach = float(radius.max()) + 0.5 * pixel  # beyond it the coverage is 0
    window_w, window_h = (
        int(np.ceil(2 * reach / pixel_w)) + 2,
        int(np.ceil(2 * reach / pixel_h)) + 2,
    )
    x, y = pos[..., 0], pos[..., 1]  # [E, N]
    col0 = np.floor((x - reach) / pixel_w - 0.5).astype(np.intp)  # first window column
    row0 = np.floor((box[1] - y - reach) / pixel_h - 0.5).astype(np.intp)
    cols = col0[..., None] + np.arange(window_w)  # [E, N, KW]
    rows = row0[..., None] + np.arange(window_h)  # [E, N, KH]
    dx2 = ((cols + 0.5) * pixel_w - x[..., None]) ** 2
    dy2 = (box[1] - (rows + 0.5) * pixel_h - y[..., None]) ** 2
    distance = np.sqrt(dy2[..., :, None] + dx2[..., None, :])  # [E, N, KH, KW]
    coverage = (radius[:, None, None] - distance) / pixel + 0.5
    np.clip(coverage, 0.0, 1.0, out=coverage)
    # pixels outside the image land on a 1-pixel border, cropped at the end
    padded_h, padded_w = height + 2, width + 2
    np.clip(rows, -1, height, out=rows)
    np.clip(cols, -1, width, out=cols)
    flat = (rows[..., :, None] + 1) * padded_w + (cols[..., None, :] + 1)  # [E, N, KH, KW]
    planes = num_envs * num_balls if per_ball else num_envs  # images drawn into
    plane = np.arange(num_envs)[:, None] * (num_balls if per_ball else 1)  # [E, 1]
    if per_ball:
        plane = plane + np.arange(num_balls)  # [E, N]
    flat += (plane * (padded_h * padded_w))[..., None, None]
    image = np.zeros(planes * padded_h * padded_w)
    if per_ball:  # every window has a plane of its own; clipped pixels only touch the border
        image[flat.ravel()] = coverage.ravel()
        return image.reshape(num_envs, num_balls, padded_h, padded_w)[..., 1:-1, 1:-1]
    for ball in range(num_balls):  # one ball's windows never share a pixel across envs
        where = flat[:, ball].ravel()
        image[where] = np.maximum(image[where], coverage[:, ball].ravel())
    return image.reshape(num_envs, padded_h, padded_w)[:, 1:-1, 1:-1]


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
