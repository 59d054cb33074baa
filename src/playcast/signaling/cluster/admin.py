"""What the operator page (``app/admin.py``) reads of the shared state
beyond the nodes' snapshots: the worker names held out of the pool, and
how many players wait in each game's line. Alone, from the memory; in a
cluster, from Redis (one pipelined round trip)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from playcast.signaling.cluster.link import ClusterLink
from playcast.signaling.cluster.local import LocalCluster
from playcast.signaling.cluster.status import text


async def shared_view(cluster: ClusterLink | LocalCluster, games: Iterable[str]) -> dict[str, Any]:
    """``{"held": [names, sorted], "lines": {game: players waiting}}``."""
    games = sorted(games)
    if isinstance(cluster, LocalCluster):
        shared = cluster.shared
        return {
            "held": sorted(shared.holds),
            "lines": {g: len(shared.games[g].line) if g in shared.games else 0 for g in games},
        }
    async with cluster.redis.pipeline(transaction=False) as pipe:
        pipe.smembers("pc:holds")
        for game in games:
            pipe.zcard(f"pc:line:{game}")
        held, *lines = await pipe.execute()
    return {"held": sorted(text(n) for n in held), "lines": dict(zip(games, lines, strict=True))}
