"""A ladder of encodings with hysteresis, with no I/O (fed the time).

Where an encoder cannot follow a bit rate smoothly, the stream moves along
rungs instead: the phone's (bit rate, then picture size: each move restarts
its video), and the synthetic game's bottom (frame rate, then size). Each
rung needs a bit rate; the ladder is told the target as it changes and as
time passes, and moves:

- **down** once the target has stayed under the current rung's need for
  ``down_after`` seconds, straight to the highest rung that fits (or the
  last);
- **up** one rung once the target has stayed ``headroom`` over the next
  rung's need for ``up_after`` seconds; or, with ``probe``, over the current
  rung's. An encoder that follows the target shows the link's room by itself;
  one held at its rung cannot, since the browser's estimate never grows past
  1.5 times what it receives, so the next rung can only be tried.

The gap between the two (a rung's need, and the next one's plus headroom)
and the two delays keep it from flapping on a wobbling estimate; and a step
up that had to come back down within two waits doubles the next wait (up to
``MAX_BACKOFF`` times), so a rung the link cannot hold is not tried every
``up_after`` seconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

MAX_BACKOFF: Final = 8


@dataclass(frozen=True, slots=True)
class LadderTiming:
    down_after: float = 2.0
    up_after: float = 10.0
    headroom: float = 1.2
    probe: bool = False


class Ladder:
    def __init__(self, needs: Sequence[int], timing: LadderTiming = LadderTiming()) -> None:
        if not needs or list(needs) != sorted(needs, reverse=True):
            raise ValueError(f"a ladder's rungs go down: {list(needs)}")
        self.needs = tuple(needs)
        self.timing = timing
        self.rung = 0
        self.up_wait = timing.up_after
        self._last_up = -math.inf
        self._below_since: float | None = None
        self._above_since: float | None = None

    def fit(self, target: float) -> int:
        """The highest rung ``target`` carries (the last if none)."""
        return next((i for i, need in enumerate(self.needs) if target >= need), len(self.needs) - 1)

    def update(self, now: float, target: float | None) -> int | None:
        """The new rung if the ladder moves now, else None (None target: the top)."""
        t = self.timing
        if target is None:
            self._below_since = self._above_since = None
            return self._move(0)
        if target < self.needs[self.rung]:
            self._above_since = None
            if self._below_since is None:
                self._below_since = now
            if now - self._below_since >= t.down_after:
                failed_up = now - self._last_up < 2 * self.up_wait
                self.up_wait = (
                    min(2 * self.up_wait, MAX_BACKOFF * t.up_after) if failed_up else t.up_after
                )
                return self._move(self.fit(target))
            return None
        self._below_since = None
        above = self.needs[self.rung if t.probe else self.rung - 1] if self.rung > 0 else math.inf
        if target >= t.headroom * above:
            if self._above_since is None:
                self._above_since = now
            if now - self._above_since >= self.up_wait:
                self._last_up = now
                return self._move(self.rung - 1)
            return None
        self._above_since = None
        return None

    def _move(self, rung: int) -> int | None:
        self._below_since = self._above_since = None
        if rung == self.rung:
            return None
        self.rung = rung
        return rung
