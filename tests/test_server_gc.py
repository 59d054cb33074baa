"""Finished sessions are freed by reference counting alone: no reference cycles.

The server runs with its cyclic collector off (``--debug-gc``); on SIGUSR1 it
runs one collection and logs what it found (``gc_report unreachable=N``). A
cycle left by each session would make the collector walk every session's
objects, the tail of the setup latency (issue 10).
"""

from __future__ import annotations

import gc
import signal

from playcast_testing.scripted import ScriptedPeer, connect
from playcast_testing.servers import ServerProcess, running_server

from playcast.protocol import (
    Answer,
    Assigned,
    Candidate,
    IceCandidate,
    Input,
    Join,
    Leave,
    Offer,
    Register,
    Registered,
    Rejected,
    SessionStart,
    Shutdown,
    ShutdownAck,
    WebrtcConnected,
)
from playcast.signaling.app import gcpolicy

GAME = "com.supercell.clashroyale"
FAST = {"heartbeat_interval": 0.2, "heartbeat_timeout": 2.0, "shutdown_ack_timeout": 2.0}
CAND = Candidate(candidate="candidate:1 1 udp 2122 127.0.0.1 5000 typ host", sdp_mid="0")


async def gc_report(server: ServerProcess) -> tuple[int, str]:
    """What one collection finds now: (objects, their types as logged)."""
    after = len(server.lines)
    server.send_signal(signal.SIGUSR1)
    m = await server.wait_for_log(r"gc_report unreachable=(\d+) types=(.*)", after=after)
    return int(m.group(1)), m.group(2)


async def idle(server: ServerProcess) -> None:
    """Every session over and every socket gone from the server's records."""
    await server.wait_status(lambda d: not d["clients"] and not d["sessions"] and not d["workers"])


async def handshake(w: ScriptedPeer, c: ScriptedPeer) -> str:
    await c.send(Join(game=GAME))
    sid = (await w.expect(SessionStart)).session_id
    assert (await c.expect(Assigned)).session_id == sid
    await w.send(Offer(session_id=sid, sdp="v=0 offer"))
    await c.expect(Offer)
    await c.send(Answer(session_id=sid, sdp="v=0 answer"))
    await w.expect(Answer)
    for peer in (w, c):
        for _ in range(3):
            await peer.send(IceCandidate(session_id=sid, candidate=CAND))
        await peer.send(WebrtcConnected(session_id=sid))
        await peer.send(IceCandidate(session_id=sid, candidate=None))
    for peer in (w, c):
        for _ in range(4):
            await peer.expect(IceCandidate)
    return sid


async def session_left(server: ServerProcess) -> None:
    """The bench's session: the client leaves, the worker acks and goes."""
    async with connect(server.ws_url("worker")) as w:
        await w.send(Register(game=GAME))
        await w.expect(Registered)
        async with connect(server.ws_url("client")) as c:
            await handshake(w, c)
            await c.send(Input(event={"type": "touch", "x": 0.5, "y": 0.5}))
            await c.send(Leave())
            assert await c.wait_closed() == 1000
        assert (await w.expect(Shutdown)).reason == "client_left"
        await w.send(ShutdownAck(ok=True, detail="reset"))
        assert await w.wait_closed() == 1000


async def session_dropped(server: ServerProcess) -> None:
    """The client's socket drops mid-session; the worker is told client_failed."""
    async with connect(server.ws_url("worker")) as w:
        await w.send(Register(game=GAME))
        await w.expect(Registered)
        async with connect(server.ws_url("client")) as c:
            await handshake(w, c)
            await c.send_raw("not json")  # an error path too
            await c.recv()
        assert (await w.expect(Shutdown)).reason == "client_failed"
        await w.send(ShutdownAck(ok=True, detail="reset"))
        assert await w.wait_closed() == 1000


async def rejected(server: ServerProcess) -> None:
    async with connect(server.ws_url("client")) as c:
        await c.send(Join(game=GAME))
        assert (await c.expect(Rejected)).reason == "no_worker_available"
        assert await c.wait_closed() == 1000


async def test_finished_sessions_leave_nothing_for_the_collector() -> None:
    async with running_server("--debug-gc", **FAST) as server:
        # One of each first: whatever is created once, on first use, is not
        # a per-session leak (imports, caches); the baseline then starts at 0.
        await session_left(server)
        await session_dropped(server)
        await rejected(server)
        await idle(server)
        await gc_report(server)
        for _ in range(10):
            await session_left(server)
        await session_dropped(server)
        await session_dropped(server)
        await rejected(server)
        await idle(server)
        found, types = await gc_report(server)
        assert found == 0, f"{found} objects in reference cycles after 13 sessions: {types}"


def test_the_report_counts_what_a_collection_finds() -> None:
    # The check above can fail: a cycle made here is counted and named.
    gc.collect()

    class Knot:
        pass

    knot = Knot()
    knot.self = knot  # type: ignore[attr-defined]
    del knot
    assert gcpolicy.report() >= 1  # the object (its __dict__ too, if made)
    assert gcpolicy.report() == 0  # and it was freed, not kept


def test_after_startup_freezes_what_lives_and_raises_the_young_threshold() -> None:
    threshold = gc.get_threshold()
    try:
        gcpolicy.after_startup()
        assert gc.get_freeze_count() > 1000  # this process's modules, at least
        assert gc.get_threshold() == (gcpolicy.YOUNG_THRESHOLD, *threshold[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
