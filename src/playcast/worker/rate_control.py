"""How much the player's link carries: the worker's estimate, from the
player's own RTCP, with no I/O (fed the time; tests use a fake clock).

What the browser sends back is all there is to go on (aiortc negotiates no
transport-wide congestion control): its REMB, a receive-side estimate of what
the link carries, mostly from the delay between packets (Chromium and Firefox
both send it with abs-send-time); and its receiver reports, the packets lost
and, from their timestamps, the round trip. Chromium sends a report with
every RTCP packet, several a second early on, so the loss is taken from the
reports' running counts over ``LOSS_WINDOW`` (a second, as GCC's reports
are), not from each report's own fraction of a few packets. The controller is
Google Congestion Control's loss-based half (draft-ietf-rmcat-gcc-02, section
6; libwebrtc's ``SendSideBandwidthEstimation`` when it has only REMB), under
the REMB as a ceiling:

- loss over 10 %: down by half the loss, at most once per 300 ms + a round trip;
- loss under 2 %: up 8 % (and 1 kbit/s), at most once a second;
- in between: hold. The band between the two is the hysteresis.

A report that follows a long silence (an outage: nothing came either way) says
the outage's loss, not congestion's, and its loss is not acted on; so is a
NACK for a long run of packets (``on_outage``). A silence is
``SILENCE_FACTOR`` times the reports' usual interval (Chromium reports every
200 ms or so once it sends REMB; Firefox about once a second).

Loss that the REMB does not see is the medium's, not congestion's (Wi-Fi, a
bad cell): the browser's delay-based estimate has not fallen for
``REMB_CALM`` seconds, the target is well under it (``UNDER_REMB``: at the
ceiling, the loss may be the link's edge), the round trip is near the least
seen (no queue is filling: a shallow drop-tail queue loses packets before
the REMB sees its delay), and under a quarter of the packets are lost. Sending
slower would not help, but each lost packet costs a low-latency stream a round
trip, and every frame behind it waits. So such loss holds the rate and gets
*copies* instead: each video packet sent again at once (RTX-wrapped, so the
browser takes whichever comes first), once from 3 % loss and twice from 12 %,
which turns 5 % into 0.25 % and 10 % into 0.1 %. The copies come out of the
video's share of the target. Congestion (the REMB falling) drops them at
once; otherwise they step down one at a time after ``COPIES_HOLD`` seconds
under a quarter of their own threshold (the browser's reports count some
packets that a copy made up for as received).

The REMB is a ceiling, but Chromium's can stand still far under the link
(after a cut to 0.85 of what it measured over a stall of ours, its increase
waits for a delay signal it may not get, and it never exceeds 1.5 times what
it receives). libwebrtc probes past it with padding; here, a REMB that has
not moved for ``REMB_STILL`` seconds while the reports show neither loss nor
a growing round trip lets the estimate go on rising, at the same 8 % a
second, up to ``PROBE`` times it. The browser answers with a new REMB if the
link cannot carry that, and the ceiling holds again.

The estimate moves every report; what the encoders, the pacer and the page
hear is the *target*, which follows the estimate only when it has moved by
``CHANGE`` (10 %) or reached a bound, so a wobbling REMB is not a stream of
encoder changes. The target always stays within ``--min-bitrate`` and
``--max-bitrate``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

LOSS_HIGH: Final = 0.10
LOSS_LOW: Final = 0.02
INCREASE: Final = 1.08
INCREASE_STEP: Final = 1_000  # bit/s on top of the 8 %, so a tiny rate still grows
INCREASE_INTERVAL: Final = 1.0
DECREASE_INTERVAL: Final = 0.3  # plus the round trip
LOSS_WINDOW: Final = 1.0
SILENCE_FACTOR: Final = 3.0
MIN_SILENCE: Final = 0.6
# Loss over this is congestion's (or an outage's) whatever the REMB says.
CONGESTION: Final = 0.25
REMB_CALM: Final = 3.0
UNDER_REMB: Final = 0.85
# A round trip over the least seen by this much is a queue filling somewhere.
QUEUE_RTT: Final = 0.03
# A REMB that stands still this long (within REMB_SAME) with neither loss nor
# a queue may be probed past, up to PROBE times it.
REMB_STILL: Final = 2.0
# The REMB lowers the estimate by at most half per REMB_CUT_INTERVAL.
REMB_CUT_INTERVAL: Final = 0.5
REMB_SAME: Final = 0.05
PROBE: Final = 2.0
# The loss from which each number of copies is wanted.
COPIES: Final = (0.03, 0.12)
COPIES_HOLD: Final = 10.0
CHANGE: Final = 0.10
DEFAULT_MAX: Final = 8_000_000
DEFAULT_MIN: Final = 150_000
DEFAULT_START: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class RateSettings:
    min_bitrate: int = DEFAULT_MIN
    max_bitrate: int = DEFAULT_MAX
    # Before the first word from the player: about what the default game needs.
    start_bitrate: int = DEFAULT_START

    def __post_init__(self) -> None:
        if not 0 < self.min_bitrate <= self.max_bitrate:
            raise ValueError(
                f"need 0 < min bit rate ({self.min_bitrate}) <= max ({self.max_bitrate})"
            )

    def clamp(self, bps: float) -> int:
        return int(min(max(bps, self.min_bitrate), self.max_bitrate))


@dataclass(frozen=True, slots=True)
class RateChange:
    """The target moved: from ``old`` to ``new`` bit/s, and why."""

    old: int
    new: int
    reason: str

    @property
    def down(self) -> bool:
        return self.new < self.old


def mbit(bps: float) -> str:
    return f"{bps / 1e6:.2f} Mbit/s"


class RateController:
    """The estimate and the target for one session's video."""

    def __init__(self, settings: RateSettings, now: float) -> None:
        self.settings = settings
        start = settings.clamp(settings.start_bitrate)
        self.estimate = float(start)  # the loss-based estimate, under the REMB
        self.remb: int | None = None
        self.rtt: float | None = None
        self.min_rtt = math.inf
        self.loss = 0.0  # the last report's fraction lost, as acted on
        self.target = start
        self._last_decrease = -math.inf
        self._last_increase = now
        self._last_report: float | None = None
        self._interval = 0.5  # the reports' usual interval, smoothed
        self._window: tuple[float, int, int] | None = None  # start, highest seq, lost
        self.reports = 0
        self.copies = 0
        self._copies_since = now
        self._remb_fell_at = now
        self._remb_moved_at = now
        self._last_remb_cut = -math.inf
        self._cut_floor = 0.0
        self._queue = False

    def on_remb(self, now: float, bps: int) -> RateChange | None:
        """The player's REMB: a ceiling for the estimate."""
        if self.remb is None or bps < (1 - CHANGE) * self.remb:
            self._remb_fell_at = now
            self.copies = 0  # congestion (or the first word): copies would only add to it
        if self.remb is None or abs(bps - self.remb) > REMB_SAME * self.remb:
            self._remb_moved_at = now
        self.remb = max(0, bps)
        self._cap(now)
        return self._publish(f"REMB {mbit(bps)}")

    def _cap(self, now: float) -> None:
        """The estimate under the ceiling, halved at most once per REMB_CUT_INTERVAL:
        a stall of ours (a busy machine) can make the browser's estimate dive far
        under the link for a moment, while a real drop shows in the next REMBs,
        the loss and the round trip within a second."""
        ceiling = self._ceiling(now)
        if ceiling >= self.estimate:
            return
        if now - self._last_remb_cut >= REMB_CUT_INTERVAL:
            self._last_remb_cut = now
            self._cut_floor = 0.5 * self.estimate
        self.estimate = max(ceiling, min(self.estimate, self._cut_floor))

    def _ceiling(self, now: float) -> float:
        """The REMB; or, once it has stood still for REMB_STILL with neither
        loss nor a queue, up to PROBE times it (see the module's docstring)."""
        if self.remb is None:
            return math.inf
        still = now - self._remb_moved_at >= REMB_STILL and not self._queue
        return PROBE * self.remb if still and self.loss < LOSS_LOW else float(self.remb)

    def on_report(
        self, now: float, highest_seq: int, lost: int, rtt: float | None
    ) -> RateChange | None:
        """A receiver report about our video: its extended highest sequence
        number and cumulative count of packets lost; the round trip in seconds
        when known."""
        if rtt is not None:
            self.rtt = rtt
            self.min_rtt = min(self.min_rtt, rtt)
        after_silence = False
        if self._last_report is not None:
            gap = now - self._last_report
            after_silence = gap > max(MIN_SILENCE, SILENCE_FACTOR * self._interval)
            if not after_silence:
                self._interval += 0.2 * (gap - self._interval)
        self._last_report = now
        self.reports += 1
        window = self._window
        if window is None or after_silence or highest_seq < window[1]:
            # The first, or the first after an outage (whose loss says nothing
            # about the link's width): a new window starts here.
            self._window = (now, highest_seq, lost)
            self._last_increase = now
            return None
        start, seq0, lost0 = window
        expected = highest_seq - seq0
        if now - start < LOSS_WINDOW or expected <= 0:
            return None
        self._window = (now, highest_seq, lost)
        fraction_lost = min(1.0, max(0.0, (lost - lost0) / expected))
        self.loss = fraction_lost
        # Loss from before the REMB last fell was the old rate's: already answered.
        answered = start < self._remb_fell_at
        queue = self._queue = self.rtt is not None and self.rtt > 1.1 * self.min_rtt + QUEUE_RTT
        under = self.remb is not None and self.target <= UNDER_REMB * self.remb
        calm = under and now - self._remb_fell_at >= REMB_CALM and not queue
        medium = calm and fraction_lost < CONGESTION
        if fraction_lost >= CONGESTION:
            self.copies = 0
        self._copy(now, fraction_lost if medium else 0.0)
        reason = f"loss {100 * fraction_lost:.0f} %"
        if fraction_lost > LOSS_HIGH and not medium and not answered:
            if now - self._last_decrease >= DECREASE_INTERVAL + (self.rtt or 0.0):
                self.estimate *= 1 - fraction_lost / 2
                self._last_decrease = now
        elif fraction_lost < LOSS_LOW:
            if now - self._last_increase >= INCREASE_INTERVAL:
                self.estimate = self.estimate * INCREASE + INCREASE_STEP
                self._last_increase = now
        else:
            self._last_increase = now  # held: the next increase waits its full interval
        self._cap(now)
        self.estimate = float(self.settings.clamp(self.estimate))
        return self._publish(reason)

    def on_outage(self, now: float) -> None:
        """The player lost a long run of packets at once: an outage, whose loss
        the current window must not count."""
        self._window = None
        self._last_increase = now

    def _copy(self, now: float, loss: float) -> None:
        """Copies for the medium's ``loss`` (0: congestion's, or none)."""
        wanted = sum(loss >= level for level in COPIES)
        if wanted > self.copies:
            self.copies = wanted
            self._copies_since = now
        elif self.copies and loss >= COPIES[self.copies - 1] / 4:
            self._copies_since = now  # still needed: the copies make up for it
        elif self.copies and now - self._copies_since >= COPIES_HOLD:
            self.copies -= 1
            self._copies_since = now

    def _publish(self, reason: str) -> RateChange | None:
        wanted = self.settings.clamp(self.estimate)
        old = self.target
        bound = wanted in (self.settings.min_bitrate, self.settings.max_bitrate)
        if wanted == old or (abs(wanted - old) < CHANGE * old and not bound):
            return None
        self.target = wanted
        return RateChange(old, wanted, reason)
