"""What the player's page presents and receives, read inside the page itself.

``FRAMES_JS`` (installed before the page's own scripts) logs the display time
of every frame the page presents (``requestVideoFrameCallback``'s
``expectedDisplayTime``) on the wall clock (epoch ms), so a harness can line
the pictures up with what it did to the network. ``STATS_JS`` reads the
page's own ``getStats()``: the video receiver's W3C counters and the selected
ICE pair. ``Presented`` turns the frame log into the figures a player feels:
frames per second, the longest gap, how long the picture stood frozen
(counting a freeze that has not ended yet, which the browser's
``freezeCount`` cannot: it counts one only when the next frame comes), and
how soon a moving picture came back after an outage.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass
from typing import Any

FRAMES_JS = """
(() => {
  const log = window.__frames = { at: [] };
  const watch = (v) => {
    const on = (now, meta) => {
      log.at.push(performance.timeOrigin + meta.expectedDisplayTime);
      v.requestVideoFrameCallback(on);
    };
    v.requestVideoFrameCallback(on);
  };
  document.addEventListener('DOMContentLoaded', () => watch(document.querySelector('#stream')));
})();
"""

# The page's frame log from index ``from`` on, in epoch seconds.
FRAMES_FROM_JS = "(i => window.__frames.at.slice(i).map(t => t / 1000))"

STATS_JS = """
(async () => {
  const session = window.playcast.session;
  if (!session || !session.peer) return null;
  const report = await session.peer.getStats();
  const byId = new Map();
  report.forEach((s) => byId.set(s.id, s));
  let video = null, pair = null, transport = null;
  report.forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'video') video = s;
    if (s.type === 'transport') transport = s;
  });
  if (transport && transport.selectedCandidatePairId) {
    pair = byId.get(transport.selectedCandidatePairId);
  }
  if (!pair) report.forEach((s) => {
    if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
  });
  const remote = pair ? byId.get(pair.remoteCandidateId) : null;
  const codec = video && video.codecId ? byId.get(video.codecId) : null;
  const pick = (s, keys) => Object.fromEntries(keys.map((k) => [k, s ? s[k] ?? null : null]));
  return {
    at: Date.now() / 1000,
    state: document.body.dataset.state,
    ice: session.peer.pc.iceConnectionState,
    codec: codec ? codec.mimeType : null,
    video: pick(video, ['framesDecoded', 'framesDropped', 'framesReceived', 'keyFramesDecoded',
      'freezeCount', 'totalFreezesDuration', 'packetsReceived', 'packetsLost', 'bytesReceived',
      'nackCount', 'pliCount', 'firCount']),
    pair: pick(pair, ['bytesReceived', 'bytesSent', 'currentRoundTripTime']),
    remote: remote ? { address: remote.address || remote.ip, port: remote.port } : null,
  };
})()
"""


def freeze_threshold(fps: float) -> float:
    """W3C's freeze rule (webrtc-stats, freezeCount) at a steady ``fps``: a frame
    shown longer than max(3 frame durations, one plus 150 ms)."""
    frame = 1.0 / fps
    return max(3 * frame, frame + 0.150)


@dataclass(frozen=True)
class Presented:
    """Frames presented (epoch seconds, ascending) within a window [start, end)."""

    frames: tuple[float, ...]
    start: float
    end: float
    threshold: float = freeze_threshold(30)

    @classmethod
    def window(
        cls, frames: list[float], start: float, end: float, threshold: float | None = None
    ) -> Presented:
        inside = tuple(t for t in frames if start <= t < end)
        return cls(inside, start, end, freeze_threshold(30) if threshold is None else threshold)

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def fps(self) -> float:
        return len(self.frames) / self.seconds if self.seconds > 0 else 0.0

    def gaps(self) -> list[float]:
        """Time between presented frames, with the window's edges as frames:
        a picture still frozen at the end counts for as long as it has been."""
        edges = [self.start, *self.frames, self.end]
        return [b - a for a, b in itertools.pairwise(edges)]

    @property
    def longest_gap(self) -> float:
        return max(self.gaps())

    def freezes(self) -> tuple[int, float]:
        """(count, seconds) of gaps over the freeze threshold, the open one included."""
        long = [g for g in self.gaps() if g > self.threshold]
        return len(long), sum(long)

    @property
    def frozen_per_minute(self) -> float:
        return 60 * self.freezes()[1] / self.seconds if self.seconds > 0 else 0.0

    def back_after(self, t: float) -> float | None:
        """Seconds from ``t`` to a moving picture: the first frame after ``t`` that
        the next follows within the freeze threshold (None: never in the window)."""
        i = bisect.bisect_right(self.frames, t)
        for a, b in itertools.pairwise(self.frames[i:]):
            if b - a <= self.threshold:
                return a - t
        return None


def stats_delta(before: dict[str, Any], after: dict[str, Any], key: str) -> float:
    """``after - before`` of one video counter (0 where the browser has none)."""
    a = after["video"].get(key)
    b = before["video"].get(key)
    return float(a or 0) - float(b or 0)
