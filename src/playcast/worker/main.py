"""The worker program: one game, streamed to one player at a time.

Lifecycle (PROTOCOL.md, "Worker lifecycle"): connect to the signaling server,
``register``, answer pings, and wait while available. A ``session_start``
brings up one WebRTC peer connection (video from the backend, an ``input``
data channel from the player). When the session ends, for any reason, the
worker closes everything, acknowledges, resets the game and starts over as a
new worker. When the server dies, the worker reconnects with backoff; when
the game dies, it leaves the pool at once and comes back once it is healthy.

Every rule of that lifecycle lives in ``worker/link.py``, a state machine
with no I/O. This module is the asyncio layer around it: ``Worker`` feeds it
events (socket messages, timers, the session's and the backend's news) and
carries out the effects it asks for; ``Session`` is one player's peer
connection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import msgspec
from aiohttp import web
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.sdp import candidate_from_sdp

from playcast import protocol as t
from playcast.backends.audio import game_audio
from playcast.backends.base import BackendError, GameBackend
from playcast.envflags import add_flag, env_name
from playcast.inputs import BadInput, Key, Touch, decode_input
from playcast.logs import setup_logging
from playcast.worker import link as lk
from playcast.worker.backends import BACKENDS, add_backend_arguments, create_backend
from playcast.worker.codecs import NegotiationFailed, apply_answer, offer_codec, session_codec
from playcast.worker.input_queue import DEFAULT_LIMIT, InputOverflow, InputQueue
from playcast.worker.link import Backoff, Link, LinkSettings
from playcast.worker.media import (
    BackendAudioTrack,
    BackendVideoTrack,
    forward_keyframe_requests,
    send_game_audio,
    send_playout_delay,
)
from playcast.worker.metrics import serve_metrics

__all__ = ["Backoff", "Session", "Worker", "WorkerSettings"]

log = logging.getLogger("playcast.worker")

WORKER_PATH: Final = "/ws/worker"
# Bound on closing one peer connection; past it the ack says ok=false.
CLOSE_TIMEOUT: Final = 10.0


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    server: str = "ws://127.0.0.1:8080"
    # The lifecycle's own: the game, the address to register, backoff, delays.
    link: LinkSettings = field(default_factory=LinkSettings)
    # The server's PLAYCAST_WORKER_TOKEN, when it requires one.
    token: str | None = None
    # Asked of the browser with the playout-delay RTP extension: 0 shows each
    # frame the moment it is decoded; None does not send the extension.
    playout_delay_ms: int | None = 0
    # Send the game's sound, when the backend has it (--no-audio: video only).
    audio: bool = True
    # Input events waiting for the game (downs, ups, keys; moves coalesce).
    input_limit: int = DEFAULT_LIMIT
    # Prometheus endpoint (None: none); 0 picks a free port (tests).
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        base = self.server.rstrip("/")
        for http, ws in (("http://", "ws://"), ("https://", "wss://")):
            if base.startswith(http):
                base = ws + base[len(http) :]
        return base if base.endswith(WORKER_PATH) else base + WORKER_PATH


Post = Callable[[lk.Event], None]


# --- one player's session -------------------------------------------------


class Session:
    """One player's peer connection: video out, input in, then torn down.

    It talks to nobody but the link core: what happens to the media is posted
    as an event (offer ready, connected, failed), and the core decides what
    the server hears.
    """

    def __init__(
        self,
        start: t.SessionStart,
        backend: GameBackend,
        post: Post,
        playout_delay_ms: int | None = None,
        input_limit: int = DEFAULT_LIMIT,
        audio: bool = True,
    ) -> None:
        self.id = start.session_id
        self.client_id = start.client_id
        self._playout_delay_ms = playout_delay_ms
        self._backend = backend
        self._post = post
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
        sound = game_audio(backend) if audio else None
        self.audio_track: BackendAudioTrack | None = None
        if sound is not None and sound.audio_status.codec is not None:
            self.audio_track = BackendAudioTrack(sound)
        self.connected = False  # our peer connection reached "connected"
        self._closing = False
        self._handshake: asyncio.Queue[t.Answer | t.IceCandidate] = asyncio.Queue()
        self.inputs = InputQueue(input_limit)
        self._tasks: list[asyncio.Task[None]] = []
        self.inputs_ok = 0
        self.inputs_bad = 0

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._run_handshake(), name=f"handshake-{self.id}"))
        self._tasks.append(asyncio.create_task(self._run_inputs(), name=f"inputs-{self.id}"))

    def feed(self, msg: t.Answer | t.IceCandidate) -> None:
        self._handshake.put_nowait(msg)

    def _failed(self, reason: str, *, backend: bool, kind: t.FailureKind | None = None) -> None:
        if not self._closing:
            self._post(lk.MediaFailed(self.id, reason, backend, kind))

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
            self._failed(str(exc), backend=False, kind="negotiation")
        except Exception as exc:
            log.warning("session %s: handshake failed: %r", self.id, exc)
            self._failed(f"handshake failed: {exc!r}", backend=False, kind="internal")

    async def _offer(self) -> None:
        transceiver = self.pc.addTransceiver(self.track, direction="sendonly")
        offer_codec(transceiver, self.codec, self._backend.codecs)
        forward_keyframe_requests(transceiver.sender, self._backend)
        if self._playout_delay_ms is not None:
            send_playout_delay(transceiver.sender, self._playout_delay_ms)
        if self.audio_track is not None:
            audio = self.pc.addTransceiver(self.audio_track, direction="sendonly")
            send_game_audio(audio, self.audio_track)
        channel = self.pc.createDataChannel("input", ordered=True)
        channel.on("message", self._on_input)
        channel.on("close", self._on_channel_close)
        self.pc.on("connectionstatechange", self._on_state)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self._post(lk.OfferReady(self.id, self.pc.localDescription.sdp))

    async def _add_candidate(self, candidate: t.Candidate | None) -> None:
        if candidate is None or not candidate.candidate:
            await self.pc.addIceCandidate(None)
            return
        ice = candidate_from_sdp(candidate.candidate.removeprefix("candidate:"))
        ice.sdpMid = candidate.sdp_mid
        ice.sdpMLineIndex = candidate.sdp_mline_index
        await self.pc.addIceCandidate(ice)

    def _on_state(self) -> None:
        state = self.pc.connectionState
        log.info("session %s: peer connection %s", self.id, state)
        if self._closing:
            return
        if state == "connected" and not self.connected:
            self.connected = True
            self._post(lk.MediaConnected(self.id))
        elif state in ("failed", "closed"):
            if self.connected:
                self._failed(f"the player's peer connection {state}", backend=False)
            else:
                self._failed(f"peer connection {state} (ICE/DTLS)", backend=False, kind="ice")

    def _on_channel_close(self) -> None:
        if self.connected:
            self._failed("the player's input channel closed", backend=False)

    def _backend_failed(self, reason: str) -> None:
        self._failed(reason, backend=True, kind="media")

    def _on_input(self, data: str | bytes) -> None:
        try:
            event = decode_input(data)
        except BadInput as exc:
            self.inputs_bad += 1
            log.warning("session %s: malformed input dropped: %s", self.id, exc)
            return
        try:
            self.inputs.put(event)
        except InputOverflow as exc:
            # Dropping a down or an up would leave a finger stuck: end instead.
            self._failed(f"input overflow: {exc}", backend=False)

    async def _run_inputs(self) -> None:
        while True:
            event = await self.inputs.get()
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
        ok, notes = True, []
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception as exc:
                # The tasks catch what they expect; anything here is a bug.
                log.exception("session %s: task %s failed", self.id, task.get_name())
                notes.append(f"{task.get_name()} failed: {exc!r}")
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.pc.close()
        except Exception as exc:
            log.exception("session %s: closing the peer connection failed", self.id)
            ok = False
            notes.append(f"closing the peer connection failed: {exc!r}")
        await self.track.aclose()
        if self.audio_track is not None:
            await self.audio_track.aclose()
        detail = f"session {self.id} closed ({self.inputs_ok} inputs, {self.inputs_bad} malformed"
        if self.inputs.coalesced:
            detail += f", {self.inputs.coalesced} moves coalesced"
        return ok, "; ".join([detail + ")", *notes])


# --- the program ----------------------------------------------------------


class Worker:
    """The asyncio layer around ``Link``: events in, effects out, until stopped."""

    def __init__(
        self,
        settings: WorkerSettings,
        backend: GameBackend,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.link = Link(settings.link, rng)
        self.stop = asyncio.Event()
        self.session: Session | None = None
        self._inbox: asyncio.Queue[lk.Event] = asyncio.Queue()
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._jobs: set[asyncio.Task[None]] = set()
        # Closing peer connections: finished, not cancelled, at exit.
        self._closing: set[asyncio.Task[None]] = set()
        self.metrics_port: int | None = None

    @property
    def registrations(self) -> int:
        return self.link.registrations

    @property
    def backoff(self) -> Backoff:
        return self.link.server_backoff

    def post(self, event: lk.Event) -> None:
        self._inbox.put_nowait(event)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        unwatch = self.backend.watch_failures(lambda detail: self.post(lk.BackendFailed(detail)))
        stop_watch = asyncio.create_task(self._watch_stop())
        metrics = await self._serve_metrics()
        try:
            self.link.start(loop.time())
            while True:
                for effect in self.link.effects():
                    await self._do(effect)
                if self.link.done:
                    break
                event = await self._next_event()
                self.link.handle(event, loop.time())
        finally:
            unwatch()
            stop_watch.cancel()
            await self._teardown()
            if metrics is not None:
                await metrics.cleanup()

    async def _watch_stop(self) -> None:
        await self.stop.wait()
        self.post(lk.StopRequested())

    async def _next_event(self) -> lk.Event:
        deadline = self.link.deadline
        if deadline is None:
            return await self._inbox.get()
        try:
            async with asyncio.timeout_at(deadline):
                return await self._inbox.get()
        except TimeoutError:
            # What arrived meanwhile goes first: after a stall the timer can
            # fire before queued news (a ping, a shutdown) has been seen.
            return self._inbox.get_nowait() if not self._inbox.empty() else lk.TimerFired()

    def _job(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """A long step (connect, reset, close) runs beside the loop, which keeps
        answering pings; its result comes back as an event."""
        task = asyncio.create_task(coro, name=name)
        self._jobs.add(task)
        task.add_done_callback(self._job_done)

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._jobs.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    async def _do(self, effect: lk.Effect) -> None:
        match effect:
            case lk.Send(msg=msg):
                await self._send(msg)
            case lk.Connect():
                self._job(self._connect(), "connect")
            case lk.CloseSocket():
                await self._close_socket()
            case lk.StartBackend():
                self._job(self._backend_step("start", lk.BackendStarted), "backend-start")
            case lk.ResetBackend():
                self._job(self._backend_step("reset", lk.BackendReset), "backend-reset")
            case lk.CheckHealth():
                self._job(self._check_health(), "health-check")
            case lk.StartSession(start=start):
                if self.session is not None:  # the core never does this; never leak one
                    log.error("session %s replaced while open", self.session.id)
                    self._close_in_background(self.session)
                s = self.settings
                self.session = Session(
                    start, self.backend, self.post, s.playout_delay_ms, s.input_limit, s.audio
                )
                self.session.start()
            case lk.FeedSession(msg=msg):
                if self.session is not None and self.session.id == msg.session_id:
                    self.session.feed(msg)
            case lk.CloseSession(session_id=session_id):
                session = self.session
                if session is not None and session.id == session_id:
                    self.session = None  # only that one: another would leak its sockets
                    self._close_in_background(session)
            case lk.Exit():
                pass  # run() tears down once the loop sees link.done

    def _close_in_background(self, session: Session) -> None:
        task = asyncio.create_task(self._close_session(session))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _send(self, msg: t.Message) -> None:
        if isinstance(msg, t.Register):
            # What only the running backend knows goes into the core's register.
            msg = msgspec.structs.replace(
                msg,
                audio=audio_info(self.backend, self.settings.audio),
                codecs=list(self.backend.codecs),
            )
        ws = self._ws
        if ws is None or ws.closed:
            log.info("send %s skipped: no socket", type(msg).__name__)
            return
        try:
            await ws.send_str(t.encode_str(msg))
        except (ConnectionError, RuntimeError) as exc:
            log.info("send %s failed: %r", type(msg).__name__, exc)

    async def _connect(self) -> None:
        s = self.settings
        if self._http is None:
            # A fresh TCP connection for every attempt: a refused upgrade (a
            # node that is stopping answers 503) must not leave a kept-alive
            # connection that pins the next attempt to the same node behind a
            # load balancer.
            self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        headers = {"Authorization": f"Bearer {s.token}"} if s.token else {}
        try:
            # Bounded: a frozen server still accepts TCP but never upgrades.
            async with asyncio.timeout(s.link.register_timeout):
                ws = await self._http.ws_connect(
                    s.url,
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
                log.warning("cannot reach %s: %s", s.url, exc)
            self.post(lk.ConnectFailed(str(exc)))
            return
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("cannot reach %s: %s", s.url, exc)
            self.post(lk.ConnectFailed(repr(exc)))
            return
        self._ws = ws
        self._reader = asyncio.create_task(self._read(ws), name="ws-reader")
        self.post(lk.Connected())

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        why = "closed by the server"
        try:
            async for raw in ws:
                if raw.type is aiohttp.WSMsgType.TEXT:
                    try:
                        self.post(lk.Received(t.decode(raw.data)))
                    except t.BadMessage as exc:
                        log.warning("unreadable message from the server dropped: %s", exc)
                elif raw.type is aiohttp.WSMsgType.ERROR:
                    why = f"socket error: {ws.exception()!r}"
        finally:
            self.post(lk.SocketClosed(why))

    async def _close_socket(self) -> None:
        reader, self._reader = self._reader, None
        ws, self._ws = self._ws, None
        if reader is not None:
            # Cancelled first, so a closed socket posts nothing after this.
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        if ws is not None:
            await ws.close()

    async def _backend_step(
        self, what: str, result: type[lk.BackendStarted] | type[lk.BackendReset]
    ) -> None:
        try:
            await (self.backend.start() if what == "start" else self.backend.reset())
        except BackendError as exc:
            self.post(result(False, str(exc)))
            return
        except Exception as exc:
            log.exception("backend %s raised", what)
            self.post(result(False, f"{what} raised {exc!r}"))
            return
        self.post(result(True))

    async def _check_health(self) -> None:
        try:
            health = await self.backend.health()
        except Exception as exc:
            log.exception("backend health check raised")
            self.post(lk.HealthChecked(False, f"health check raised {exc!r}"))
            return
        self.post(lk.HealthChecked(health.ok, health.detail))

    async def _close_session(self, session: Session) -> None:
        ok, detail = await session.close()
        self.post(lk.SessionClosed(session.id, ok, detail))

    async def _teardown(self) -> None:
        jobs = list(self._jobs)
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        # Each close is bounded (CLOSE_TIMEOUT) and logs its own errors.
        await asyncio.gather(*self._closing, return_exceptions=True)
        session, self.session = self.session, None
        if session is not None:
            ok, detail = await session.close()
            log.info("session %s ended ok=%s: %s", session.id, ok, detail)
        await self._close_socket()
        if self._http is not None:
            await self._http.close()
            self._http = None
        try:
            await self.backend.stop()
        except Exception:
            log.exception("backend stop failed")

    async def _serve_metrics(self) -> web.AppRunner | None:
        if self.settings.metrics_port is None:
            return None
        runner, port = await serve_metrics(
            self, self.settings.metrics_host, self.settings.metrics_port
        )
        self.metrics_port = port
        log.info("metrics on http://%s:%d/metrics", self.settings.metrics_host, port)
        return runner


def audio_info(backend: GameBackend, enabled: bool) -> t.AudioInfo:
    """What ``register`` says about sound (shown in the server's /api/status)."""
    sound = game_audio(backend)
    if not enabled:
        return t.AudioInfo(codec=None, detail="turned off (--no-audio)")
    if sound is None:
        return t.AudioInfo(codec=None, detail="this backend has no sound")
    status = sound.audio_status
    return t.AudioInfo(codec=status.codec, detail=status.detail[:200])


# --- command line ---------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d, dl = WorkerSettings(), LinkSettings()
    add_flag(parser, "--server", default=d.server, help="signaling server base address")
    add_flag(parser, "--game", default=dl.game, help="the game this worker serves")
    add_flag(parser, "--backend", default="synthetic", choices=sorted(BACKENDS), help="backend")
    for flag, default, help_text in (
        ("--backoff-base", dl.backoff_base, "first retry delay ceiling (server and game), s"),
        ("--backoff-cap", dl.backoff_cap, "retry delay cap, s"),
        ("--restart-delay", dl.restart_delay, "pause offline between sessions, s"),
        ("--register-timeout", dl.register_timeout, "wait for connect and registered, s"),
        ("--health-interval", dl.health_interval, "backend health poll while idle, s"),
        ("--stable-after", dl.stable_after, "healthy this long ends a game's failure streak, s"),
    ):
        add_flag(parser, flag, type=float, default=default, help=help_text)
    add_flag(
        parser,
        "--playout-delay",
        type=int,
        default=d.playout_delay_ms,
        help="ms the browser may hold a frame (RTP playout-delay); negative: not sent",
    )
    add_flag(
        parser,
        "--input-limit",
        type=int,
        default=d.input_limit,
        help="input events waiting for the game before the session ends (moves coalesce)",
    )
    add_flag(
        parser,
        "--metrics-port",
        type=int,
        help="serve Prometheus /metrics on this port (default: off; 0: any free port)",
    )
    add_flag(parser, "--metrics-host", default=d.metrics_host, help="address for --metrics-port")
    no_audio = env_name("--no-audio")
    parser.add_argument(
        "--no-audio",
        action="store_true",
        default=os.environ.get(no_audio, "").lower() in ("1", "true", "yes"),
        help=f"video only: do not capture or send the game's sound (env {no_audio}=1)",
    )
    add_flag(parser, "--worker-token", help="shared secret the server asks workers for")
    add_flag(parser, "--advertise-addr", help="addr to report in register (default: socket's)")
    add_flag(parser, "--log-level", default="info", help="debug, info, warning")
    add_flag(parser, "--log-format", default="text", choices=["text", "json"], help="log format")
    add_backend_arguments(parser)


def settings_from_args(args: argparse.Namespace) -> WorkerSettings:
    return WorkerSettings(
        server=args.server,
        link=LinkSettings(
            game=args.game,
            addr=args.advertise_addr,
            backoff_base=args.backoff_base,
            backoff_cap=args.backoff_cap,
            restart_delay=args.restart_delay,
            register_timeout=args.register_timeout,
            health_interval=args.health_interval,
            stable_after=args.stable_after,
        ),
        token=args.worker_token or None,
        playout_delay_ms=args.playout_delay if args.playout_delay >= 0 else None,
        input_limit=args.input_limit,
        audio=not args.no_audio,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
    )


async def _main(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    backend = create_backend(args.backend, args)
    worker = Worker(settings, backend)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop.set)
    log.info(
        "worker starting: server=%s game=%s backend=%s",
        settings.url,
        settings.link.game,
        args.backend,
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
