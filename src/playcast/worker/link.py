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
``registered`` or ``resumed`` arrives), one for the game (reset once it has
stayed healthy for ``stable_after``), so a phone that fails again and again
is retried ever more slowly instead of at a fixed pace.

Resume (the server's ``--resume-grace``): when ``registered`` announced a
grace and ``session_start`` carried a ``resume_token``, a socket that drops
mid-session does not end the game. The link goes ``AWAY``: the game and the
peer connection keep running, and it reconnects at once, then after
``resume_quick`` (0.1, 0.25, 0.5 s), then on the server backoff, sending
``resume`` as its first message each time. ``resumed`` brings a new token and
the link carries on (what the server held for it arrives as usual, and what
the session said meanwhile goes out then). ``resume_failed``, or no server
reached within the grace, ends the session and restarts as without resume.
``reconnect`` from a stopping node means the same at once (idle: register
anew at once). Heartbeat silence from a connected socket is still server
loss: the server counts such a socket as dead too, and has already ended
the session.
"""

from __future__ import annotations

import enum
import logging
import random
from collections import Counter
from dataclasses import dataclass
from typing import Final

from playcast import protocol as t
from playcast.worker.backoff import Backoff
from playcast.worker.link_events import (
    BackendFailed,
    BackendReset,
    BackendStarted,
    CheckHealth,
    CloseSession,
    CloseSocket,
    Connect,
    Connected,
    ConnectFailed,
    Effect,
    Event,
    Exit,
    FeedSession,
    HealthChecked,
    MediaConnected,
    MediaFailed,
    OfferReady,
    Received,
    ResetBackend,
    Send,
    SessionClosed,
    SocketClosed,
    StartBackend,
    StartSession,
    StopRequested,
    TimerFired,
)

__all__ = [
    "BackendFailed",
    "BackendReset",
    "BackendStarted",
    "Backoff",
    "CheckHealth",
    "CloseSession",
    "CloseSocket",
    "Connect",
    "ConnectFailed",
    "Connected",
    "Effect",
    "Event",
    "Exit",
    "FeedSession",
    "HealthChecked",
    "Link",
    "LinkSettings",
    "MediaConnected",
    "MediaFailed",
    "OfferReady",
    "Phase",
    "Plan",
    "Received",
    "ResetBackend",
    "Send",
    "SessionClosed",
    "SocketClosed",
    "StartBackend",
    "StartSession",
    "StopRequested",
    "Then",
    "TimerFired",
]

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
    # Waits before each resume attempt after a drop (the first at once); then
    # the server backoff, until the grace is over.
    resume_quick: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5)


class Phase(enum.Enum):
    STARTING = "starting the game"
    RESETTING = "resetting the game"
    CHECKING = "checking the game"
    CONNECTING = "connecting"
    LINKED = "linked"  # socket open: registering, available or in a session
    LEAVING = "leaving"  # socket closed, waiting for the session to close
    AWAY = "away"  # socket dropped mid-session: the session runs on, resuming
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
    RECONNECT = "reconnect"  # the node is stopping, others live: at once, elsewhere
    LOST = "server lost"  # socket closed or heartbeats stopped: server backoff
    BACKEND_FAILED = "backend failed"  # the game is down: game backoff, reset


@dataclass(slots=True)
class _Session:
    id: str
    connected: bool = False  # our peer connection reached "connected"
    reported: bool = False  # webrtc_connected or webrtc_failed was sent
    failed_after_connect: bool = False
    closing: bool = False
    resume_token: str | None = None  # the current one; replaced by each resumed


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
        self.resumes = 0
        self.last_resume_s: float | None = None  # socket drop to resumed
        self.resume_failures: Counter[str] = Counter()  # refused, grace_over
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
        # Resume: the grace registered announced, and while away (or on a new
        # socket waiting for resumed): since when, until when, what is next.
        self.resume_grace = 0.0
        self._away_since: float | None = None
        self._away_until = 0.0
        self._attempts = 0
        self._attempt_at: float | None = None  # None while connecting
        self._awaiting_resumed = False
        self._outbox: list[t.Message] = []  # the session's news while away

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
    def away(self) -> bool:
        """The socket dropped mid-session and the session has not resumed yet."""
        return self._away_since is not None

    @property
    def deadline(self) -> float | None:
        """When to feed ``TimerFired`` (None: no timer)."""
        if self.phase is Phase.WAITING:
            return self._wake_at
        if self.phase is Phase.AWAY:
            return self._attempt_at
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
                if self.phase is Phase.AWAY and self._attempt_at is None:
                    self._resume_on_new_socket(now)
                    return
                if self.phase is not Phase.CONNECTING:
                    self._emit(CloseSocket())  # the game failed meanwhile
                    return
                self.phase = Phase.LINKED
                self._reset_link(now)
                s = self.settings
                self._emit(Send(t.Register(game=s.game, addr=s.addr, port=s.port)))
            case ConnectFailed(why=why):
                if self.phase is Phase.AWAY and self._attempt_at is None:
                    log.info("resume attempt %d: %s", self._attempts, why)
                    self._next_attempt(now)
                elif self.phase is Phase.CONNECTING:
                    self._wait(
                        self.server_backoff.next_delay(), Then.CHECK, "server unreachable", now
                    )
            case SocketClosed(why=why):
                if self.phase is Phase.LINKED and not self._ack_pending:
                    log.warning("server connection lost: %s", why)
                    if not self._go_away(now):
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
        elif self.phase is Phase.AWAY and self._attempt_at is not None and now >= self._attempt_at:
            self._attempt(now)

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
        if self.phase is Phase.AWAY:
            self._backend_fault = detail
            self._stop_resuming()
            self._leave(Plan.BACKEND_FAILED, now)
        elif self.phase is Phase.LINKED:
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
        elif self._plan is Plan.RECONNECT:
            after = (0.0, Plan.RECONNECT.value)
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
                if self._awaiting_resumed:
                    # A new socket that never answers the resume: another try.
                    log.warning("no answer to resume for %.1f s", self.heartbeat_timeout)
                    self._emit(CloseSocket())
                    self._back_away(now)
                    return
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
                self.resume_grace = msg.resume_grace or 0.0
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
                self._session = _Session(msg.session_id, resume_token=msg.resume_token)
                self._emit(StartSession(msg))
            case t.Resumed():
                self._on_resumed(msg, now)
            case t.Reconnect():
                self._on_reconnect(now)
            case t.Error(code="resume_failed") if self._awaiting_resumed:
                log.warning("resume refused: %s; ending the session", msg.message)
                self.resume_failures["refused"] += 1
                self._stop_resuming()
                self._leave(Plan.RESTART, now)
            case t.Shutdown() if self._awaiting_resumed:
                # A node that is stopping greets a new socket this way: it is
                # not our session's end; try another node.
                log.info("resume attempt met a stopping node (%s)", msg.reason)
                self._emit(CloseSocket())
                self._back_away(now)
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
                self._say(t.Offer(session_id=session.id, sdp=sdp))
                # aiortc gathers every candidate before the offer, so they all
                # travel in its SDP; the null candidate says there are no more.
                self._say(t.IceCandidate(session_id=session.id, candidate=None))
            case MediaConnected():
                session.connected = True
                if not session.reported:
                    session.reported = True
                    self._say(t.WebrtcConnected(session_id=session.id))
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
        if self.away:
            # The media died while the socket is down: the partner's side sees
            # it die too and says so; this end gives up at once.
            self._stop_resuming()
            if backend:
                self._backend_fault = reason
            self._leave(Plan.BACKEND_FAILED if backend else Plan.LOST, now)
            return
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

    # --- resume --------------------------------------------------------------

    def _resumable(self) -> bool:
        session = self._session
        return (
            session is not None
            and not session.closing
            and session.resume_token is not None
            and self.resume_grace > 0
        )

    def _go_away(self, now: float) -> bool:
        """The socket is gone mid-session: keep the game and try to resume.
        False when this session cannot be resumed (the seed's rule applies)."""
        if not self._resumable():
            return False
        self._emit(CloseSocket())
        if self._awaiting_resumed:
            self._back_away(now)  # a resume socket dropped: the same grace
            return True
        session = self._session
        assert session is not None
        log.info("resuming session %s for up to %.1f s", session.id, self.resume_grace)
        self._away_since = now
        self._away_until = now + self.resume_grace
        self._attempts = 0
        self._poll_at = None
        self.phase = Phase.AWAY
        self._next_attempt(now)
        return True

    def _back_away(self, now: float) -> None:
        """One resume attempt failed after connecting: the next one."""
        self._awaiting_resumed = False
        self.phase = Phase.AWAY
        self._next_attempt(now)

    def _next_attempt(self, now: float) -> None:
        if now >= self._away_until:
            self._grace_over(now)
            return
        quick = self.settings.resume_quick
        if self._attempts < len(quick):
            delay = quick[self._attempts]
        else:
            delay = self.server_backoff.next_delay()
        self._attempt_at = min(now + delay, self._away_until)
        if self._attempt_at <= now:
            self._attempt(now)

    def _attempt(self, now: float) -> None:
        self._attempts += 1
        self._attempt_at = None  # connecting: Connected or ConnectFailed next
        self._emit(Connect())

    def _resume_on_new_socket(self, now: float) -> None:
        session = self._session
        assert session is not None and session.resume_token is not None
        self.phase = Phase.LINKED
        self._awaiting_resumed = True
        self._last_ping = now
        self._grace_until = None
        self._emit(Send(t.Resume(session_id=session.id, token=session.resume_token)))

    def _on_resumed(self, msg: t.Resumed, now: float) -> None:
        session = self._session
        if not self._awaiting_resumed or session is None or msg.session_id != session.id:
            log.warning("resumed %s ignored: no resume asked", msg.session_id)
            return
        since = self._away_since if self._away_since is not None else now
        self.last_resume_s = now - since
        log.info(
            "resumed session=%s after %.0f ms (%d attempts)",
            session.id,
            self.last_resume_s * 1000,
            self._attempts,
        )
        session.resume_token = msg.resume_token
        self.resumes += 1
        outbox, self._outbox = self._outbox, []
        self._stop_resuming()
        self.server_backoff.reset()
        for said in outbox:
            self._emit(Send(said))

    def _on_reconnect(self, now: float) -> None:
        """The node is stopping while others live: elsewhere, at once."""
        if self._ack_pending:
            return  # the session is closing anyway; the close follows
        log.info("server says reconnect")
        if self._go_away(now):
            return
        self._leave(Plan.RECONNECT, now)

    def _grace_over(self, now: float) -> None:
        log.warning(
            "no server took the resume within %.1f s: ending the session", self.resume_grace
        )
        self.resume_failures["grace_over"] += 1
        self._stop_resuming()
        self._leave(Plan.LOST, now)

    def _stop_resuming(self) -> None:
        self._away_since = None
        self._attempt_at = None
        self._awaiting_resumed = False
        self._outbox = []

    def _say(self, msg: t.Message) -> None:
        """A message of the session: sent now, or once resumed."""
        if self.away:
            self._outbox.append(msg)
        else:
            self._emit(Send(msg))
