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

from playcast.protocol import Message, Resume, Resumed
from playcast.signaling import sessions
from playcast.signaling.events import CLOSE_POLICY, event
from playcast.signaling.peers import error
from playcast.signaling.state import State, ids, role
from playcast.signaling.types import Client, Peer, Session, Worker

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
    state.slots[peer.slot].pop(peer.id, None)
    if isinstance(peer, Worker):
        state.workers.pop(peer.id, None)
    else:
        state.clients.pop(peer.id, None)
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
    if not enabled(state) or session is None:
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
        state.slots[old.slot].pop(old.id, None)
        state.close(old, 1000, "resumed on another socket")
    take_place(state, peer, old, session)


def _attached(state: State, member_role: str, member_id: str) -> Worker | Client | None:
    if member_role == "worker":
        return state.workers.get(member_id)
    return state.clients.get(member_id)


def take_place(state: State, peer: Peer, old: Peer, session: Session) -> None:
    """``peer`` (a fresh socket) becomes the member ``old`` was."""
    # The fresh record takes the member's id, so every reference to the
    # member (the session, the partner, other nodes) stays true.
    state.slots[peer.slot].pop(peer.id, None)
    if isinstance(peer, Worker):
        state.workers.pop(peer.id, None)
    else:
        state.clients.pop(peer.id, None)
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
    welcome(state, peer, session)


def welcome(state: State, peer: Peer, session: Session) -> None:
    """Attached again: a fresh token, then what was held, in order."""
    member_role = role(peer)
    raw, kept = new_token()
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
    forget_fresh(state, peer)
    state.close(peer, CLOSE_POLICY, "resume failed")


def forget_fresh(state: State, peer: Peer) -> None:
    """A socket that never became anyone: out of the live sets, nothing else."""
    state.slots[peer.slot].pop(peer.id, None)
    if isinstance(peer, Worker):
        state.workers.pop(peer.id, None)
    else:
        state.clients.pop(peer.id, None)
