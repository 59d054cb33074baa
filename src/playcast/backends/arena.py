"""The synthetic game's picture: a moving arena drawn straight into I420 planes.

Drawing in YUV skips a colour conversion per frame; the static arena is drawn
once and each frame only copies it and stamps a few small shapes, so a
720x1280 picture costs well under a millisecond. The scene never uses pure
white (luma stays at or below ``SCENE_MAX_LUMA``): white belongs to touch marks
alone, so a player (or a test) can tell at once where input landed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt

Plane = npt.NDArray[np.uint8]
Yuv = tuple[int, int, int]

WHITE: Yuv = (235, 128, 128)  # BT.601 limited-range white: RGB 255 once decoded
SCENE_MAX_LUMA = 200
MARK_RADIUS_FRACTION = 0.04  # of the width; the issue asks for at least 3 %


def rgb_to_yuv(r: int, g: int, b: int) -> Yuv:
    """BT.601 limited range, the matrix browsers assume for untagged H.264."""
    rf, gf, bf = r / 255, g / 255, b / 255
    y = 16 + 65.481 * rf + 128.553 * gf + 24.966 * bf
    u = 128 - 37.797 * rf - 74.203 * gf + 112.0 * bf
    v = 128 + 112.0 * rf - 93.786 * gf - 18.214 * bf
    return round(min(y, SCENE_MAX_LUMA)), round(u), round(v)


GRASS_A = rgb_to_yuv(70, 150, 60)
GRASS_B = rgb_to_yuv(60, 135, 55)
RIVER = rgb_to_yuv(40, 110, 190)
BRIDGE = rgb_to_yuv(140, 100, 60)
BORDER = rgb_to_yuv(45, 50, 60)
RED_TOWER = rgb_to_yuv(190, 50, 50)
BLUE_TOWER = rgb_to_yuv(50, 90, 200)
ELIXIR = rgb_to_yuv(200, 60, 200)
BAR_BACK = rgb_to_yuv(30, 30, 40)
KEY_FLASH = rgb_to_yuv(240, 160, 30)
UNIT_COLOURS = (
    rgb_to_yuv(230, 70, 70),
    rgb_to_yuv(80, 130, 240),
    rgb_to_yuv(240, 210, 60),
    rgb_to_yuv(160, 90, 220),
    rgb_to_yuv(250, 140, 40),
)


@dataclass(frozen=True, slots=True)
class Mark:
    """A white disc where a touch landed, shown until ``until`` (scene seconds)."""

    x: float  # normalized
    y: float
    until: float


@cache
def _disc_mask(radius: int) -> npt.NDArray[np.bool_]:
    d = np.arange(-radius, radius + 1)
    return (d[:, None] ** 2 + d[None, :] ** 2) <= radius * radius


class ArenaScene:
    def __init__(self, width: int, height: int) -> None:
        if width % 2 or height % 2:
            raise ValueError("width and height must be even for 4:2:0 video")
        self.width = width
        self.height = height
        self.mark_radius = max(2, math.ceil(width * MARK_RADIUS_FRACTION))
        self._base = self._draw_arena()

    # --- plane views --------------------------------------------------------

    def _planes(self, buf: Plane) -> tuple[Plane, Plane, Plane]:
        w, h = self.width, self.height
        q = h // 4  # the chroma planes are (h/2 x w/2) = h/4 full-width rows each
        y = buf[:h]
        u = buf[h : h + q].reshape(h // 2, w // 2)
        v = buf[h + q : h + 2 * q].reshape(h // 2, w // 2)
        return y, u, v

    def _fill_rect(self, buf: Plane, x0: int, y0: int, x1: int, y1: int, c: Yuv) -> None:
        x0, x1 = max(0, x0) & ~1, min(self.width, x1)
        y0, y1 = max(0, y0) & ~1, min(self.height, y1)
        if x1 <= x0 or y1 <= y0:
            return
        yp, up, vp = self._planes(buf)
        yp[y0:y1, x0:x1] = c[0]
        up[y0 // 2 : (y1 + 1) // 2, x0 // 2 : (x1 + 1) // 2] = c[1]
        vp[y0 // 2 : (y1 + 1) // 2, x0 // 2 : (x1 + 1) // 2] = c[2]

    def _disc(self, buf: Plane, cx: int, cy: int, radius: int, c: Yuv) -> None:
        yp, up, vp = self._planes(buf)
        self._stamp(yp, cx, cy, radius, c[0])
        half = max(1, radius // 2)
        self._stamp(up, cx // 2, cy // 2, half, c[1])
        self._stamp(vp, cx // 2, cy // 2, half, c[2])

    @staticmethod
    def _stamp(plane: Plane, cx: int, cy: int, radius: int, value: int) -> None:
        mask = _disc_mask(radius)
        h, w = plane.shape
        x0, y0 = cx - radius, cy - radius
        x1, y1 = x0 + mask.shape[1], y0 + mask.shape[0]
        cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if cx1 <= cx0 or cy1 <= cy0:
            return
        sub = mask[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        plane[cy0:cy1, cx0:cx1][sub] = value

    # --- the static arena ----------------------------------------------------

    def _draw_arena(self) -> Plane:
        w, h = self.width, self.height
        buf = np.empty((h * 3 // 2, w), np.uint8)
        yp, up, vp = self._planes(buf)
        tile = max(2, (w // 18) & ~1)
        rows = (np.arange(h) // tile)[:, None]
        cols = (np.arange(w) // tile)[None, :]
        checker = (rows + cols) % 2 == 0
        yp[:] = np.where(checker, GRASS_A[0], GRASS_B[0])
        up[:] = np.where(checker[::2, ::2], GRASS_A[1], GRASS_B[1])
        vp[:] = np.where(checker[::2, ::2], GRASS_A[2], GRASS_B[2])
        border = max(2, w // 40)
        self._fill_rect(buf, 0, 0, w, border, BORDER)
        self._fill_rect(buf, 0, h - border, w, h, BORDER)
        self._fill_rect(buf, 0, 0, border, h, BORDER)
        self._fill_rect(buf, w - border, 0, w, h, BORDER)
        river_top, river_bottom = int(h * 0.47), int(h * 0.53)
        self._fill_rect(buf, border, river_top, w - border, river_bottom, RIVER)
        for lane in (0.22, 0.78):
            cx = int(w * lane)
            self._fill_rect(
                buf, cx - w // 16, river_top - 6, cx + w // 16, river_bottom + 6, BRIDGE
            )
        for y_frac, colour in ((0.08, RED_TOWER), (0.92, BLUE_TOWER)):
            cy = int(h * y_frac)
            self._fill_rect(
                buf, w // 2 - w // 10, cy - w // 10, w // 2 + w // 10, cy + w // 10, colour
            )
        for y_frac, colour in ((0.2, RED_TOWER), (0.8, BLUE_TOWER)):
            cy = int(h * y_frac)
            for lane in (0.22, 0.78):
                cx = int(w * lane)
                self._fill_rect(buf, cx - w // 14, cy - w // 14, cx + w // 14, cy + w // 14, colour)
        return buf

    # --- one frame -----------------------------------------------------------

    def render(self, t: float, marks: tuple[Mark, ...], key_flash: bool) -> Plane:
        """The picture at scene time ``t`` (seconds) with the live touch marks."""
        buf = self._base.copy()
        self._draw_units(buf, t)
        self._draw_overlays(buf, t, marks, key_flash)
        return buf

    def _draw_units(self, buf: Plane, t: float) -> None:
        w, h = self.width, self.height
        # Units march up and down both lanes, each at its own pace and sway.
        unit_r = max(2, w // 36)
        for i in range(10):
            lane = 0.22 if i % 2 == 0 else 0.78
            speed = 0.06 + 0.015 * (i % 5)
            phase = (t * speed + i * 0.137) % 2.0
            along = phase if phase < 1.0 else 2.0 - phase
            cy = int(h * (0.22 + 0.56 * along))
            cx = int(w * lane + math.sin(t * 2.0 + i) * w * 0.05)
            self._disc(buf, cx, cy, unit_r, UNIT_COLOURS[i % len(UNIT_COLOURS)])

    def _draw_overlays(
        self, buf: Plane, t: float, marks: tuple[Mark, ...], key_flash: bool
    ) -> None:
        """What every scene draws on top: the key flash, the elixir bar, the touch marks."""
        w, h = self.width, self.height
        if key_flash:
            band = max(2, w // 40)
            self._fill_rect(buf, 0, 0, w, band, KEY_FLASH)
            self._fill_rect(buf, 0, h - band, w, h, KEY_FLASH)
        # The elixir bar fills over ten seconds: steady motion along the bottom.
        bar_y0, bar_y1 = h - h // 24, h - h // 48
        margin = w // 10
        self._fill_rect(buf, margin, bar_y0, w - margin, bar_y1, BAR_BACK)
        filled = int((w - 2 * margin) * ((t % 10.0) / 10.0))
        self._fill_rect(buf, margin, bar_y0, margin + filled, bar_y1, ELIXIR)
        for m in marks:
            if m.until > t:
                self._disc(buf, round(m.x * (w - 1)), round(m.y * (h - 1)), self.mark_radius, WHITE)
