"""Heartbeats and deadlines: what the periodic sweep checks, one slot a tick.

Every ``heartbeat_interval / SLOTS`` the sweep pings one slot's peers and
checks their clocks (heartbeat, hello, inactivity), then the session-wide
deadlines (handshake) and the shutdown acks. A bug met while checking one
peer or session is contained to it: the rest of the tick still runs.
"""

from __future__ import annotations

import logging

from playcast.protocol import InactivityWarning, Ping
from playcast.signaling.rules.closing import expire_acks, forget
from playcast.signaling.rules.conduct import crashed
from playcast.signaling.rules.events import CLOSE_NORMAL, CLOSE_POLICY, event
from playcast.signaling.rules.pairing import expire_waits
from playcast.signaling.rules.resume import expire
from playcast.signaling.rules.sessions import end, fail
from playcast.signaling.rules.state import SLOTS, Core
from playcast.signaling.types import Client, Peer, ids, role, said_hello

log = logging.getLogger("playcast.signaling")


def tick_interval(core: Core) -> float:
    return core.settings.heartbeat_interval / SLOTS


def tick(core: Core) -> None:
    """One slot's pings and checks, then every session deadline."""
    now = core.clock()
    slot = core.roster.turn()
    ping = Ping(ts=now)
    for peer in list(slot.values()):
        if slot.get(peer.id) is not peer:
            continue  # dropped by an earlier peer's check in this tick (its partner)
        try:
            if _check_peer(core, peer, now):
                core.send(peer, ping)
        except Exception:
            crashed(core, peer, "sweep")
    timeout = core.settings.handshake_timeout
    for session in list(core.table.handshaking.values()):
        if now - session.started_at > timeout:
            try:
                event("handshake_timeout", session=session.id)
                end(core, session, "handshake_timeout", "handshake_timeout")
            except Exception:
                log.exception("internal error ending session %s", session.id)
                core.counters.internal_errors.inc("sweep")
                core.table.run_deadline(session, False)
    expire_acks(core, now)
    if core.table.waiting:
        expire(core, now)


def _check_peer(core: Core, peer: Peer, now: float) -> bool:
    """False when the peer was dropped or its session ended (no ping then)."""
    s = core.settings
    if now - peer.last_ping > s.heartbeat_timeout:
        core.counters.heartbeat_timeouts.inc(role(peer))
        event(f"{role(peer)}_heartbeat_timeout", **ids(peer))
        fail(core, peer, "heartbeat_timeout", CLOSE_NORMAL)
        return False
    if not said_hello(peer) and now - peer.opened_at > s.hello_timeout:
        core.counters.hello_timeouts.inc(role(peer))
        event(f"{role(peer)}_hello_timeout", **ids(peer))
        forget(core, peer)
        core.close(peer, CLOSE_POLICY, "no register or join in time")
        return False
    if isinstance(peer, Client):
        if peer.session_id is not None:
            return not _check_inactivity(core, peer, now)
        if peer.queued_at:
            return not expire_waits(core, peer, now)
    return True


def _check_inactivity(core: Core, client: Client, now: float) -> bool:
    """True when the client's session was ended for inactivity."""
    s = core.settings
    idle = now - client.last_input
    if idle > s.inactivity_timeout:
        session = core.table.sessions.get(client.session_id or "")
        event("inactivity_timeout", idle_s=round(idle, 1), **ids(client))
        if session is not None:
            end(core, session, "inactivity_timeout", "inactivity_timeout")
        return True
    left = s.inactivity_timeout - idle
    if s.inactivity_warning > 0 and left < s.inactivity_warning and not client.warned:
        client.warned = True
        core.send(client, InactivityWarning(seconds_left=round(left, 3)))
        event("inactivity_warning", seconds_left=round(left, 1), **ids(client))
    return False
