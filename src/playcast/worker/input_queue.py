"""The player's input on its way to the backend: bounded, with moves coalesced.

The data channel hands over messages as fast as the player (or a hostile
page) sends them, and the backend takes them at its own pace. In between,
events wait here, decoded, in arrival order, under one policy:

- A ``move`` replaces the pending ``move`` of the same pointer, if that is
  the newest event of that pointer still waiting: only the finger's latest
  position matters, and it keeps its place in the order. With a backend that
  keeps up nothing is ever pending, so nothing is coalesced.
- A ``down``, ``up``, ``cancel`` or key event is never dropped or merged: a
  lost ``down`` is a missed tap, a lost ``up`` a finger stuck on the screen.
- At most ``limit`` events wait. A move that finds the queue full and
  nothing to replace is dropped (the finger's next move or its up carries a
  newer position). A down, up or key that finds it full means the backend
  has stopped taking input or the page is flooding: ``put`` raises
  ``InputOverflow`` and the worker ends the session rather than drop it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Final

from playcast.inputs import InputEvent, Touch

DEFAULT_LIMIT: Final = 256


class InputOverflow(Exception):
    """More downs, ups and keys waiting than the limit."""


class InputQueue:
    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._items: deque[InputEvent] = deque()
        self._ready = asyncio.Event()
        self.coalesced = 0  # moves replaced by a newer one, or dropped when full

    def __len__(self) -> int:
        return len(self._items)

    def put(self, event: InputEvent) -> None:
        if isinstance(event, Touch) and event.action == "move":
            # The newest pending event of this pointer: a move there is stale.
            for i in range(len(self._items) - 1, -1, -1):
                item = self._items[i]
                if isinstance(item, Touch) and item.id == event.id:
                    if item.action == "move":
                        self._items[i] = event
                        self.coalesced += 1
                        return
                    break
        if len(self._items) >= self.limit:
            if isinstance(event, Touch) and event.action == "move":
                self.coalesced += 1
                return
            raise InputOverflow(f"{len(self._items)} input events waiting for the game")
        self._items.append(event)
        self._ready.set()

    async def get(self) -> InputEvent:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()
