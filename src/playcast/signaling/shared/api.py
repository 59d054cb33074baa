"""The one interface of the shared state, kept by both implementations.

``MemoryShared`` (``memory.py``) holds it in one process: a lone server, and
the unit tests, where several nodes share one under a fake clock.
``RedisShared`` (``redis_state.py``) holds it in Redis for a cluster, each
operation one atomic Lua script (``lua/``). ``tests/test_shared_contract.py``
runs both through the same cases, and ``tests/test_shared_differential.py``
drives both with random operation sequences, failing on any difference in
what they answer or in the state read back.

The interface is asynchronous, as Redis is. The memory implementation
answers at once: its async methods wrap synchronous ones (``apply``,
``forget``, ``read``), which a lone server (and the cluster model in the
tests) calls directly, since it settles its operations within the same
step, synchronously and cheaply. ``forget_node`` has one signature in both;
in memory every node counts as announced, and there is no clock: what a
grace keeps stays until it is ended.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # the interface names them; nothing here runs them
    from playcast.signaling.shared.dump import Dump
    from playcast.signaling.shared.records import Forgotten, Op, Outcome


class SharedState(Protocol):
    async def execute(self, op: Op) -> Outcome:
        """Carry ``op`` out atomically. An op it does not know: TypeError."""
        ...

    async def forget_node(
        self, node: str, *, force: bool = False, grace: float = 0.0
    ) -> Forgotten | None:
        """``node`` is dead: nothing of it stays, but its sessions for
        ``grace`` seconds (members may resume elsewhere). Claimed once: None
        if another caller already cleaned it up, unless ``force``."""
        ...

    async def dump(self) -> Dump:
        """The whole state read back in one canonical form (``dump.py``):
        for tests and inspection, as it reads everything."""
        ...
