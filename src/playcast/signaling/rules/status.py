"""What the server shows of itself: the /api/status document and its invariants."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from playcast.signaling.rules.state import Core
from playcast.signaling.types import Worker


def snapshot(core: Core) -> dict[str, Any]:
    """The /api/status document."""
    now = core.clock()
    return {
        "workers": [
            {
                "id": w.id,
                "name": w.name or None,
                "addr": w.addr,
                "port": w.port,
                "status": w.status,
                "registered": w.registered,
                "client_id": w.client_id,
                "game": w.game,
                "node": core.node,
                "codecs": list(w.codecs),
                "audio": w.audio,
                "session_id": w.session_id,
                "last_ping_age": round(now - w.last_ping, 3),
                "connected_for": round(now - w.opened_at, 3),
            }
            for w in core.roster.workers.values()
        ],
        "clients": [
            {
                "id": c.id,
                "worker_id": c.worker_id,
                "game": c.game,
                "sub": c.sub or None,
                "connection_state": c.connection_state,
                "node": core.node,
                "position": c.position or None,
                "session_id": c.session_id,
                "last_ping_age": round(now - c.last_ping, 3),
                "idle_for": round(now - (c.last_input if c.joined else c.opened_at), 3),
            }
            for c in core.roster.clients.values()
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
            for s in core.table.sessions.values()
        ],
        "games": sorted(core.games),
        "node": core.node,
        "closing": len(core.closings.peers),
        "stopping": core.stopping,
    }


def check_invariants(core: Core) -> Iterator[str]:
    """Every broken invariant of this node, in words (the tests assert there
    are none). A session member on another node is that node's to check; the
    pools and lines are the shared state's (``cluster``'s checks)."""
    here = core.node
    for w in core.roster.workers.values():
        if w.status == "busy":
            s = core.table.sessions.get(w.session_id or "")
            if s is None or s.worker_id != w.id:
                yield f"worker {w.id} busy without a session"
            elif s.client_node == here and not _present(core, w.client_id):
                yield f"worker {w.id} busy with a client that is gone"
        elif w.status in ("available", "held") and (w.client_id or w.session_id):
            yield f"{w.status} worker {w.id} points at a client/session"
    for c in core.roster.clients.values():
        if c.worker_id is not None:
            s = core.table.sessions.get(c.session_id or "")
            if s is None:
                yield f"client {c.id} points at worker {c.worker_id} without a session"
            elif s.worker_node == here:
                # (away: its session waits for it to resume)
                partner = core.roster.workers.get(c.worker_id) or core.table.away.get(c.worker_id)
                if not isinstance(partner, Worker) or partner.client_id != c.id:
                    yield f"client {c.id} points at gone worker {c.worker_id}"
        if c.queued_at and c.id not in core.line.clients:
            yield f"client {c.id} waits in no line"
    for s in core.table.sessions.values():
        if s.worker_node == here and not _present(core, s.worker_id):
            yield f"session {s.id} has a worker that is gone"
        if s.client_node == here and not _present(core, s.client_id):
            yield f"session {s.id} has a client that is gone"
        if (s.worker_away_until or s.client_away_until) and s.id not in core.table.waiting:
            yield f"session {s.id} waits for a member but is not on the waiting list"
        if here not in (s.worker_node, s.client_node):
            yield f"session {s.id} has no member here"
    for pid, away in core.table.away.items():
        s = core.table.sessions.get(away.session_id or "")
        if s is None or s.id not in core.table.waiting:
            yield f"away member {pid} has no session waiting for it"
        elif pid in core.roster.workers or pid in core.roster.clients:
            yield f"away member {pid} is also live"
    for cid in core.line.clients:
        if cid not in core.roster.clients:
            yield f"waiting client {cid} is gone"
    for pid in core.closings.peers:
        if pid in core.roster.workers or pid in core.roster.clients:
            yield f"closing peer {pid} is still in a live set"
    for live in (core.roster.workers, core.roster.clients):
        for pid, member in live.items():
            if not member.live:
                yield f"live peer {pid} is not marked live"
    for index, slot in enumerate(core.roster.slots):
        for pid, peer in slot.items():
            if not core.roster.is_live(peer):
                yield f"slot {index} holds {pid}, which is not live"


def _present(core: Core, member_id: str | None) -> bool:
    """Live here, or away with its session waiting for it to resume."""
    return (
        member_id in core.roster.clients
        or member_id in core.roster.workers
        or member_id in core.table.away
    )
