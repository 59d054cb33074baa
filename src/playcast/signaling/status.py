"""What the server shows of itself: the /api/status document and its invariants."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from playcast.signaling.state import State


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
                "client_id": w.client_id,
                "game": w.game,
                "codecs": list(w.codecs),
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
                "age": round(now - s.started_at, 3),
            }
            for s in state.sessions.values()
        ],
        "games": sorted(state.pool.queues),
        "closing": len(state.closing),
        "stopping": state.stopping,
    }


def check_invariants(state: State) -> Iterator[str]:
    """Every broken invariant, in words (the tests assert there are none)."""
    for w in state.workers.values():
        in_queue = w in state.pool
        if w.status == "busy":
            s = state.sessions.get(w.session_id or "")
            if s is None or s.worker_id != w.id or w.client_id not in state.clients:
                yield f"worker {w.id} busy without a live client/session"
            if in_queue:
                yield f"busy worker {w.id} is in the available queue"
        elif w.status == "available":
            if w.client_id or w.session_id:
                yield f"available worker {w.id} points at a client/session"
            if not in_queue:
                yield f"available worker {w.id} is not in the queue"
    for c in state.clients.values():
        if c.worker_id is not None:
            partner = state.workers.get(c.worker_id)
            if partner is None or partner.client_id != c.id:
                yield f"client {c.id} points at gone worker {c.worker_id}"
    for s in state.sessions.values():
        if s.worker_id not in state.workers or s.client_id not in state.clients:
            yield f"session {s.id} has a member that is gone"
    for game, queue in state.pool.queues.items():
        for wid, queued in queue.items():
            if state.workers.get(wid) is not queued or queued.status != "available":
                yield f"queue for {game} holds {wid}, which is not available"
            elif queued.game != game:
                yield f"queue for {game} holds {wid}, a worker for {queued.game}"
    for pid in state.closing:
        if pid in state.workers or pid in state.clients:
            yield f"closing peer {pid} is still in a live set"
    for index, slot in enumerate(state.slots):
        for pid, peer in slot.items():
            if not state.is_live(peer):
                yield f"slot {index} holds {pid}, which is not live"
