"""A lone server: a cluster of one node, its shared state in memory.

The rules do not know whether they run alone: they ask the shared state
(``hub.requests``) and are answered by a step of their own (``on_outcome``),
exactly as in a cluster. Alone, every request is answered at once, in
order, after the step that asked, by ``MemoryShared`` (the model the Redis
scripts follow); there is nobody to tell anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from playcast.signaling.shared.memory import MemoryShared
from playcast.signaling.shared.records import WorkerEntry

if TYPE_CHECKING:
    from playcast.signaling.hub import Hub


class LocalCluster:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.shared = MemoryShared(hub.settings.games)
        self.known: set[str] = set()  # other live nodes: none

    @property
    def serving(self) -> bool:
        return True

    def health(self) -> dict[str, Any]:
        return {}

    def submit(self) -> None:
        """Answer what the last steps asked, each answer a step of its own."""
        hub = self.hub
        while hub.requests:
            for op in hub.take_requests():
                hub.on_outcome(op, self.shared.apply(op))
        hub.take_tells()  # (a word for another node: there is none)

    async def settle(self, timeout: float = 0.0) -> None:
        """Nothing is ever left queued."""

    def start(self) -> None:
        pass

    async def take_over(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    @property
    def available(self) -> dict[str, dict[str, WorkerEntry]]:
        """The pools: game -> available workers, longest-waiting first."""
        return {name: game.pool for name, game in self.shared.games.items()}

    async def status(self, check: bool) -> dict[str, Any]:
        doc = self.hub.snapshot()
        if check:
            doc["violations"] = [*self.hub.check_invariants(), *self.check()]
        return doc

    def check(self) -> Iterator[str]:
        """The invariants between this node's records and the shared state."""
        hub, pool, holds = self.hub, self.available, self.shared.holds
        for w in hub.roster.workers.values():
            in_pool = w.id in pool.get(w.game, {})
            if w.status in ("busy", "held") and in_pool:
                yield f"{w.status} worker {w.id} is in the available pool"
            elif w.status == "available" and not in_pool:
                yield f"available worker {w.id} is not in the pool"
            if (w.status == "held") != (w.id in holds.get(w.name, ())):
                yield f"{w.status} worker {w.id}: its name {w.name!r} holds it {w.name in holds}"
        for game, queue in pool.items():
            for wid, entry in queue.items():
                worker = hub.roster.workers.get(wid) if entry.node == hub.node else None
                if entry.node == hub.node and (worker is None or worker.status != "available"):
                    yield f"pool for {game} holds {wid}, which is not available"
                elif entry.game != game:
                    yield f"pool for {game} holds {wid}, a worker for {entry.game}"
