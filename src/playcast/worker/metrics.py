"""The worker's Prometheus endpoint (opt-in, ``--metrics-port``).

The server's /metrics sees the pool, but not why a worker keeps leaving it:
a sick phone would only show as a worker id that changes every few seconds.
Each worker therefore serves its own counters, read at scrape time from the
link core (the one place that knows them), on loopback by default since it
is meant for the machine's own Prometheus agent. It runs on the worker's own
event loop (aiohttp, already a dependency), so it needs no thread and stops
with the worker.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from playcast.worker.link_state import LinkSettings
from playcast.worker.media_counters import MediaCounters

FAILURE_KINDS = ("start", "reset", "health", "idle", "session")


class LinkCounters(Protocol):
    """What the collector reads from the link core (``Link``) at scrape time."""

    @property
    def settings(self) -> LinkSettings: ...
    @property
    def failures(self) -> Counter[str]: ...
    @property
    def failure_streak(self) -> int: ...
    @property
    def last_delay(self) -> float: ...
    @property
    def registrations(self) -> int: ...
    @property
    def sessions(self) -> int: ...
    @property
    def resumes(self) -> int: ...
    @property
    def resume_failures(self) -> Counter[str]: ...
    @property
    def available(self) -> bool: ...


class WorkerCollector(Collector):
    def __init__(self, link: LinkCounters, media: MediaCounters | None = None) -> None:
        self.link = link
        self.media = media if media is not None else MediaCounters()

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        link = self.link
        game = link.settings.game
        failures = CounterMetricFamily(
            "playcast_worker_backend_failures",
            "Game failures, by when they were noticed: start, reset, health (the check "
            "before registering), idle (pushed or polled while available), session",
            labels=["game", "kind"],
        )
        for kind in FAILURE_KINDS:
            failures.add_metric([game, kind], link.failures[kind])
        yield failures
        streak = GaugeMetricFamily(
            "playcast_worker_backend_failure_streak",
            "Game failures in a row (0 once it has stayed healthy --stable-after)",
            labels=["game"],
        )
        streak.add_metric([game], link.failure_streak)
        yield streak
        delay = GaugeMetricFamily(
            "playcast_worker_backend_retry_delay_seconds",
            "The last backoff delay before retrying the game",
            labels=["game"],
        )
        delay.add_metric([game], link.last_delay)
        yield delay
        yield from counters(
            game,
            ("registrations", "Registrations with the server", link.registrations),
            ("sessions", "Sessions started", link.sessions),
            ("resumes", "Sessions resumed over a new socket after a drop", link.resumes),
        )
        yield labelled(
            game,
            "resume_failures",
            "Resumes that ended the session: refused by the server, or grace over",
            "why",
            {why: link.resume_failures[why] for why in ("refused", "grace_over")},
        )
        available = GaugeMetricFamily(
            "playcast_worker_available",
            "1 while registered and waiting for a player",
            labels=["game"],
        )
        available.add_metric([game], int(link.available))
        yield available
        yield from media_metrics(game, self.media)


def media_metrics(
    game: str, media: MediaCounters
) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
    """The players' links: the estimate, its changes, what the pacer and the
    keyframe gate did (issue 24; docs/network.md)."""
    target = GaugeMetricFamily(
        "playcast_worker_video_target_bps",
        "The video's target bit rate for the player's link (the current or last session)",
        labels=["game"],
    )
    target.add_metric([game], media.target_bps)
    yield target
    yield labelled(
        game,
        "video_target_changes",
        "Changes of the video's target bit rate, by direction (each is a log line)",
        "direction",
        {d: media.target_changes[d] for d in ("down", "up")},
    )
    k = media.keyframes
    yield labelled(
        game,
        "keyframe_requests",
        "Players' keyframe requests: forwarded to the game, or merged into one under way",
        "outcome",
        {"forwarded": k.forwarded, "merged": k.merged},
    )
    p = media.pacer
    yield labelled(
        game,
        "retransmissions",
        "Lost packets players asked for: sent again, or not (from before the last keyframe,"
        " too late, asked again within a round trip, replaced by a keyframe); and the copies"
        " a lossy link gets of every video packet",
        "outcome",
        {
            "sent": p.retransmitted,
            "older_than_keyframe": p.dropped_old,
            "late": p.dropped_late,
            "repeat": p.dropped_repeat,
            "keyframe_instead": p.answered_by_keyframe,
            "copy": p.copies,
        },
    )
    yield from counters(
        game,
        ("video_encoding_changes", "The backend's video encoding changed", media.encoding_changes),
        (
            "video_copies_changes",
            "A lossy link's copies of each video packet changed in number",
            media.copies_changes,
        ),
        ("nacks", "NACK packets from players", media.nacks),
        ("paced_waits", "Video packets that waited for the pacer", p.media_waits),
        (
            "picture_stalls",
            "A player's page said its picture stopped for 2 s while connected",
            media.picture_stalls,
        ),
    )


def labelled(
    game: str, name: str, help_text: str, label: str, values: dict[str, int]
) -> CounterMetricFamily:
    """One counter split by ``label``, labelled by the game too."""
    family = CounterMetricFamily(f"playcast_worker_{name}", help_text, labels=["game", label])
    for key, value in values.items():
        family.add_metric([game, key], value)
    return family


def counters(game: str, *rows: tuple[str, str, int]) -> Iterator[CounterMetricFamily]:
    """One counter per (name, help, value), labelled by the game."""
    for name, help_text, value in rows:
        counter = CounterMetricFamily(f"playcast_worker_{name}", help_text, labels=["game"])
        counter.add_metric([game], value)
        yield counter


async def serve_metrics(
    link: LinkCounters, host: str, port: int, media: MediaCounters | None = None
) -> tuple[web.AppRunner, int]:
    """Start ``GET /metrics``; returns the runner (to clean up) and the bound port."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(link, media))

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, int(bound)
