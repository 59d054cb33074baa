"""The worker program: one game, streamed to one player at a time.

Lifecycle (PROTOCOL.md, "Worker lifecycle"): connect to the signaling server,
``register``, answer pings, and wait while available. A ``session_start``
brings up one WebRTC peer connection (video from the backend, an ``input``
data channel from the player). When the session ends, for any reason, the
worker closes everything, acknowledges, resets the game and starts over as a
new worker: each connection is a fresh ``Link`` and each session a fresh
``Session``, so nothing survives from one player to the next. When the server
dies, the worker reconnects with exponential backoff.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import logging
import random
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import aiohttp
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.sdp import candidate_from_sdp

from playcast import protocol as t
from playcast.backends.base import BackendError, GameBackend, Health
from playcast.envflags import add_flag
from playcast.inputs import BadInput, Key, Touch, decode_input
from playcast.logs import setup_logging
from playcast.worker.backends import BACKENDS, add_backend_arguments, create_backend
from playcast.worker.codecs import NegotiationFailed, apply_answer, offer_codec, session_codec
from playcast.worker.media import (
    BackendVideoTrack,
    forward_keyframe_requests,
    send_playout_delay,
)

log = logging.getLogger("playcast.worker")

WORKER_PATH: Final = "/ws/worker"
SILENCE_GRACE: Final = 0.25


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    server: str = "ws://127.0.0.1:8080"
    game: str = t.DEFAULT_GAME
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    # The "short pause" offline between one player and the next registration.
    restart_delay: float = 1.0
    # Until ``registered`` tells us the heartbeat timeout, this bounds the wait.
    register_timeout: float = 10.0
    health_interval: float = 5.0
    addr: str | None = None
    port: int | None = None
    # The server's PLAYCAST_WORKER_TOKEN, when it requires one.
    token: str | None = None
    # Asked of the browser with the playout-delay RTP extension: 0 shows each
    # frame the moment it is decoded; None does not send the extension.
    playout_delay_ms: int | None = 0

    @property
    def url(self) -> str:
        base = self.server.rstrip("/")
        for http, ws in (("http://", "ws://"), ("https://", "wss://")):
            if base.startswith(http):
                base = ws + base[len(http) :]
        return base if base.endswith(WORKER_PATH) else base + WORKER_PATH


class Backoff:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**n)]."""

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        self.base, self.cap = base, cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * 2.0 ** min(self.attempt, 62))
        self.attempt += 1
        return self._rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class Outcome(enum.Enum):
    UNREACHABLE = "server unreachable"
    LOST = "server lost"  # socket closed or heartbeats stopped: back off
    RESTART = "restart"  # the session (or registration) ended normally: short pause
    UNHEALTHY = "backend unhealthy"
    STOPPING = "stopping"


# --- one player's session -------------------------------------------------


Send = Callable[[t.Message], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class SessionEnd:
    reason: str
    backend_failed: bool  # the worker's own fault, not the player's


class Session:
    """One player's peer connection: video out, input in, then torn down."""

    def __init__(
        self,
        start: t.SessionStart,
        backend: GameBackend,
        send: Send,
        playout_delay_ms: int | None = None,
    ) -> None:
        self.id = start.session_id
        self._playout_delay_ms = playout_delay_ms
        self.client_id = start.client_id
        self._backend = backend
        self._send = send
        config = RTCConfiguration(
            iceServers=[
                RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
                for s in start.ice_servers
            ]
        )
        self.pc = RTCPeerConnection(config)
        # Checked when the offer is made: a codec we cannot send fails it.
        self.codec = session_codec(start.codec)
        self.track = BackendVideoTrack(backend, on_failure=self._backend_failed, codec=self.codec)
        self.connected = False  # our peer connection reached "connected"
        self.reported = False  # webrtc_connected or webrtc_failed was sent
        # Set when the session ends without the server's word: the player's
        # peer connection died, or the backend did.
        self.gone: asyncio.Future[SessionEnd] = asyncio.get_running_loop().create_future()
        self._closing = False
        self._handshake: asyncio.Queue[t.Answer | t.IceCandidate] = asyncio.Queue()
        self._inputs: asyncio.Queue[str | bytes] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self.inputs_ok = 0
        self.inputs_bad = 0

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._run_handshake(), name=f"handshake-{self.id}"))
        self._tasks.append(asyncio.create_task(self._run_inputs(), name=f"inputs-{self.id}"))

    def feed(self, msg: t.Answer | t.IceCandidate) -> None:
        self._handshake.put_nowait(msg)

    async def _run_handshake(self) -> None:
        try:
            await self._offer()
            remote_set = False
            early: list[t.Candidate | None] = []
            while True:
                msg = await self._handshake.get()
                if isinstance(msg, t.Answer):
                    if remote_set:
                        log.warning("session %s: second answer ignored", self.id)
                        continue
                    await apply_answer(self.pc, msg.sdp, self.codec)
                    remote_set = True
                    for c in early:
                        await self._add_candidate(c)
                elif remote_set:
                    await self._add_candidate(msg.candidate)
                else:
                    early.append(msg.candidate)  # trickled ahead of the answer
        except asyncio.CancelledError:
            raise
        except NegotiationFailed as exc:
            log.warning("session %s: negotiation failed: %s", self.id, exc)
            await self._report_failed(str(exc), "negotiation")
        except Exception as exc:
            log.warning("session %s: handshake failed: %r", self.id, exc)
            await self._report_failed(f"handshake failed: {exc!r}", "internal")

    async def _offer(self) -> None:
        transceiver = self.pc.addTransceiver(self.track, direction="sendonly")
        offer_codec(transceiver, self.codec, self._backend.codecs)
        forward_keyframe_requests(transceiver.sender, self._backend)
        if self._playout_delay_ms is not None:
            send_playout_delay(transceiver.sender, self._playout_delay_ms)
        channel = self.pc.createDataChannel("input", ordered=True)
        channel.on("message", self._inputs.put_nowait)
        channel.on("close", self._on_channel_close)
        self.pc.on("connectionstatechange", self._on_state)
        # aiortc gathers every local candidate before the offer is made, so
        # they all travel in its SDP; the null candidate says there are no more.
        await self.pc.setLocalDescription(await self.pc.createOffer())
        await self._send(t.Offer(session_id=self.id, sdp=self.pc.localDescription.sdp))
        await self._send(t.IceCandidate(session_id=self.id, candidate=None))

    async def _add_candidate(self, candidate: t.Candidate | None) -> None:
        if candidate is None or not candidate.candidate:
            await self.pc.addIceCandidate(None)
            return
        ice = candidate_from_sdp(candidate.candidate.removeprefix("candidate:"))
        ice.sdpMid = candidate.sdp_mid
        ice.sdpMLineIndex = candidate.sdp_mline_index
        await self.pc.addIceCandidate(ice)

    async def _on_state(self) -> None:
        state = self.pc.connectionState
        log.info("session %s: peer connection %s", self.id, state)
        if self._closing:
            return
        if state == "connected" and not self.connected:
            self.connected = True
            if not self.reported:
                self.reported = True
                await self._send(t.WebrtcConnected(session_id=self.id))
        elif state in ("failed", "closed"):
            if self.connected:
                self._end(f"the player's peer connection {state}", backend_failed=False)
            else:
                await self._report_failed(f"peer connection {state} (ICE/DTLS)", "ice")

    def _on_channel_close(self) -> None:
        if not self._closing and self.connected:
            self._end("the player's input channel closed", backend_failed=False)

    def _backend_failed(self, reason: str) -> None:
        if self._closing:
            return
        if self.connected:
            self._end(reason, backend_failed=True)
        else:
            task = asyncio.create_task(self._report_failed(reason, "media"))
            self._tasks.append(task)

    async def _report_failed(self, reason: str, kind: t.FailureKind) -> None:
        if self.reported or self._closing:
            return
        self.reported = True
        await self._send(t.WebrtcFailed(session_id=self.id, reason=reason[:500], kind=kind))

    def _end(self, reason: str, *, backend_failed: bool) -> None:
        if not self.gone.done():
            log.warning("session %s: %s", self.id, reason)
            self.gone.set_result(SessionEnd(reason, backend_failed))

    async def _run_inputs(self) -> None:
        while True:
            data = await self._inputs.get()
            try:
                event = decode_input(data)
            except BadInput as exc:
                self.inputs_bad += 1
                log.warning("session %s: malformed input dropped: %s", self.id, exc)
                continue
            try:
                if isinstance(event, Touch):
                    await self._backend.inject_touch(event.action, event.id, event.x, event.y)
                elif isinstance(event, Key):
                    await self._backend.inject_key(event.action, event.key)
            except BackendError as exc:
                self._backend_failed(f"input failed: {exc}")
                return
            except Exception:
                # One bad event must not end the player's input for good.
                log.exception("session %s: input %r failed, dropped", self.id, event)
                continue
            self.inputs_ok += 1

    async def close(self) -> tuple[bool, str]:
        """Tear everything down; ``(ok, detail)`` is the honest outcome."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        ok, notes = True, []
        try:
            async with asyncio.timeout(10):
                await self.pc.close()
        except Exception as exc:
            ok = False
            notes.append(f"closing the peer connection failed: {exc!r}")
        await self.track.aclose()
        if self.gone.done():
            notes.append(f"it had already ended: {self.gone.result().reason}")
        detail = f"session {self.id} closed ({self.inputs_ok} inputs, {self.inputs_bad} malformed)"
        return ok, "; ".join([detail, *notes])


# --- one connection to the server -----------------------------------------


@dataclass(frozen=True, slots=True)
class _Received:
    msg: t.Message


@dataclass(frozen=True, slots=True)
class _Closed:
    why: str


@dataclass(frozen=True, slots=True)
class _Note:
    """Something on our side: the session ended, the backend is sick, stop."""

    kind: str
    detail: str


_Event = _Received | _Closed | _Note


class Link:
    """One WebSocket to the server, from ``register`` to its end: fresh each time."""

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        settings: WorkerSettings,
        backend: GameBackend,
        stop: asyncio.Event,
        on_registered: Callable[[], None],
    ) -> None:
        self.ws = ws
        self.settings = settings
        self.backend = backend
        self.stop = stop
        self.on_registered = on_registered
        self.loop = asyncio.get_running_loop()
        self.worker_id: str | None = None
        self.heartbeat_timeout = settings.register_timeout
        self.last_ping = self.loop.time()
        self.session: Session | None = None
        self.had_session = False
        self.closed_session: tuple[bool, str] | None = None
        self._inbox: asyncio.Queue[_Event] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._timers: list[asyncio.TimerHandle] = []

    async def send(self, msg: t.Message) -> None:
        try:
            await self.ws.send_str(t.encode_str(msg))
        except (ConnectionError, RuntimeError) as exc:
            log.info("send %s failed: %r", type(msg).__name__, exc)

    async def serve(self) -> Outcome:
        self._tasks = [
            asyncio.create_task(self._read(), name="ws-reader"),
            asyncio.create_task(self._watch_stop(), name="stop-watch"),
            asyncio.create_task(self._watch_health(), name="health-watch"),
        ]
        try:
            await self.send(
                t.Register(
                    game=self.settings.game,
                    addr=self.settings.addr,
                    port=self.settings.port,
                    codecs=list(self.backend.codecs),
                )
            )
            return await self._loop()
        finally:
            if self.session is not None:
                await self._end_session()
            for timer in self._timers:
                timer.cancel()
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.ws.close()

    async def _read(self) -> None:
        why = "closed by the server"
        try:
            async for raw in self.ws:
                if raw.type is aiohttp.WSMsgType.TEXT:
                    try:
                        self._inbox.put_nowait(_Received(t.decode(raw.data)))
                    except t.BadMessage as exc:
                        log.warning("unreadable message from the server dropped: %s", exc)
                elif raw.type is aiohttp.WSMsgType.ERROR:
                    why = f"socket error: {self.ws.exception()!r}"
        finally:
            self._inbox.put_nowait(_Closed(why))

    async def _watch_stop(self) -> None:
        await self.stop.wait()
        self._inbox.put_nowait(_Note("stop", "worker stopping"))

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(self.settings.health_interval)
            if self.session is not None:
                continue  # a session's own failures end it; health is for idle time
            try:
                health = await self.backend.health()
            except Exception as exc:
                health = Health(False, f"health check failed: {exc!r}")
            if not health.ok:
                self._inbox.put_nowait(_Note("unhealthy", health.detail))
                return

    async def _next(self) -> _Event | None:
        """The next event, or None when the server has gone quiet for too long."""
        grace_until: float | None = None
        while True:
            deadline = self.last_ping + self.heartbeat_timeout
            if grace_until is not None:
                deadline = grace_until
            try:
                async with asyncio.timeout(max(0.0, deadline - self.loop.time())):
                    return await self._inbox.get()
            except TimeoutError:
                if not self._inbox.empty():
                    continue
                if grace_until is not None:
                    return None
                # After a stall (a frozen process, a busy machine) the timer
                # can fire before the socket is read: what the server sent
                # meanwhile deserves a look before the server is called dead.
                grace_until = self.loop.time() + min(SILENCE_GRACE, self.heartbeat_timeout / 4)

    async def _loop(self) -> Outcome:
        while True:
            ev = await self._next()
            if ev is None:
                what = "registered" if self.worker_id is None else "ping"
                log.warning("server silent: no %s for %.1f s", what, self.heartbeat_timeout)
                return Outcome.LOST
            if isinstance(ev, _Closed):
                log.warning("server connection lost: %s", ev.why)
                return Outcome.LOST
            if isinstance(ev, _Note):
                if ev.kind == "stop":
                    return Outcome.STOPPING
                if ev.kind == "unhealthy":
                    log.error("backend unhealthy, leaving the pool: %s", ev.detail)
                    return Outcome.UNHEALTHY
                if ev.kind == "backend_failed":
                    await self._end_session()
                    return Outcome.RESTART  # our fault: the server hears it as worker_failed
                if ev.kind == "player_gone":
                    await self._end_session()
                    # The server notices a dead client within its heartbeat
                    # timeout and sends shutdown; past that, it never will.
                    self._timers.append(
                        self.loop.call_later(
                            self.heartbeat_timeout,
                            self._inbox.put_nowait,
                            _Note("player_gone_unconfirmed", ev.detail),
                        )
                    )
                if ev.kind == "player_gone_unconfirmed":
                    log.warning("no shutdown from the server after the player vanished")
                    return Outcome.RESTART
                continue
            outcome = await self._handle(ev.msg)
            if outcome is not None:
                return outcome

    async def _handle(self, msg: t.Message) -> Outcome | None:
        match msg:
            case t.Ping(ts=ts):
                self.last_ping = self.loop.time()
                await self.send(t.Pong(ts=ts))
            case t.Registered():
                if self.worker_id is not None:
                    log.warning("second registered ignored")
                    return None
                self.worker_id = msg.worker_id
                self.heartbeat_timeout = msg.heartbeat_timeout
                self.last_ping = self.loop.time()
                self.on_registered()
                log.info(
                    "registered worker_id=%s game=%s heartbeat_timeout=%s",
                    msg.worker_id,
                    self.settings.game,
                    msg.heartbeat_timeout,
                )
            case t.SessionStart():
                if self.worker_id is None or self.session is not None or self.had_session:
                    log.warning("session_start %s ignored: not available", msg.session_id)
                    return None
                log.info(
                    "session_start session=%s client=%s codec=%s",
                    msg.session_id,
                    msg.client_id,
                    msg.codec,
                )
                self.had_session = True
                self.session = Session(msg, self.backend, self.send, self.settings.playout_delay_ms)
                self.session.gone.add_done_callback(self._on_session_gone)
                self.session.start()
            case t.Answer() | t.IceCandidate():
                if self.session is None or msg.session_id != self.session.id:
                    log.warning(
                        "%s for unknown session %s ignored", type(msg).__name__, msg.session_id
                    )
                    return None
                self.session.feed(msg)
            case t.Shutdown():
                log.info("shutdown reason=%s message=%r", msg.reason, msg.message)
                ok, detail = await self._end_session()
                await self.send(t.ShutdownAck(ok=ok, detail=detail))
                log.info("shutdown_ack ok=%s detail=%r", ok, detail)
                return Outcome.RESTART
            case t.Error():
                log.warning("server error %s: %s", msg.code, msg.message)
            case _:
                log.warning("unexpected %s from the server ignored", type(msg).__name__)
        return None

    def _on_session_gone(self, fut: asyncio.Future[SessionEnd]) -> None:
        if not fut.cancelled():
            end = fut.result()
            kind = "backend_failed" if end.backend_failed else "player_gone"
            self._inbox.put_nowait(_Note(kind, end.reason))

    async def _end_session(self) -> tuple[bool, str]:
        session, self.session = self.session, None
        if session is None:
            return self.closed_session or (True, "idle, no session to close")
        ok, detail = await session.close()
        log.info("session %s ended ok=%s: %s", session.id, ok, detail)
        self.closed_session = ok, detail
        return ok, detail


# --- the program ----------------------------------------------------------


class Worker:
    """Runs links one after another, forever: register, serve, reset, again."""

    def __init__(
        self, settings: WorkerSettings, backend: GameBackend, rng: random.Random | None = None
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.backoff = Backoff(settings.backoff_base, settings.backoff_cap, rng)
        self.stop = asyncio.Event()
        self.registrations = 0

    def _registered(self) -> None:
        self.registrations += 1
        self.backoff.reset()

    async def run(self) -> None:
        started = False
        try:
            while not self.stop.is_set():
                if not started:
                    # A device may be missing at boot: keep trying, with backoff.
                    try:
                        await self.backend.start()
                        started = True
                    except BackendError as exc:
                        log.error("backend did not start: %s", exc)
                if started:
                    outcome, had_session = await self._one_life()
                else:
                    outcome, had_session = Outcome.UNHEALTHY, False
                if outcome is Outcome.STOPPING:
                    break
                if started and (had_session or outcome is Outcome.UNHEALTHY):
                    await self._reset_backend()
                delay = (
                    self.settings.restart_delay
                    if outcome is Outcome.RESTART
                    else self.backoff.next_delay()
                )
                log.info("restarting in %.2f s (%s)", delay, outcome.value)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self.stop.wait()
        finally:
            with contextlib.suppress(Exception):
                await self.backend.stop()

    async def _reset_backend(self) -> None:
        try:
            await self.backend.reset()
        except BackendError as exc:
            log.error("game reset failed: %s", exc)

    async def _one_life(self) -> tuple[Outcome, bool]:
        try:
            health = await self.backend.health()
        except Exception as exc:
            health = Health(False, f"health check failed: {exc!r}")
        if not health.ok:
            log.error("backend unhealthy, not registering: %s", health.detail)
            return Outcome.UNHEALTHY, False
        async with aiohttp.ClientSession() as http:
            token = self.settings.token
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            try:
                # Bounded: a frozen server still accepts TCP but never upgrades.
                async with asyncio.timeout(self.settings.register_timeout):
                    ws = await http.ws_connect(
                        self.settings.url,
                        headers=headers,
                        heartbeat=None,
                        autoping=True,
                        max_msg_size=t.MAX_FRAME_BYTES,
                        timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                    )
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status in (401, 403):
                    log.error("server refused this worker (%s): check --worker-token", exc.status)
                else:
                    log.warning("cannot reach %s: %s", self.settings.url, exc)
                return Outcome.UNREACHABLE, False
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.warning("cannot reach %s: %s", self.settings.url, exc)
                return Outcome.UNREACHABLE, False
            link = Link(ws, self.settings, self.backend, self.stop, self._registered)
            outcome = await link.serve()
            return outcome, link.had_session


# --- command line ---------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = WorkerSettings()
    add_flag(parser, "--server", default=d.server, help="signaling server base address")
    add_flag(parser, "--game", default=d.game, help="the game this worker serves")
    add_flag(parser, "--backend", default="synthetic", choices=sorted(BACKENDS), help="backend")
    for flag, default, help_text in (
        ("--backoff-base", d.backoff_base, "first reconnect delay ceiling, s"),
        ("--backoff-cap", d.backoff_cap, "reconnect delay cap, s"),
        ("--restart-delay", d.restart_delay, "pause offline between sessions, s"),
        ("--register-timeout", d.register_timeout, "wait for connect and registered, s"),
        ("--health-interval", d.health_interval, "backend health poll while idle, s"),
    ):
        add_flag(parser, flag, type=float, default=default, help=help_text)
    add_flag(
        parser,
        "--playout-delay",
        type=int,
        default=d.playout_delay_ms,
        help="ms the browser may hold a frame (RTP playout-delay); negative: not sent",
    )
    add_flag(parser, "--worker-token", help="shared secret the server asks workers for")
    add_flag(parser, "--advertise-addr", help="addr to report in register (default: socket's)")
    add_flag(parser, "--log-level", default="info", help="debug, info, warning")
    add_flag(parser, "--log-format", default="text", choices=["text", "json"], help="log format")
    add_backend_arguments(parser)


def settings_from_args(args: argparse.Namespace) -> WorkerSettings:
    return WorkerSettings(
        server=args.server,
        game=args.game,
        backoff_base=args.backoff_base,
        backoff_cap=args.backoff_cap,
        restart_delay=args.restart_delay,
        register_timeout=args.register_timeout,
        health_interval=args.health_interval,
        addr=args.advertise_addr,
        token=args.worker_token or None,
        playout_delay_ms=args.playout_delay if args.playout_delay >= 0 else None,
    )


async def _main(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    backend = create_backend(args.backend, args)
    worker = Worker(settings, backend)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop.set)
    log.info(
        "worker starting: server=%s game=%s backend=%s", settings.url, settings.game, args.backend
    )
    await worker.run()
    log.info("worker stopped")
    return 0


def run(args: argparse.Namespace) -> int:
    setup_logging(args.log_level, args.log_format)
    # aiortc and aioice log every RTP hiccup at INFO; the lifecycle is what matters here.
    for noisy in ("aiortc", "aioice"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    return asyncio.run(_main(args))
