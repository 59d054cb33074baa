"""A network link in user space, as a pure model: a packet goes in at time t and
comes out at t' (or is dropped), with no sockets and no clock of its own.

This kernel has no netem, so the impairment harness models the link itself.
``Link.send(now, size)`` answers with the delivery time or a drop; the UDP
relay (relay.py) is a thin asyncio layer that asks it about every datagram,
and the tests drive it with a fake clock. One ``Link`` is one direction.

What a packet goes through, in order (the order a real access link has):

1. an outage: nothing arriving during one passes (and what would come out
   during one is lost in flight);
2. random loss (independent, each packet with probability ``loss``), then
   burst loss (a Gilbert-Elliott chain: ``GilbertElliott``); a lost packet
   takes no capacity;
3. the bottleneck: a drop-tail queue (``queue_bytes`` or ``queue_ms`` of
   backlog), served at ``capacity`` bit/s, which may change on a schedule;
4. the propagation delay, plus jitter (uniform in ±``jitter``) that never
   reorders packets unless ``reorder`` is set (a late packet holds the ones
   behind it, as on a real path; netem reorders by default, real paths rarely).

Capacity counts ``overhead`` bytes per packet on top of the UDP payload (an
IPv4 and a UDP header: what a real link carries for each datagram).
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass, field, replace

INF = math.inf
# IPv4 (20) + UDP (8) headers: what a link carries per datagram beyond its payload.
UDP_OVERHEAD = 28


@dataclass(frozen=True, slots=True)
class GilbertElliott:
    """Burst loss: a two-state Markov chain stepped once per packet.

    ``p``: chance to go from the good state to the bad one, ``r``: back again;
    in each state a packet is lost with ``loss_good`` / ``loss_bad``. The mean
    burst (time in the bad state) is 1/r packets; the long-run share of packets
    in the bad state is p / (p + r).
    """

    p: float
    r: float
    loss_good: float = 0.0
    loss_bad: float = 1.0

    def __post_init__(self) -> None:
        for name in ("p", "r", "loss_good", "loss_bad"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"GilbertElliott.{name} must be within 0..1, not {value}")
        if self.r == 0.0 and self.p > 0.0:
            raise ValueError("GilbertElliott.r = 0 would never leave the bad state")

    @classmethod
    def bursts(cls, loss: float, mean_burst: float) -> GilbertElliott:
        """The simple Gilbert model: ``loss`` of all packets lost, in bursts of
        ``mean_burst`` packets on average (every packet lost in the bad state)."""
        if not 0.0 <= loss < 1.0 or mean_burst < 1.0:
            raise ValueError("loss must be within 0..1 and mean_burst at least 1")
        r = 1.0 / mean_burst
        return cls(p=r * loss / (1.0 - loss), r=r)

    @property
    def mean_loss(self) -> float:
        """The long-run share of packets lost."""
        if self.p + self.r == 0.0:
            return self.loss_good
        bad = self.p / (self.p + self.r)
        return (1.0 - bad) * self.loss_good + bad * self.loss_bad


@dataclass(frozen=True, slots=True)
class Capacity:
    """A link's rate over time: ``steps`` of (from second, bit/s), the first at 0.

    A step of 0 bit/s carries nothing (packets wait in the queue, or overflow it).
    """

    steps: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if not self.steps or self.steps[0][0] != 0.0:
            raise ValueError("a capacity schedule starts at second 0")
        times = [t for t, _ in self.steps]
        if times != sorted(times) or len(set(times)) != len(times):
            raise ValueError("capacity steps must be in strictly increasing time")
        if any(bps < 0 for _, bps in self.steps):
            raise ValueError("capacity cannot be negative")

    @classmethod
    def constant(cls, bps: float) -> Capacity:
        return cls(((0.0, float(bps)),))

    def stretched(self, factor: float) -> Capacity:
        """The same steps, every time multiplied by ``factor``."""
        return Capacity(tuple((t * factor, bps) for t, bps in self.steps))

    def at(self, t: float) -> float:
        """The rate at time ``t`` (bit/s)."""
        rate = self.steps[0][1]
        for start, bps in self.steps:
            if start > t:
                break
            rate = bps
        return rate

    def finish(self, start: float, bits: float) -> float:
        """When ``bits`` whose sending starts at ``start`` are all sent (INF: never)."""
        t = start
        for i, (_, bps) in enumerate(self.steps):
            end = self.steps[i + 1][0] if i + 1 < len(self.steps) else INF
            if end <= t:
                continue
            if bps > 0:
                span = bits / bps
                if t + span <= end:
                    return t + span
                bits -= (end - t) * bps
            t = end
        return INF


@dataclass(frozen=True, slots=True)
class LinkConfig:
    """One direction of a link. Times in seconds, rates in bit/s; the defaults pass
    everything at once."""

    delay: float = 0.0  # one way
    jitter: float = 0.0  # uniform in ±jitter around the delay
    loss: float = 0.0  # independent random loss
    burst: GilbertElliott | None = None
    capacity: Capacity | None = None  # None: no bottleneck
    # Drop-tail limits of the bottleneck's queue; with a capacity and neither
    # set, RFC 8867's 300 ms (section 4.1's bottleneck queue) applies.
    queue_bytes: int | None = None
    queue_ms: float | None = None
    outages: tuple[tuple[float, float], ...] = ()  # (start, duration)
    reorder: bool = False
    overhead: int = UDP_OVERHEAD

    def __post_init__(self) -> None:
        if self.delay < 0 or self.jitter < 0:
            raise ValueError("delay and jitter cannot be negative")
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError(f"loss must be within 0..1, not {self.loss}")
        if any(d < 0 for _, d in self.outages):
            raise ValueError("an outage cannot last a negative time")

    def with_outages(self, *outages: tuple[float, float]) -> LinkConfig:
        return replace(self, outages=self.outages + tuple(outages))

    def stretched(self, factor: float) -> LinkConfig:
        """Its schedule ``factor`` times as long: capacity steps and outage starts
        move; an outage lasts as long as before (a 1 s hand-over stays 1 s)."""
        return replace(
            self,
            capacity=self.capacity.stretched(factor) if self.capacity else None,
            outages=tuple((s * factor, d) for s, d in self.outages),
        )

    @property
    def queue_limit_ms(self) -> float | None:
        if self.capacity is None:
            return None
        if self.queue_ms is None and self.queue_bytes is None:
            return DEFAULT_QUEUE_MS
        return self.queue_ms


DEFAULT_QUEUE_MS = 300.0  # RFC 8867 section 4.1: bottleneck queue of 300 ms


@dataclass(slots=True)
class LinkStats:
    """What happened to the packets offered so far (payload bytes, no overhead)."""

    offered: int = 0
    offered_bytes: int = 0
    delivered: int = 0
    delivered_bytes: int = 0
    lost_random: int = 0
    lost_burst: int = 0
    lost_outage: int = 0
    dropped_queue: int = 0

    @property
    def dropped(self) -> int:
        return self.lost_random + self.lost_burst + self.lost_outage + self.dropped_queue


@dataclass(slots=True)
class Verdict:
    """A packet's fate: delivered at ``at`` (seconds on the caller's clock), or dropped."""

    at: float | None
    reason: str = ""  # why it was dropped: random, burst, outage, queue

    @property
    def delivered(self) -> bool:
        return self.at is not None


@dataclass(slots=True)
class _Queued:
    departs: float
    size: int  # bytes on the wire


class Link:
    """One direction of a link, on the caller's clock.

    ``origin`` is the caller's time of the schedule's second 0 (outages and
    capacity steps count from it). Decisions are deterministic for a ``seed``.
    """

    def __init__(self, config: LinkConfig, *, origin: float = 0.0, seed: int = 0) -> None:
        self.config = config
        self.origin = origin
        self.stats = LinkStats()
        self._rng = random.Random(seed)
        self._bad = False  # the Gilbert-Elliott state
        self._busy_until = -INF  # the bottleneck is sending until then (schedule time)
        self._queue: deque[_Queued] = deque()
        self._queued_bytes = 0
        self._last_delivery = -INF
        self._outages: list[tuple[float, float]] = [(s, s + d) for s, d in config.outages]

    def reconfigure(self, config: LinkConfig, now: float) -> None:
        """A new config from ``now`` on, its schedule counted from ``now``.

        Packets already in the queue or in flight keep their times.
        """
        shift = now - self.origin
        self.config = config
        self.origin = now
        self._busy_until -= shift
        self._last_delivery -= shift
        for q in self._queue:
            q.departs -= shift
        self._outages = [(s, s + d) for s, d in config.outages]

    def outage(self, now: float, duration: float) -> None:
        """Nothing passes from ``now`` for ``duration`` seconds."""
        t = now - self.origin
        self._outages.append((t, t + duration))

    def restore(self, now: float) -> None:
        """An outage under way ends at ``now`` (one begun with an endless duration too)."""
        t = now - self.origin
        self._outages = [(s, min(e, t) if s <= t else e) for s, e in self._outages]

    def outages(self) -> list[tuple[float, float]]:
        """Every outage as (start, end) on the caller's clock."""
        return [(self.origin + s, self.origin + e) for s, e in self._outages]

    def cut(self, at: float) -> bool:
        """Is the link down at ``at`` (the caller's clock)?"""
        t = at - self.origin
        return any(s <= t < e for s, e in self._outages)

    def send(self, now: float, size: int) -> Verdict:
        """A datagram of ``size`` payload bytes enters the link at ``now``."""
        c = self.config
        s = self.stats
        s.offered += 1
        s.offered_bytes += size
        t = now - self.origin
        if self.cut(now):
            s.lost_outage += 1
            return Verdict(None, "outage")
        if c.loss and self._rng.random() < c.loss:
            s.lost_random += 1
            return Verdict(None, "random")
        if c.burst is not None and self._burst_lost(c.burst):
            s.lost_burst += 1
            return Verdict(None, "burst")
        departs = t
        if c.capacity is not None:
            wire = size + c.overhead
            self._drain(t)
            start = max(t, self._busy_until)
            limit_ms = c.queue_limit_ms
            if limit_ms is not None and self._queue and (start - t) * 1000 > limit_ms:
                s.dropped_queue += 1
                return Verdict(None, "queue")
            if c.queue_bytes is not None and self._queued_bytes + wire > c.queue_bytes:
                s.dropped_queue += 1
                return Verdict(None, "queue")
            departs = c.capacity.finish(start, wire * 8)
            if departs == INF:
                s.dropped_queue += 1  # no capacity ever again: it would wait forever
                return Verdict(None, "queue")
            self._busy_until = departs
            self._queue.append(_Queued(departs, wire))
            self._queued_bytes += wire
        arrives = departs + c.delay
        if c.jitter:
            arrives = max(departs, arrives + self._rng.uniform(-c.jitter, c.jitter))
        if not c.reorder:
            arrives = max(arrives, self._last_delivery)
            self._last_delivery = arrives
        at = self.origin + arrives
        if self.cut(at):
            s.lost_outage += 1  # in flight when the link went down
            return Verdict(None, "outage")
        s.delivered += 1
        s.delivered_bytes += size
        return Verdict(at)

    def _burst_lost(self, ge: GilbertElliott) -> bool:
        # Step the chain, then lose the packet by the state it is in.
        if self._bad:
            if self._rng.random() < ge.r:
                self._bad = False
        elif self._rng.random() < ge.p:
            self._bad = True
        return self._rng.random() < (ge.loss_bad if self._bad else ge.loss_good)

    def _drain(self, t: float) -> None:
        while self._queue and self._queue[0].departs <= t:
            self._queued_bytes -= self._queue.popleft().size

    def backlog_ms(self, now: float) -> float:
        """How long the bottleneck needs for what is queued at ``now``."""
        return max(0.0, self._busy_until - (now - self.origin)) * 1000


@dataclass(frozen=True, slots=True)
class Impairment:
    """Both directions of a player's link: ``down`` carries the worker's media to
    the player, ``up`` the player's input, feedback and acknowledgements back."""

    name: str
    down: LinkConfig = field(default_factory=LinkConfig)
    up: LinkConfig = field(default_factory=LinkConfig)
    note: str = ""

    @classmethod
    def both(cls, name: str, config: LinkConfig, note: str = "") -> Impairment:
        return cls(name, config, config, note)

    def with_outages(self, *outages: tuple[float, float]) -> Impairment:
        """The same, with these outages (start, duration) in both directions."""
        return replace(
            self, down=self.down.with_outages(*outages), up=self.up.with_outages(*outages)
        )

    def without_outages(self) -> Impairment:
        """The same link, never down (what it is before its schedule starts)."""
        return replace(self, down=replace(self.down, outages=()), up=replace(self.up, outages=()))

    def stretched(self, factor: float) -> Impairment:
        """Its schedules ``factor`` times as long (a short run of a long test case)."""
        return replace(self, down=self.down.stretched(factor), up=self.up.stretched(factor))
