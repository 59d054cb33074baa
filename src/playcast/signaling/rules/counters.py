"""Prometheus metrics for the signaling server, one registry per server.

Gauges are read from the hub at scrape time rather than kept in step by
hand, so ``/metrics`` can never disagree with ``/api/status``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


@dataclass(frozen=True, slots=True)
class Readings:
    """The gauges' values, read from the core's state at scrape time."""

    connections: dict[str, int]
    workers: dict[tuple[str, str], int]  # (status, game) -> count
    sessions: dict[str, int]  # phase -> count


class _StateCollector(Collector):
    def __init__(self, read: Callable[[], Readings | None]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        readings = self._read()
        if readings is None:
            return
        conns = GaugeMetricFamily(
            "playcast_connections", "Open WebSocket connections by role", labels=["role"]
        )
        for name, n in readings.connections.items():
            conns.add_metric([name], n)
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


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.registrations = Counter(
            "playcast_registrations", "Worker registrations", ["game"], registry=r
        )
        self.sessions_started = Counter(
            "playcast_sessions_started", "Sessions started (client assigned)", ["game"], registry=r
        )
        self.sessions_ended = Counter(
            "playcast_sessions_ended", "Sessions ended, by reason", ["reason"], registry=r
        )
        self.rejections = Counter(
            "playcast_rejections", "Clients rejected, by reason", ["reason"], registry=r
        )
        self.bad_messages = Counter(
            "playcast_bad_messages", "Messages answered with an error", ["code"], registry=r
        )
        self.rate_limit_closes = Counter(
            "playcast_rate_limit_closes", "Connections closed for flooding", ["role"], registry=r
        )
        self.slow_closes = Counter(
            "playcast_slow_consumer_closes",
            "Connections closed because they did not read",
            ["role"],
            registry=r,
        )
        self.heartbeat_timeouts = Counter(
            "playcast_heartbeat_timeouts", "Connections that missed pongs", ["role"], registry=r
        )
        self.shutdown_acks = Counter(
            "playcast_shutdown_acks", "Answers to shutdown", ["outcome"], registry=r
        )
        self.handshake_seconds = Histogram(
            "playcast_handshake_seconds",
            "From assignment to both peers reporting webrtc_connected",
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10, 20),
            registry=r,
        )
        self.heartbeat_rtt_seconds = Histogram(
            "playcast_heartbeat_rtt_seconds",
            "Round trip of server pings",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.per_ip_refusals = Counter(
            "playcast_per_ip_refusals",
            "Connections refused at the upgrade: too many from one address",
            ["role"],
            registry=r,
        )
        self.webrtc_failures = Counter(
            "playcast_webrtc_failures",
            "webrtc_failed reports, by the reporting role and the kind of failure",
            ["role", "kind"],
            registry=r,
        )
        self.resume_events = Counter(
            "playcast_resume_events",
            "Members away (socket dropped mid-session), resumed, refused, or out of grace",
            ["event"],
            registry=r,
        )
        self.node_events = Counter(
            "playcast_node_events",
            "Cluster events: a peer node found dead, this node cut off or back",
            ["event"],
            registry=r,
        )
        self.hello_timeouts = Counter(
            "playcast_hello_timeouts",
            "Connections closed for sending no register or join in time",
            ["role"],
            registry=r,
        )
        self.internal_errors = Counter(
            "playcast_internal_errors",
            "Bugs met while handling a peer (contained to that peer), by where",
            ["where"],
            registry=r,
        )
        self.internal_closes = Counter(
            "playcast_internal_error_closes",
            "Connections closed with 1011 after an internal error",
            ["role"],
            registry=r,
        )
        self._read: Callable[[], Readings] | None = None
        self._children: dict[tuple[int, tuple[str, ...]], Counter] = {}
        r.register(_StateCollector(lambda: self._read() if self._read else None))

    def count(self, counter: Counter, *labels: str) -> None:
        """``counter.labels(*labels).inc()``, with the child looked up once."""
        key = (id(counter), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(*labels)
        child.inc()

    def attach(self, read: Callable[[], Readings]) -> None:
        self._read = read

    def render(self, node: str | None = None) -> bytes:
        """The exposition; in a cluster every sample carries ``node``."""
        if node is None:
            return generate_latest(self.registry)
        return generate_latest(_Labelled(self.registry, node))


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
