"""What leaves for the player, and when: a token bucket and the retransmission
queue, with no I/O (fed the time; tests use a fake clock).

aiortc sends every packet of a frame back to back and answers a NACK with
every packet it names at once, so a keyframe or a long NACK leaves at line
rate and overflows any shallow queue on the way (issue 24's storm). Here:

- **The bucket** drains at ``FACTOR`` (1.2) times the target bit rate and
  holds ``burst`` bits, so a small frame leaves at once and a keyframe is
  spread over its fair share of the link. Video is charged, retransmissions
  included; only video media waits for it, and since the sender awaits each
  packet, the wait reaches the game as back-pressure. (Sound and RTCP go by
  their own clocks: the target is the video's, see adaptation.py.)
- **Retransmissions** go behind media: one is sent only when the bucket has
  room and no video packet is waiting. A lost packet from before the last
  keyframe is not worth sending (a decoder that lost it needs that keyframe
  and nothing older); nor is one sent again within a round trip of its last
  copy, nor one that waited longer than ``MAX_WAIT``: by then the player has
  asked for a keyframe. And a NACK that asks for more than a keyframe costs
  (after an outage, a burst) is better answered with a keyframe.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

FACTOR: Final = 1.2
# What leaves at once: an ordinary frame goes out whole (the pacer is for
# keyframes and retransmission bursts), and a burst fits a 100 ms queue even
# at 500 kbit/s.
BURST_SECONDS: Final = 0.04
MIN_BURST_BYTES: Final = 6_000
MAX_WAIT: Final = 1.0
MAX_QUEUED: Final = 1_000
PACKET_BYTES: Final = 1_200  # what a retransmission is assumed to cost before it is made
RESENT_MEMORY: Final = 4_096


def seq_before(a: int, b: int) -> bool:
    """RTP sequence number ``a`` comes before ``b`` (16 bits, wrapping)."""
    return a != b and (b - a) & 0xFFFF < 0x8000


@dataclass(slots=True)
class PacerCounts:
    media_waits: int = 0  # video packets that had to wait for the bucket
    retransmitted: int = 0
    dropped_old: int = 0  # from before the last keyframe
    dropped_late: int = 0  # waited past MAX_WAIT
    dropped_repeat: int = 0  # asked again within a round trip of its last copy
    answered_by_keyframe: int = 0  # lost packets a keyframe replaced (more than it costs)
    copies: int = 0  # copies sent with the packet itself, on a lossy link


class Pacer:
    def __init__(
        self,
        target_bps: float,
        now: float,
        factor: float = FACTOR,
        counts: PacerCounts | None = None,
    ) -> None:
        self.factor = factor
        self.rate = factor * target_bps  # bit/s the bucket drains at
        self._free_at = now  # when the bucket is empty again
        self.keyframe_seq: int | None = None  # the first packet of the last keyframe
        self.rtt = 0.1
        self._queue: OrderedDict[int, float] = OrderedDict()  # seq -> asked at
        self._resent: OrderedDict[int, float] = OrderedDict()  # seq -> last copy at
        self.media_waiting = 0  # video packets blocked on the bucket right now
        self.counts = counts if counts is not None else PacerCounts()

    @property
    def burst(self) -> float:
        """Bits the bucket may hold: what leaves at once."""
        return max(8 * MIN_BURST_BYTES, self.rate * BURST_SECONDS)

    def set_target(self, target_bps: float, now: float) -> None:
        """A new target: the bits still in the bucket drain at the new rate."""
        backlog = max(0.0, self._free_at - now) * self.rate
        self.rate = self.factor * target_bps
        self._free_at = now + backlog / self.rate

    def delay(self, now: float) -> float:
        """Seconds a packet waits before the bucket takes it (0: now): any packet
        goes once the bucket holds less than its burst."""
        return max(0.0, self._free_at - self.burst / self.rate - now)

    def backlog(self, now: float) -> float:
        """Seconds of sending already charged ahead of ``now``."""
        return max(0.0, self._free_at - now)

    def charge(self, now: float, size: int) -> None:
        """``size`` bytes went on the wire now."""
        self._free_at = max(self._free_at, now) + 8 * size / self.rate

    # --- retransmissions ----------------------------------------------------------

    def keyframe_sent(self, first_seq: int) -> None:
        self.keyframe_seq = first_seq

    @staticmethod
    def longest_run(lost: list[int]) -> int:
        """The most consecutive sequence numbers in ``lost`` (an outage's mark)."""
        longest = run = 0
        previous: int | None = None
        for seq in sorted(lost):
            run = run + 1 if previous is not None and seq == previous + 1 else 1
            longest = max(longest, run)
            previous = seq
        return longest

    def nack(self, now: float, lost: list[int], keyframe_bytes: int) -> bool:
        """The player lost ``lost``: queue what is still worth sending. True when
        that is more than a keyframe of ``keyframe_bytes`` costs (an outage, a
        burst): then nothing is queued, and a keyframe is the cheaper answer."""
        worth = []
        for seq in lost:
            if self.keyframe_seq is not None and seq_before(seq, self.keyframe_seq):
                self.counts.dropped_old += 1
            elif now - self._resent.get(seq, -math.inf) < self.rtt:
                self.counts.dropped_repeat += 1
            elif seq not in self._queue:
                worth.append(seq)
        if len(worth) * PACKET_BYTES > keyframe_bytes:
            self.counts.answered_by_keyframe += len(worth)
            return True
        for seq in worth:
            self._queue[seq] = now
        while len(self._queue) > MAX_QUEUED:
            self._queue.popitem(last=False)
            self.counts.dropped_late += 1
        return False

    def copied(self, now: float, seq: int) -> None:
        """A copy of ``seq`` went out with it (a lossy link): a NACK for it
        within a round trip is answered by the copy."""
        self._remember(now, seq)
        self.counts.copies += 1

    def _remember(self, now: float, seq: int) -> None:
        self._resent[seq] = now
        self._resent.move_to_end(seq)
        if len(self._resent) > RESENT_MEMORY:
            self._resent.popitem(last=False)

    def next_retransmission(self, now: float) -> tuple[int | None, float]:
        """The sequence number to retransmit now, if any, and else how long to
        wait before asking again (``math.inf``: until the next NACK)."""
        while self._queue:
            seq, asked = next(iter(self._queue.items()))
            stale = self.keyframe_seq is not None and seq_before(seq, self.keyframe_seq)
            if now - asked > MAX_WAIT or stale:
                del self._queue[seq]
                if stale:
                    self.counts.dropped_old += 1
                else:
                    self.counts.dropped_late += 1
                continue
            if self.media_waiting:
                return None, self.delay(now) or 0.005
            wait = self.delay(now)
            if wait > 0:
                return None, wait
            del self._queue[seq]
            self._remember(now, seq)
            self.counts.retransmitted += 1
            return seq, 0.0
        return None, math.inf

    @property
    def queued(self) -> int:
        return len(self._queue)
