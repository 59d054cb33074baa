"""The worker's lifecycle as a state machine with no I/O: its link to the
server and to its game, from start to stop, across every reconnection.

``Link`` is fed events (``worker/link_events.py``) with the time from the
caller's clock and queues effects; it never calls out. ``worker/runner.py``
carries the effects out and feeds back what they lead to; tests feed events
with a fake clock. ``deadline`` says when it wants ``TimerFired``.

Its state is one ``State`` (``worker/link_state.py``): ``GameCycle``
(``worker/game_cycle.py``) owns the states between links, ``Link`` those on
a socket and away. docs/worker.md has the table of states, events and
transitions; the common path::

    STARTING -> CHECKING -> CONNECTING -> REGISTERING -> AVAILABLE -> PLAYING
      -> ACKING -> LEAVING -> RESETTING -> WAITING -> CHECKING -> ...
    PLAYING -> AWAY <-> DIALING -> RESUMING -> PLAYING  (a dropped socket, resumed)
"""

from __future__ import annotations

import logging
import random
from collections import Counter

from playcast import protocol as t
from playcast.worker import link_events as ev
from playcast.worker.game_cycle import GameCycle
from playcast.worker.link_log import log_event
from playcast.worker.link_state import (
    AWAY_STATES,
    Course,
    Heartbeat,
    LinkSettings,
    Media,
    Phase,
    Plan,
    Poll,
    Resume,
    SessionRecord,
    State,
)

log = logging.getLogger("playcast.worker")

SessionEvent = ev.OfferReady | ev.MediaConnected | ev.MediaFailed | ev.SessionClosed


class Link(GameCycle):
    """The worker's whole lifecycle; feed ``handle(event, now)``, drain ``effects()``."""

    def __init__(self, settings: LinkSettings, rng: random.Random | None = None) -> None:
        super().__init__(settings, rng)
        # Counters for logs and /metrics (the game's are GameCycle's).
        self.registrations = 0
        self.sessions = 0
        self.resumes = 0
        self.last_resume_s: float | None = None  # socket drop to resumed
        self.resume_failures: Counter[str] = Counter()  # refused, grace_over
        self._plan = Plan.RESTART  # LEAVING: why
        # A game failure seen on this link, acted on when the link ends.
        self._backend_fault: str | None = None
        self._new_link(0.0)

    def _new_link(self, now: float) -> None:
        """Fresh records for one connection: nothing carries over."""
        self.worker_id: str | None = None
        self.resume_grace = 0.0  # what registered announced
        self._heartbeat = Heartbeat(self.settings.register_timeout, now)
        self._session: SessionRecord | None = None
        self._poll = Poll.IDLE
        self._poll_at = 0.0
        # UNCONFIRMED (and ACKING after it): past this, leave without a shutdown.
        self._end_by: float | None = None
        self._resume: Resume | None = None  # in AWAY_STATES

    # --- the interface -----------------------------------------------------

    @property
    def heartbeat_timeout(self) -> float:
        return self._heartbeat.timeout

    @property
    def available(self) -> bool:
        """Registered, with no session yet: what the server's pool shows."""
        return self.state is State.AVAILABLE

    @property
    def away(self) -> bool:
        """The socket dropped mid-session and the session has not resumed yet."""
        return self.state in AWAY_STATES

    @property
    def deadline(self) -> float | None:
        """When to feed ``ev.TimerFired`` (None: no timer)."""
        if self.state is State.WAITING:
            return self._wake_at
        if self.state is State.AWAY:
            return self._away().attempt_at
        if self.phase is not Phase.LINKED:
            return None
        times = [self._heartbeat.due]
        if self._end_by is not None:
            times.append(self._end_by)
        if self._poll is Poll.DUE:
            times.append(self._poll_at)
        return min(times)

    def handle(self, event: ev.Event, now: float) -> None:
        if self.state is State.STOPPED:
            return
        match event:
            case ev.StopRequested():
                self.state = State.STOPPED
                self._emit(ev.Exit())
            case ev.DrainRequested():
                if self._drain():
                    self._leave(Plan.RESTART, now)
            case ev.TimerFired():
                self._on_timer(now)
            case ev.BackendStarted(ok=ok, detail=detail):
                self._on_started(ok, detail, now)
            case ev.BackendReset(ok=ok, detail=detail):
                self._on_reset(ok, detail, now)
            case ev.HealthChecked(ok=ok, detail=detail):
                self._on_health(ok, detail, now)
            case ev.BackendFailed(detail=detail):
                self._on_backend_failed(detail, now)
            case ev.Connected():
                self._on_connected(now)
            case ev.ConnectFailed(why=why):
                if self.state is State.DIALING:
                    log.info("resume attempt %d: %s", self._away().attempts, why)
                    self._next_attempt(now)
                elif self.state is State.CONNECTING:
                    self._connect_failed(now)
            case ev.SocketClosed(why=why):
                # While acking, the server closing right after its shutdown is expected.
                if self.phase is Phase.LINKED and self.state is not State.ACKING:
                    log.warning("server connection lost: %s", why)
                    if not self._go_away(now):
                        self._leave(Plan.LOST, now)
            case ev.Received(msg=msg):
                if self.phase is Phase.LINKED:
                    self._on_message(msg, now)
            case ev.OfferReady() | ev.MediaConnected() | ev.MediaFailed() | ev.SessionClosed():
                self._on_session_event(event, now)

    def _on_timer(self, now: float) -> None:
        if self.state is State.WAITING:
            self._on_wake(now)
        elif self.state is State.AWAY:
            if now >= self._away().attempt_at:
                self._attempt()
        elif self.phase is Phase.LINKED:
            self._on_link_timer(now)

    def _on_health(self, ok: bool, detail: str, now: float) -> None:
        if self.state is State.CHECKING:
            self._on_checked(ok, detail, now)
        elif self.phase is Phase.LINKED and self._poll is Poll.RUNNING:
            self._poll = Poll.IDLE
            if not ok:
                self._on_backend_failed(f"health check: {detail}", now)
            elif self.state is State.AVAILABLE:
                self._recovered(now)
                self._poll_due(now)

    def _on_backend_failed(self, detail: str, now: float) -> None:
        state = self.state
        if state in (State.AWAY, State.DIALING):
            self._backend_fault = detail
            self._leave(Plan.BACKEND_FAILED, now)
        elif state.phase is Phase.LINKED:
            session = self._open_session()
            if session is not None:
                self._media_failed(session, detail, backend=True, now=now)
            elif self._backend_fault is None:
                self._backend_fault = detail
                self._leave(Plan.BACKEND_FAILED, now)
        else:
            self._game_failed(detail, now)

    def _on_connected(self, now: float) -> None:
        if self.state is State.DIALING:
            self._resume_on_new_socket(now)
        elif self.state is State.CONNECTING:
            self.state = State.REGISTERING
            self._new_link(now)
            s = self.settings
            self._emit(ev.Send(t.Register(game=s.game, addr=s.addr, port=s.port, name=s.name)))
        else:
            self._emit(ev.CloseSocket())  # the game failed meanwhile

    def _leave(self, plan: Plan, now: float) -> None:
        """End this link: close the socket now, and the session if there is one."""
        self._resume = None
        self._emit(ev.CloseSocket())
        if self.worker_id is not None:  # out of the server's pool, if it was in
            why = "drained" if self.course is Course.DRAIN else plan.value
            log_event("worker_unregistered", f"left the server ({why})", why=why)
        self.state = State.LEAVING
        self._plan = plan
        session = self._open_session()
        if session is not None:
            self._close_session(session)
            return  # _after_link once SessionClosed arrives
        self._after_link(now)

    def _after_link(self, now: float) -> None:
        fault, self._backend_fault = self._backend_fault, None
        self._link_ended(self._plan, self._session is not None, fault, now)

    # --- one link ------------------------------------------------------------

    def _open_session(self) -> SessionRecord | None:
        """The link's session unless it has closed."""
        session = self._session
        return None if session is None or session.media is Media.CLOSED else session

    def _poll_due(self, now: float) -> None:
        self._poll = Poll.DUE
        self._poll_at = now + self.settings.health_interval

    def _close_session(self, session: SessionRecord) -> None:
        if session.media is not Media.CLOSING:
            session.media = Media.CLOSING
            self._emit(ev.CloseSession(session.id))

    def _on_link_timer(self, now: float) -> None:
        if self._end_by is not None and now >= self._end_by:
            # The server notices a dead client within its heartbeat timeout
            # and sends shutdown; past that, it never will.
            log.warning("no shutdown from the server after the player vanished")
            self._leave(Plan.RESTART, now)
            return
        if self._heartbeat.silent(now):
            timeout = self._heartbeat.timeout
            if self.state is State.RESUMING:
                # A new socket that never answers the resume: another try.
                log.warning("no answer to resume for %.1f s", timeout)
                self._emit(ev.CloseSocket())
                self._next_attempt(now)
                return
            what = "registered" if self.state is State.REGISTERING else "ping"
            log.warning("server silent: no %s for %.1f s", what, timeout)
            self._leave(Plan.LOST, now)
            return
        if self._poll is Poll.DUE and now >= self._poll_at:
            self._poll = Poll.RUNNING
            self._emit(ev.CheckHealth())

    def _on_message(self, msg: t.Message, now: float) -> None:
        match msg:
            case t.Ping(ts=ts):
                self._heartbeat.heard(now)
                self._emit(ev.Send(t.Pong(ts=ts)))
            case t.Registered():
                self._on_registered(msg, now)
            case t.SessionStart():
                if self.state is not State.AVAILABLE:
                    log.warning("session_start %s ignored: not available", msg.session_id)
                    return
                sid, cid = msg.session_id, msg.client_id
                log_event(
                    "session_started",
                    f"session_start session={sid} client={cid}",
                    session_id=sid,
                    client_id=cid,
                )
                self.sessions += 1
                if self._poll is Poll.DUE:
                    self._poll = Poll.IDLE  # a session's own failures end it
                self._session = SessionRecord(msg.session_id, msg.resume_token)
                self.state = State.PLAYING
                self._emit(ev.StartSession(msg))
            case t.Resumed():
                self._on_resumed(msg, now)
            case t.Reconnect():
                self._on_reconnect(now)
            case t.Error(code="resume_failed") if self.state is State.RESUMING:
                log.warning("resume refused: %s; ending the session", msg.message)
                self.resume_failures["refused"] += 1
                self._leave(Plan.RESTART, now)
            case t.Shutdown() if self.state is State.RESUMING:
                # A node that is stopping greets a new socket this way: it is
                # not our session's end; try another node.
                log.info("resume attempt met a stopping node (%s)", msg.reason)
                self._emit(ev.CloseSocket())
                self._next_attempt(now)
            case t.Answer() | t.IceCandidate():
                session = self._session
                if session is None or not session.live or msg.session_id != session.id:
                    log.warning(
                        "%s for unknown session %s ignored", type(msg).__name__, msg.session_id
                    )
                    return
                self._emit(ev.FeedSession(msg))
            case t.Shutdown():
                log.info("shutdown reason=%s message=%r", msg.reason, msg.message)
                session = self._open_session()
                if session is None:
                    self._ack(now)
                    return
                self.state = State.ACKING
                self._close_session(session)
            case t.Error():
                log.warning("server error %s: %s", msg.code, msg.message)
            case _:
                log.warning("unexpected %s from the server ignored", type(msg).__name__)

    def _on_registered(self, msg: t.Registered, now: float) -> None:
        if self.state is not State.REGISTERING:
            log.warning("second registered ignored")
            return
        self.state = State.AVAILABLE
        self.worker_id = msg.worker_id
        self._heartbeat.timeout = msg.heartbeat_timeout
        self._heartbeat.heard(now)
        self.resume_grace = msg.resume_grace or 0.0
        self.registrations += 1
        self.server_backoff.reset()
        self._recovered(now)
        self._poll_due(now)
        game = self.settings.game
        log_event(
            "worker_registered",
            f"registered worker_id={msg.worker_id} game={game}"
            f" heartbeat_timeout={msg.heartbeat_timeout}",
            worker_id=msg.worker_id,
            game=game,
        )

    def _ack(self, now: float) -> None:
        session = self._session
        outcome = session.outcome if session is not None else None
        ok, detail = outcome or (True, "idle, no session to close")
        self._emit(ev.Send(t.ShutdownAck(ok=ok, detail=detail)))
        log.info("shutdown_ack ok=%s detail=%r", ok, detail)
        self._leave(Plan.RESTART, now)

    def _on_session_event(self, event: SessionEvent, now: float) -> None:
        session = self._open_session()
        if session is None or event.session_id != session.id:
            return  # a session already gone
        match event:
            case ev.SessionClosed(ok=ok, detail=detail):
                text = f"session {session.id} ended ok={ok}: {detail}"
                log_event("session_ended", text, session_id=session.id, ok=ok)
                session.media = Media.CLOSED
                session.outcome = ok, detail
                if self.state is State.LEAVING:
                    self._after_link(now)
                elif self.state is State.ACKING:
                    self._ack(now)
            case _ if not session.live:
                return
            case ev.OfferReady(sdp=sdp):
                self._say(t.Offer(session_id=session.id, sdp=sdp))
                # aiortc gathers every candidate before the offer, so they all
                # travel in its SDP; the null candidate says there are no more.
                self._say(t.IceCandidate(session_id=session.id, candidate=None))
            case ev.MediaConnected():
                if session.media is Media.NEGOTIATING:
                    self._say(t.WebrtcConnected(session_id=session.id))
                session.media = Media.CONNECTED
            case ev.MediaFailed(reason=reason, backend=backend, kind=kind):
                self._media_failed(session, reason, backend=backend, now=now, kind=kind)

    def _media_failed(
        self,
        session: SessionRecord,
        reason: str,
        *,
        backend: bool,
        now: float,
        kind: t.FailureKind | None = None,
    ) -> None:
        if not session.live:
            return
        log.warning("session %s: %s", session.id, reason)
        if backend:
            self._backend_fault = reason
        if self.away:
            # The media died while the socket is down: the partner's side sees
            # it die too and says so; this end gives up at once.
            self._leave(Plan.BACKEND_FAILED if backend else Plan.LOST, now)
            return
        failed = t.WebrtcFailed(session_id=session.id, reason=reason[:500], kind=kind)
        if session.media is not Media.CONNECTED:
            # Still in the handshake: the server ends it (handshake_failed) and
            # sends shutdown, acknowledged as usual.
            if session.media is Media.NEGOTIATING:
                session.media = Media.HANDSHAKE_FAILED
                self._emit(ev.Send(failed))
            return
        # After the handshake the server takes webrtc_failed as the end of the
        # session: the player hears worker_failed now, not a heartbeat later.
        self._emit(ev.Send(failed))
        if backend:
            self._leave(Plan.BACKEND_FAILED, now)
            return
        self._close_session(session)
        # The server answers with shutdown; if it never does, leave anyway.
        self.state = State.UNCONFIRMED
        self._end_by = now + self._heartbeat.timeout

    # --- resume --------------------------------------------------------------

    def _away(self) -> Resume:
        assert self._resume is not None, self.state
        return self._resume

    def _go_away(self, now: float) -> bool:
        """The socket is gone mid-session: keep the game and try to resume.
        False when this session cannot be resumed (the seed's rule applies)."""
        session = self._open_session()
        if session is None or not session.live or session.resume_token is None:
            return False
        if self.resume_grace <= 0:
            return False
        self._emit(ev.CloseSocket())
        if self.state is State.RESUMING:
            self._next_attempt(now)  # a resume socket dropped: the same grace
            return True
        log.info("resuming session %s for up to %.1f s", session.id, self.resume_grace)
        self._resume = Resume(since=now, until=now + self.resume_grace)
        if self._poll is Poll.DUE:
            self._poll = Poll.IDLE
        self._next_attempt(now)
        return True

    def _next_attempt(self, now: float) -> None:
        """Away: the next resume attempt, or the end of the grace."""
        resume = self._away()
        if now >= resume.until:
            self._grace_over(now)
            return
        self.state = State.AWAY
        if resume.schedule(now, self.settings.resume_quick, self.server_backoff.next_delay) <= now:
            self._attempt()

    def _attempt(self) -> None:
        self._away().attempts += 1
        self.state = State.DIALING  # Connected or ConnectFailed next
        self._emit(ev.Connect())

    def _resume_on_new_socket(self, now: float) -> None:
        session = self._open_session()
        assert session is not None and session.resume_token is not None
        self.state = State.RESUMING
        self._heartbeat.heard(now)
        self._emit(ev.Send(t.Resume(session_id=session.id, token=session.resume_token)))

    def _on_resumed(self, msg: t.Resumed, now: float) -> None:
        session = self._open_session()
        if self.state is not State.RESUMING or session is None or msg.session_id != session.id:
            log.warning("resumed %s ignored: no resume asked", msg.session_id)
            return
        resume = self._away()
        self.last_resume_s = now - resume.since
        log.info(
            "resumed session=%s after %.0f ms (%d attempts)",
            session.id,
            self.last_resume_s * 1000,
            resume.attempts,
        )
        session.resume_token = msg.resume_token
        self.resumes += 1
        self._resume = None
        self.state = State.PLAYING
        self.server_backoff.reset()
        for said in resume.outbox:
            self._emit(ev.Send(said))

    def _on_reconnect(self, now: float) -> None:
        """The node is stopping while others live: elsewhere, at once."""
        if self.state is State.ACKING:
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
        self._leave(Plan.LOST, now)

    def _say(self, msg: t.Message) -> None:
        """A message of the session: sent now, or once resumed."""
        if self.away:
            self._away().outbox.append(msg)
        else:
            self._emit(ev.Send(msg))
