"""A tiny TCP round-robin load balancer, as in front of a cluster.

Each new connection goes to the next backend in turn; a backend that refuses
the connection (killed, restarting, not listening yet) is skipped for the
next one, as a load balancer's failed connect does. Bytes are copied both
ways; when either side ends, both are closed. No stickiness: a worker and
its player land on whichever nodes the turn gives them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

HOST = "127.0.0.1"


class RoundRobin:
    def __init__(self, backends: Sequence[int], host: str = HOST) -> None:
        self.backends = list(backends)
        self.host = host
        self.port = 0
        self.picked: Counter[int] = Counter()  # connections per backend port
        self.skipped = 0  # connects refused by a backend and passed on
        self.refused = 0  # connections no backend took
        self._turn = itertools.count()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def ws_url(self, role: str) -> str:
        return f"{self.ws_base}/ws/{role}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, 0, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for _ in range(len(self.backends)):
            port = self.backends[next(self._turn) % len(self.backends)]
            try:
                up = await asyncio.open_connection(self.host, port)
            except OSError:
                self.skipped += 1
                continue
            self.picked[port] += 1
            return up
        return None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up = await self._connect()
            if up is None:
                self.refused += 1
                writer.close()
                return
            up_reader, up_writer = up
            self._writers |= {writer, up_writer}
            pumps = [
                asyncio.create_task(_pump(reader, up_writer)),
                asyncio.create_task(_pump(up_reader, writer)),
            ]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for p in pumps:
                    p.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
                for w in (writer, up_writer):
                    w.close()
                    self._writers.discard(w)
        finally:
            self._tasks.discard(task)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


@contextlib.asynccontextmanager
async def round_robin(backends: Sequence[int]) -> AsyncIterator[RoundRobin]:
    balancer = RoundRobin(backends)
    await balancer.start()
    try:
        yield balancer
    finally:
        await balancer.close()
