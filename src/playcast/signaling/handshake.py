"""The WebRTC handshake, relayed one typed step at a time inside a session.

Each step is checked against the session's phase and relayed only to the
session's other member; what is out of place is answered with an error.
"""

from __future__ import annotations

from playcast.protocol import Answer, IceCandidate, Offer, WebrtcConnected, WebrtcFailed
from playcast.signaling import sessions
from playcast.signaling.events import event, step
from playcast.signaling.peers import error
from playcast.signaling.state import State, ids, role
from playcast.signaling.types import Client, Session, SessionPhase, Worker


def session_of(state: State, peer: Worker | Client, session_id: str) -> Session | None:
    """The peer's session if ``session_id`` names it; else answers the error."""
    session = state.sessions.get(peer.session_id) if peer.session_id else None
    if session is None:
        error(state, peer, "unexpected_message", "no session in progress")
        return None
    if session.id != session_id:
        error(state, peer, "unexpected_message", f"not your session: {session_id!r}")
        return None
    return session


def partner(state: State, session: Session, peer: Worker | Client) -> Worker | Client | None:
    if isinstance(peer, Worker):
        return state.clients.get(session.client_id)
    return state.workers.get(session.worker_id)


def relay_sdp(
    state: State,
    peer: Worker | Client,
    msg: Offer | Answer,
    expected: SessionPhase,
    then: SessionPhase,
) -> None:
    """The offer or the answer: valid once, in ``expected``; moves to ``then``."""
    session = session_of(state, peer, msg.session_id)
    if session is None:
        return
    name = "offer" if isinstance(msg, Offer) else "answer"
    if session.phase != expected:
        error(state, peer, "unexpected_message", f"{name} not expected in phase {session.phase}")
        return
    session.phase = then
    other = partner(state, session, peer)
    if other is not None:
        state.send(other, msg)
    event(name, session=session.id, worker=session.worker_id, client=session.client_id)


def relay_candidate(state: State, peer: Worker | Client, msg: IceCandidate) -> None:
    session = session_of(state, peer, msg.session_id)
    if session is None:
        return
    if session.phase == "awaiting_offer":
        error(state, peer, "unexpected_message", "ice_candidate before the offer")
        return
    other = partner(state, session, peer)
    if other is not None:
        state.send(other, msg)
    if isinstance(peer, Worker):
        session.worker_candidates += 1
    else:
        session.client_candidates += 1
    step(f"{role(peer)}_ice_candidate", end=msg.candidate is None, **ids(peer))


def report_connected(state: State, peer: Worker | Client, msg: WebrtcConnected) -> None:
    session = session_of(state, peer, msg.session_id)
    if session is None:
        return
    if session.phase in ("awaiting_offer", "awaiting_answer"):
        error(state, peer, "unexpected_message", "webrtc_connected before the answer")
        return
    if isinstance(peer, Worker):
        session.worker_connected = True
    else:
        session.client_connected = True
    completes = (
        session.phase != "connected" and session.worker_connected and session.client_connected
    )
    if not completes:  # else session_connected below says it, with both sides
        event(f"{role(peer)}_webrtc_connected", **ids(peer))
        return
    now = state.clock()
    session.phase = "connected"
    state.handshaking.pop(session.id, None)
    client = state.clients.get(session.client_id)
    if client is not None:
        client.connection_state = "connected"
    state.metrics.handshake_seconds.observe(now - session.started_at)
    event(
        "session_connected",
        session=session.id,
        worker=session.worker_id,
        client=session.client_id,
        handshake_ms=round((now - session.started_at) * 1000),
        candidates=f"{session.worker_candidates}/{session.client_candidates}",
    )


def report_failed(state: State, peer: Worker | Client, msg: WebrtcFailed) -> None:
    session = session_of(state, peer, msg.session_id)
    if session is None:
        return
    kind = msg.kind or "unknown"
    state.metrics.count(state.metrics.webrtc_failures, role(peer), kind)
    event(f"{role(peer)}_webrtc_failed", kind=kind, detail=repr(msg.reason), **ids(peer))
    if session.phase != "connected":
        sessions.end(state, session, "handshake_failed", "handshake_failed", msg.kind)
    else:
        # The media path died after the handshake: each side is told its
        # partner is gone, the same as if the partner had disconnected.
        sessions.end(state, session, "client_failed", "worker_failed")
