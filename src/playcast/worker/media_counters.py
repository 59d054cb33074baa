"""The worker's counters about its players' links, across sessions, for
``/metrics`` (``worker/metrics.py``): the cores update their own parts, the
collector reads them at scrape time."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from playcast.worker.keyframe_gate import KeyframeCounts
from playcast.worker.pacer import PacerCounts


@dataclass(slots=True)
class MediaCounters:
    target_bps: int = 0  # the current (or last) session's video target
    # Target changes by direction ("up", "down"): each one is also a log line.
    target_changes: Counter[str] = field(default_factory=Counter)
    encoding_changes: int = 0  # the backend's encoding moved (a rung, a rate mode, a frame rate)
    copies_changes: int = 0  # a lossy link's copies of each video packet changed in number
    nacks: int = 0  # NACK packets from players
    # NACKs that asked for more than a keyframe costs, answered with a keyframe.
    nack_keyframes: int = 0
    picture_stalls: int = 0  # a player's page said its picture stopped while connected
    keyframes: KeyframeCounts = field(default_factory=KeyframeCounts)
    pacer: PacerCounts = field(default_factory=PacerCounts)
