"""The synthetic game at the bottom of the player's link: once the bit rate
alone cannot carry the picture, fewer frames a second, then a smaller
picture, along a ladder with hysteresis (``backends/ladder.py``)."""

from __future__ import annotations

from collections import deque

from playcast.backends.h264 import EncoderSettings
from playcast.backends.ladder import Ladder, LadderTiming

# The bottom of the link: (frame rate factor, size factor, the video bit/s a
# 720x1280 30 fps picture needs for that rung); the needs scale with pixels.
BOTTOM = ((1.0, 1.0, 200_000), (2 / 3, 1.0, 130_000), (0.5, 1.0, 90_000), (0.5, 0.5, 0))
BOTTOM_TIMING = LadderTiming(down_after=1.0, up_after=5.0, headroom=1.25)
# An encoder that sends this much over its target for a second cannot hold it
# at this rung (libvpx at its coarsest, on a detailed picture): step down.
OVERSHOOT = 1.25


class OutputRate:
    """What the encoder really sends, over the last second."""

    def __init__(self) -> None:
        self._sizes: deque[tuple[float, int]] = deque()

    def add(self, now: float, size: int) -> None:
        self._sizes.append((now, size))
        while self._sizes[0][0] < now - 1.0:
            self._sizes.popleft()

    def clear(self) -> None:
        self._sizes.clear()

    def over(self, now: float, target: int | None) -> bool:
        """A whole second sent past ``OVERSHOOT`` times ``target``."""
        if target is None or not self._sizes or now - self._sizes[0][0] < 0.9:
            return False
        return 8 * sum(size for _, size in self._sizes) > OVERSHOOT * target


def bottom_ladder(settings: EncoderSettings) -> Ladder:
    """``BOTTOM``'s ladder for a picture of ``settings``' size and frame rate."""
    scale = settings.width * settings.height / (720 * 1280) * settings.fps / 30
    return Ladder([round(need * scale) for _, _, need in BOTTOM], BOTTOM_TIMING)
