"""The worker's asyncio layer: ``Worker`` runs the link core (``worker/link.py``).

Every rule of the worker's lifecycle lives in the core, a state machine with
no I/O. ``Worker`` feeds it events (socket messages, timers, the session's
and the backend's news) and carries out the effects it asks for: the
server's WebSocket, the backend's start, reset and health check, and one
``Session`` (``worker/session.py``) per player.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import msgspec
from aiohttp import web

from playcast import protocol as t
from playcast.backends.audio import game_audio
from playcast.backends.base import BackendError, GameBackend
from playcast.worker import link_events as lk
from playcast.worker.backoff import Backoff
from playcast.worker.input_queue import DEFAULT_LIMIT
from playcast.worker.link import Link
from playcast.worker.link_state import LinkSettings
from playcast.worker.media_counters import MediaCounters
from playcast.worker.metrics import serve_metrics
from playcast.worker.rate_control import RateSettings
from playcast.worker.session import Session

log = logging.getLogger("playcast.worker")

WORKER_PATH: Final = "/ws/worker"


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
    # The video's bounds and start, whatever the player's link says.
    rate: RateSettings = field(default_factory=RateSettings)

    @property
    def url(self) -> str:
        base = self.server.rstrip("/")
        for http, ws in (("http://", "ws://"), ("https://", "wss://")):
            if base.startswith(http):
                base = ws + base[len(http) :]
        return base if base.endswith(WORKER_PATH) else base + WORKER_PATH


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
        self.media = MediaCounters()

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
                    start,
                    self.backend,
                    self.post,
                    s.playout_delay_ms,
                    s.input_limit,
                    s.audio,
                    s.rate,
                    self.media,
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
            self.link, self.settings.metrics_host, self.settings.metrics_port, self.media
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
