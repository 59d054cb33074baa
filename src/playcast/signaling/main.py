"""The signaling server process: what is wired to what, and how it stops.

The core (``hub``) holds the rules; around it, the sockets (``sockets/``)
feed it what peers send and carry out what it owes, the cluster layer
(``cluster/``: Redis, or a cluster of one in memory) answers what it asks of
the shared state, and aiohttp serves the page and the observer routes
(``app/``). This module builds them, runs the sweep, and on SIGTERM drains
everyone with acknowledged shutdowns (docs/architecture.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import ssl
from collections.abc import Callable

import msgspec
from aiohttp import web

from playcast.logs import setup_logging
from playcast.signaling.app import gcpolicy
from playcast.signaling.app.metrics import Metrics, readings
from playcast.signaling.app.options import add_arguments, redacted, settings_from_args
from playcast.signaling.app.routes import make_app
from playcast.signaling.cluster.link import ClusterLink
from playcast.signaling.cluster.local import LocalCluster
from playcast.signaling.hub import Hub
from playcast.signaling.rules.events import event
from playcast.signaling.rules.settings import Settings
from playcast.signaling.sockets.http import parse_networks
from playcast.signaling.sockets.server import Front

__all__ = ["Server", "add_arguments", "run", "serve", "start_server"]

log = logging.getLogger("playcast.signaling")


class Server:
    """A running server: its port, its parts, and how it stops."""

    def __init__(
        self,
        hub: Hub,
        front: Front,
        cluster: ClusterLink | LocalCluster,
        runner: web.AppRunner,
        listener: asyncio.Server,
        fatal: asyncio.Event,
    ) -> None:
        self.hub, self.front, self.cluster = hub, front, cluster
        self.fatal = fatal
        self.runner, self.listener = runner, listener
        sockets = listener.sockets
        self.port = int(sockets[0].getsockname()[1]) if sockets else hub.settings.port
        self.drained = asyncio.Event()  # stopping, and every peer acked or closed
        self.handed_over = asyncio.Event()  # ...and every away member taken elsewhere
        front.on_stopping = self._stopping
        self._sweep = asyncio.create_task(_sweep(front), name="sweep")

    def _stopping(self) -> None:
        if self.hub.drained:
            self.drained.set()
            if not self.hub.away:
                self.handed_over.set()

    async def drain(self) -> None:
        """Shut everyone down and wait for their acks (bounded by the ack
        timeout): acks arrive on the sockets and the sweep closes the silent
        peers at their deadline. In a cluster with resume on and other nodes
        alive, everyone is told ``reconnect`` instead, and the node stays
        until other nodes have taken over its sessions' members (bounded by
        the grace, and 10 s)."""
        settings, front = self.hub.settings, self.front
        if settings.resume_grace > 0 and self.cluster.known:
            front.step(self.hub.shutdown_all, reconnect=True)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(settings.resume_grace, 10.0)):
                    await self.handed_over.wait()
            return
        front.step(self.hub.shutdown_all)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(settings.shutdown_ack_timeout + 1.0):
                await self.drained.wait()

    async def close(self) -> None:
        """Leave the cluster, stop listening, cut whatever is left."""
        await self.cluster.stop()
        self._sweep.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._sweep
        self.listener.close()
        self.front.abort_all()
        await self.runner.cleanup()


async def start_server(settings: Settings, ssl_context: ssl.SSLContext | None = None) -> Server:
    """Build and start everything; the server is listening when this returns."""
    hub = Hub(settings)
    fatal = asyncio.Event()  # a cluster loop keeps dying: the process must go
    front = Front(hub, LocalCluster(hub), head_timeout=settings.hello_timeout)
    cluster: ClusterLink | LocalCluster = front.cluster  # type: ignore[assignment]
    if settings.redis:
        cluster = front.cluster = ClusterLink(hub, front.flush, settings.redis, fatal.set)
        await cluster.take_over()
        cluster.start()
    app = make_app(front, cluster, Metrics(hub.counters, lambda: readings(hub)))
    # No access log: every WebSocket would cost a line; lifecycle events say more.
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    front.http = runner.server
    # aiohttp's default accept backlog (128) overflows when hundreds of peers
    # connect in the same moment; a dropped SYN costs its peer a 1 s retry.
    listener = await asyncio.get_running_loop().create_server(
        front, settings.host, settings.port, ssl=ssl_context, backlog=1024
    )
    server = Server(hub, front, cluster, runner, listener, fatal)
    scheme = "https" if ssl_context else "http"
    event(
        "server_listening",
        url=f"{scheme}://{settings.host}:{server.port}/",
        port=server.port,
        node=hub.node,
        redis=redacted(settings.redis),
    )
    return server


async def _sweep(front: Front) -> None:
    # A fixed schedule: sleeping a whole interval after each tick would stretch
    # the heartbeat by the ticks' own run time (1 s became 1.3 to 1.5 s at
    # 10,000 connections). A late tick runs at once and is never skipped.
    # Each peer's checks are contained in the core; this guard is for a bug
    # in the sweep itself, which must not stop every heartbeat.
    loop = asyncio.get_running_loop()
    hub = front.hub
    interval = hub.tick_interval
    due = loop.time()
    while True:
        due += interval
        await asyncio.sleep(max(0.0, due - loop.time()))
        due = max(due, loop.time() - interval)
        try:
            front.step(hub.tick)
        except Exception:
            log.exception("sweep failed")
            hub.counters.internal_errors.inc("sweep_loop")


async def serve(
    settings: Settings, ssl_context: ssl.SSLContext | None = None, *, debug_gc: bool = False
) -> int:
    server = await start_server(settings, ssl_context)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if debug_gc:
        gcpolicy.debug()
        loop.add_signal_handler(signal.SIGUSR1, gcpolicy.report)
    else:
        gcpolicy.after_startup()
    stopped, failed = asyncio.create_task(stop.wait()), asyncio.create_task(server.fatal.wait())
    await asyncio.wait((stopped, failed), return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    failed.cancel()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Stopping already, and bounded by the ack timeout: a second signal (a
        # supervisor's, an impatient user's) must not turn exit 0 into a kill.
        loop.remove_signal_handler(sig)
        signal.signal(sig, signal.SIG_IGN)
    await server.drain()
    unacked = len(server.hub.closing)
    await server.close()
    event("server_stopped", unacked=unacked, failed=server.fatal.is_set() or None)
    # A node that could not keep its cluster loops alive exits non-zero: its
    # supervisor starts it afresh (EX_SOFTWARE).
    return 70 if server.fatal.is_set() else 0


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level, args.log_format)
    settings = settings_from_args(args)
    if settings.heartbeat_interval <= 0 or settings.heartbeat_timeout <= 0:
        raise SystemExit("heartbeat interval and timeout must be positive")
    if not settings.games:
        raise SystemExit("--games needs at least one game")
    if settings.ticket_max_age <= 0 or settings.ticket_leeway < 0:
        raise SystemExit("--ticket-max-age must be positive and --ticket-leeway not negative")
    try:
        parse_networks(settings.trusted_proxies)
    except ValueError as exc:
        raise SystemExit(f"--trusted-proxy: {exc}") from None
    ssl_context = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise SystemExit("--tls-cert and --tls-key go together")
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(args.tls_cert, args.tls_key)
    shown = msgspec.to_builtins(settings)
    for secret in ("turn_secret", "worker_token", "status_token"):
        shown[secret] = "***" if shown[secret] else None
    shown["join_secrets"] = ["***"] * len(settings.join_secrets)
    shown["redis"] = redacted(settings.redis)
    shown["farms"] = [redacted(url) for url in settings.farms]
    log.info("settings %s", json.dumps(shown))
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(serve(settings, ssl_context, debug_gc=args.debug_gc))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where installed: about half aiohttp's CPU per connection and frame."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
