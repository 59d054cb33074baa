"""Sessions: open one, end one with each member's reason, fail a member.

Ending is the only way out of a session: every timeout, failure, leave and
server stop comes through ``end`` (or ``fail``, which ends the failed peer's
session), so the members are always told, and the worker is never left busy.
A member on another node is told through the cluster (``bus.End``).
"""

from __future__ import annotations

from playcast.protocol import FailureKind, Shutdown, ShutdownReason
from playcast.signaling.rules.bus import End
from playcast.signaling.rules.closing import forget, shut_down
from playcast.signaling.rules.events import REASON_TEXT, event, step
from playcast.signaling.rules.state import State
from playcast.signaling.shared import EndSession, SessionEntry, Withdraw
from playcast.signaling.types import Client, Peer, Session, Worker


def open_session(state: State, entry: SessionEntry) -> Session:
    """This node's copy of a paired session; its local members become busy."""
    now = state.clock()
    session = Session(
        id=entry.id,
        worker_id=entry.worker,
        client_id=entry.client,
        game=entry.game,
        started_at=now,
        codec=entry.codec,
        worker_node=entry.worker_node,
        client_node=entry.client_node,
        owner=entry.client_node == state.node,
    )
    state.sessions[session.id] = session
    if session.owner:
        state.handshaking[session.id] = session
        state.metrics.count(state.metrics.sessions_started, entry.game)
    worker = local_worker(state, session)
    if worker is not None:
        worker.status = "busy"
        worker.client_id = entry.client
        worker.session_id = session.id
    client = local_client(state, session)
    if client is not None:
        client.worker_id = entry.worker
        client.session_id = session.id
        client.connection_state = "connecting"
        # The inactivity clock starts at join, but not while in line.
        if client.queued_at:
            client.last_input = now
            client.queued_at = 0.0
            client.position = 0
            state.waiting.pop(client.id, None)
    return session


def local_worker(state: State, session: Session) -> Worker | None:
    if session.worker_node != state.node:
        return None
    worker = state.workers.get(session.worker_id)
    return worker if worker is not None and worker.session_id in (None, session.id) else None


def local_client(state: State, session: Session) -> Client | None:
    if session.client_node != state.node:
        return None
    client = state.clients.get(session.client_id)
    return client if client is not None and client.session_id in (None, session.id) else None


def end(
    state: State,
    session: Session,
    worker_reason: ShutdownReason | None,
    client_reason: ShutdownReason | None,
    detail: FailureKind | None = None,
    *,
    origin: bool = True,
) -> None:
    """End a session; each member is shut down with its reason (and
    ``detail``, what is known of a failure). ``origin``: this node decided it
    (not a partner node's ``End``), so it logs, counts and tells."""
    state.sessions.pop(session.id, None)
    state.handshaking.pop(session.id, None)
    if state.waiting_for.pop(session.id, None) is not None:
        for member_id in (session.worker_id, session.client_id):
            away = state.away.pop(member_id, None)  # it will not be coming back
            if isinstance(away, Worker):
                state.request(Withdraw(away.id))
    if origin:
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
        state.request(EndSession(session.id, session.worker_id))
    else:
        step("session_ended_by_partner_node", session=session.id)
    _member_ends(state, session, "worker", worker_reason or "client_failed", detail, origin)
    _member_ends(state, session, "client", client_reason or "worker_failed", detail, origin)


def _member_ends(
    state: State,
    session: Session,
    role: str,
    reason: ShutdownReason,
    detail: FailureKind | None,
    origin: bool,
) -> None:
    node = session.worker_node if role == "worker" else session.client_node
    if node == state.node:
        member: Worker | Client | None = (
            state.workers.get(session.worker_id)
            if role == "worker"
            else state.clients.get(session.client_id)
        )
        if member is not None and member.session_id == session.id:
            # The session's end takes its worker out of the directory (its
            # EndSession, here or on the node that ended it, sent first).
            shut_down(state, member, reason, detail, withdrawn=True)
    elif origin and node not in state.gone_nodes:
        state.tell(node, End(session_id=session.id, reason=reason, detail=detail))


def fail(state: State, peer: Peer, reason: ShutdownReason | None = None, code: int = 0) -> None:
    """A peer has failed: drop it (telling it ``reason`` if given, closing
    with ``code`` if non-zero) and shut its partner down as failed."""
    session_id = peer.session_id if isinstance(peer, Worker | Client) else None
    session = state.sessions.get(session_id) if session_id else None
    # A worker's session ends below, and its EndSession withdraws it.
    forget(state, peer, withdrawn=session is not None)
    if reason is not None:
        state.send(peer, Shutdown(reason=reason, message=REASON_TEXT[reason]))
    if code:
        state.close(peer, code, reason or "")
    if session is not None:
        if isinstance(peer, Worker):
            end(state, session, None, "worker_failed")
        else:
            end(state, session, "client_failed", None)
