"""Text frames go from aiohttp's reader straight to the core (main.FrameSink).

Over real sockets the whole protocol suite runs through the sink; these pin
the seam in aiohttp it relies on and what goes which way.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from aiohttp import WSMsgType, web_ws
from aiohttp._websocket.reader import WebSocketReader

from playcast.signaling.main import FrameSink, Pump, install_frame_sink


class _Protocol:
    _reading_paused = False

    def pause_reading(self) -> None:
        self._reading_paused = True


def _frame(opcode: int, payload: bytes) -> bytes:
    # A client frame, masked with a zero key (the XOR is the identity).
    return bytes((0x80 | opcode, 0x80 | len(payload))) + b"\0\0\0\0" + payload


def test_this_aiohttp_builds_its_queues_as_frame_sinks() -> None:
    # If an aiohttp upgrade removes the seam, frames still flow (through the
    # queue) but the saving is gone: this says so.
    assert install_frame_sink()
    assert web_ws.WebSocketDataQueue is FrameSink  # type: ignore[attr-defined]


async def test_text_goes_to_the_sink_in_order_and_close_to_the_queue() -> None:
    queue = FrameSink(_Protocol(), 1 << 16, loop=asyncio.get_running_loop())  # type: ignore[arg-type]
    reader = WebSocketReader(queue, 1 << 16, compress=False, decode_text=True)
    got: list[tuple[object, str | bytes]] = []
    pump = SimpleNamespace(deliver=lambda peer, frame: got.append((peer, frame)))
    peer = object()
    assert queue.attach(pump, peer)  # type: ignore[arg-type]
    reader.feed_data(_frame(0x1, b"one") + _frame(0x1, b"two") + _frame(0x8, b"\x03\xe8"))
    assert got == [(peer, "one"), (peer, "two")]
    assert [msg.type for msg, _ in queue._buffer] == [WSMsgType.CLOSE]
    queue.detach()
    reader.feed_data(_frame(0x1, b"three"))
    assert len(got) == 2 and len(queue._buffer) == 2


async def test_a_socket_with_frames_already_queued_keeps_the_queue() -> None:
    queue = FrameSink(_Protocol(), 1 << 16, loop=asyncio.get_running_loop())  # type: ignore[arg-type]
    reader = WebSocketReader(queue, 1 << 16, compress=False, decode_text=True)
    reader.feed_data(_frame(0x1, b'{"type":"join"}'))  # before the peer exists
    assert not queue.attach(SimpleNamespace(), object())  # type: ignore[arg-type]
    reader.feed_data(_frame(0x1, b"next"))
    assert [msg.data for msg, _ in queue._buffer] == ['{"type":"join"}', "next"]


async def test_a_bug_while_delivering_is_logged_and_fails_only_that_socket(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class BuggyHub:
        def on_message(self, peer: object, frame: str | bytes) -> None:
            raise RuntimeError("a bug in a rule")

    queue = FrameSink(_Protocol(), 1 << 16, loop=asyncio.get_running_loop())  # type: ignore[arg-type]
    reader = WebSocketReader(queue, 1 << 16, compress=False, decode_text=True)
    queue.attach(Pump(BuggyHub()), SimpleNamespace(id="c-1"))  # type: ignore[arg-type]
    reader.feed_data(_frame(0x1, b'{"type":"join"}'))
    assert isinstance(queue.exception(), RuntimeError)  # the socket's reader fails
    assert "internal error delivering a frame from c-1" in caplog.text
    assert "a bug in a rule" in caplog.text  # with its traceback
