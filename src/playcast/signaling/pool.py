"""The pool of available workers: one queue per game, longest-available first.

Dicts keep insertion order, so a game's longest-waiting worker is its first
key: taking it is O(1), and so is removing any worker that leaves. Only the
allowed games have a queue, so no peer can make the server grow state (or
metric label children) for a game it invented.
"""

from __future__ import annotations

from collections.abc import Iterable

from playcast.signaling.types import Worker


class Pool:
    def __init__(self, games: Iterable[str]) -> None:
        self.queues: dict[str, dict[str, Worker]] = {game: {} for game in games}

    def allows(self, game: str) -> bool:
        return game in self.queues

    def add(self, worker: Worker) -> None:
        self.queues[worker.game][worker.id] = worker

    def remove(self, worker: Worker) -> None:
        queue = self.queues.get(worker.game)
        if queue is not None:
            queue.pop(worker.id, None)

    def take(self, game: str) -> Worker | None:
        """The worker for ``game`` that has been available longest, removed."""
        queue = self.queues.get(game)
        if not queue:
            return None
        worker_id = next(iter(queue))
        return queue.pop(worker_id)

    def __contains__(self, worker: Worker) -> bool:
        return worker.id in self.queues.get(worker.game, ())
