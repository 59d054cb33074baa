"""/metrics: the rules' counters and the node's state, in Prometheus's text.

Nothing here is kept in step by hand: every family is read at scrape time,
the counters from ``rules.counters`` and the gauges from the hub's records,
so ``/metrics`` can never disagree with ``/api/status``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from playcast.signaling.rules.counters import Count, Counters, Spread

if TYPE_CHECKING:
    from playcast.signaling.hub import Hub

# Counter attribute -> (metric name, help, label names).
COUNTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "registrations": ("playcast_registrations", "Worker registrations", ("game",)),
    "sessions_started": (
        "playcast_sessions_started",
        "Sessions started (client assigned)",
        ("game",),
    ),
    "sessions_ended": ("playcast_sessions_ended", "Sessions ended, by reason", ("reason",)),
    "rejections": ("playcast_rejections", "Clients rejected, by reason", ("reason",)),
    "ticket_refusals": (
        "playcast_ticket_refusals",
        "Joins refused (unauthorized) for their ticket, by why",
        ("why",),
    ),
    "bad_messages": ("playcast_bad_messages", "Messages answered with an error", ("code",)),
    "rate_limit_closes": (
        "playcast_rate_limit_closes",
        "Connections closed for flooding",
        ("role",),
    ),
    "slow_closes": (
        "playcast_slow_consumer_closes",
        "Connections closed because they did not read",
        ("role",),
    ),
    "heartbeat_timeouts": (
        "playcast_heartbeat_timeouts",
        "Connections that missed pongs",
        ("role",),
    ),
    "shutdown_acks": ("playcast_shutdown_acks", "Answers to shutdown", ("outcome",)),
    "per_ip_refusals": (
        "playcast_per_ip_refusals",
        "Connections refused at the upgrade: too many from one address",
        ("role",),
    ),
    "webrtc_failures": (
        "playcast_webrtc_failures",
        "webrtc_failed reports, by the reporting role and the kind of failure",
        ("role", "kind"),
    ),
    "resume_events": (
        "playcast_resume_events",
        "Members away (socket dropped mid-session), resumed, refused, or out of grace",
        ("event",),
    ),
    "node_events": (
        "playcast_node_events",
        "Cluster events: a peer node found dead, this node cut off or back",
        ("event",),
    ),
    "hello_timeouts": (
        "playcast_hello_timeouts",
        "Connections closed for sending no register or join in time",
        ("role",),
    ),
    "internal_errors": (
        "playcast_internal_errors",
        "Bugs met while handling a peer (contained to that peer), by where",
        ("where",),
    ),
    "internal_closes": (
        "playcast_internal_error_closes",
        "Connections closed with 1011 after an internal error",
        ("role",),
    ),
}
SPREADS: dict[str, tuple[str, str]] = {
    "handshake_seconds": (
        "playcast_handshake_seconds",
        "From assignment to both peers reporting webrtc_connected",
    ),
    "heartbeat_rtt_seconds": ("playcast_heartbeat_rtt_seconds", "Round trip of server pings"),
}


@dataclass(frozen=True, slots=True)
class Readings:
    """The gauges' values, read from the node's records at scrape time."""

    connections: dict[str, int]
    workers: dict[tuple[str, str], int]  # (status, game) -> count
    sessions: dict[str, int]  # phase -> count


def readings(hub: Hub) -> Readings:
    """What the gauges show, counted from the node's records."""
    workers: dict[tuple[str, str], int] = {}
    for w in hub.roster.workers.values():
        key = (w.status, w.game)
        workers[key] = workers.get(key, 0) + 1
    phases: dict[str, int] = {}
    for s in hub.table.sessions.values():
        phases[s.phase] = phases.get(s.phase, 0) + 1
    return Readings(
        connections={
            "worker": len(hub.roster.workers),
            "client": len(hub.roster.clients),
            "closing": len(hub.closings.peers),
            "waiting": len(hub.line.clients),
        },
        workers=workers,
        sessions=phases,
    )


class _Collector(Collector):
    def __init__(self, counters: Counters, read: Callable[[], Readings]) -> None:
        self._counters = counters
        self._read = read

    def collect(self) -> Iterator[Metric]:
        for attr, (name, text, labels) in COUNTS.items():
            count: Count = getattr(self._counters, attr)
            family = CounterMetricFamily(name, text, labels=list(labels))
            for values, n in sorted(count.values.items()):
                family.add_metric(list(values), n)
            yield family
        for attr, (name, text) in SPREADS.items():
            spread: Spread = getattr(self._counters, attr)
            cumulative, buckets = 0, []
            for bound, n in zip([*spread.bounds, float("inf")], spread.buckets, strict=True):
                cumulative += n
                buckets.append((_le(bound), cumulative))
            histogram = HistogramMetricFamily(name, text)
            histogram.add_metric([], buckets, spread.total)
            yield histogram
        readings = self._read()
        conns = GaugeMetricFamily(
            "playcast_connections", "Open WebSocket connections by role", labels=["role"]
        )
        for role, n in readings.connections.items():
            conns.add_metric([role], n)
        yield conns
        workers = GaugeMetricFamily(
            "playcast_workers", "Workers by status and game", labels=["status", "game"]
        )
        for (status, game), n in sorted(readings.workers.items()):
            workers.add_metric([status, game], n)
        yield workers
        sessions = GaugeMetricFamily("playcast_sessions", "Sessions by phase", labels=["phase"])
        for phase, n in sorted(readings.sessions.items()):
            sessions.add_metric([phase], n)
        yield sessions


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class Metrics:
    """One registry per server, over the rules' counters and the readings."""

    def __init__(self, counters: Counters, read: Callable[[], Readings]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(counters, read))

    def render(self, node: str | None = None) -> bytes:
        """The exposition; in a cluster every sample carries ``node``."""
        if node is None:
            return generate_latest(self.registry)
        return generate_latest(_Labelled(self.registry, node))

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """One sample's value (for tests and tools), as Prometheus names it."""
        return self.registry.get_sample_value(name, labels or {})


class _Labelled:
    """A registry's metrics with one more label on every sample."""

    def __init__(self, registry: CollectorRegistry, node: str) -> None:
        self._registry, self._node = registry, node

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            out = Metric(family.name, family.documentation, family.type, family.unit)
            for s in family.samples:
                out.add_sample(s.name, {**s.labels, "node": self._node}, s.value, s.timestamp)
            yield out
