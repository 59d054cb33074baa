"""A scripted protocol peer over a real WebSocket: a worker or client by hand."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import aiohttp

from playcast.protocol import Message, Ping, Pong, decode, encode_str

T = TypeVar("T")


class ScriptedPeer:
    """Sends what a test says and queues what it receives.

    With ``auto_pong`` it answers pings itself, as a live peer would; without,
    it goes silent on heartbeats so a test can let it time out.
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, *, auto_pong: bool = True) -> None:
        self.ws = ws
        self.auto_pong = auto_pong
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.pings = 0
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for frame in self.ws:
            if frame.type is not aiohttp.WSMsgType.TEXT:
                break
            msg = decode(frame.data)
            if isinstance(msg, Ping):
                self.pings += 1
                if self.auto_pong:
                    await self.send(Pong(ts=msg.ts))
                continue
            await self.inbox.put(msg)
        self.close_code = self.ws.close_code
        self.closed.set()

    async def send(self, msg: Message) -> None:
        await self.ws.send_str(encode_str(msg))

    async def send_raw(self, data: str | dict[str, Any]) -> None:
        await self.ws.send_str(data if isinstance(data, str) else json.dumps(data))

    async def recv(self, timeout: float = 10.0) -> Message:
        async with asyncio.timeout(timeout):
            return await self.inbox.get()

    async def expect(self, kind: type[T], timeout: float = 10.0) -> T:
        msg = await self.recv(timeout)
        if not isinstance(msg, kind):
            raise AssertionError(f"expected {kind.__name__}, got {msg!r}")
        return msg

    async def wait_closed(self, timeout: float = 10.0) -> int | None:
        async with asyncio.timeout(timeout):
            await self.closed.wait()
        return self.close_code

    async def close(self) -> None:
        await self.ws.close()
        with contextlib.suppress(Exception):
            await self._reader


@contextlib.asynccontextmanager
async def connect(url: str, *, auto_pong: bool = True) -> AsyncIterator[ScriptedPeer]:
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url, autoping=True, max_msg_size=0)
        peer = ScriptedPeer(ws, auto_pong=auto_pong)
        try:
            yield peer
        finally:
            await peer.close()
