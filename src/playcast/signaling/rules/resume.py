"""Resuming a session over a new socket (``--resume-grace``).

Media flows peer to peer once WebRTC connects; the signaling socket only
carries control. So with a grace period, a member whose socket drops
mid-session is not failed at once: it is *away*. Its session waits, its
partner is told nothing it must act on, and what the partner sends meanwhile
is held (at most ``HOLD_LIMIT`` messages). The member comes back with its
token as the first message of a new socket (``resume``) and gets ``resumed``
with a fresh token, then what was held, in order. A token is bound to one
member of one session and replaced on each resume, so an old one is useless.
When the grace runs out, the session ends with today's reasons.

Tokens are 192 random bits; only their SHA-256 is kept.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import deque

from playcast.protocol import Message, Reconnect, Resume, Resumed
from playcast.signaling.rules import sessions
from playcast.signaling.rules.bus import Moved, Take, relay
from playcast.signaling.rules.conduct import error
from playcast.signaling.rules.events import CLOSE_POLICY, CLOSE_SERVICE_RESTART, event
from playcast.signaling.rules.state import State, ids, role, said_hello
from playcast.signaling.shared import Denied, LeaveLine, Reattach, Reattached, Withdraw
from playcast.signaling.types import Client, ConnectionState, Peer, Session, Worker

HOLD_LIMIT = 64
TOKEN_BYTES = 24


def enabled(state: State) -> bool:
    return state.settings.resume_grace > 0


def new_token() -> tuple[str, bytes]:
    """A fresh token and what is kept of it."""
    raw = secrets.token_urlsafe(TOKEN_BYTES)
    return raw, digest(raw)


def digest(raw: str) -> bytes:
    return hashlib.sha256(raw.encode()).digest()


def is_away(session: Session, member_role: str) -> bool:
    until = session.worker_away_until if member_role == "worker" else session.client_away_until
    return until > 0.0


def hold(state: State, session: Session, member_role: str, msg: Message) -> None:
    """Keep ``msg`` for an away member; past the bound, the session cannot be
    resumed faithfully and ends as if the member had failed."""
    held = session.held if session.held is not None else {}
    session.held = held
    queue = held.setdefault(member_role, deque())
    if len(queue) >= HOLD_LIMIT:
        event("resume_hold_full", session=session.id, member=member_role)
        _give_up(state, session, member_role)
        return
    queue.append(msg)


def step_away(state: State, peer: Peer) -> bool:
    """``peer``'s socket closed: True if it is now away (its session waits)
    rather than failed."""
    if not enabled(state) or state.stopping or not isinstance(peer, Worker | Client):
        return False
    session = state.sessions.get(peer.session_id or "")
    if session is None:
        return False
    state.unlist(peer)
    state.away[peer.id] = peer
    mark_away(state, session, role(peer))
    state.metrics.count(state.metrics.resume_events, "away")
    event(f"{role(peer)}_away", grace_s=state.settings.resume_grace, **ids(peer))
    return True


def mark_away(state: State, session: Session, member_role: str) -> None:
    until = state.clock() + state.settings.resume_grace
    if member_role == "worker":
        session.worker_away_until = until
    else:
        session.client_away_until = until
    state.waiting_for[session.id] = session


def expire(state: State, now: float) -> None:
    """End the sessions whose away member did not come back in time, and
    those whose player, away, ran out of its inactivity allowance (the
    session's own clocks keep running while a member is away)."""
    for session in list(state.waiting_for.values()):
        client = state.away.get(session.client_id)
        if (
            isinstance(client, Client)
            and now - client.last_input > state.settings.inactivity_timeout
        ):
            event("inactivity_timeout", idle_s=round(now - client.last_input, 1), **ids(client))
            sessions.end(state, session, "inactivity_timeout", "inactivity_timeout")
            continue
        for member_role in ("worker", "client"):
            until = (
                session.worker_away_until if member_role == "worker" else session.client_away_until
            )
            if until and now > until and session.id in state.sessions:
                event("resume_grace_over", session=session.id, member=member_role)
                state.metrics.count(state.metrics.resume_events, "expired")
                _give_up(state, session, member_role)
        if session.id not in state.sessions:
            state.waiting_for.pop(session.id, None)


def _give_up(state: State, session: Session, member_role: str) -> None:
    if member_role == "worker":
        sessions.end(state, session, None, "worker_failed")
    else:
        sessions.end(state, session, "client_failed", None)


def come_back(state: State, peer: Peer, msg: Resume) -> None:
    """A new socket's first message is ``resume``: put it in its member's place."""
    session = state.sessions.get(msg.session_id)
    member_role = role(peer)
    if not enabled(state):
        refuse(state, peer, "resume is off on this server")
        return
    if state.memory is None:
        # In a cluster the member may come back on any node: the shared state
        # checks the token, spends it, and moves the member here, atomically.
        raw, kept = new_token()
        op = Reattach(msg.session_id, member_role, digest(msg.token).hex(), kept.hex(), state.node)
        state.resuming[op.fresh] = (peer, raw)
        state.request(op)
        return
    if session is None:
        refuse(state, peer, "no such session waiting here")
        return
    member_id = session.worker_id if member_role == "worker" else session.client_id
    kept = session.worker_token if member_role == "worker" else session.client_token
    if not kept or not hmac.compare_digest(digest(msg.token), kept):
        refuse(state, peer, "that token does not resume this session")
        return
    old = state.away.pop(member_id, None)
    if old is None:
        old = _attached(state, member_role, member_id)
        if old is None or old.session_id != session.id:
            refuse(state, peer, "that member is not in this session")
            return
        # Still attached: a socket half-open on our side. The token holder
        # wins, and the old socket goes.
        state.unlist(old)
        state.close(old, 1000, "resumed on another socket")
    take_place(state, peer, old, session)


def _attached(state: State, member_role: str, member_id: str) -> Worker | Client | None:
    if member_role == "worker":
        return state.workers.get(member_id)
    return state.clients.get(member_id)


def take_place(
    state: State,
    peer: Peer,
    old: Peer,
    session: Session,
    fresh: tuple[str, bytes] | None = None,
) -> None:
    """``peer`` (a fresh socket) becomes the member ``old`` was."""
    # The fresh record takes the member's id, so every reference to the
    # member (the session, the partner, other nodes) stays true.
    state.unlist(peer)
    peer.id = old.id
    state.slots[peer.slot][peer.id] = peer
    if isinstance(peer, Worker) and isinstance(old, Worker):
        peer.addr, peer.port, peer.game, peer.codecs = old.addr, old.port, old.game, old.codecs
        peer.status, peer.client_id, peer.session_id = "busy", old.client_id, session.id
        peer.registered, peer.audio = True, old.audio
        state.workers[peer.id] = peer
    elif isinstance(peer, Client) and isinstance(old, Client):
        peer.joined, peer.game, peer.codecs = True, old.game, old.codecs
        peer.worker_id, peer.session_id = old.worker_id, session.id
        peer.connection_state = old.connection_state
        peer.last_input, peer.warned = state.clock(), False
        state.clients[peer.id] = peer
    welcome(state, peer, session, fresh)


def welcome(
    state: State, peer: Peer, session: Session, fresh: tuple[str, bytes] | None = None
) -> None:
    """Attached again: a fresh token, then what was held, in order."""
    member_role = role(peer)
    raw, kept = fresh or new_token()
    if member_role == "worker":
        session.worker_token, session.worker_away_until = kept, 0.0
    else:
        session.client_token, session.client_away_until = kept, 0.0
    if not session.worker_away_until and not session.client_away_until:
        state.waiting_for.pop(session.id, None)
    state.send(peer, Resumed(session_id=session.id, resume_token=raw))
    held = session.held.pop(member_role, None) if session.held else None
    for msg in held or ():
        state.send(peer, msg)
    state.metrics.count(state.metrics.resume_events, "resumed")
    event(f"{member_role}_resumed", replayed=len(held or ()), **ids(peer))


def refuse(state: State, peer: Peer, why: str) -> None:
    state.metrics.count(state.metrics.resume_events, "refused")
    event(f"{role(peer)}_resume_refused", why=repr(why), peer=peer.id)
    error(state, peer, "resume_failed", why)
    state.unlist(peer)  # a socket that never became anyone: nothing else to undo
    state.close(peer, CLOSE_POLICY, "resume failed")


# --- in a cluster ------------------------------------------------------------


def reattached(state: State, op: Reattach, outcome: Reattached | Denied | None) -> None:
    """The shared state's answer to a resume: the member is now ours."""
    pending = state.resuming.pop(op.fresh, None)
    if pending is None:
        return
    peer, raw = pending
    if not state.is_live(peer) or said_hello(peer):
        return  # gone meanwhile; the session's grace decides
    if not isinstance(outcome, Reattached):
        refuse(state, peer, "no such session, or not that member's token")
        return
    entry, here = outcome.session, state.node
    member_id = entry.worker if op.role == "worker" else entry.client
    session = state.sessions.get(entry.id)
    if session is None:
        session = Session(
            id=entry.id,
            worker_id=entry.worker,
            client_id=entry.client,
            game=entry.game,
            started_at=state.clock(),
            codec=entry.codec,
            phase="connected" if entry.phase == "connected" else "negotiating",
        )
        state.sessions[session.id] = session
    session.worker_node, session.client_node = entry.worker_node, entry.client_node
    own(state, session)
    old = state.away.pop(member_id, None) if outcome.old_node == here else None
    if old is None and outcome.old_node == here:
        old = _attached(state, op.role, member_id)
        if old is not None:
            state.unlist(old)
            state.close(old, 1000, "resumed on another socket")
    take_place(
        state,
        peer,
        old or _stand_in(peer, member_id, session),
        session,
        (raw, bytes.fromhex(op.fresh)),
    )
    partner_role = "client" if op.role == "worker" else "worker"
    partner_node = entry.client_node if op.role == "worker" else entry.worker_node
    if partner_node != here and not outcome.partner_alive:
        mark_away(state, session, partner_role)  # its node is gone: it may resume too
    if outcome.old_node != here and outcome.old_alive:
        state.tell(outcome.old_node, Take(session_id=entry.id, role=op.role, node=here))
    if partner_node not in (here, outcome.old_node) and outcome.partner_alive:
        state.tell(partner_node, Moved(session_id=entry.id, role=op.role, node=here))


def own(state: State, session: Session) -> None:
    """The client's node owns the session's deadlines."""
    session.owner = session.client_node == state.node
    if session.owner and session.phase != "connected":
        state.handshaking[session.id] = session
    else:
        state.handshaking.pop(session.id, None)


def _stand_in(peer: Peer, member_id: str, session: Session) -> Worker | Client:
    """The member as the shared state knows it (its node is gone or far)."""
    if isinstance(peer, Worker):
        return Worker(
            id=member_id, ws=peer.ws, last_ping=peer.last_ping, opened_at=peer.opened_at,
            messages=peer.messages, errors=peer.errors, game=session.game,
            session_id=session.id, client_id=session.client_id, status="busy",
        )  # fmt: skip
    state_name: ConnectionState = "connected" if session.phase == "connected" else "connecting"
    return Client(
        id=member_id, ws=peer.ws, last_ping=peer.last_ping, opened_at=peer.opened_at,
        messages=peer.messages, errors=peer.errors, game=session.game, joined=True,
        session_id=session.id, worker_id=session.worker_id, connection_state=state_name,
    )  # fmt: skip


def handed_over(state: State, session: Session, member_role: str, node: str) -> None:
    """The member moved to ``node``: what was held for it goes there, in order."""
    member_id = session.worker_id if member_role == "worker" else session.client_id
    if member_role == "worker":
        session.worker_node, session.worker_away_until = node, 0.0
    else:
        session.client_node, session.client_away_until = node, 0.0
    held = session.held.pop(member_role, None) if session.held else None
    for msg in held or ():
        state.tell(node, relay(session.id, member_id, msg))
    if not session.worker_away_until and not session.client_away_until:
        state.waiting_for.pop(session.id, None)
    own(state, session)


def take(state: State, msg: Take) -> None:
    """This node's member resumed on ``msg.node``: hand it over, let go."""
    session = state.sessions.get(msg.session_id)
    if session is None:
        return
    member_id = session.worker_id if msg.role == "worker" else session.client_id
    if state.away.pop(member_id, None) is None:
        old = _attached(state, msg.role, member_id)
        if old is not None and old.session_id == session.id:  # half-open here
            state.unlist(old)
            state.close(old, 1000, "resumed on another node")
    handed_over(state, session, msg.role, msg.node)
    partner_node = session.client_node if msg.role == "worker" else session.worker_node
    if partner_node != state.node:
        state.let_go(session)  # neither member is here any more


def moved(state: State, msg: Moved) -> None:
    session = state.sessions.get(msg.session_id)
    if session is not None:
        handed_over(state, session, msg.role, msg.node)


def send_elsewhere(state: State, chosen: list[Session]) -> None:
    """Every peer here is told ``reconnect`` and closed: idle ones register
    elsewhere; members of ``chosen`` sessions resume elsewhere, their
    sessions waiting here (holding what their partners send) until taken."""
    for session in chosen:
        for member_role, member_id, node in (
            ("worker", session.worker_id, session.worker_node),
            ("client", session.client_id, session.client_node),
        ):
            if node != state.node:
                continue
            member = _attached(state, member_role, member_id)
            if member is not None and member.session_id == session.id:
                state.unlist(member)
                state.away[member.id] = member
                mark_away(state, session, member_role)
    for peer in [*state.workers.values(), *state.clients.values(), *state.away.values()]:
        state.slots[peer.slot].pop(peer.id, None)
        state.send(peer, Reconnect())
        state.close(peer, CLOSE_SERVICE_RESTART, "reconnect")
        if not (isinstance(peer, Worker | Client) and peer.session_id in state.sessions):
            if isinstance(peer, Worker) and peer.status != "registering":
                state.request(Withdraw(peer.id))
            elif isinstance(peer, Client) and peer.queued_at:
                state.request(LeaveLine(peer.id, peer.game))
    state.workers.clear()
    state.clients.clear()
    state.waiting.clear()
    state.metrics.count(state.metrics.resume_events, "sent_elsewhere")


def send_elsewhere_only(state: State, chosen: list[Session]) -> None:
    """Cut off: the members of ``chosen`` sessions (shared with other nodes,
    which now hold them for a resume) are told ``reconnect`` and let go."""
    for session in chosen:
        for member_role, member_id in (
            ("worker", session.worker_id),
            ("client", session.client_id),
        ):
            member = _attached(state, member_role, member_id) or state.away.get(member_id)
            if member is None or member.session_id != session.id:
                continue
            state.away.pop(member.id, None)
            state.unlist(member)
            state.send(member, Reconnect())
            state.close(member, CLOSE_SERVICE_RESTART, "reconnect")
        state.let_go(session)
