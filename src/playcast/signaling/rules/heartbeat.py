"""Heartbeats and deadlines: what the periodic sweep checks, one slot a tick.

Every ``heartbeat_interval / SLOTS`` the sweep pings one slot's peers and
checks their clocks (heartbeat, hello, inactivity), then the session-wide
deadlines (handshake) and the shutdown acks. A bug met while checking one
peer or session is contained to it: the rest of the tick still runs.
"""

from __future__ import annotations

import logging

from playcast.protocol import InactivityWarning, Ping
from playcast.signaling.rules import resume, sessions
from playcast.signaling.rules.closing import expire_acks, forget
from playcast.signaling.rules.conduct import crashed
from playcast.signaling.rules.events import CLOSE_NORMAL, CLOSE_POLICY, event
from playcast.signaling.rules.pairing import expire_waits
from playcast.signaling.rules.state import SLOTS, State, ids, role, said_hello
from playcast.signaling.types import Client, Peer

log = logging.getLogger("playcast.signaling")


def place(state: State, peer: Peer) -> None:
    """Put a new peer in the slot that runs next: its first ping within a tick."""
    peer.slot = state.cursor
    state.slots[peer.slot][peer.id] = peer


def tick_interval(state: State) -> float:
    return state.settings.heartbeat_interval / SLOTS


def tick(state: State) -> None:
    """One slot's pings and checks, then every session deadline."""
    now = state.clock()
    slot = state.slots[state.cursor]
    state.cursor = (state.cursor + 1) % SLOTS
    ping = Ping(ts=now)
    for peer in list(slot.values()):
        if slot.get(peer.id) is not peer:
            continue  # dropped by an earlier peer's check in this tick (its partner)
        try:
            if _check_peer(state, peer, now):
                state.send(peer, ping)
        except Exception:
            crashed(state, peer, "sweep")
    timeout = state.settings.handshake_timeout
    for session in list(state.handshaking.values()):
        if now - session.started_at > timeout:
            try:
                event("handshake_timeout", session=session.id)
                sessions.end(state, session, "handshake_timeout", "handshake_timeout")
            except Exception:
                log.exception("internal error ending session %s", session.id)
                state.metrics.count(state.metrics.internal_errors, "sweep")
                state.handshaking.pop(session.id, None)
    expire_acks(state, now)
    if state.waiting_for:
        resume.expire(state, now)


def _check_peer(state: State, peer: Peer, now: float) -> bool:
    """False when the peer was dropped or its session ended (no ping then)."""
    s = state.settings
    if now - peer.last_ping > s.heartbeat_timeout:
        state.metrics.count(state.metrics.heartbeat_timeouts, role(peer))
        event(f"{role(peer)}_heartbeat_timeout", **ids(peer))
        sessions.fail(state, peer, "heartbeat_timeout", CLOSE_NORMAL)
        return False
    if not said_hello(peer) and now - peer.opened_at > s.hello_timeout:
        state.metrics.count(state.metrics.hello_timeouts, role(peer))
        event(f"{role(peer)}_hello_timeout", **ids(peer))
        forget(state, peer)
        state.close(peer, CLOSE_POLICY, "no register or join in time")
        return False
    if isinstance(peer, Client):
        if peer.session_id is not None:
            return not _check_inactivity(state, peer, now)
        if peer.queued_at:
            return not expire_waits(state, peer, now)
    return True


def _check_inactivity(state: State, client: Client, now: float) -> bool:
    """True when the client's session was ended for inactivity."""
    s = state.settings
    idle = now - client.last_input
    if idle > s.inactivity_timeout:
        session = state.sessions.get(client.session_id or "")
        event("inactivity_timeout", idle_s=round(idle, 1), **ids(client))
        if session is not None:
            sessions.end(state, session, "inactivity_timeout", "inactivity_timeout")
        return True
    left = s.inactivity_timeout - idle
    if s.inactivity_warning > 0 and left < s.inactivity_warning and not client.warned:
        client.warned = True
        state.send(client, InactivityWarning(seconds_left=round(left, 3)))
        event("inactivity_warning", seconds_left=round(left, 1), **ids(client))
    return False
