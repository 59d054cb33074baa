"""Keyframe requests, merged: the player's PLI and FIR answered at once, but
never faster than a keyframe can cross the link. No I/O (fed the time).

A browser that lost part of a picture asks for a keyframe, and asks again
every 200 ms or so until one has arrived (Chromium), whether or not the
keyframe is already on its way. On a narrow link a keyframe takes a while to
cross (58 kB of the costly scene is nearly a second at 500 kbit/s), so
answering every request makes a keyframe of each, every one cut by the queue
the one before filled: issue 24's storm. Here a request is answered at once
when no keyframe is under way; while one is (from the request until the
keyframe has left, then for as long as it takes to cross the link at the
current estimate, plus a round trip for the player to say whether it came),
further requests are merged into it. A player still missing it asks again
once that window is over.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

# How long a forwarded request waits for its keyframe to leave before the gate
# opens again anyway (a backend that never answers must not silence the player).
ANSWER_TIMEOUT: Final = 1.0


@dataclass(slots=True)
class KeyframeCounts:
    forwarded: int = 0  # requests that made the game send a keyframe
    merged: int = 0  # requests a keyframe already under way answered


class KeyframeGate:
    def __init__(self, counts: KeyframeCounts | None = None) -> None:
        self.counts = counts if counts is not None else KeyframeCounts()
        self._busy_until = -math.inf

    def request(self, now: float) -> bool:
        """The player asked for a keyframe: True to ask the game for one now,
        False when the keyframe under way answers it."""
        if now < self._busy_until:
            self.counts.merged += 1
            return False
        self.counts.forwarded += 1
        self._busy_until = now + ANSWER_TIMEOUT
        return True

    def keyframe_sent(self, now: float, size: int, rate_bps: float, rtt: float) -> None:
        """A keyframe of ``size`` bytes started to leave now; it crosses the link
        at about ``rate_bps``, and a request it answers stops a round trip later."""
        crossing = 8 * size / max(rate_bps, 1.0)
        self._busy_until = now + crossing + rtt

    @property
    def busy_until(self) -> float:
        return self._busy_until
