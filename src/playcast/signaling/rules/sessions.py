"""A session's every transition: opened, each handshake step relayed,
connected, a member away and back, ended.

Ending is the only way out of a session: every timeout, failure, leave and
server stop comes through ``end`` (or ``fail``, which ends the failed peer's
session), so the members are always told, and the worker is never left busy.
A member on another node is told through the cluster (``bus.End``).

The handshake is relayed one typed step at a time, only to the session's
other member, and each step is checked against the session's phase. A
member whose socket dropped (``--resume-grace``) is *away*: what its partner
sends meanwhile is held for it (at most ``HOLD_LIMIT`` messages) until it
comes back (``resume.py``) or its grace runs out.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from collections import deque

from playcast.protocol import (
    Answer,
    BadMessage,
    FailureKind,
    IceCandidate,
    Message,
    Offer,
    Resumed,
    Shutdown,
    ShutdownReason,
    WebrtcConnected,
    WebrtcFailed,
    decode,
)
from playcast.signaling.rules.bus import Connected, End, Relay, Up, relay
from playcast.signaling.rules.closing import forget, shut_down
from playcast.signaling.rules.events import REASON_TEXT, Unexpected, event, step
from playcast.signaling.rules.state import Core
from playcast.signaling.shared.records import EndSession, MarkConnected, SessionEntry, Withdraw
from playcast.signaling.types import Client, Peer, Role, Session, SessionPhase, Worker, ids, role

HOLD_LIMIT = 64
TOKEN_BYTES = 24


# --- opening ---------------------------------------------------------------


def open_session(core: Core, entry: SessionEntry) -> Session:
    """This node's copy of a paired session; its local members become busy."""
    now = core.clock()
    session = Session(
        id=entry.id,
        worker_id=entry.worker,
        client_id=entry.client,
        game=entry.game,
        started_at=now,
        codec=entry.codec,
        worker_node=entry.worker_node,
        client_node=entry.client_node,
        owner=entry.client_node == core.node,
    )
    core.table.add(session)
    if session.owner:
        core.table.run_deadline(session, True)
        core.counters.sessions_started.inc(entry.game)
    worker = local_worker(core, session)
    if worker is not None:
        worker.status = "busy"
        worker.client_id = entry.client
        worker.session_id = session.id
    client = local_client(core, session)
    if client is not None:
        client.worker_id = entry.worker
        client.session_id = session.id
        client.connection_state = "connecting"
        session.client_sub = client.sub
        # The inactivity clock starts at join, but not while in line.
        if client.queued_at:
            client.last_input = now
            client.queued_at = 0.0
            client.position = 0
            core.line.leave(client.id)
    return session


def local_worker(core: Core, session: Session) -> Worker | None:
    if session.worker_node != core.node:
        return None
    worker = core.roster.workers.get(session.worker_id)
    return worker if worker is not None and worker.session_id in (None, session.id) else None


def local_client(core: Core, session: Session) -> Client | None:
    if session.client_node != core.node:
        return None
    client = core.roster.clients.get(session.client_id)
    return client if client is not None and client.session_id in (None, session.id) else None


def own(core: Core, session: Session) -> None:
    """The client's node owns the session's deadlines."""
    session.owner = session.client_node == core.node
    core.table.run_deadline(session, session.owner and session.phase != "connected")


# --- the handshake ------------------------------------------------------------


def session_of(core: Core, peer: Worker | Client, session_id: str) -> Session:
    """The peer's session if ``session_id`` names it (else ``Unexpected``)."""
    session = core.table.sessions.get(peer.session_id) if peer.session_id else None
    if session is None:
        raise Unexpected("no session in progress")
    if session.id != session_id:
        raise Unexpected(f"not your session: {session_id!r}")
    return session


def relay_sdp(
    core: Core,
    peer: Worker | Client,
    msg: Offer | Answer,
    expected: SessionPhase,
    then: SessionPhase,
) -> None:
    """The offer or the answer: valid once, in ``expected``; moves to ``then``."""
    session = session_of(core, peer, msg.session_id)
    name = "offer" if isinstance(msg, Offer) else "answer"
    if session.phase != expected:
        raise Unexpected(f"{name} not expected in phase {session.phase}")
    session.phase = then
    _deliver(core, session, peer, msg)
    event(name, session=session.id, worker=session.worker_id, client=session.client_id)


def relay_candidate(core: Core, peer: Worker | Client, msg: IceCandidate) -> None:
    session = session_of(core, peer, msg.session_id)
    if session.phase == "awaiting_offer":
        raise Unexpected("ice_candidate before the offer")
    _deliver(core, session, peer, msg)
    if isinstance(peer, Worker):
        session.worker_candidates += 1
    else:
        session.client_candidates += 1
    step(f"{role(peer)}_ice_candidate", end=msg.candidate is None, **ids(peer))


def _deliver(core: Core, session: Session, sender: Worker | Client, msg: Message) -> None:
    """Relay ``msg`` to the sender's partner, on this node or through its own;
    held for the partner if it is away (its socket dropped; it may resume)."""
    if isinstance(sender, Worker):
        if session.client_away_until:
            hold(core, session, "client", msg)
            return
        node, partner_id = session.client_node, session.client_id
        partner: Worker | Client | None = local_client(core, session)
    else:
        if session.worker_away_until:
            hold(core, session, "worker", msg)
            return
        node, partner_id = session.worker_node, session.worker_id
        partner = local_worker(core, session)
    if node != core.node:
        if not core.nodes.is_gone(node):
            core.tell(node, relay(session.id, partner_id, msg))
    elif partner is not None:
        core.send(partner, msg)


def relayed(core: Core, session: Session, msg: Relay) -> None:
    """A handshake step relayed from the partner's node: the same phase
    change as on the sender's copy, then to the local member ``msg.to``, its
    frame as it came (the sender's node decoded and checked it)."""
    if msg.kind == "offer" and session.phase == "awaiting_offer":
        session.phase = "awaiting_answer"
    elif msg.kind == "answer" and session.phase == "awaiting_answer":
        session.phase = "negotiating"
    member_role: Role = "worker" if session.worker_id == msg.to else "client"
    if is_away(session, member_role):
        with contextlib.suppress(BadMessage):  # (checked by the sender's node)
            hold(core, session, member_role, decode(msg.frame))
        return
    member: Worker | Client | None = (
        local_worker(core, session) if member_role == "worker" else local_client(core, session)
    )
    if member is not None and member.id == msg.to:
        core.send_encoded(member, msg.frame.encode())


def report_connected(core: Core, peer: Worker | Client, msg: WebrtcConnected) -> None:
    session = session_of(core, peer, msg.session_id)
    if session.phase in ("awaiting_offer", "awaiting_answer"):
        raise Unexpected("webrtc_connected before the answer")
    if isinstance(peer, Worker):
        session.worker_connected = True
    else:
        session.client_connected = True
    if not session.owner:  # the client's node decides when the handshake is over
        event(f"{role(peer)}_webrtc_connected", **ids(peer))
        if not core.nodes.is_gone(session.client_node):
            core.tell(session.client_node, Connected(session_id=session.id))
        return
    if not complete(core, session):  # else session_connected says it, with both sides
        event(f"{role(peer)}_webrtc_connected", **ids(peer))


def worker_connected(core: Core, session: Session) -> None:
    """The owner hears from the worker's node that its worker connected."""
    session.worker_connected = True
    complete(core, session)


def handshake_over(session: Session) -> None:
    """The worker's node hears from the owner that both sides connected."""
    session.phase = "connected"


def complete(core: Core, session: Session) -> bool:
    """On the owner: end the handshake once both sides have connected."""
    if session.phase == "connected" or not (session.worker_connected and session.client_connected):
        return False
    now = core.clock()
    session.phase = "connected"
    core.table.run_deadline(session, False)
    client = local_client(core, session)
    if client is not None:
        client.connection_state = "connected"
    if session.worker_node != core.node and not core.nodes.is_gone(session.worker_node):
        core.tell(session.worker_node, Up(session_id=session.id))
    if resume_enabled(core):
        # A resume reads the session's phase from the shared state.
        core.request(MarkConnected(session.id))
    core.counters.handshake_seconds.observe(now - session.started_at)
    event(
        "session_connected",
        session=session.id,
        worker=session.worker_id,
        client=session.client_id,
        handshake_ms=round((now - session.started_at) * 1000),
        candidates=f"{session.worker_candidates}/{session.client_candidates}",
    )
    return True


def report_failed(core: Core, peer: Worker | Client, msg: WebrtcFailed) -> None:
    session = session_of(core, peer, msg.session_id)
    kind = msg.kind or "unknown"
    core.counters.webrtc_failures.inc(role(peer), kind)
    event(f"{role(peer)}_webrtc_failed", kind=kind, detail=repr(msg.reason), **ids(peer))
    if session.phase != "connected":
        end(core, session, "handshake_failed", "handshake_failed", msg.kind)
    else:
        # The media path died after the handshake: each side is told its
        # partner is gone, the same as if the partner had disconnected.
        end(core, session, "client_failed", "worker_failed")


# --- away and back (--resume-grace) -------------------------------------------


def resume_enabled(core: Core) -> bool:
    return core.settings.resume_grace > 0


def new_token() -> tuple[str, bytes]:
    """A fresh resume token (192 random bits) and what is kept of it (its SHA-256)."""
    raw = secrets.token_urlsafe(TOKEN_BYTES)
    return raw, digest(raw)


def digest(raw: str) -> bytes:
    return hashlib.sha256(raw.encode()).digest()


def is_away(session: Session, member_role: Role) -> bool:
    until = session.worker_away_until if member_role == "worker" else session.client_away_until
    return until > 0.0


def hold(core: Core, session: Session, member_role: Role, msg: Message) -> None:
    """Keep ``msg`` for an away member; past the bound, the session cannot be
    resumed faithfully and ends as if the member had failed."""
    held = session.held if session.held is not None else {}
    session.held = held
    queue = held.setdefault(member_role, deque())
    if len(queue) >= HOLD_LIMIT:
        event("resume_hold_full", session=session.id, member=member_role)
        give_up(core, session, member_role)
        return
    queue.append(msg)


def mark_away(core: Core, session: Session, member_role: Role) -> None:
    """The member's socket (or node) is gone: the session waits for it."""
    until = core.clock() + core.settings.resume_grace
    if member_role == "worker":
        session.worker_away_until = until
    else:
        session.client_away_until = until
    core.table.wait(session, True)


def attached(core: Core, session: Session, member_role: Role, token: bytes) -> list[Message]:
    """The member is back on this node with a new token: what was held for
    it, in order."""
    if member_role == "worker":
        session.worker_token, session.worker_away_until = token, 0.0
    else:
        session.client_token, session.client_away_until = token, 0.0
    if not session.worker_away_until and not session.client_away_until:
        core.table.wait(session, False)
    held = session.held.pop(member_role, None) if session.held else None
    return list(held or ())


def welcome(core: Core, peer: Worker | Client, session: Session, raw: str, kept: bytes) -> None:
    """Attached again: a fresh token, then what was held, in order."""
    member_role = role(peer)
    held = attached(core, session, member_role, kept)
    core.send(peer, Resumed(session_id=session.id, resume_token=raw))
    for msg in held:
        core.send(peer, msg)
    core.counters.resume_events.inc("resumed")
    event(f"{member_role}_resumed", replayed=len(held), **ids(peer))


def handed_over(core: Core, session: Session, member_role: Role, node: str) -> None:
    """The member moved to ``node``: what was held for it goes there, in order."""
    member_id = session.worker_id if member_role == "worker" else session.client_id
    if member_role == "worker":
        session.worker_node, session.worker_away_until = node, 0.0
    else:
        session.client_node, session.client_away_until = node, 0.0
    held = session.held.pop(member_role, None) if session.held else None
    for msg in held or ():
        core.tell(node, relay(session.id, member_id, msg))
    if not session.worker_away_until and not session.client_away_until:
        core.table.wait(session, False)
    own(core, session)


def let_go(core: Core, session: Session) -> None:
    """This node's copy of a session is done here, without ending it (its
    members are elsewhere now)."""
    core.table.drop(session.id)


def give_up(core: Core, session: Session, member_role: Role) -> None:
    """The away member will not be back: the session ends as if it failed."""
    if member_role == "worker":
        end(core, session, None, "worker_failed")
    else:
        end(core, session, "client_failed", None)


# --- ending ------------------------------------------------------------------------


def end(
    core: Core,
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
    if core.table.drop(session.id):
        for member_id in (session.worker_id, session.client_id):
            away = core.table.come_back(member_id)  # it will not be coming back
            if isinstance(away, Worker):
                core.request(Withdraw(away.id))
    if origin:
        reason = client_reason or worker_reason or "client_failed"
        core.counters.sessions_ended.inc(reason)
        event(
            "session_ended",
            session=session.id,
            worker=session.worker_id,
            client=session.client_id,
            worker_reason=worker_reason,
            client_reason=client_reason,
            sub=session.client_sub or None,
            candidates=f"{session.worker_candidates}/{session.client_candidates}",
        )
        core.request(EndSession(session.id, session.worker_id, session.client_node))
    else:
        step("session_ended_by_partner_node", session=session.id)
    _member_ends(core, session, "worker", worker_reason or "client_failed", detail, origin)
    _member_ends(core, session, "client", client_reason or "worker_failed", detail, origin)


def _member_ends(
    core: Core,
    session: Session,
    member_role: Role,
    reason: ShutdownReason,
    detail: FailureKind | None,
    origin: bool,
) -> None:
    node = session.worker_node if member_role == "worker" else session.client_node
    if node == core.node:
        member: Worker | Client | None = (
            core.roster.workers.get(session.worker_id)
            if member_role == "worker"
            else core.roster.clients.get(session.client_id)
        )
        if member is not None and member.session_id == session.id:
            # The session's end takes its worker out of the directory (its
            # EndSession, here or on the node that ended it, sent first).
            shut_down(core, member, reason, detail, withdrawn=True)
    elif origin and not core.nodes.is_gone(node):
        core.tell(node, End(session_id=session.id, reason=reason, detail=detail))


def fail(core: Core, peer: Peer, reason: ShutdownReason | None = None, code: int = 0) -> None:
    """A peer has failed: drop it (telling it ``reason`` if given, closing
    with ``code`` if non-zero) and shut its partner down as failed."""
    session_id = peer.session_id if isinstance(peer, Worker | Client) else None
    session = core.table.sessions.get(session_id) if session_id else None
    # A worker's session ends below, and its EndSession withdraws it.
    forget(core, peer, withdrawn=session is not None)
    if reason is not None:
        core.send(peer, Shutdown(reason=reason, message=REASON_TEXT[reason]))
    if code:
        core.close(peer, code, reason or "")
    if session is not None:
        if isinstance(peer, Worker):
            end(core, session, None, "worker_failed")
        else:
            end(core, session, "client_failed", None)
