"""A TCP round-robin load balancer, as in front of a cluster, for tests.

Each new connection goes to the next node in turn; a node that refuses the
connection (killed, not yet restarted) is skipped for the next one, as a
real balancer's failover would. ``cut()`` closes every connection open now,
both ways. Nodes can be swapped while it runs (``ports``), for a node that
comes back on a new port.

The cluster soak and the resume tests share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Sequence

HOST = "127.0.0.1"


class RoundRobinBalancer:
    def __init__(self, ports: Sequence[int]) -> None:
        self.ports = list(ports)
        self.port = 0
        self.connections = 0
        self.by_port: dict[int, int] = {}  # connections made to each node
        self.skipped = 0  # connects a node refused, passed on to the next
        self._turn = itertools.count()
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.Task[None], asyncio.Task[None]]] = set()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://{HOST}:{self.port}"

    def ws_url(self, role: str) -> str:
        return f"{self.ws_base}/ws/{role}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def cut(self) -> int:
        """Close every connection open now, both ways; returns how many."""
        open_now = len(self._links)
        for pumps in list(self._links):
            for task in pumps:
                task.cancel()
        return open_now

    async def _upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        first = next(self._turn)
        for i in range(len(self.ports)):
            port = self.ports[(first + i) % len(self.ports)]
            try:
                up = await asyncio.open_connection(HOST, port)
            except OSError:
                self.skipped += 1
                continue  # down: the next node
            self.by_port[port] = self.by_port.get(port, 0) + 1
            return up
        return None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up = await self._upstream()
        if up is None:
            writer.close()
            return
        up_reader, up_writer = up
        pumps = (
            asyncio.create_task(_pump(reader, up_writer)),
            asyncio.create_task(_pump(up_reader, writer)),
        )
        self._links.add(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._links.discard(pumps)
            for task in pumps:
                task.cancel()
            for w in (writer, up_writer):
                w.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


@contextlib.asynccontextmanager
async def round_robin(ports: Sequence[int]) -> AsyncIterator[RoundRobinBalancer]:
    balancer = RoundRobinBalancer(ports)
    await balancer.start()
    try:
        yield balancer
    finally:
        await balancer.close()
