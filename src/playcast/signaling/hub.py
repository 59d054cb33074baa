"""The protocol core: every rule of PROTOCOL.md, with no I/O.

The hub owns the worker, client and session records. The socket layer feeds
it frames and closes (``on_message``, ``on_close``) and calls ``tick`` on a
timer; the hub answers through each record's ``Connection``, whose calls
never block. Time comes from an injected clock, so every timeout rule runs
under a fake clock in the unit tests. Role-specific rules live in
``workers.py`` and ``clients.py``; what both roles share lives here.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from prometheus_client import Counter

from playcast.protocol import (
    Answer,
    BadMessage,
    Error,
    ErrorCode,
    IceCandidate,
    InactivityWarning,
    Input,
    Offer,
    Ping,
    Pong,
    Shutdown,
    ShutdownAck,
    ShutdownReason,
    WebrtcConnected,
    WebrtcFailed,
    decode,
    message_type,
)
from playcast.signaling import clients, workers
from playcast.signaling.events import CLOSE_NORMAL, CLOSE_POLICY, REASON_TEXT, event, step
from playcast.signaling.metrics import Metrics
from playcast.signaling.settings import Settings
from playcast.signaling.types import (
    Client,
    Connection,
    Peer,
    RateLimit,
    Session,
    SessionPhase,
    Worker,
)

# Heartbeat work is spread over this many ticks per interval: each tick pings
# and checks one slot, so pings never go out in one burst.
SLOTS = 10

P = TypeVar("P", bound=Peer)


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


class Hub:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
        id_factory: Callable[[str], str] = new_id,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.wall_clock = wall_clock  # only for credentials that expire at a real time
        self.metrics = metrics or Metrics()
        self.metrics.attach(self)
        self.new_id = id_factory
        self.workers: dict[str, Worker] = {}
        self.clients: dict[str, Client] = {}
        self.sessions: dict[str, Session] = {}
        # game -> available worker ids in the order they became available;
        # dicts keep insertion order, so the longest-waiting one is first: O(1).
        self.available: dict[str, dict[str, None]] = {}
        # Peers told to shut down and not yet closed, by id.
        self.closing: dict[str, Peer] = {}
        self._handshaking: dict[str, Session] = {}
        self._slots: list[dict[str, Peer]] = [{} for _ in range(SLOTS)]
        self._cursor = 0
        self.stopping = False
        # Called once every peer told server_shutdown has acked or been closed.
        self.on_drained: Callable[[], None] | None = None

    # --- connections -----------------------------------------------------

    def open_worker(self, ws: Connection) -> Worker:
        worker = self._open(Worker, "w", ws)
        self.workers[worker.id] = worker
        return worker

    def open_client(self, ws: Connection) -> Client:
        client = self._open(Client, "c", ws)
        self.clients[client.id] = client
        return client

    def _open(self, kind: type[P], prefix: str, ws: Connection) -> P:
        now, s = self.clock(), self.settings
        peer = kind(
            id=self.new_id(prefix),
            ws=ws,
            last_ping=now,
            opened_at=now,
            messages=RateLimit(s.max_message_rate, s.max_message_burst, now=now),
            errors=RateLimit(s.max_error_rate, s.max_error_burst, now=now),
            slot=self._cursor,  # the next slot to run: first ping within a tick
        )
        self._slots[peer.slot][peer.id] = peer
        # At debug: the registered/assigned/rejected line that follows says it all.
        step(f"{_role(peer)}_connected", **{_role(peer): peer.id}, remote=_fmt_remote(ws))
        return peer

    def on_close(self, peer: Peer, code: int | None = None) -> None:
        """The socket is gone (closed by the peer, or by us); ``code`` for the log."""
        if self._release(peer):
            return
        if not self._is_live(peer):
            return
        event(f"{_role(peer)}_disconnected", code=code, **_ids(peer))
        self._lose(peer)

    # --- inbound ---------------------------------------------------------

    def on_message(self, peer: Peer, frame: str | bytes) -> None:
        if not self._is_live(peer) and peer.id not in self.closing:
            return  # already dropped; frames still in flight before the close
        now = self.clock()
        if not peer.messages.take(now):
            self._flooded(peer, "message rate")
            return
        if isinstance(frame, bytes):
            self.error(peer, "bad_message", "binary frames are not accepted; send JSON text")
            return
        try:
            msg = decode(frame)
        except BadMessage as exc:
            self.error(peer, "bad_message", str(exc))
            return
        peer.last_ping = now
        if isinstance(msg, Pong):
            if 0.0 <= now - msg.ts < 3600.0:
                self.metrics.heartbeat_rtt_seconds.observe(now - msg.ts)
            return
        if peer.id in self.closing:
            if isinstance(msg, ShutdownAck):
                self._acked(peer, msg)
            elif not (isinstance(msg, Input) and isinstance(peer, Client) and peer.joined):
                # Input is accepted in every state after join, even now: the
                # player may still be tapping while its session winds down.
                self.error(peer, "unexpected_message", f"'{message_type(msg)}' after shutdown")
            return
        if isinstance(peer, Worker):
            workers.handle(self, peer, msg)
        elif isinstance(peer, Client):
            clients.handle(self, peer, msg)

    def error(self, peer: Peer, code: ErrorCode, message: str) -> None:
        """Answer a message we cannot accept; a peer that keeps erring is a flood."""
        self.metrics.count(self.metrics.bad_messages, code)
        if not peer.errors.take(self.clock()):
            self._flooded(peer, "error rate")
            return
        peer.ws.send(Error(code=code, message=message))

    # --- the handshake, shared by both roles -------------------------------

    def session_of(self, peer: Worker | Client, session_id: str) -> Session | None:
        """The peer's session if ``session_id`` names it; else answers the error."""
        session = self.sessions.get(peer.session_id) if peer.session_id else None
        if session is None:
            self.error(peer, "unexpected_message", "no session in progress")
            return None
        if session.id != session_id:
            self.error(peer, "unexpected_message", f"not your session: {session_id!r}")
            return None
        return session

    def partner(self, session: Session, peer: Worker | Client) -> Worker | Client | None:
        if isinstance(peer, Worker):
            return self.clients.get(session.client_id)
        return self.workers.get(session.worker_id)

    def relay_sdp(
        self,
        peer: Worker | Client,
        msg: Offer | Answer,
        expected: SessionPhase,
        then: SessionPhase,
    ) -> None:
        """The offer or the answer: valid once, in ``expected``; moves to ``then``."""
        session = self.session_of(peer, msg.session_id)
        if session is None:
            return
        name = "offer" if isinstance(msg, Offer) else "answer"
        if session.phase != expected:
            self.error(peer, "unexpected_message", f"{name} not expected in phase {session.phase}")
            return
        session.phase = then
        other = self.partner(session, peer)
        if other is not None:
            other.ws.send(msg)
        event(name, session=session.id, worker=session.worker_id, client=session.client_id)

    def relay_candidate(self, peer: Worker | Client, msg: IceCandidate) -> None:
        session = self.session_of(peer, msg.session_id)
        if session is None:
            return
        if session.phase == "awaiting_offer":
            self.error(peer, "unexpected_message", "ice_candidate before the offer")
            return
        other = self.partner(session, peer)
        if other is not None:
            other.ws.send(msg)
        if isinstance(peer, Worker):
            session.worker_candidates += 1
        else:
            session.client_candidates += 1
        step(f"{_role(peer)}_ice_candidate", end=msg.candidate is None, **_ids(peer))

    def report_connected(self, peer: Worker | Client, msg: WebrtcConnected) -> None:
        session = self.session_of(peer, msg.session_id)
        if session is None:
            return
        if session.phase in ("awaiting_offer", "awaiting_answer"):
            self.error(peer, "unexpected_message", "webrtc_connected before the answer")
            return
        if isinstance(peer, Worker):
            session.worker_connected = True
        else:
            session.client_connected = True
        completes = (
            session.phase != "connected" and session.worker_connected and session.client_connected
        )
        if not completes:  # else session_connected below says it, with both sides
            event(f"{_role(peer)}_webrtc_connected", **_ids(peer))
        if completes:
            now = self.clock()
            session.phase = "connected"
            self._handshaking.pop(session.id, None)
            client = self.clients.get(session.client_id)
            if client is not None:
                client.connection_state = "connected"
            self.metrics.handshake_seconds.observe(now - session.started_at)
            event(
                "session_connected",
                session=session.id,
                worker=session.worker_id,
                client=session.client_id,
                handshake_ms=round((now - session.started_at) * 1000),
                candidates=f"{session.worker_candidates}/{session.client_candidates}",
            )

    def report_failed(self, peer: Worker | Client, msg: WebrtcFailed) -> None:
        session = self.session_of(peer, msg.session_id)
        if session is None:
            return
        event(f"{_role(peer)}_webrtc_failed", detail=repr(msg.reason), **_ids(peer))
        if session.phase != "connected":
            self.end_session(session, "handshake_failed", "handshake_failed")
        else:
            # The media path died after the handshake: each side is told its
            # partner is gone, the same as if the partner had disconnected.
            self.end_session(session, "client_failed", "worker_failed")

    # --- sessions and shutdowns ------------------------------------------

    def start_session(self, worker: Worker, client: Client) -> Session:
        now = self.clock()
        session = Session(
            id=self.new_id("s"),
            worker_id=worker.id,
            client_id=client.id,
            game=client.game,
            started_at=now,
        )
        self.sessions[session.id] = session
        self._handshaking[session.id] = session
        worker.status = "busy"
        worker.client_id = client.id
        worker.session_id = session.id
        client.worker_id = worker.id
        client.session_id = session.id
        client.connection_state = "connecting"
        self.metrics.count(self.metrics.sessions_started, client.game)
        return session

    def end_session(
        self,
        session: Session,
        worker_reason: ShutdownReason | None,
        client_reason: ShutdownReason | None,
    ) -> None:
        """End a session; each member still here is shut down with its reason."""
        self.sessions.pop(session.id, None)
        self._handshaking.pop(session.id, None)
        reason = client_reason or worker_reason or "client_failed"
        self.metrics.count(self.metrics.sessions_ended, reason)
        event(
            "session_ended",
            session=session.id,
            worker=session.worker_id,
            client=session.client_id,
            worker_reason=worker_reason,
            client_reason=client_reason,
            candidates=f"{session.worker_candidates}/{session.client_candidates}",
        )
        worker = self.workers.get(session.worker_id)
        if worker is not None and worker.session_id == session.id:
            self.shut_down(worker, worker_reason or "client_failed")
        client = self.clients.get(session.client_id)
        if client is not None and client.session_id == session.id:
            self.shut_down(client, client_reason or "worker_failed")

    def shut_down(self, peer: Peer, reason: ShutdownReason) -> None:
        """Ask a peer to shut down; its socket closes on ack or at the deadline."""
        self.forget(peer)
        peer.closing_deadline = self.clock() + self.settings.shutdown_ack_timeout
        peer.shutdown_reason = reason
        self.closing[peer.id] = peer
        peer.ws.send(Shutdown(reason=reason, message=REASON_TEXT[reason]))
        event(f"{_role(peer)}_shutdown", reason=reason, **_ids(peer))

    def shutdown_all(self) -> None:
        """Server stop: everyone, idle or not, is shut down with server_shutdown."""
        self.stopping = True
        event("server_stopping", workers=len(self.workers), clients=len(self.clients))
        for session in list(self.sessions.values()):
            self.end_session(session, "server_shutdown", "server_shutdown")
        for peer in [*self.workers.values(), *self.clients.values()]:
            self.shut_down(peer, "server_shutdown")
        if not self.closing and self.on_drained is not None:
            self.on_drained()

    def _release(self, peer: Peer) -> bool:
        """Done waiting for ``peer``'s ack; True if it was being waited for."""
        if self.closing.pop(peer.id, None) is None:
            return False
        if self.stopping and not self.closing and self.on_drained is not None:
            self.on_drained()
        return True

    def _acked(self, peer: Peer, ack: ShutdownAck) -> None:
        self._release(peer)
        self.metrics.count(self.metrics.shutdown_acks, "ok" if ack.ok else "not_ok")
        event(
            f"{_role(peer)}_shutdown_ack",
            reason=peer.shutdown_reason,
            ok=ack.ok,
            detail=repr(ack.detail),
            **_ids(peer),
        )
        peer.ws.close(CLOSE_NORMAL, "shutdown acknowledged")

    def _lose(self, peer: Peer, reason: ShutdownReason | None = None, code: int = 0) -> None:
        """A peer has failed: drop it (telling it ``reason`` if given, closing
        with ``code`` if non-zero) and shut its partner down as failed."""
        session_id = peer.session_id if isinstance(peer, Worker | Client) else None
        self.forget(peer)
        if reason is not None:
            peer.ws.send(Shutdown(reason=reason, message=REASON_TEXT[reason]))
        if code:
            peer.ws.close(code, reason or "")
        session = self.sessions.get(session_id) if session_id else None
        if session is not None:
            if isinstance(peer, Worker):
                self.end_session(session, None, "worker_failed")
            else:
                self.end_session(session, "client_failed", None)

    def _flooded(self, peer: Peer, what: str) -> None:
        self._close_abusive(peer, self.metrics.rate_limit_closes, "flood_closed", limit=what)

    def slow_consumer(self, peer: Peer) -> None:
        """Called by the socket layer when a peer's unsent data passes the limit."""
        self._close_abusive(peer, self.metrics.slow_closes, "slow_closed")

    def _close_abusive(self, peer: Peer, counter: Counter, name: str, **fields: Any) -> None:
        """Close with 1008 and fail its partner, whatever state the peer was in."""
        if not self._is_live(peer) and peer.id not in self.closing:
            return
        self.metrics.count(counter, _role(peer))
        event(f"{_role(peer)}_{name}", **fields, **_ids(peer))
        self._release(peer)
        self._lose(peer, code=CLOSE_POLICY)

    def forget(self, peer: Peer) -> None:
        self._slots[peer.slot].pop(peer.id, None)
        if isinstance(peer, Worker):
            if self.workers.pop(peer.id, None) is not None:
                self.available.get(peer.game, {}).pop(peer.id, None)
        elif isinstance(peer, Client):
            self.clients.pop(peer.id, None)

    def _is_live(self, peer: Peer) -> bool:
        if isinstance(peer, Worker):
            return self.workers.get(peer.id) is peer
        return self.clients.get(peer.id) is peer

    # --- timers ----------------------------------------------------------

    @property
    def tick_interval(self) -> float:
        return self.settings.heartbeat_interval / SLOTS

    def tick(self) -> None:
        """Run every ``tick_interval``: one slot's pings and checks, and deadlines."""
        now = self.clock()
        s = self.settings
        slot = self._slots[self._cursor]
        self._cursor = (self._cursor + 1) % SLOTS
        ping = Ping(ts=now)
        for peer in list(slot.values()):
            if now - peer.last_ping > s.heartbeat_timeout:
                self.metrics.count(self.metrics.heartbeat_timeouts, _role(peer))
                event(f"{_role(peer)}_heartbeat_timeout", **_ids(peer))
                self._lose(peer, "heartbeat_timeout", CLOSE_NORMAL)
                continue
            if (
                isinstance(peer, Client)
                and peer.session_id is not None
                and self._check_inactivity(peer, now)
            ):
                continue
            peer.ws.send(ping)
        for session in list(self._handshaking.values()):
            if now - session.started_at > s.handshake_timeout:
                event("handshake_timeout", session=session.id)
                self.end_session(session, "handshake_timeout", "handshake_timeout")
        for peer in list(self.closing.values()):
            if peer.closing_deadline is not None and now >= peer.closing_deadline:
                self._release(peer)
                self.metrics.count(self.metrics.shutdown_acks, "missing")
                event(f"{_role(peer)}_shutdown_no_ack", reason=peer.shutdown_reason, **_ids(peer))
                peer.ws.close(CLOSE_NORMAL, "no shutdown_ack")

    def _check_inactivity(self, client: Client, now: float) -> bool:
        """True when the client's session was ended for inactivity."""
        s = self.settings
        idle = now - client.last_input
        if idle > s.inactivity_timeout:
            session = self.sessions.get(client.session_id or "")
            event("inactivity_timeout", idle_s=round(idle, 1), **_ids(client))
            if session is not None:
                self.end_session(session, "inactivity_timeout", "inactivity_timeout")
            return True
        left = s.inactivity_timeout - idle
        if s.inactivity_warning > 0 and left < s.inactivity_warning and not client.warned:
            client.warned = True
            client.ws.send(InactivityWarning(seconds_left=round(left, 3)))
            event("inactivity_warning", seconds_left=round(left, 1), **_ids(client))
        return False

    # --- observation -----------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The /api/status document."""
        now = self.clock()
        return {
            "workers": [
                {
                    "id": w.id,
                    "addr": w.addr,
                    "port": w.port,
                    "status": w.status,
                    "client_id": w.client_id,
                    "game": w.game,
                    "session_id": w.session_id,
                    "last_ping_age": round(now - w.last_ping, 3),
                    "connected_for": round(now - w.opened_at, 3),
                }
                for w in self.workers.values()
            ],
            "clients": [
                {
                    "id": c.id,
                    "worker_id": c.worker_id,
                    "game": c.game,
                    "connection_state": c.connection_state,
                    "session_id": c.session_id,
                    "last_ping_age": round(now - c.last_ping, 3),
                    "idle_for": round(now - (c.last_input if c.joined else c.opened_at), 3),
                }
                for c in self.clients.values()
            ],
            "sessions": [
                {
                    "id": s.id,
                    "worker_id": s.worker_id,
                    "client_id": s.client_id,
                    "game": s.game,
                    "phase": s.phase,
                    "age": round(now - s.started_at, 3),
                }
                for s in self.sessions.values()
            ],
            "closing": len(self.closing),
            "stopping": self.stopping,
        }

    def check_invariants(self) -> Iterator[str]:
        """Every broken invariant, in words (the tests assert there are none)."""
        for w in self.workers.values():
            in_queue = w.id in self.available.get(w.game, {})
            if w.status == "busy":
                s = self.sessions.get(w.session_id or "")
                if s is None or s.worker_id != w.id or w.client_id not in self.clients:
                    yield f"worker {w.id} busy without a live client/session"
                if in_queue:
                    yield f"busy worker {w.id} is in the available queue"
            elif w.status == "available":
                if w.client_id or w.session_id:
                    yield f"available worker {w.id} points at a client/session"
                if not in_queue:
                    yield f"available worker {w.id} is not in the queue"
        for c in self.clients.values():
            if c.worker_id is not None:
                partner = self.workers.get(c.worker_id)
                if partner is None or partner.client_id != c.id:
                    yield f"client {c.id} points at gone worker {c.worker_id}"
        for s in self.sessions.values():
            if s.worker_id not in self.workers or s.client_id not in self.clients:
                yield f"session {s.id} has a member that is gone"
        for game, ids in self.available.items():
            for wid in ids:
                queued = self.workers.get(wid)
                if queued is None or queued.status != "available" or queued.game != game:
                    yield f"queue for {game} holds {wid}, which is not available"
        for pid in self.closing:
            if pid in self.workers or pid in self.clients:
                yield f"closing peer {pid} is still in a live set"


def _role(peer: Peer) -> str:
    return "worker" if isinstance(peer, Worker) else "client"


def _ids(peer: Peer) -> dict[str, str | None]:
    if isinstance(peer, Worker):
        return {"worker": peer.id, "client": peer.client_id, "session": peer.session_id}
    if isinstance(peer, Client):
        return {"client": peer.id, "worker": peer.worker_id, "session": peer.session_id}
    return {"peer": peer.id}


def _fmt_remote(ws: Connection) -> str:
    host, port = ws.remote
    return f"{host}:{port}"
