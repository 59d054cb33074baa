"""The worker program end to end: a real server process, a real worker process,
and the aiortc test peer playing the browser over the real protocol.

Every test follows the worker through its log and the server's; waits are on
log lines and events, with generous outer timeouts for a loaded machine.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from playcast_testing.peer import PeerOptions, TestPeer
from playcast_testing.servers import ServerProcess, running_server
from playcast_testing.workers import WorkerProcess, free_port, running_worker

TIMEOUT = 60

# Fast heartbeats, but a timeout no loaded machine should trip by accident.
SERVER = {
    "heartbeat_interval": 0.2,
    "heartbeat_timeout": 5.0,
    "inactivity_timeout": 60.0,
    "inactivity_warning": 0.0,
    "handshake_timeout": 20.0,
    "shutdown_ack_timeout": 5.0,
}


@dataclass
class Rig:
    server: ServerProcess
    worker: WorkerProcess
    worker_id: str
    mark: int  # worker log index of that registration


@pytest.fixture
def settings() -> dict[str, float]:
    return dict(SERVER)


@pytest.fixture
async def rig(settings: dict[str, float]) -> AsyncIterator[Rig]:
    async with (
        asyncio.timeout(TIMEOUT * 2),
        running_server(**settings) as server,
        running_worker(server.ws_base) as worker,
    ):
        mark, worker_id = await worker.wait_registered()
        yield Rig(server, worker, worker_id, mark)


async def play_until_touch_shows(peer: TestPeer) -> None:
    await peer.wait_connected()
    await peer.touch(0.5, 0.4)
    await peer.wait_mark(0.5, 0.4)


async def expect_restart(rig: Rig, reason: str, *, ack: bool = True) -> str:
    """The worker saw ``reason``, acknowledged it, and came back as a new worker."""
    i, _ = await rig.worker.wait_for_log(rf"shutdown reason={reason}\b", after=rig.mark)
    if ack:
        m = await rig.server.wait_for_log(
            rf"worker_shutdown_ack reason={reason} ok=(\w+) .*worker={rig.worker_id}"
        )
        assert m.group(1) == "True", m.group(0)
    _, new_id = await rig.worker.wait_registered(after=i)
    assert new_id != rig.worker_id
    doc = await rig.server.wait_status(
        lambda d: [(w["id"], w["status"]) for w in d["workers"]] == [(new_id, "available")]
    )
    assert not doc["sessions"]
    return new_id


# --- every end of a session ------------------------------------------------


async def test_client_left(rig: Rig) -> None:
    async with TestPeer.join(rig.server.url) as peer:
        await play_until_touch_shows(peer)
        await peer.leave()
        new_id = await expect_restart(rig, "client_left")
    # The new worker serves the next player from a fresh game.
    async with TestPeer.join(rig.server.url) as peer:
        await peer.wait_connected()
        assert peer.assigned is not None and peer.assigned.worker_id == new_id
        viewer = peer.viewer
        assert viewer is not None and viewer.latest is not None
        assert not viewer.latest.shows_mark(0.5, 0.4)


async def test_client_failed(rig: Rig) -> None:
    async with TestPeer.join(rig.server.url) as peer:
        await play_until_touch_shows(peer)
        await peer.drop_socket()
        await expect_restart(rig, "client_failed")


@pytest.mark.parametrize("settings", [{**SERVER, "inactivity_timeout": 1.5}])
async def test_inactivity_timeout(rig: Rig) -> None:
    async with TestPeer.join(rig.server.url, PeerOptions(forward_inputs=False)) as peer:
        await expect_restart(rig, "inactivity_timeout")
        assert peer.shutdown is not None and peer.shutdown.reason == "inactivity_timeout"


async def test_handshake_failed_reported_by_the_client(rig: Rig) -> None:
    async with TestPeer.join(rig.server.url, PeerOptions(handshake="report_failure")):
        await expect_restart(rig, "handshake_failed")


async def test_handshake_failed_by_the_worker(rig: Rig) -> None:
    # An answer the worker cannot apply: it must say webrtc_failed, not hang or crash.
    async with TestPeer.join(rig.server.url, PeerOptions(handshake="bad_answer")):
        await rig.server.wait_for_log(rf"worker_webrtc_failed .*worker={rig.worker_id}")
        await expect_restart(rig, "handshake_failed")


@pytest.mark.parametrize("settings", [{**SERVER, "handshake_timeout": 1.0}])
async def test_handshake_timeout(rig: Rig) -> None:
    async with TestPeer.join(rig.server.url, PeerOptions(handshake="no_answer")):
        await expect_restart(rig, "handshake_timeout")


@pytest.mark.parametrize("settings", [{**SERVER, "heartbeat_timeout": 1.0}])
async def test_heartbeat_timeout_after_a_freeze(rig: Rig) -> None:
    """A worker frozen mid-session (SIGSTOP) misses its pongs; once it thaws it
    reads the server's shutdown before concluding anything from the silence."""
    async with TestPeer.join(rig.server.url) as peer:
        await play_until_touch_shows(peer)
        rig.worker.send_signal(signal.SIGSTOP)
        try:
            await rig.server.wait_for_log(rf"worker_heartbeat_timeout worker={rig.worker_id}")
            # Thaw only once the server's shutdown is in the worker's socket.
            await rig.worker.wait_unread_from(rig.server.port)
        finally:
            rig.worker.send_signal(signal.SIGCONT)
        # The server closed at once (no ack expected); the client was told.
        await expect_restart(rig, "heartbeat_timeout", ack=False)
        await asyncio.wait_for(peer.shutdown_event.wait(), TIMEOUT)
        assert peer.shutdown is not None and peer.shutdown.reason == "worker_failed"


async def test_server_shutdown_then_a_new_server() -> None:
    port = free_port()
    async with (
        asyncio.timeout(TIMEOUT * 2),
        running_server(**SERVER, port=port) as first,
        running_worker(first.ws_base) as worker,
    ):
        mark, old_id = await worker.wait_registered()
        async with TestPeer.join(first.url) as peer:
            await play_until_touch_shows(peer)
            first.send_signal(signal.SIGTERM)
            i, _ = await worker.wait_for_log(r"shutdown reason=server_shutdown", after=mark)
            m = await first.wait_for_log(r"worker_shutdown_ack reason=server_shutdown ok=(\w+)")
            assert m.group(1) == "True"
            assert await first.stop() == 0
        # The server is gone: the worker backs off until the next one is up.
        await worker.wait_for_log(r"cannot reach", after=i)
        async with running_server(**SERVER, port=port) as second:
            _, new_id = await worker.wait_registered(after=i)
            assert new_id != old_id
            await second.wait_status(lambda d: [w["id"] for w in d["workers"]] == [new_id])


# --- the server's own failures ----------------------------------------------


async def test_server_down_at_start_then_up() -> None:
    port = free_port()
    async with asyncio.timeout(TIMEOUT * 2):
        async with running_worker(f"ws://127.0.0.1:{port}") as worker:
            # Several attempts with growing, jittered delays, and no registration.
            i, _ = await worker.wait_for_log(r"cannot reach")
            await worker.wait_for_log(r"restarting in [\d.]+ s \(server unreachable\)")
            await worker.wait_for_log(r"cannot reach", after=i + 1)
            async with running_server(**SERVER, port=port) as server:
                _, worker_id = await worker.wait_registered()
                await server.wait_status(
                    lambda d: (
                        [(w["id"], w["status"]) for w in d["workers"]] == [(worker_id, "available")]
                    )
                )


async def test_server_killed_mid_session() -> None:
    port = free_port()
    async with (
        asyncio.timeout(TIMEOUT * 2),
        running_server(**SERVER, port=port) as first,
        running_worker(first.ws_base) as worker,
    ):
        mark, old_id = await worker.wait_registered()
        async with TestPeer.join(first.url) as peer:
            await play_until_touch_shows(peer)
            first.proc.kill()
            i, _ = await worker.wait_for_log(r"server connection lost", after=mark)
            await worker.wait_for_log(r"session \S+ ended", after=mark)
            await worker.wait_for_log(r"restarting in .*server lost", after=i)
            # The player's video stops: the worker really closed its side.
            viewer = peer.viewer
            assert viewer is not None
            await asyncio.wait_for(viewer.failed.wait(), TIMEOUT)
        async with running_server(**SERVER, port=port):
            _, new_id = await worker.wait_registered(after=i)
            assert new_id != old_id


@pytest.mark.parametrize("settings", [{**SERVER, "heartbeat_timeout": 1.0}])
async def test_server_frozen_is_detected_by_missing_pings(rig: Rig) -> None:
    rig.server.send_signal(signal.SIGSTOP)
    try:
        i, _ = await rig.worker.wait_for_log(r"server silent: no ping", after=rig.mark)
    finally:
        rig.server.send_signal(signal.SIGCONT)
    _, new_id = await rig.worker.wait_registered(after=i)
    assert new_id != rig.worker_id


# --- input ----------------------------------------------------------------


async def test_malformed_input_is_dropped_and_the_session_goes_on(rig: Rig) -> None:
    async with TestPeer.join(rig.server.url) as peer:
        viewer = await peer.wait_connected()
        bad: list[Callable[[], Awaitable[None] | None]] = [
            lambda: viewer.send_input("not json"),
            lambda: viewer.send_input('{"type":"touch","action":"down","x":3,"y":0.5}'),
            lambda: viewer.send_input('{"type":"warp","x":0.5}'),
            lambda: viewer.send_input("[1, 2, 3]"),
        ]
        for send in bad:
            send()
        seen = rig.mark
        for _ in bad:
            seen, _m = await rig.worker.wait_for_log(r"malformed input dropped", after=seen)
            seen += 1
        assert rig.worker.count(r"malformed input dropped") == len(bad)
        await play_until_touch_shows(peer)
        await peer.input({"type": "key", "action": "down", "key": "Escape"})
        status = await rig.server.status()
        assert [w["status"] for w in status["workers"]] == ["busy"]


@pytest.mark.parametrize("settings", [{**SERVER, "heartbeat_timeout": 10.0}])
@pytest.mark.parametrize("how", ["peer_connection", "input_channel"])
async def test_player_media_lost_after_connect_is_reported_at_once(rig: Rig, how: str) -> None:
    """The player's WebRTC side dies but its socket lives on: the worker says
    webrtc_failed at once, so the player hears worker_failed in about a second
    instead of after a heartbeat timeout (10 s here)."""
    async with TestPeer.join(rig.server.url) as peer:
        viewer = await peer.wait_connected()
        lost_at = time.monotonic()
        if how == "peer_connection":
            await viewer.close()
        else:
            assert viewer.channel is not None
            viewer.channel.close()
        m = await rig.server.wait_for_log(rf"worker_webrtc_failed (.*worker={rig.worker_id}.*)")
        assert "the player's" in m.group(1), m.group(0)
        await asyncio.wait_for(peer.shutdown_event.wait(), TIMEOUT)
        noticed = time.monotonic() - lost_at
        assert peer.shutdown is not None and peer.shutdown.reason == "worker_failed"
        assert noticed < 5.0, noticed
        await expect_restart(rig, "client_failed")
    assert rig.worker.count(r"no shutdown from the server") == 0


async def test_worker_token_is_presented_and_a_wrong_one_is_refused() -> None:
    async with (
        asyncio.timeout(TIMEOUT * 2),
        running_server("--worker-token", "s3cret", **SERVER) as server,
    ):
        async with running_worker(server.ws_base, "--worker-token", "wrong") as wrong:
            await wrong.wait_for_log(r"server refused this worker \(401\)")
            await wrong.wait_for_log(r"restarting in .*server unreachable")
            assert wrong.count("registered worker_id") == 0
        async with running_worker(server.ws_base, "--worker-token", "s3cret") as right:
            _, worker_id = await right.wait_registered()
            await server.wait_status(lambda d: [w["id"] for w in d["workers"]] == [worker_id])


# --- drain (SIGUSR1) ------------------------------------------------------------


async def test_sigusr1_finishes_the_session_then_exits_instead_of_registering(rig: Rig) -> None:
    async with TestPeer.join(rig.server.url) as peer:
        await play_until_touch_shows(peer)
        rig.worker.send_signal(signal.SIGUSR1)
        # The session goes on: the game still answers a touch after the drain.
        await rig.worker.wait_for_log(r"draining: exiting after the session", after=rig.mark)
        await peer.touch(0.3, 0.6)
        await peer.wait_mark(0.3, 0.6)
        assert peer.shutdown is None
        await peer.leave()
        assert await rig.worker.stop(sig=None, timeout=TIMEOUT) == 0
    assert rig.worker.count(r"shutdown_ack ok=True") == 1
    assert rig.worker.count(r"registered worker_id") == 1
    assert rig.worker.count(r"drained: exiting instead of registering again") == 1
    await rig.server.wait_status(lambda d: d["workers"] == [] and not d["sessions"])


async def test_sigusr1_while_idle_leaves_the_pool_at_once(rig: Rig) -> None:
    rig.worker.send_signal(signal.SIGUSR1)
    assert await rig.worker.stop(sig=None, timeout=TIMEOUT) == 0
    await rig.server.wait_status(lambda d: d["workers"] == [])
    assert rig.worker.count(r"left the server \(drained\)") == 1
