"""A backend that breaks: the worker in-process (so the test can break its
backend), against a real server process and the real test peer."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from playcast_testing.peer import TestPeer
from playcast_testing.servers import ServerProcess, running_server

from playcast.backends.base import H264, BackendError, Health, VideoPacket
from playcast.backends.synthetic import SyntheticBackend
from playcast.protocol import DEFAULT_GAME as GAME
from playcast.worker.link_state import LinkSettings
from playcast.worker.runner import Worker, WorkerSettings

TIMEOUT = 60


class BreakableBackend(SyntheticBackend):
    """The synthetic game, with a plug a test can pull (video or health)."""

    def __init__(self) -> None:
        super().__init__(width=320, height=568, fps=30)
        self.break_video = False
        self.healthy = True
        self.sick_checks = 0
        self.checked_sick = asyncio.Event()
        self.failed_starts_left = 0
        self.start_attempts = 0

    async def start(self) -> None:
        self.start_attempts += 1
        if self.failed_starts_left:
            self.failed_starts_left -= 1
            raise BackendError("no device yet")
        await super().start()

    async def packets(self, codec: str = H264) -> AsyncIterator[VideoPacket]:
        async for packet in super().packets(codec):
            if self.break_video:
                raise BackendError("device unplugged")
            yield packet

    async def health(self) -> Health:
        if self.healthy:
            return await super().health()
        self.sick_checks += 1
        if self.sick_checks >= 3:
            self.checked_sick.set()
        return Health(False, "device offline")


@pytest.fixture
async def server() -> AsyncIterator[ServerProcess]:
    async with running_server(heartbeat_interval=0.2, heartbeat_timeout=5.0) as s:
        yield s


class Ceiling(random.Random):
    """A backoff that always waits its whole ceiling (no jitter): exact timing."""

    def uniform(self, a: float, b: float) -> float:
        return b


@contextlib.asynccontextmanager
async def worker_in_process(
    server: ServerProcess,
    backend: BreakableBackend,
    rng: random.Random | None = None,
    **overrides: Any,
) -> AsyncIterator[Worker]:
    link = {"restart_delay": 0.05, "backoff_base": 0.05, "backoff_cap": 0.2, "health_interval": 0.1}
    names = {f.name for f in dataclasses.fields(LinkSettings)}
    link.update({k: v for k, v in overrides.items() if k in names})
    rest = {k: v for k, v in overrides.items() if k not in names}
    settings = WorkerSettings(server=server.ws_base, link=LinkSettings(**link), **rest)
    worker = Worker(settings, backend, rng)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop.set()
        await asyncio.wait_for(task, TIMEOUT)


async def registered_ids(server: ServerProcess, after: int = 0) -> tuple[int, str]:
    m = await server.wait_for_log(r"worker_registered worker=(\S+)", after=after)
    return server.lines.index(m.string), m.group(1)


async def test_backend_failure_mid_session_ends_it_and_the_worker_starts_over(
    server: ServerProcess,
) -> None:
    backend = BreakableBackend()
    async with asyncio.timeout(TIMEOUT), worker_in_process(server, backend):
        line, first_id = await registered_ids(server)
        async with TestPeer.join(server.url) as peer:
            await peer.wait_connected()
            await peer.touch(0.5, 0.5)
            await peer.wait_mark(0.5, 0.5)
            backend.break_video = True
            # The worker drops out; the server tells the player its worker failed.
            await peer.shutdown_event.wait()
            assert peer.shutdown is not None and peer.shutdown.reason == "worker_failed"
        backend.break_video = False
        _, second_id = await registered_ids(server, after=line + 1)
        assert second_id != first_id
        assert backend.resets == 1


async def test_unhealthy_backend_leaves_the_pool_until_it_recovers(
    server: ServerProcess,
) -> None:
    backend = BreakableBackend()
    async with asyncio.timeout(TIMEOUT), worker_in_process(server, backend) as worker:
        line, first_id = await registered_ids(server)
        backend.healthy = False
        await server.wait_for_log(rf"worker_disconnected .*worker={first_id}")
        # Several failed checks in a row, and no registration meanwhile.
        await backend.checked_sick.wait()
        status = await server.status()
        assert status["workers"] == [] and worker.registrations == 1
        backend.healthy = True
        _, second_id = await registered_ids(server, after=line + 1)
        assert second_id != first_id


async def test_a_backend_that_cannot_start_is_retried_until_it_can(server: ServerProcess) -> None:
    backend = BreakableBackend()
    backend.failed_starts_left = 2
    async with asyncio.timeout(TIMEOUT), worker_in_process(server, backend):
        await registered_ids(server)
        assert backend.start_attempts == 3


async def worker_metrics(worker: Worker) -> str:
    assert worker.metrics_port is not None
    url = f"http://127.0.0.1:{worker.metrics_port}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        return await r.text()


async def test_a_game_failing_while_idle_leaves_the_pool_at_once(server: ServerProcess) -> None:
    """Pushed, not polled: the health poll is 30 s away, yet the server drops
    the worker within a fraction of a second, and a player who joins right
    then is rejected instead of being handed a dead game."""
    backend = BreakableBackend()
    # A 1 s backoff, jitter-free, keeps it out while the player joins.
    settings = dict(health_interval=30.0, metrics_port=0, backoff_base=1.0, backoff_cap=1.0)
    async with (
        asyncio.timeout(TIMEOUT),
        worker_in_process(server, backend, Ceiling(), **settings) as worker,
    ):
        line, first_id = await registered_ids(server)
        failed_at = time.monotonic()
        backend.fail("drill: the game crashed")
        await server.wait_for_log(rf"worker_disconnected .*worker={first_id}")
        noticed = time.monotonic() - failed_at
        async with TestPeer.join(server.url) as peer:
            await peer.socket_closed.wait()
            assert peer.assigned is None
            assert peer.rejected is not None and peer.rejected.reason == "no_worker_available"
        assert noticed < 1.0, noticed
        # reset() brings the game back; only then is it a (new) worker again.
        _, second_id = await registered_ids(server, after=line + 1)
        assert second_id != first_id and backend.resets == 1
        metrics = await worker_metrics(worker)
        assert f'playcast_worker_backend_failures_total{{game="{GAME}",kind="idle"}} 1.0' in metrics
        assert f'playcast_worker_registrations_total{{game="{GAME}"}} 2.0' in metrics
        async with TestPeer.join(server.url) as peer:
            await peer.wait_connected()
            assert peer.assigned is not None and peer.assigned.worker_id == second_id
