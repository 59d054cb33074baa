"""A synthetic scene that costs an encoder what a real game does.

The arena (arena.py) is flat colours: about 0.76 Mbit/s of H.264, so no
narrow link ever bites it. This scene is built to need 3-4 Mbit/s at 720x1280,
30 fps, at the encoders' usual settings (measured: docs/network.md), for the
benchmarks and tests of a player on a real network: a noise-textured terrain
that scrolls, a shimmering river band whose texture changes on every frame,
and textured sprites on their own paths. Everything comes from ``seed``, so
two runs draw the same pictures at the same scene times.

Drawing stays cheap (textures are made once; a frame is slices and copies,
about 1.5 ms at 720x1280); the encoder pays for the detail. Like the arena it
never uses white (luma at most ``SCENE_MAX_LUMA``), so a touch's white disc
stays the one white thing on screen.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from playcast.backends.arena import SCENE_MAX_LUMA, ArenaScene, Mark, Plane

Texture = npt.NDArray[np.float32]

SCROLL_PX_PER_S = 45.0  # the terrain's pace: 1.5 rows a frame at 30 fps
RIVER_FRACTION = 0.234  # of the height: 300 rows at 1280
RIVER_VARIANTS = 8  # river textures, one per frame in turn
SPRITES = 24


def value_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> Texture:
    """Smooth noise in 0..1: random values on a grid every ``cell`` pixels, blended
    with a smoothstep; the grid wraps at the bottom, so the texture tiles vertically."""
    gh, gw = -(-h // cell), w // cell + 2
    grid = rng.random((gh, gw), dtype=np.float32)
    ys = np.arange(h, dtype=np.float32) / cell
    xs = np.arange(w, dtype=np.float32) / cell
    y0, x0 = ys.astype(np.int64), xs.astype(np.int64)
    y1 = (y0 + 1) % gh
    fy, fx = ys - y0, xs - x0
    fy = (fy * fy * (3 - 2 * fy))[:, None]
    fx = (fx * fx * (3 - 2 * fx))[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y1][:, x0] * (1 - fx) + grid[y1][:, x0 + 1] * fx
    out: Texture = (top * (1 - fy) + bottom * fy).astype(np.float32)
    return out


def detail(rng: np.random.Generator, h: int, w: int) -> Texture:
    """Three octaves of value noise, coarse to fine, in 0..1."""
    out: Texture = (
        0.5 * value_noise(rng, h, w, 64)
        + 0.3 * value_noise(rng, h, w, 16)
        + 0.2 * value_noise(rng, h, w, 4)
    )
    return out


def _plane(texture: Texture, base: float, amplitude: float, top: int) -> Plane:
    out: Plane = (base + amplitude * texture).clip(16, top).astype(np.uint8)
    return out


class CostlyScene(ArenaScene):
    """The same interface as the arena (``render(t, marks, key_flash)``), its
    overlays (touch marks, key flash, elixir bar) drawn the same way."""

    def __init__(self, width: int, height: int, seed: int = 1) -> None:
        super().__init__(width, height)
        rng = np.random.default_rng(seed)
        w, h = width, height
        # The terrain, twice over so a window of any offset is one slice.
        luma = _plane(detail(rng, h, w), 60, 60, SCENE_MAX_LUMA)
        self._terrain_y = np.concatenate([luma, luma])
        cw, ch = w // 2, h // 2
        u = _plane(detail(rng, ch, cw), 110, 30, 240)
        v = _plane(detail(rng, ch, cw), 120, 30, 240)
        self._terrain_u = np.concatenate([u, u])
        self._terrain_v = np.concatenate([v, v])
        rows = int(h * RIVER_FRACTION) & ~1
        self._river_top = int(h * 0.47) & ~1
        self._river = [
            _plane(detail(rng, rows, w), 90, 80, SCENE_MAX_LUMA) for _ in range(RIVER_VARIANTS)
        ]
        side = max(8, w // 15)
        self._sprites = [
            _plane(detail(rng, s, s), 80, 120, SCENE_MAX_LUMA)
            for s in (side + (i % 4) * side // 3 for i in range(SPRITES))
        ]

    def render(self, t: float, marks: tuple[Mark, ...], key_flash: bool) -> Plane:
        w, h = self.width, self.height
        buf = np.empty((h * 3 // 2, w), np.uint8)
        yp, up, vp = self._planes(buf)
        offset = int(t * SCROLL_PX_PER_S) % h & ~1
        yp[:] = self._terrain_y[offset : offset + h]
        up[:] = self._terrain_u[offset // 2 : offset // 2 + h // 2]
        vp[:] = self._terrain_v[offset // 2 : offset // 2 + h // 2]
        river = self._river[int(t * 30) % RIVER_VARIANTS]
        yp[self._river_top : self._river_top + river.shape[0]] = river
        for i, sprite in enumerate(self._sprites):
            s = sprite.shape[0]
            x = int((w - s) * (0.5 + 0.45 * math.sin(t * (0.7 + 0.13 * i) + i)))
            y = int((h - s) * (0.5 + 0.45 * math.cos(t * (0.5 + 0.11 * i) + 2 * i)))
            yp[y : y + s, x : x + s] = sprite
        self._draw_overlays(buf, t, marks, key_flash)
        return buf


SCENES = {"arena": ArenaScene, "costly": CostlyScene}
