"""A node whose cluster loop dies is taken out, restarts the loop, and ends
the process if the loop keeps dying (issue 25); a dead node is forgotten once
nothing names it. In process, against a real redis-server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from playcast_testing.redis_server import running_redis

from playcast.signaling.cluster.link import ClusterLink
from playcast.signaling.main import Server, start_server
from playcast.signaling.rules.settings import Settings


@contextlib.asynccontextmanager
async def node(redis_url: str, **settings: Any) -> AsyncIterator[Server]:
    server = await start_server(
        Settings(host="127.0.0.1", port=0, redis=redis_url, node_ttl=0.5, **settings)
    )
    try:
        yield server
    finally:
        await server.close()


async def health(server: Server) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{server.port}/healthz") as r,
    ):
        return r.status


async def until_health(server: Server, status: int) -> None:
    """/healthz has no push channel: it is asked until it says ``status``."""
    async with asyncio.timeout(10):
        while True:
            if await health(server) == status:
                return
            await asyncio.sleep(0.02)


async def until(check: Any) -> None:
    """Until ``check()`` holds: the node's state is read between its loop's turns."""
    async with asyncio.timeout(10):
        while True:
            if await check():
                return
            await asyncio.sleep(0.02)


def break_outbound(link: ClusterLink, times: int) -> list[int]:
    """The outbound loop raises (a bug) the next ``times`` times it takes a
    batch; the count of failures so far is returned, to wait on."""
    failures = [0]
    take = link.out.take

    def broken(now: float) -> Any:
        if failures[0] < times:
            failures[0] += 1
            raise RuntimeError("a bug in the outbound loop")
        return take(now)

    link.out.take = broken  # type: ignore[method-assign]
    return failures


async def join(server: Server) -> None:
    """Something for the outbound loop to carry: a player's join."""
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"ws://127.0.0.1:{server.port}/ws/client")
        await ws.send_json({"type": "join"})
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1):
                await ws.receive()
        await ws.close()


async def test_a_dead_loop_takes_the_node_out_and_is_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_redis() as redis, node(redis.url) as server:
        await until_health(server, 200)
        link = server.cluster
        assert isinstance(link, ClusterLink)
        failures = break_outbound(link, times=1)
        await join(server)
        assert failures[0] == 1
        assert await health(server) == 503  # at once
        assert "cluster loop outbound died" in caplog.text
        assert server.hub.counters.internal_errors.get("cluster_loop") == 1
        # Restarted: the node serves again once the loop is back (a TTL later).
        await until_health(server, 200)
        assert not server.fatal.is_set()
        await join(server)  # and the restarted loop carries it
        await link.settle(timeout=5.0)
        assert not link.out


async def test_a_loop_that_keeps_dying_ends_the_process() -> None:
    async with running_redis() as redis, node(redis.url) as server:
        await until_health(server, 200)
        link = server.cluster
        assert isinstance(link, ClusterLink)
        break_outbound(link, times=1000)
        for _ in range(5):
            if server.fatal.is_set():
                break
            await join(server)
        async with asyncio.timeout(10):
            await server.fatal.wait()
        assert await health(server) == 503


async def test_a_dead_node_is_forgotten_once_nothing_names_it() -> None:
    async with running_redis() as redis, node(redis.url) as server:
        await until_health(server, 200)
        link = server.cluster
        assert isinstance(link, ClusterLink)
        # A node that announced itself and died without a word.
        await link.shared.beat("ghost", 0.05, "{}")

        async def cleaned() -> bool:
            return not await link.redis.sismember("pc:nodes", "ghost")

        async def forgotten() -> bool:
            return "ghost" not in server.hub.gone_nodes

        await until(cleaned)
        # Cleaned up after, and not kept in the node's memory for ever.
        await until(forgotten)
