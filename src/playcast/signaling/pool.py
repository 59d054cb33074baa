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
        # game -> codec -> registered workers (available or busy) that send it:
        # tells "wait for a worker" from "no worker here can ever serve you".
        self.codecs: dict[str, dict[str, int]] = {game: {} for game in self.queues}

    def allows(self, game: str) -> bool:
        return game in self.queues

    def register(self, worker: Worker) -> None:
        counts = self.codecs[worker.game]
        for codec in worker.codecs:
            counts[codec] = counts.get(codec, 0) + 1

    def unregister(self, worker: Worker) -> None:
        counts = self.codecs.get(worker.game)
        if counts is None:
            return
        for codec in worker.codecs:
            left = counts.get(codec, 0) - 1
            if left > 0:
                counts[codec] = left
            else:
                counts.pop(codec, None)

    def serves(self, game: str, codecs: Iterable[str]) -> bool:
        """Some registered worker of ``game`` sends one of ``codecs``."""
        counts = self.codecs.get(game, {})
        return any(c in counts for c in codecs)

    def add(self, worker: Worker) -> None:
        self.queues[worker.game][worker.id] = worker

    def remove(self, worker: Worker) -> None:
        queue = self.queues.get(worker.game)
        if queue is not None:
            queue.pop(worker.id, None)

    def take(self, game: str, codecs: tuple[str, ...]) -> tuple[Worker, str] | None:
        """The longest-available worker for ``game`` that sends one of
        ``codecs``, removed, with the codec it prefers among them."""
        queue = self.queues.get(game)
        if not queue:
            return None
        for worker in queue.values():
            codec = next((c for c in worker.codecs if c in codecs), None)
            if codec is not None:
                del queue[worker.id]
                return worker, codec
        return None

    def __contains__(self, worker: Worker) -> bool:
        return worker.id in self.queues.get(worker.game, ())
