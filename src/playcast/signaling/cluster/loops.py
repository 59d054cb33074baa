"""The cluster's loops, watched.

The loops handle Redis's own failures themselves; one that dies anyway met
a bug, and a node whose loop is dead looks healthy while nothing more
reaches Redis (or other nodes). So a dead loop is logged and counted and
started again at once, and the node takes nobody new meanwhile (``broken``:
``/healthz`` 503); a loop that keeps dying ends the process (``on_fatal``),
for its supervisor (systemd) to start afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from playcast.signaling.rules.counters import Count
from playcast.signaling.rules.events import event

log = logging.getLogger("playcast.signaling")

Factory = Callable[[], Coroutine[Any, Any, None]]


class Loops:
    def __init__(
        self,
        errors: Count,
        on_fatal: Callable[[], None],
        *,
        quiet: float,
        limit: int = 3,
        window: float = 60.0,
    ) -> None:
        """``quiet``: how long after a loop's death the node stays out;
        ``limit`` deaths within ``window`` seconds are fatal."""
        self._errors = errors
        self._on_fatal = on_fatal
        self._quiet, self._limit, self._window = quiet, limit, window
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._factories: dict[str, Factory] = {}
        self._deaths: list[float] = []
        self._stopping = False
        self.fatal = False

    def start(self, name: str, factory: Factory) -> None:
        self._factories[name] = factory
        task = asyncio.get_running_loop().create_task(factory(), name=f"cluster-{name}")
        self._tasks[name] = task
        task.add_done_callback(self._ended)

    @property
    def broken(self) -> bool:
        """A loop died lately, or too often: the node takes nobody new."""
        return self.fatal or bool(
            self._deaths and time.monotonic() - self._deaths[-1] < self._quiet
        )

    def _ended(self, task: asyncio.Task[None]) -> None:
        if self._stopping or task.cancelled():
            return
        name = task.get_name().removeprefix("cluster-")
        exc = task.exception()
        log.error("cluster loop %s died", name, exc_info=exc)
        self._errors.inc("cluster_loop")
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < self._window] + [now]
        if len(self._deaths) > self._limit:
            self.fatal = True
            event("cluster_loop_fatal", loop=name, deaths=len(self._deaths))
            self._on_fatal()
            return
        event("cluster_loop_restarted", loop=name, error=repr(exc))
        self.start(name, self._factories[name])

    async def stop(self) -> None:
        self._stopping = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
