"""Faults of whole processes and links, with real servers, workers and players.

After every scenario the server's invariants hold and its metrics agree with
/api/status (ServerProcess.assert_consistent).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from collections.abc import AsyncIterator

from playcast_testing.peer import TestPeer
from playcast_testing.proxy import blackhole_proxy
from playcast_testing.servers import running_server
from playcast_testing.workers import WorkerProcess, free_port, running_worker

TIMEOUT = 90
BACKOFF_CAP = 0.5  # running_worker's FAST_RESTART
SERVER = {
    "heartbeat_interval": 0.2,
    "heartbeat_timeout": 2.0,
    "inactivity_timeout": 120.0,
    "handshake_timeout": 30.0,
    "shutdown_ack_timeout": 2.0,
}
SMALL = ("--width", "180", "--height", "320", "--fps", "15")  # five streams on two cores


async def play(peer: TestPeer) -> None:
    await peer.wait_connected()
    await peer.touch(0.5, 0.5)
    await peer.wait_mark(0.5, 0.5)


@contextlib.asynccontextmanager
async def workers(server: str, n: int) -> AsyncIterator[list[WorkerProcess]]:
    async with contextlib.AsyncExitStack() as stack:
        procs = [await stack.enter_async_context(running_worker(server, *SMALL)) for _ in range(n)]
        yield procs


async def test_server_sigkill_under_five_sessions_then_everyone_comes_back() -> None:
    port = free_port()
    async with (
        asyncio.timeout(TIMEOUT),
        running_server(**SERVER, port=port) as first,
        workers(first.ws_base, 5) as pool,
        contextlib.AsyncExitStack() as players,
    ):
        marks = [(await w.wait_registered())[0] for w in pool]
        peers = [await players.enter_async_context(TestPeer.join(first.url)) for _ in pool]
        await asyncio.gather(*(play(p) for p in peers))
        status = await first.assert_consistent()
        assert len(status["sessions"]) == 5

        first.proc.kill()
        # Players hear nothing from a dead server: their sockets just close
        # (the page shows server_lost), and nobody sent them a shutdown.
        await asyncio.gather(*(p.socket_closed.wait() for p in peers))
        assert all(p.shutdown is None for p in peers)
        lost = [
            (await w.wait_for_log(r"server connection lost", after=m))[0]
            for w, m in zip(pool, marks, strict=True)
        ]
        loop = asyncio.get_running_loop()
        async with running_server(**SERVER, port=port) as second:
            started = loop.time()
            ids = [(await w.wait_registered(after=i))[1] for w, i in zip(pool, lost, strict=True)]
            took = loop.time() - started
            doc = await second.wait_status(lambda d: len(d["workers"]) == 5)
            assert {w["id"] for w in doc["workers"]} == set(ids)
            assert {w["status"] for w in doc["workers"]} == {"available"}
            await second.assert_consistent()
        # Each waited at most the backoff cap between tries (plus process slack).
        for w in pool:
            delays = [float(x) for x in re.findall(r"restarting in ([\d.]+) s", "\n".join(w.lines))]
            assert delays and max(delays) <= BACKOFF_CAP
        assert took < BACKOFF_CAP + 10


async def test_worker_sigkill_mid_session() -> None:
    async with (
        asyncio.timeout(TIMEOUT),
        running_server(**SERVER) as server,
        running_worker(server.ws_base, *SMALL) as worker,
    ):
        await worker.wait_registered()
        async with TestPeer.join(server.url) as peer:
            await play(peer)
            worker.proc.kill()
            await asyncio.wait_for(peer.shutdown_event.wait(), TIMEOUT)
            assert peer.shutdown is not None and peer.shutdown.reason == "worker_failed"
        doc = await server.wait_status(lambda d: not d["workers"] and not d["clients"])
        assert not doc["sessions"]
        await server.assert_consistent()


async def test_worker_sigstop_times_out_then_sigcont_restarts_cleanly() -> None:
    async with (
        asyncio.timeout(TIMEOUT),
        running_server(**SERVER) as server,
        running_worker(server.ws_base, *SMALL) as worker,
    ):
        mark, old_id = await worker.wait_registered()
        async with TestPeer.join(server.url) as peer:
            await play(peer)
            worker.send_signal(signal.SIGSTOP)
            try:
                await asyncio.wait_for(peer.shutdown_event.wait(), TIMEOUT)
                assert peer.shutdown is not None and peer.shutdown.reason == "worker_failed"
                await server.wait_for_log(rf"worker_heartbeat_timeout worker={old_id}")
                await server.assert_consistent()
            finally:
                worker.send_signal(signal.SIGCONT)
        # Thawed, it finds its socket closed (or its pings long gone), ends the
        # session, restarts and registers as a new worker.
        _, new_id = await worker.wait_registered(after=mark + 1)
        assert new_id != old_id
        doc = await server.wait_status(
            lambda d: [(w["id"], w["status"]) for w in d["workers"]] == [(new_id, "available")]
        )
        assert not doc["sessions"] and not doc["clients"]
        await server.assert_consistent()


async def test_a_blackholed_worker_link_is_detected_on_both_sides() -> None:
    timeout = SERVER["heartbeat_timeout"]
    async with (
        asyncio.timeout(TIMEOUT),
        running_server(**SERVER) as server,
        blackhole_proxy(server.port) as proxy,
        running_worker(f"ws://127.0.0.1:{proxy.port}", *SMALL) as worker,
    ):
        mark, old_id = await worker.wait_registered()
        async with TestPeer.join(server.url) as peer:
            await play(peer)
            loop = asyncio.get_running_loop()
            proxy.blackhole()
            cut = loop.time()
            # The server: no pong for the timeout -> the player is told.
            await asyncio.wait_for(peer.shutdown_event.wait(), TIMEOUT)
            server_noticed = loop.time() - cut
            assert peer.shutdown is not None and peer.shutdown.reason == "worker_failed"
            # The worker: no ping for the timeout -> it gives the server up.
            i, _ = await worker.wait_for_log(r"server silent: no ping", after=mark)
            worker_noticed = loop.time() - cut
        for noticed in (server_noticed, worker_noticed):
            assert timeout - 0.5 <= noticed < 3 * timeout
        await server.assert_consistent()
        proxy.restore()
        _, new_id = await worker.wait_registered(after=i)
        assert new_id != old_id
        await server.wait_status(lambda d: [w["id"] for w in d["workers"]] == [new_id])
        await server.assert_consistent()
