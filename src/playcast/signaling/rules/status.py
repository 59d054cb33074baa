"""What the server shows of itself: the /api/status document and its invariants."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from playcast.signaling.rules.state import State
from playcast.signaling.types import Worker


def snapshot(state: State) -> dict[str, Any]:
    """The /api/status document."""
    now = state.clock()
    return {
        "workers": [
            {
                "id": w.id,
                "addr": w.addr,
                "port": w.port,
                "status": w.status,
                "registered": w.registered,
                "client_id": w.client_id,
                "game": w.game,
                "node": state.node,
                "codecs": list(w.codecs),
                "audio": w.audio,
                "session_id": w.session_id,
                "last_ping_age": round(now - w.last_ping, 3),
                "connected_for": round(now - w.opened_at, 3),
            }
            for w in state.workers.values()
        ],
        "clients": [
            {
                "id": c.id,
                "worker_id": c.worker_id,
                "game": c.game,
                "connection_state": c.connection_state,
                "node": state.node,
                "position": c.position or None,
                "session_id": c.session_id,
                "last_ping_age": round(now - c.last_ping, 3),
                "idle_for": round(now - (c.last_input if c.joined else c.opened_at), 3),
            }
            for c in state.clients.values()
        ],
        "sessions": [
            {
                "id": s.id,
                "worker_id": s.worker_id,
                "client_id": s.client_id,
                "game": s.game,
                "codec": s.codec,
                "phase": s.phase,
                "worker_node": s.worker_node,
                "client_node": s.client_node,
                "age": round(now - s.started_at, 3),
            }
            for s in state.sessions.values()
        ],
        "games": sorted(state.games),
        "node": state.node,
        "closing": len(state.closing),
        "stopping": state.stopping,
    }


def check_invariants(state: State) -> Iterator[str]:
    """Every broken invariant of this node, in words (the tests assert there
    are none). A session member on another node is that node's to check."""
    here = state.node
    pool = state.available
    for w in state.workers.values():
        in_pool = w.id in pool.get(w.game, {})
        if w.status == "busy":
            s = state.sessions.get(w.session_id or "")
            if s is None or s.worker_id != w.id:
                yield f"worker {w.id} busy without a session"
            elif s.client_node == here and not _present(state, w.client_id):
                yield f"worker {w.id} busy with a client that is gone"
            if in_pool:
                yield f"busy worker {w.id} is in the available pool"
        elif w.status == "available":
            if w.client_id or w.session_id:
                yield f"available worker {w.id} points at a client/session"
            if state.memory is not None and not in_pool:
                yield f"available worker {w.id} is not in the pool"
    for c in state.clients.values():
        if c.worker_id is not None:
            s = state.sessions.get(c.session_id or "")
            if s is None:
                yield f"client {c.id} points at worker {c.worker_id} without a session"
            elif s.worker_node == here:
                # (away: its session waits for it to resume)
                partner = state.workers.get(c.worker_id) or state.away.get(c.worker_id)
                if not isinstance(partner, Worker) or partner.client_id != c.id:
                    yield f"client {c.id} points at gone worker {c.worker_id}"
        if c.queued_at and c.id not in state.waiting:
            yield f"client {c.id} waits in no line"
    for s in state.sessions.values():
        if s.worker_node == here and not _present(state, s.worker_id):
            yield f"session {s.id} has a worker that is gone"
        if s.client_node == here and not _present(state, s.client_id):
            yield f"session {s.id} has a client that is gone"
        if (s.worker_away_until or s.client_away_until) and s.id not in state.waiting_for:
            yield f"session {s.id} waits for a member but is not on the waiting list"
        if here not in (s.worker_node, s.client_node):
            yield f"session {s.id} has no member here"
    for game, queue in pool.items():
        for wid, entry in queue.items():
            worker = state.workers.get(wid) if entry.node == here else None
            if entry.node == here and (worker is None or worker.status != "available"):
                yield f"pool for {game} holds {wid}, which is not available"
            elif entry.game != game:
                yield f"pool for {game} holds {wid}, a worker for {entry.game}"
    for pid, away in state.away.items():
        s = state.sessions.get(away.session_id or "")
        if s is None or s.id not in state.waiting_for:
            yield f"away member {pid} has no session waiting for it"
        elif pid in state.workers or pid in state.clients:
            yield f"away member {pid} is also live"
    for cid in state.waiting:
        if cid not in state.clients:
            yield f"waiting client {cid} is gone"
    for pid in state.closing:
        if pid in state.workers or pid in state.clients:
            yield f"closing peer {pid} is still in a live set"
    for index, slot in enumerate(state.slots):
        for pid, peer in slot.items():
            if not state.is_live(peer):
                yield f"slot {index} holds {pid}, which is not live"


def _present(state: State, member_id: str | None) -> bool:
    """Live here, or away with its session waiting for it to resume."""
    return member_id in state.clients or member_id in state.workers or member_id in state.away
