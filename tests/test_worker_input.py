"""The input queue's policy (worker/input_queue.py): bounded, moves coalesced
per pointer, downs, ups and keys never dropped; and a Session ending itself
rather than dropping them."""

from __future__ import annotations

import asyncio
import json

import pytest

from playcast import protocol as t
from playcast.backends.synthetic import SyntheticBackend
from playcast.inputs import InputEvent, Key, Touch
from playcast.worker.input_queue import InputOverflow, InputQueue
from playcast.worker.link_events import Event, MediaFailed
from playcast.worker.session import Session


def touch(action: str, pointer: int = 0, x: float = 0.5) -> Touch:
    return Touch(action=action, id=pointer, x=x, y=0.5)  # type: ignore[arg-type]


def drain(q: InputQueue) -> list[InputEvent]:
    out = []
    while len(q):
        out.append(q._items.popleft())
    return out


def test_moves_coalesce_to_the_latest_per_pointer_in_place() -> None:
    q = InputQueue(limit=8)
    q.put(touch("down", 0))
    q.put(touch("down", 1))
    for i in range(100):
        q.put(touch("move", 0, x=i / 100))
        q.put(touch("move", 1, x=i / 100))
    q.put(Key(action="down", key="a"))
    assert drain(q) == [
        touch("down", 0),
        touch("down", 1),
        touch("move", 0, x=0.99),
        touch("move", 1, x=0.99),
        Key(action="down", key="a"),
    ]
    assert q.coalesced == 198


def test_a_move_never_jumps_over_its_own_down_or_up() -> None:
    q = InputQueue(limit=8)
    q.put(touch("move", 0, x=0.1))
    q.put(touch("up", 0))
    q.put(touch("down", 0, x=0.2))
    q.put(touch("move", 0, x=0.3))
    q.put(touch("move", 0, x=0.4))
    assert drain(q) == [
        touch("move", 0, x=0.1),
        touch("up", 0),
        touch("down", 0, x=0.2),
        touch("move", 0, x=0.4),
    ]


def test_downs_and_ups_are_never_dropped_overflow_raises_instead() -> None:
    q = InputQueue(limit=4)
    for action in ("down", "up", "down", "up"):
        q.put(touch(action))
    q.put(touch("move"))  # full, nothing to replace: a move may go
    assert q.coalesced == 1
    with pytest.raises(InputOverflow):
        q.put(touch("down"))
    assert [e.action for e in drain(q)] == ["down", "up", "down", "up"]  # type: ignore[union-attr]


def test_a_flood_of_moves_stays_within_one_slot_per_pointer() -> None:
    q = InputQueue(limit=4)
    q.put(touch("down", 0))
    for i in range(10_000):
        q.put(touch("move", 0, x=(i % 100) / 100))
    assert len(q) == 2


async def test_get_waits_for_the_next_event() -> None:
    q = InputQueue()
    getter = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)
    assert not getter.done()
    q.put(touch("down"))
    assert await asyncio.wait_for(getter, 5) == touch("down")


async def test_a_session_ends_itself_rather_than_drop_a_down_or_an_up() -> None:
    posted: list[Event] = []
    start = t.SessionStart(session_id="s-1", client_id="c-1", ice_servers=[])
    session = Session(start, SyntheticBackend(), posted.append, input_limit=3)
    try:
        # The input task is not running: a game that has stopped taking input.
        for i in range(50):
            session._on_input(
                json.dumps({"type": "touch", "action": "down", "id": i % 2, "x": 0.5, "y": 0.5})
            )
            session._on_input(
                json.dumps({"type": "touch", "action": "move", "id": i % 2, "x": 0.1, "y": 0.5})
            )
        session._on_input("not json")
        assert session.inputs_bad == 1
        overflow = [e for e in posted if isinstance(e, MediaFailed)]
        assert overflow and "input overflow" in overflow[0].reason and not overflow[0].backend
        assert len(session.inputs) == 3
    finally:
        await session.close()
