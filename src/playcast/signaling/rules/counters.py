"""What the rules count, as plain numbers: no metrics library below the app.

The rules only add to these; the app's metrics (``app/metrics.py``) read
them at scrape time and give them their Prometheus names and help texts.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field


class Count:
    """A counter per tuple of label values."""

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: dict[tuple[str, ...], int] = {}

    def inc(self, *labels: str) -> None:
        self.values[labels] = self.values.get(labels, 0) + 1

    def get(self, *labels: str) -> int:
        return self.values.get(labels, 0)


class Spread:
    """A histogram: how many observations fell at or under each bound (the
    last bucket: above every bound), their sum and their count."""

    __slots__ = ("bounds", "buckets", "count", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.buckets[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1


@dataclass(slots=True)
class Counters:
    registrations: Count = field(default_factory=Count)  # game
    sessions_started: Count = field(default_factory=Count)  # game
    sessions_ended: Count = field(default_factory=Count)  # reason
    rejections: Count = field(default_factory=Count)  # reason
    ticket_refusals: Count = field(default_factory=Count)  # why (rules/tickets.py)
    bad_messages: Count = field(default_factory=Count)  # code
    rate_limit_closes: Count = field(default_factory=Count)  # role
    slow_closes: Count = field(default_factory=Count)  # role
    heartbeat_timeouts: Count = field(default_factory=Count)  # role
    hello_timeouts: Count = field(default_factory=Count)  # role
    shutdown_acks: Count = field(default_factory=Count)  # outcome
    per_ip_refusals: Count = field(default_factory=Count)  # role
    webrtc_failures: Count = field(default_factory=Count)  # role, kind
    resume_events: Count = field(default_factory=Count)  # event
    node_events: Count = field(default_factory=Count)  # event
    internal_errors: Count = field(default_factory=Count)  # where
    internal_closes: Count = field(default_factory=Count)  # role
    handshake_seconds: Spread = field(
        default_factory=lambda: Spread((0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10, 20))
    )
    heartbeat_rtt_seconds: Spread = field(
        default_factory=lambda: Spread((0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
    )
