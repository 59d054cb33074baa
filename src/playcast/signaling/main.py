"""The signaling server process: aiohttp application, routes, sweep loop, command line.

This layer is thin on purpose: it turns WebSocket frames into calls on the
protocol core (``hub.Hub``) and the core's sends into queued writes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import signal
import ssl
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, cast

import msgspec
from aiohttp import web
from redis.exceptions import RedisError

from playcast.envflags import add_flag, env_list
from playcast.logs import setup_logging
from playcast.protocol import IceServer, Message
from playcast.signaling.app import gcpolicy
from playcast.signaling.app.metrics import Metrics, readings
from playcast.signaling.cluster.link import ClusterLink
from playcast.signaling.cluster.local import LocalCluster
from playcast.signaling.hub import Hub, flush
from playcast.signaling.rules.events import event
from playcast.signaling.rules.settings import Settings
from playcast.signaling.sockets.server import (
    FRONT_KEY,
    ROLES,
    Front,
    SignalingSocket,
    late_upgrade,
    token_ok,
)
from playcast.signaling.types import Peer

log = logging.getLogger("playcast.signaling")

STATIC_DIR = Path(str(resources.files("playcast") / "web" / "static"))


def _write(peer: Peer, msg: Message | bytes) -> bool:
    return cast(SignalingSocket, peer.ws).write(msg)


def _close(peer: Peer, code: int, reason: str) -> None:
    cast(SignalingSocket, peer.ws).close(code, reason)


class Pump:
    """Runs a step of the core, then carries out its effects: the only caller
    of the hub's entry points, so every step is followed by its I/O."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.drained = asyncio.Event()
        # Stopping with "reconnect": every away member taken by another node.
        self.handed_over = asyncio.Event()
        # Where the core's shared-state requests and messages for other
        # nodes go: Redis, or alone, a cluster of one in memory.
        self.cluster: ClusterLink | LocalCluster = LocalCluster(hub)
        # The sockets' front: effects are written corked, each socket's
        # frames of a step in one system call.
        self.front: Front | None = None

    def flush(self) -> None:
        if self.front is None:
            self._flush()
        else:
            self.front.corked(self._flush)

    def _flush(self) -> None:
        hub = self.hub
        flush(hub, _write, _close, self.cluster.submit)
        if hub.drained:
            self.drained.set()
            if not self.hub.away:
                self.handed_over.set()

    @property
    def serving(self) -> bool:
        """Taking new peers: not stopping, and (in a cluster) reaching Redis."""
        return not self.hub.stopping and self.cluster.serving

    def deliver(self, peer: Peer, frame: str | bytes) -> None:
        """A frame from a peer's socket: a step, then its effects."""
        self.hub.on_message(peer, frame)
        self.flush()

    def tick(self) -> None:
        try:
            self.hub.tick()
        finally:
            self.flush()

    def shutdown_all(self, reconnect: bool = False) -> None:
        self.hub.shutdown_all(reconnect)
        self.flush()


PUMP_KEY = web.AppKey("pump", Pump)
METRICS_KEY = web.AppKey("metrics", Metrics)


def _may_observe(request: web.Request, settings: Settings) -> bool:
    """/api/status and /metrics: loopback, or the bearer of --status-token."""
    token = settings.status_token
    if token and token_ok(
        request.headers.get("Authorization", ""), request.query.get("token", ""), token
    ):
        return True
    host = request.remote or ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def healthz(request: web.Request) -> web.Response:
    pump = request.app[PUMP_KEY]
    hub = pump.hub
    ok = pump.serving
    body = {"ok": ok, "workers": len(hub.workers), "clients": len(hub.clients), "node": hub.node}
    body.update(pump.cluster.health())
    return web.json_response(body, status=200 if ok else 503)


async def status(request: web.Request) -> web.Response:
    pump = request.app[PUMP_KEY]
    hub = pump.hub
    if not _may_observe(request, hub.settings):
        raise web.HTTPForbidden(text="loopback or --status-token only")
    if request.query.get("scope") != "node":
        try:
            return web.json_response(await pump.cluster.status(bool(request.query.get("check"))))
        except (RedisError, OSError) as exc:
            raise web.HTTPServiceUnavailable(text=f"cluster status needs Redis: {exc!r}") from None
    doc = hub.snapshot()
    if request.query.get("check"):  # for tests and operators: any broken invariant, in words
        doc["violations"] = list(hub.check_invariants())
    return web.json_response(doc)


async def metrics(request: web.Request) -> web.Response:
    hub = request.app[PUMP_KEY].hub
    if not _may_observe(request, hub.settings):
        raise web.HTTPForbidden(text="loopback or --status-token only")
    body = request.app[METRICS_KEY].render(hub.node if hub.settings.redis else None)
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def _sweep(pump: Pump) -> None:
    # A fixed schedule: sleeping a whole interval after each tick would stretch
    # the heartbeat by the ticks' own run time (1 s became 1.3 to 1.5 s at
    # 10,000 connections). A late tick runs at once and is never skipped.
    # Each peer's checks are contained in the core; this guard is for a bug
    # in the sweep itself, which must not stop every heartbeat.
    loop = asyncio.get_running_loop()
    interval = pump.hub.tick_interval
    due = loop.time()
    while True:
        due += interval
        await asyncio.sleep(max(0.0, due - loop.time()))
        due = max(due, loop.time() - interval)
        try:
            pump.tick()
        except Exception:
            log.exception("sweep failed")
            pump.hub.counters.internal_errors.inc("sweep_loop")


async def _sweep_ctx(app: web.Application) -> Any:
    task = asyncio.create_task(_sweep(app[PUMP_KEY]))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _no_stale_page(request: web.Request, response: web.StreamResponse) -> None:
    # The page's modules must never outlive an upgrade next to a new index.html:
    # the browser revalidates them (cheap: 304 by ETag/Last-Modified).
    if request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-cache"


def make_app(settings: Settings, hub: Hub | None = None) -> web.Application:
    """The HTTP routes; the signaling sockets are ``wsserver``'s (``listen``)."""
    app = web.Application()
    pump = app[PUMP_KEY] = Pump(hub or Hub(settings))
    app[METRICS_KEY] = Metrics(pump.hub.counters, lambda: readings(pump.hub))
    # aiohttp's request handler joins when ``listen`` has built it.
    app[FRONT_KEY] = pump.front = Front(pump, None, head_timeout=settings.hello_timeout)
    for path in ROLES:
        app.router.add_get(path, late_upgrade)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/status", status)
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC_DIR)
    app.on_response_prepare.append(_no_stale_page)
    app.cleanup_ctx.append(_sweep_ctx)
    return app


async def drain(pump: Pump) -> None:
    """Shut everyone down and wait for their acks (bounded by the ack timeout).

    Acks arrive on the socket tasks and the sweep closes the silent peers at
    their deadline; the pump says when the last one is done. In a cluster
    with resume on and other nodes alive, everyone is told ``reconnect``
    instead, and the node stays until other nodes have taken over its
    sessions' members (bounded by the grace, and 10 s).
    """
    settings = pump.hub.settings
    cluster = pump.cluster
    if settings.resume_grace > 0 and cluster.known:
        pump.shutdown_all(reconnect=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(settings.resume_grace, 10.0)):
                await pump.handed_over.wait()
        return
    pump.shutdown_all()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(settings.shutdown_ack_timeout + 1.0):
            await pump.drained.wait()


async def serve(
    settings: Settings, ssl_context: ssl.SSLContext | None = None, *, debug_gc: bool = False
) -> int:
    hub = Hub(settings)
    app = make_app(settings, hub)
    pump = app[PUMP_KEY]
    if settings.redis:
        pump.cluster = ClusterLink(hub, pump.flush, settings.redis)
        await pump.cluster.take_over()
        pump.cluster.start()
    # No access log: every WebSocket would cost a line; lifecycle events say more.
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    front = app[FRONT_KEY]
    front.http = runner.server
    # aiohttp's default accept backlog (128) overflows when hundreds of peers
    # connect in the same moment; a dropped SYN costs its peer a 1 s retry.
    server = await asyncio.get_running_loop().create_server(
        front, settings.host, settings.port, ssl=ssl_context, backlog=1024
    )
    port = int(server.sockets[0].getsockname()[1]) if server.sockets else settings.port
    scheme = "https" if ssl_context else "http"
    event(
        "server_listening",
        url=f"{scheme}://{settings.host}:{port}/",
        port=port,
        node=hub.node,
        redis=_redacted(settings.redis),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if debug_gc:
        gcpolicy.debug()
        loop.add_signal_handler(signal.SIGUSR1, gcpolicy.report)
    else:
        gcpolicy.after_startup()
    await stop.wait()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Stopping already, and bounded by the ack timeout: a second signal (a
        # supervisor's, an impatient user's) must not turn exit 0 into a kill.
        loop.remove_signal_handler(sig)
        signal.signal(sig, signal.SIG_IGN)
    await drain(pump)
    await pump.cluster.stop()
    event("server_stopped", unacked=len(hub.closing))
    server.close()
    front.abort_all()
    await runner.cleanup()
    return 0


def _redacted(url: str | None) -> str | None:
    """A Redis URL for the log, without its password."""
    if url is None:
        return None
    head, sep, tail = url.rpartition("@")
    return f"{head.split('://')[0]}://***@{tail}" if sep else url


def parse_ice_server(text: str) -> IceServer:
    """``stun:host:port`` or a JSON object ``{"urls": [...], "username": ..., ...}``."""
    text = text.strip()
    if text.startswith("{"):
        try:
            return msgspec.json.decode(text, type=IceServer)
        except msgspec.DecodeError as exc:
            raise argparse.ArgumentTypeError(f"bad ICE server JSON: {exc}") from None
    if not text.startswith(("stun:", "stuns:", "turn:", "turns:")):
        raise argparse.ArgumentTypeError(f"ICE server must be a stun:/turn: URL or JSON: {text!r}")
    return IceServer(urls=[text])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = Settings()
    add_flag(parser, "--host", default=d.host, help="address to listen on")
    add_flag(parser, "--port", type=int, default=d.port, help="port (0 picks a free one)")
    for name, help_text in (
        ("heartbeat_interval", "seconds between server pings"),
        ("heartbeat_timeout", "seconds without a pong before a peer is dead"),
        ("inactivity_timeout", "seconds without client input before the session ends"),
        ("inactivity_warning", "warn the client this many seconds before (0: off)"),
        ("handshake_timeout", "seconds for the WebRTC handshake to complete"),
        ("shutdown_ack_timeout", "seconds to wait for shutdown_ack"),
        ("hello_timeout", "seconds a new socket has to send register or join"),
    ):
        flag = "--" + name.replace("_", "-")
        add_flag(parser, flag, type=float, default=getattr(d, name), help=help_text)
    for name, kind, help_text in (
        ("max_message_rate", float, "messages a second a peer may send before it is a flood"),
        ("max_message_burst", float, "messages a peer may send at once"),
        ("max_send_queue_bytes", int, "unsent bytes to a peer before it is closed as not reading"),
        ("max_connections_per_ip", int, "open sockets per remote address (0: no cap)"),
    ):
        flag = "--" + name.replace("_", "-")
        add_flag(parser, flag, type=kind, default=getattr(d, name), help=help_text)
    parser.add_argument(
        "--ice-server",
        dest="ice_server",
        action="append",
        type=parse_ice_server,
        default=[parse_ice_server(t) for t in env_list("--ice-server")],
        help="STUN/TURN server for both peers, repeatable: a URL or a JSON object with "
        "urls, username, credential (env PLAYCAST_ICE_SERVER, whitespace-separated URLs)",
    )
    parser.add_argument(
        "--turn-url",
        dest="turn_url",
        action="append",
        default=env_list("--turn-url"),
        help="TURN URL given per-session REST credentials from --turn-secret, repeatable "
        "(env PLAYCAST_TURN_URL, whitespace-separated)",
    )
    add_flag(parser, "--turn-secret", help="coturn static-auth-secret for TURN REST credentials")
    add_flag(parser, "--turn-ttl", type=float, default=d.turn_ttl, help="TURN credential lifetime")
    add_flag(parser, "--redis", help="join a cluster: redis://HOST:PORT/DB (off: a lone server)")
    add_flag(parser, "--node-id", help="this node's id in the cluster (default: made up at start)")
    add_flag(
        parser,
        "--node-ttl",
        type=float,
        default=d.node_ttl,
        help="seconds a node that stops renewing its liveness is taken for alive",
    )
    add_flag(
        parser,
        "--cluster-gather",
        type=float,
        default=d.cluster_gather,
        help="seconds a busy node gathers what it sends Redis into one round trip (0: none)",
    )
    add_flag(
        parser,
        "--resume-grace",
        type=float,
        default=d.resume_grace,
        help="seconds a session waits for a member whose socket dropped to resume (0: off)",
    )
    add_flag(
        parser,
        "--queue-limit",
        type=int,
        default=d.queue_limit,
        help="clients that may wait in line for a worker (0: reject at once)",
    )
    add_flag(
        parser,
        "--queue-timeout",
        type=float,
        default=d.queue_timeout,
        help="seconds a client may wait in line",
    )
    add_flag(
        parser,
        "--games",
        default=",".join(d.games),
        help="comma-separated games this server hosts; others are refused (unknown_game)",
    )
    add_flag(parser, "--worker-token", help="shared secret workers must present (off if unset)")
    add_flag(
        parser,
        "--status-token",
        help="bearer token that opens /api/status and /metrics beyond loopback (off if unset)",
    )
    add_flag(parser, "--tls-cert", help="PEM certificate: serve HTTPS and WSS")
    add_flag(parser, "--tls-key", help="PEM private key for --tls-cert")
    add_flag(parser, "--log-level", default="info", help="debug, info, warning")
    add_flag(parser, "--log-format", default="text", choices=["text", "json"], help="log format")
    # Hidden, for tests and cycle hunts: the collector off, SIGUSR1 logs what
    # one collection finds (gcpolicy.report).
    parser.add_argument("--debug-gc", action="store_true", help=argparse.SUPPRESS)


def settings_from_args(args: argparse.Namespace) -> Settings:
    return Settings(
        host=args.host,
        port=args.port,
        heartbeat_interval=args.heartbeat_interval,
        heartbeat_timeout=args.heartbeat_timeout,
        inactivity_timeout=args.inactivity_timeout,
        inactivity_warning=args.inactivity_warning,
        handshake_timeout=args.handshake_timeout,
        shutdown_ack_timeout=args.shutdown_ack_timeout,
        hello_timeout=args.hello_timeout,
        games=tuple(g.strip() for g in args.games.split(",") if g.strip()),
        max_connections_per_ip=args.max_connections_per_ip,
        status_token=args.status_token or None,
        redis=args.redis or None,
        node_id=args.node_id or None,
        node_ttl=args.node_ttl,
        cluster_gather=args.cluster_gather,
        queue_limit=args.queue_limit,
        resume_grace=args.resume_grace,
        queue_timeout=args.queue_timeout,
        ice_servers=tuple(args.ice_server),
        max_message_rate=args.max_message_rate,
        max_message_burst=args.max_message_burst,
        max_send_queue_bytes=args.max_send_queue_bytes,
        turn_secret=args.turn_secret or None,
        turn_urls=tuple(args.turn_url),
        turn_ttl=args.turn_ttl,
        worker_token=args.worker_token or None,
    )


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level, args.log_format)
    settings = settings_from_args(args)
    if settings.heartbeat_interval <= 0 or settings.heartbeat_timeout <= 0:
        raise SystemExit("heartbeat interval and timeout must be positive")
    if not settings.games:
        raise SystemExit("--games needs at least one game")
    ssl_context = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise SystemExit("--tls-cert and --tls-key go together")
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(args.tls_cert, args.tls_key)
    shown = msgspec.to_builtins(settings)
    for secret in ("turn_secret", "worker_token", "status_token"):
        shown[secret] = "***" if shown[secret] else None
    shown["redis"] = _redacted(settings.redis)
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
