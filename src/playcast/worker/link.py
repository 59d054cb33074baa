"""The worker's lifecycle as a state machine with no I/O: its link to the
server and to its game, from start to stop, across every reconnection.

``Link`` is fed typed events (a message received, the socket closed, the
session's media connected or failed, the backend failed, a timer fired, stop)
with the time from the caller's clock, and queues effects (send a message,
connect, start or close a session, reset the game, close the socket, exit).
It never calls out: the asyncio layer in ``worker/main.py`` carries the
effects out after each step and feeds back what they lead to, and tests feed
events with a fake clock. ``deadline`` says when it wants ``TimerFired``.

One life of the worker (PROTOCOL.md, "Worker lifecycle")::

    start game -> check health -> connect -> register -> available
      -> session_start -> ... -> shutdown -> close session -> shutdown_ack
      -> reset game -> pause -> check health -> connect -> register ...

Two backoffs, both full jitter with a cap: one for the server (reset once
``registered`` arrives), one for the game (reset once it has stayed healthy
for ``stable_after``), so a phone that fails again and again is retried
ever more slowly instead of at a fixed pace.
"""

from __future__ import annotations

import enum
import logging
import random
from collections import Counter
from dataclasses import dataclass
from typing import Final

from playcast import protocol as t

log = logging.getLogger("playcast.worker")

# After the heartbeat deadline the worker looks once more before calling the
# server dead: after a stall (a frozen process, a busy machine) the timer can
# fire before the socket is read, and a shutdown may be waiting there.
SILENCE_GRACE: Final = 0.25


@dataclass(frozen=True, slots=True)
class LinkSettings:
    game: str = t.DEFAULT_GAME
    addr: str | None = None
    port: int | None = None
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    # The "short pause" offline between one player and the next registration.
    restart_delay: float = 1.0
    # Until ``registered`` tells us the heartbeat timeout, this bounds the wait.
    register_timeout: float = 10.0
    # health() polls while available, behind the failures the backend pushes.
    health_interval: float = 5.0
    # A game healthy this long has recovered: its failure streak starts over.
    stable_after: float = 60.0


class Backoff:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**n)]."""

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        self.base, self.cap = base, cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        return min(self.cap, self.base * 2.0 ** min(self.attempt, 62))

    def next_delay(self) -> float:
        ceiling = self.ceiling()
        self.attempt += 1
        return self._rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        self.attempt = 0


# --- events: what happened -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Received:
    msg: t.Message


@dataclass(frozen=True, slots=True)
class SocketClosed:
    why: str


@dataclass(frozen=True, slots=True)
class Connected:
    """The WebSocket to the server is open."""


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    why: str


@dataclass(frozen=True, slots=True)
class BackendStarted:
    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class BackendReset:
    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class HealthChecked:
    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class BackendFailed:
    """The backend pushed a failure: its game is down."""

    detail: str


@dataclass(frozen=True, slots=True)
class OfferReady:
    session_id: str
    sdp: str


@dataclass(frozen=True, slots=True)
class MediaConnected:
    session_id: str


@dataclass(frozen=True, slots=True)
class MediaFailed:
    """The session's media died: the handshake, the player's side, or the game."""

    session_id: str
    reason: str
    backend: bool  # the game's fault, not the player's
    # What kind of failure, for the truth told to the player and the operator.
    kind: t.FailureKind | None = None


@dataclass(frozen=True, slots=True)
class SessionClosed:
    """``CloseSession`` is done; ``ok``/``detail`` go into ``shutdown_ack``."""

    session_id: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class StopRequested:
    pass


@dataclass(frozen=True, slots=True)
class TimerFired:
    pass


Event = (
    Received
    | SocketClosed
    | Connected
    | ConnectFailed
    | BackendStarted
    | BackendReset
    | HealthChecked
    | BackendFailed
    | OfferReady
    | MediaConnected
    | MediaFailed
    | SessionClosed
    | StopRequested
    | TimerFired
)


# --- effects: what to do ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    msg: t.Message


@dataclass(frozen=True, slots=True)
class Connect:
    """Open the WebSocket; answer with ``Connected`` or ``ConnectFailed``."""


@dataclass(frozen=True, slots=True)
class CloseSocket:
    pass


@dataclass(frozen=True, slots=True)
class StartBackend:
    """``backend.start()``; answer with ``BackendStarted``."""


@dataclass(frozen=True, slots=True)
class ResetBackend:
    """``backend.reset()``; answer with ``BackendReset``."""


@dataclass(frozen=True, slots=True)
class CheckHealth:
    """``backend.health()``; answer with ``HealthChecked``."""


@dataclass(frozen=True, slots=True)
class StartSession:
    start: t.SessionStart


@dataclass(frozen=True, slots=True)
class FeedSession:
    msg: t.Answer | t.IceCandidate


@dataclass(frozen=True, slots=True)
class CloseSession:
    """Close the peer connection; answer with ``SessionClosed``."""

    session_id: str


@dataclass(frozen=True, slots=True)
class Exit:
    """Stop everything: close any session and the socket, ``backend.stop()``."""


Effect = (
    Send
    | Connect
    | CloseSocket
    | StartBackend
    | ResetBackend
    | CheckHealth
    | StartSession
    | FeedSession
    | CloseSession
    | Exit
)


class Phase(enum.Enum):
    STARTING = "starting the game"
    RESETTING = "resetting the game"
    CHECKING = "checking the game"
    CONNECTING = "connecting"
    LINKED = "linked"  # socket open: registering, available or in a session
    LEAVING = "leaving"  # socket closed, waiting for the session to close
    WAITING = "waiting"
    STOPPED = "stopped"


class Then(enum.Enum):
    """What a wait leads to."""

    START = "start"
    RESET = "reset"
    CHECK = "check"


class Plan(enum.Enum):
    """Why a link ended, which decides what comes next."""

    RESTART = "restart"  # the session (or registration) ended normally: short pause
    LOST = "server lost"  # socket closed or heartbeats stopped: server backoff
    BACKEND_FAILED = "backend failed"  # the game is down: game backoff, reset


@dataclass(slots=True)
class _Session:
    id: str
    connected: bool = False  # our peer connection reached "connected"
    reported: bool = False  # webrtc_connected or webrtc_failed was sent
    failed_after_connect: bool = False
    closing: bool = False


class Link:
    """The worker's whole lifecycle; feed ``handle(event, now)``, drain ``effects()``."""

    def __init__(self, settings: LinkSettings, rng: random.Random | None = None) -> None:
        self.settings = settings
        rng = rng or random.Random()
        self.server_backoff = Backoff(settings.backoff_base, settings.backoff_cap, rng)
        self.backend_backoff = Backoff(settings.backoff_base, settings.backoff_cap, rng)
        self.phase = Phase.STARTING
        self._effects: list[Effect] = []
        # Counters for logs and /metrics.
        self.registrations = 0
        self.sessions = 0
        self.failures: Counter[str] = Counter()  # by kind: start, reset, health, idle, session
        self.failure_streak = 0
        self.last_delay = 0.0
        self._healthy_since: float | None = None
        self._wake_at: float | None = None
        self._then = Then.CHECK
        self._after_reset: tuple[float, str] | None = None
        self._plan = Plan.RESTART
        self._backend_fault: str | None = None
        self._reset_link(0.0)

    def _reset_link(self, now: float) -> None:
        """Fresh state for one connection: nothing carries over."""
        self.worker_id: str | None = None
        self.heartbeat_timeout = self.settings.register_timeout
        self._last_ping = now
        self._grace_until: float | None = None
        self._session: _Session | None = None
        self._had_session = False
        self._closed: tuple[bool, str] | None = None
        self._ack_pending = False
        self._unconfirmed_at: float | None = None
        self._poll_at: float | None = None
        self._polling = False

    # --- the interface -----------------------------------------------------

    def start(self, now: float) -> None:
        self.phase = Phase.STARTING
        self._emit(StartBackend())

    def effects(self) -> list[Effect]:
        effects, self._effects = self._effects, []
        return effects

    @property
    def done(self) -> bool:
        return self.phase is Phase.STOPPED

    @property
    def available(self) -> bool:
        """Registered, with no session yet: what the server's pool shows."""
        return self.phase is Phase.LINKED and self.worker_id is not None and not self._had_session

    @property
    def deadline(self) -> float | None:
        """When to feed ``TimerFired`` (None: no timer)."""
        if self.phase is Phase.WAITING:
            return self._wake_at
        if self.phase is not Phase.LINKED:
            return None
        times = [
            self._grace_until
            if self._grace_until is not None
            else self._last_ping + self.heartbeat_timeout
        ]
        if self._unconfirmed_at is not None:
            times.append(self._unconfirmed_at)
        if self._poll_at is not None:
            times.append(self._poll_at)
        return min(times)

    def handle(self, event: Event, now: float) -> None:
        if self.phase is Phase.STOPPED:
            return
        match event:
            case StopRequested():
                self.phase = Phase.STOPPED
                self._emit(Exit())
            case TimerFired():
                self._on_timer(now)
            case BackendStarted(ok=ok, detail=detail):
                if self.phase is Phase.STARTING:
                    if ok:
                        self._check()
                    else:
                        self._backend_down("start", detail, now, then=Then.START)
            case BackendReset(ok=ok, detail=detail):
                if self.phase is Phase.RESETTING:
                    if ok:
                        delay, why = self._after_reset or (0.0, "")
                        self._wait(delay, Then.CHECK, why, now)
                    else:
                        self._backend_down("reset", detail, now)
            case HealthChecked(ok=ok, detail=detail):
                self._on_health(ok, detail, now)
            case BackendFailed(detail=detail):
                self._on_backend_failed(detail, now)
            case Connected():
                if self.phase is not Phase.CONNECTING:
                    self._emit(CloseSocket())  # the game failed meanwhile
                    return
                self.phase = Phase.LINKED
                self._reset_link(now)
                s = self.settings
                self._emit(Send(t.Register(game=s.game, addr=s.addr, port=s.port)))
            case ConnectFailed():
                if self.phase is Phase.CONNECTING:
                    self._wait(
                        self.server_backoff.next_delay(), Then.CHECK, "server unreachable", now
                    )
            case SocketClosed(why=why):
                if self.phase is Phase.LINKED and not self._ack_pending:
                    log.warning("server connection lost: %s", why)
                    self._leave(Plan.LOST, now)
            case Received(msg=msg):
                if self.phase is Phase.LINKED:
                    self._on_message(msg, now)
            case OfferReady() | MediaConnected() | MediaFailed() | SessionClosed():
                self._on_session_event(event, now)

    # --- between links -------------------------------------------------------

    def _emit(self, effect: Effect) -> None:
        self._effects.append(effect)

    def _check(self) -> None:
        self.phase = Phase.CHECKING
        self._emit(CheckHealth())

    def _reset(self, after: tuple[float, str]) -> None:
        self.phase = Phase.RESETTING
        self._after_reset = after
        self._emit(ResetBackend())

    def _wait(self, delay: float, then: Then, why: str, now: float) -> None:
        if why:
            log.info("restarting in %.2f s (%s)", delay, why)
        self.phase = Phase.WAITING
        self._wake_at = now + delay
        self._then = then

    def _backend_down(self, kind: str, detail: str, now: float, then: Then = Then.RESET) -> None:
        """One failure of the game: one log line, one count, a backoff wait."""
        self._recovered(now)
        self._healthy_since = None
        self.failures[kind] += 1
        self.failure_streak = self.backend_backoff.attempt + 1
        delay = self.last_delay = self.backend_backoff.next_delay()
        log.error(
            "backend failure %d in a row (%s): %s; %s in %.2f s",
            self.failure_streak,
            kind,
            detail,
            then.value,
            delay,
        )
        self._wait(delay, then, "", now)

    def _on_timer(self, now: float) -> None:
        if self.phase is Phase.WAITING:
            if self._wake_at is not None and now >= self._wake_at:
                self._wake_at = None
                match self._then:
                    case Then.START:
                        self.phase = Phase.STARTING
                        self._emit(StartBackend())
                    case Then.RESET:
                        self._reset((0.0, ""))
                    case Then.CHECK:
                        self._check()
        elif self.phase is Phase.LINKED:
            self._on_link_timer(now)

    def _on_health(self, ok: bool, detail: str, now: float) -> None:
        if self.phase is Phase.CHECKING:
            if ok:
                if self._healthy_since is None:
                    self._healthy_since = now
                self.phase = Phase.CONNECTING
                self._emit(Connect())
            else:
                self._backend_down("health", detail, now)
        elif self.phase is Phase.LINKED and self._polling:
            self._polling = False
            if not ok:
                self._on_backend_failed(f"health check: {detail}", now)
            elif self.available:
                self._recovered(now)
                self._poll_at = now + self.settings.health_interval

    def _recovered(self, now: float) -> None:
        """A game healthy for ``stable_after`` starts a new failure streak."""
        since = self._healthy_since
        if since is not None and now - since >= self.settings.stable_after:
            self.backend_backoff.reset()
            self.failure_streak = 0

    def _on_backend_failed(self, detail: str, now: float) -> None:
        if self.phase is Phase.LINKED:
            session = self._session
            if session is not None:
                self._media_failed(session, detail, backend=True, now=now)
            elif self._backend_fault is None:
                self._backend_fault = detail
                self._leave(Plan.BACKEND_FAILED, now)
        elif self.phase in (Phase.CHECKING, Phase.CONNECTING):
            # Not registered yet: never register a game known to be down.
            self._backend_down("idle", detail, now)
        elif self.phase is Phase.WAITING and self._then is Then.CHECK:
            self._backend_down("idle", detail, now)
        # Starting, resetting, leaving, or already waiting to reset: the
        # running step or the next health check sees it.

    def _leave(self, plan: Plan, now: float) -> None:
        """End this link: close the socket now, and the session if there is one."""
        self._emit(CloseSocket())
        self.phase = Phase.LEAVING
        self._plan = plan
        session = self._session
        if session is not None:
            if not session.closing:
                session.closing = True
                self._emit(CloseSession(session.id))
            return  # _after_link once SessionClosed arrives
        self._after_link(now)

    def _after_link(self, now: float) -> None:
        had_session, fault = self._had_session, self._backend_fault
        self._backend_fault = None
        if fault is not None or self._plan is Plan.BACKEND_FAILED:
            kind = "session" if had_session else "idle"
            self._backend_down(kind, fault or "backend failed", now)
            return
        if self._plan is Plan.LOST:
            after = (self.server_backoff.next_delay(), Plan.LOST.value)
        else:
            after = (self.settings.restart_delay, Plan.RESTART.value)
        if had_session:
            self._reset(after)  # a fresh game for the next player
        else:
            self._wait(after[0], Then.CHECK, after[1], now)

    # --- one link ------------------------------------------------------------

    def _on_link_timer(self, now: float) -> None:
        if self._unconfirmed_at is not None and now >= self._unconfirmed_at:
            # The server notices a dead client within its heartbeat timeout
            # and sends shutdown; past that, it never will.
            log.warning("no shutdown from the server after the player vanished")
            self._leave(Plan.RESTART, now)
            return
        if now >= self._last_ping + self.heartbeat_timeout:
            if self._grace_until is None:
                self._grace_until = now + min(SILENCE_GRACE, self.heartbeat_timeout / 4)
            elif now >= self._grace_until:
                what = "registered" if self.worker_id is None else "ping"
                log.warning("server silent: no %s for %.1f s", what, self.heartbeat_timeout)
                self._leave(Plan.LOST, now)
                return
        if self._poll_at is not None and now >= self._poll_at and not self._polling:
            self._poll_at = None
            self._polling = True
            self._emit(CheckHealth())

    def _on_message(self, msg: t.Message, now: float) -> None:
        match msg:
            case t.Ping(ts=ts):
                self._last_ping = now
                self._grace_until = None
                self._emit(Send(t.Pong(ts=ts)))
            case t.Registered():
                if self.worker_id is not None:
                    log.warning("second registered ignored")
                    return
                self.worker_id = msg.worker_id
                self.heartbeat_timeout = msg.heartbeat_timeout
                self._last_ping = now
                self._grace_until = None
                self.registrations += 1
                self.server_backoff.reset()
                self._recovered(now)
                self._poll_at = now + self.settings.health_interval
                log.info(
                    "registered worker_id=%s game=%s heartbeat_timeout=%s",
                    msg.worker_id,
                    self.settings.game,
                    msg.heartbeat_timeout,
                )
            case t.SessionStart():
                if not self.available:
                    log.warning("session_start %s ignored: not available", msg.session_id)
                    return
                log.info("session_start session=%s client=%s", msg.session_id, msg.client_id)
                self._had_session = True
                self.sessions += 1
                self._poll_at = None  # a session's own failures end it
                self._session = _Session(msg.session_id)
                self._emit(StartSession(msg))
            case t.Answer() | t.IceCandidate():
                session = self._session
                if session is None or session.closing or msg.session_id != session.id:
                    log.warning(
                        "%s for unknown session %s ignored", type(msg).__name__, msg.session_id
                    )
                    return
                self._emit(FeedSession(msg))
            case t.Shutdown():
                log.info("shutdown reason=%s message=%r", msg.reason, msg.message)
                session = self._session
                if session is None:
                    self._ack(now)
                    return
                self._ack_pending = True
                if not session.closing:
                    session.closing = True
                    self._emit(CloseSession(session.id))
            case t.Error():
                log.warning("server error %s: %s", msg.code, msg.message)
            case _:
                log.warning("unexpected %s from the server ignored", type(msg).__name__)

    def _ack(self, now: float) -> None:
        ok, detail = self._closed or (True, "idle, no session to close")
        self._emit(Send(t.ShutdownAck(ok=ok, detail=detail)))
        log.info("shutdown_ack ok=%s detail=%r", ok, detail)
        self._ack_pending = False
        self._leave(Plan.RESTART, now)

    def _on_session_event(
        self, event: OfferReady | MediaConnected | MediaFailed | SessionClosed, now: float
    ) -> None:
        session = self._session
        if session is None or event.session_id != session.id:
            return  # a session already gone
        match event:
            case SessionClosed(ok=ok, detail=detail):
                log.info("session %s ended ok=%s: %s", session.id, ok, detail)
                self._session = None
                self._closed = ok, detail
                if self.phase is Phase.LEAVING:
                    self._after_link(now)
                elif self._ack_pending:
                    self._ack(now)
            case _ if session.closing:
                return
            case OfferReady(sdp=sdp):
                self._emit(Send(t.Offer(session_id=session.id, sdp=sdp)))
                # aiortc gathers every candidate before the offer, so they all
                # travel in its SDP; the null candidate says there are no more.
                self._emit(Send(t.IceCandidate(session_id=session.id, candidate=None)))
            case MediaConnected():
                session.connected = True
                if not session.reported:
                    session.reported = True
                    self._emit(Send(t.WebrtcConnected(session_id=session.id)))
            case MediaFailed(reason=reason, backend=backend, kind=kind):
                self._media_failed(session, reason, backend=backend, now=now, kind=kind)

    def _media_failed(
        self,
        session: _Session,
        reason: str,
        *,
        backend: bool,
        now: float,
        kind: t.FailureKind | None = None,
    ) -> None:
        if session.closing:
            return
        log.warning("session %s: %s", session.id, reason)
        failed = t.WebrtcFailed(session_id=session.id, reason=reason[:500], kind=kind)
        if not session.connected:
            # Still in the handshake: the server ends it (handshake_failed) and
            # sends shutdown, acknowledged as usual.
            if not session.reported:
                session.reported = True
                self._emit(Send(failed))
            if backend:
                self._backend_fault = reason
            return
        if session.failed_after_connect:
            return
        session.failed_after_connect = True
        # After the handshake the server takes webrtc_failed as the end of the
        # session: the player hears worker_failed now, not a heartbeat later.
        self._emit(Send(failed))
        if backend:
            self._backend_fault = reason
            self._leave(Plan.BACKEND_FAILED, now)
            return
        session.closing = True
        self._emit(CloseSession(session.id))
        # The server answers with shutdown; if it never does, leave anyway.
        self._unconfirmed_at = now + self.heartbeat_timeout
