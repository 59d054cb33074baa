"""A TCP proxy whose link can silently go dead, like a network that drops packets.

``blackhole()`` stops forwarding in both directions but keeps every socket
open, so neither end sees a close or a reset: only heartbeats can tell.
``cut()`` is the other kind of failure: every connection through the proxy
is closed at once, both ways (a proxy's idle cut, a NAT rebinding), while new
connections are still accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class BlackholeProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.dropping = False
        self.connections = 0
        self.cuts = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._links: set[tuple[asyncio.Task[None], asyncio.Task[None]]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def blackhole(self) -> None:
        self.dropping = True

    def restore(self) -> None:
        self.dropping = False

    def cut(self) -> int:
        """Close every connection open now, both ways; returns how many."""
        self.cuts += 1
        open_now = len(self._links)
        for pumps in list(self._links):
            for task in pumps:
                task.cancel()
        return open_now

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, up_writer}
        pumps = (
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        )
        self._tasks.update(pumps)
        self._links.add(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        self._links.discard(pumps)
        for task in pumps:
            task.cancel()
            self._tasks.discard(task)
        for w in (writer, up_writer):
            w.close()
            self._writers.discard(w)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if not self.dropping:  # dropped bytes are simply lost, as on a dead link
                writer.write(data)
                await writer.drain()
        if self.dropping:
            # A close is news too: on a dead link it never arrives.
            await asyncio.Event().wait()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        for w in self._writers:
            w.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()


@contextlib.asynccontextmanager
async def blackhole_proxy(target_port: int) -> AsyncIterator[BlackholeProxy]:
    proxy = BlackholeProxy(target_port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
