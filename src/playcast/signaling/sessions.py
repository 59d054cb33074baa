"""Sessions: start one, end one with each member's reason, fail a member.

Ending is the only way out of a session: every timeout, failure, leave and
server stop comes through ``end`` (or ``fail``, which ends the failed peer's
session), so the members are always told, and the worker is never left busy.
"""

from __future__ import annotations

from playcast.protocol import FailureKind, Shutdown, ShutdownReason
from playcast.signaling.closing import forget, shut_down
from playcast.signaling.events import REASON_TEXT, event
from playcast.signaling.state import State
from playcast.signaling.types import Client, Peer, Session, Worker


def start(state: State, worker: Worker, client: Client) -> Session:
    now = state.clock()
    session = Session(
        id=state.new_id("s"),
        worker_id=worker.id,
        client_id=client.id,
        game=client.game,
        started_at=now,
    )
    state.sessions[session.id] = session
    state.handshaking[session.id] = session
    worker.status = "busy"
    worker.client_id = client.id
    worker.session_id = session.id
    client.worker_id = worker.id
    client.session_id = session.id
    client.connection_state = "connecting"
    state.metrics.count(state.metrics.sessions_started, client.game)
    return session


def end(
    state: State,
    session: Session,
    worker_reason: ShutdownReason | None,
    client_reason: ShutdownReason | None,
    detail: FailureKind | None = None,
) -> None:
    """End a session; each member still here is shut down with its reason
    (and ``detail``, what is known of a failure)."""
    state.sessions.pop(session.id, None)
    state.handshaking.pop(session.id, None)
    reason = client_reason or worker_reason or "client_failed"
    state.metrics.count(state.metrics.sessions_ended, reason)
    event(
        "session_ended",
        session=session.id,
        worker=session.worker_id,
        client=session.client_id,
        worker_reason=worker_reason,
        client_reason=client_reason,
        candidates=f"{session.worker_candidates}/{session.client_candidates}",
    )
    worker = state.workers.get(session.worker_id)
    if worker is not None and worker.session_id == session.id:
        shut_down(state, worker, worker_reason or "client_failed", detail)
    client = state.clients.get(session.client_id)
    if client is not None and client.session_id == session.id:
        shut_down(state, client, client_reason or "worker_failed", detail)


def fail(state: State, peer: Peer, reason: ShutdownReason | None = None, code: int = 0) -> None:
    """A peer has failed: drop it (telling it ``reason`` if given, closing
    with ``code`` if non-zero) and shut its partner down as failed."""
    session_id = peer.session_id if isinstance(peer, Worker | Client) else None
    forget(state, peer)
    if reason is not None:
        state.send(peer, Shutdown(reason=reason, message=REASON_TEXT[reason]))
    if code:
        state.close(peer, code, reason or "")
    session = state.sessions.get(session_id) if session_id else None
    if session is not None:
        if isinstance(peer, Worker):
            end(state, session, None, "worker_failed")
        else:
            end(state, session, "client_failed", None)
