"""The WebRTC handshake, relayed one typed step at a time inside a session.

Each step is checked against the session's phase and relayed only to the
session's other member; what is out of place is answered with an error.
"""

from __future__ import annotations

import contextlib

from playcast.protocol import (
    Answer,
    BadMessage,
    IceCandidate,
    Message,
    Offer,
    WebrtcConnected,
    WebrtcFailed,
    decode,
)
from playcast.signaling.rules import resume, sessions
from playcast.signaling.rules.bus import Connected, Relay, Up, relay
from playcast.signaling.rules.conduct import error
from playcast.signaling.rules.events import event, step
from playcast.signaling.rules.state import State, ids, role
from playcast.signaling.shared import MarkConnected
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


def deliver(state: State, session: Session, sender: Worker | Client, msg: Message) -> None:
    """Relay ``msg`` to the sender's partner, on this node or through its own;
    held for the partner if it is away (its socket dropped; it may resume)."""
    if isinstance(sender, Worker):
        if session.client_away_until:
            resume.hold(state, session, "client", msg)
            return
        node, partner_id = session.client_node, session.client_id
        partner: Worker | Client | None = sessions.local_client(state, session)
    else:
        if session.worker_away_until:
            resume.hold(state, session, "worker", msg)
            return
        node, partner_id = session.worker_node, session.worker_id
        partner = sessions.local_worker(state, session)
    if node != state.node:
        if node not in state.gone_nodes:
            state.tell(node, relay(session.id, partner_id, msg))
    elif partner is not None:
        state.send(partner, msg)


def relayed(state: State, session: Session, msg: Relay) -> None:
    """A handshake step relayed from the partner's node: the same phase
    change as on the sender's copy, then to the local member ``msg.to``, its
    frame as it came (the sender's node decoded and checked it)."""
    if msg.kind == "offer" and session.phase == "awaiting_offer":
        session.phase = "awaiting_answer"
    elif msg.kind == "answer" and session.phase == "awaiting_answer":
        session.phase = "negotiating"
    member_role = "worker" if session.worker_id == msg.to else "client"
    if resume.is_away(session, member_role):
        with contextlib.suppress(BadMessage):  # (checked by the sender's node)
            resume.hold(state, session, member_role, decode(msg.frame))
        return
    member: Worker | Client | None = (
        sessions.local_worker(state, session)
        if member_role == "worker"
        else sessions.local_client(state, session)
    )
    if member is not None and member.id == msg.to:
        state.send_encoded(member, msg.frame.encode())


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
    deliver(state, session, peer, msg)
    event(name, session=session.id, worker=session.worker_id, client=session.client_id)


def relay_candidate(state: State, peer: Worker | Client, msg: IceCandidate) -> None:
    session = session_of(state, peer, msg.session_id)
    if session is None:
        return
    if session.phase == "awaiting_offer":
        error(state, peer, "unexpected_message", "ice_candidate before the offer")
        return
    deliver(state, session, peer, msg)
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
    if not session.owner:  # the client's node decides when the handshake is over
        event(f"{role(peer)}_webrtc_connected", **ids(peer))
        if session.client_node not in state.gone_nodes:
            state.tell(session.client_node, Connected(session_id=session.id))
        return
    if not complete(state, session):  # else session_connected says it, with both sides
        event(f"{role(peer)}_webrtc_connected", **ids(peer))


def complete(state: State, session: Session) -> bool:
    """On the owner: end the handshake once both sides have connected."""
    if session.phase == "connected" or not (session.worker_connected and session.client_connected):
        return False
    now = state.clock()
    session.phase = "connected"
    state.handshaking.pop(session.id, None)
    client = sessions.local_client(state, session)
    if client is not None:
        client.connection_state = "connected"
    if session.worker_node != state.node and session.worker_node not in state.gone_nodes:
        state.tell(session.worker_node, Up(session_id=session.id))
    if state.memory is None and resume.enabled(state):
        # Only a resume on a node without a copy reads the shared phase (a
        # lone server's status reads its own sessions).
        state.request(MarkConnected(session.id))
    state.metrics.handshake_seconds.observe(now - session.started_at)
    event(
        "session_connected",
        session=session.id,
        worker=session.worker_id,
        client=session.client_id,
        handshake_ms=round((now - session.started_at) * 1000),
        candidates=f"{session.worker_candidates}/{session.client_candidates}",
    )
    return True


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
