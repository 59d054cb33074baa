"""The retry schedule of the worker's link core, for the server and the game."""

from __future__ import annotations

import random


class Backoff:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**n)]."""

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        self.base, self.cap = base, cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        return min(self.cap, self.base * 2.0 ** min(self.attempt, 62))

    def next_delay(self) -> float:
        ceiling = self.ceiling()
        self.attempt += 1
        return self._rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        self.attempt = 0
