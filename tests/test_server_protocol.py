"""PROTOCOL.md, section by section, over real sockets against a real server process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from playcast_testing.scripted import ScriptedPeer, connect
from playcast_testing.servers import ServerProcess, running_server

from playcast.protocol import (
    Answer,
    Assigned,
    Candidate,
    Error,
    IceCandidate,
    InactivityWarning,
    Input,
    Join,
    Leave,
    Offer,
    Pong,
    Register,
    Registered,
    Rejected,
    SessionStart,
    Shutdown,
    ShutdownAck,
    WebrtcConnected,
    WebrtcFailed,
)

GAME = "com.supercell.clashroyale"
FAST = {"heartbeat_interval": 0.2, "heartbeat_timeout": 1.0, "shutdown_ack_timeout": 1.0}


async def consistent(server: ServerProcess) -> dict[str, Any]:
    return await server.assert_consistent()


async def handshake(worker: ScriptedPeer, client: ScriptedPeer) -> str:
    start = await worker.expect(SessionStart)
    assigned = await client.expect(Assigned)
    sid = assigned.session_id
    assert start.session_id == sid
    await worker.send(Offer(session_id=sid, sdp="offer"))
    assert await client.expect(Offer) == Offer(session_id=sid, sdp="offer")
    await client.send(Answer(session_id=sid, sdp="answer"))
    assert await worker.expect(Answer) == Answer(session_id=sid, sdp="answer")
    await worker.send(WebrtcConnected(session_id=sid))
    await client.send(WebrtcConnected(session_id=sid))
    return sid


@contextlib.asynccontextmanager
async def in_session(
    *, worker_pongs: bool = True, client_pongs: bool = True, **settings: float
) -> AsyncIterator[tuple[ServerProcess, ScriptedPeer, ScriptedPeer, str]]:
    """A real server, a registered worker and a joined client through the handshake."""
    async with (
        running_server(**{**FAST, **settings}) as server,
        connect(server.ws_url("worker"), auto_pong=worker_pongs) as w,
        connect(server.ws_url("client"), auto_pong=client_pongs) as c,
    ):
        await w.send(Register(game=GAME))
        await w.expect(Registered)
        await c.send(Join())
        sid = await handshake(w, c)
        yield server, w, c, sid


async def test_http_endpoints() -> None:
    async with running_server() as server, aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/healthz") as r:
            assert r.status == 200 and (await r.json())["ok"] is True
        async with http.get(f"{server.url}/api/status") as r:
            doc = await r.json()
            assert doc.pop("node").startswith("n-")  # a lone server names itself too
            assert doc == {
                "workers": [],
                "clients": [],
                "sessions": [],
                "games": ["com.supercell.clashroyale"],
                "closing": 0,
                "stopping": False,
            }
        async with http.get(f"{server.url}/metrics") as r:
            text = await r.text()
            assert r.status == 200
            for name in ("playcast_connections", "playcast_sessions_started_total"):
                assert name in text
        async with http.get(f"{server.url}/") as r:
            assert r.status == 200 and "<html" in (await r.text()).lower()
            assert r.headers["Cache-Control"] == "no-cache"
        async with http.get(f"{server.url}/static/app.js") as r:
            assert r.status == 200 and r.headers["Cache-Control"] == "no-cache"
        async with http.get(f"{server.url}/static/../../signaling/main.py") as r:
            assert r.status in (403, 404)


async def test_registration_and_status_fields() -> None:
    async with running_server(**FAST) as server, connect(server.ws_url("worker")) as w:
        await w.send(Register(game=GAME, port=4321))
        reg = await w.expect(Registered)
        assert (reg.heartbeat_interval, reg.heartbeat_timeout) == (0.2, 1.0)
        doc = await consistent(server)
        (record,) = doc["workers"]
        assert record["id"] == reg.worker_id
        assert record["status"] == "available" and record["client_id"] is None
        assert record["game"] == GAME and record["addr"] == "127.0.0.1"
        assert record["port"] == 4321
        assert record["last_ping_age"] >= 0


async def test_client_gets_the_longest_waiting_worker_then_rejection() -> None:
    async with (
        running_server(**FAST) as server,
        connect(server.ws_url("worker")) as w1,
        connect(server.ws_url("worker")) as w2,
    ):
        await w1.send(Register(game=GAME))
        first = (await w1.expect(Registered)).worker_id
        await w2.send(Register(game=GAME))
        second = (await w2.expect(Registered)).worker_id
        async with (
            connect(server.ws_url("client")) as c1,
            connect(server.ws_url("client")) as c2,
            connect(server.ws_url("client")) as c3,
        ):
            await c1.send(Join())
            assert (await c1.expect(Assigned)).worker_id == first
            await c2.send(Join(game=GAME))
            assert (await c2.expect(Assigned)).worker_id == second
            await c3.send(Join())
            rejected = await c3.expect(Rejected)
            assert rejected.reason == "no_worker_available" and rejected.message
            assert await c3.wait_closed() == 1000
            doc = await consistent(server)
            assert {c["connection_state"] for c in doc["clients"]} == {"connecting"}
            assert {w["status"] for w in doc["workers"]} == {"busy"}


async def test_full_session_relays_and_ends_with_leave() -> None:
    async with running_server(**FAST) as server, connect(server.ws_url("worker")) as w:
        await w.send(Register(game=GAME))
        await w.expect(Registered)
        async with connect(server.ws_url("client")) as c:
            await c.send(Join())
            sid = await handshake(w, c)
            cand = Candidate(
                candidate="candidate:1 1 udp 2122 127.0.0.1 5000 typ host", sdp_mid="0"
            )
            for _ in range(4):
                await w.send(IceCandidate(session_id=sid, candidate=cand))
                await c.send(IceCandidate(session_id=sid, candidate=cand))
            await c.send(IceCandidate(session_id=sid, candidate=None))
            for _ in range(4):
                assert await c.expect(IceCandidate) == IceCandidate(session_id=sid, candidate=cand)
                assert await w.expect(IceCandidate) == IceCandidate(session_id=sid, candidate=cand)
            assert (await w.expect(IceCandidate)).candidate is None
            doc = await server.wait_status(
                lambda d: d["clients"] and d["clients"][0]["connection_state"] == "connected"
            )
            assert doc["sessions"][0]["phase"] == "connected"
            await c.send(Input(event={"type": "touch", "action": "down", "x": 0.5, "y": 0.5}))
            await c.send(Leave())
            assert await c.wait_closed() == 1000
        shutdown = await w.expect(Shutdown)
        assert shutdown.reason == "client_left"
        await w.send(ShutdownAck(ok=True, detail="reset"))
        assert await w.wait_closed() == 1000
        await server.wait_status(lambda d: not d["workers"] and not d["clients"])
        await server.wait_for_log(r"worker_shutdown_ack reason=client_left ok=True")


async def test_worker_disconnect_is_worker_failed() -> None:
    async with running_server(**FAST) as server, connect(server.ws_url("client")) as c:
        async with connect(server.ws_url("worker")) as w:
            await w.send(Register(game=GAME))
            await w.expect(Registered)
            await c.send(Join())
            await handshake(w, c)
        shutdown = await c.expect(Shutdown)
        assert shutdown.reason == "worker_failed" and shutdown.message
        await c.send(ShutdownAck(ok=True, detail=""))
        assert await c.wait_closed() == 1000
        await consistent(server)


async def test_client_disconnect_is_client_failed() -> None:
    async with running_server(**FAST) as server, connect(server.ws_url("worker")) as w:
        await w.send(Register(game=GAME))
        await w.expect(Registered)
        async with connect(server.ws_url("client")) as c:
            await c.send(Join())
            await handshake(w, c)
        assert (await w.expect(Shutdown)).reason == "client_failed"


async def test_silent_worker_times_out_and_its_client_is_told() -> None:
    async with in_session(worker_pongs=False) as (server, w, c, _):
        assert (await w.expect(Shutdown)).reason == "heartbeat_timeout"
        assert w.pings >= 3  # it was pinged, and said nothing
        assert await w.wait_closed() == 1000
        assert (await c.expect(Shutdown)).reason == "worker_failed"
        await server.wait_for_log(r"worker_heartbeat_timeout")


async def test_silent_client_times_out_and_its_worker_is_told() -> None:
    async with in_session(client_pongs=False) as (_, w, c, _):
        assert (await c.expect(Shutdown)).reason == "heartbeat_timeout"
        assert (await w.expect(Shutdown)).reason == "client_failed"


async def test_inactivity_warning_then_timeout_for_both() -> None:
    async with in_session(inactivity_timeout=1.5, inactivity_warning=1.0) as (_, w, c, _):
        warning = await c.expect(InactivityWarning)
        assert 0 < warning.seconds_left <= 1.0
        assert (await c.expect(Shutdown)).reason == "inactivity_timeout"
        assert (await w.expect(Shutdown)).reason == "inactivity_timeout"


async def test_input_keeps_the_session_alive() -> None:
    async with in_session(inactivity_timeout=1.0, inactivity_warning=0) as (server, w, c, _):
        # Input steadily for three timeouts' worth of pings: never ended.
        while c.pings < 20:
            await c.send(Input(event={"type": "key"}))
            await asyncio.sleep(0.1)  # the player's pace, not a wait for an event
        assert c.inbox.empty() and w.inbox.empty()
        doc = await consistent(server)
        assert doc["clients"][0]["connection_state"] == "connected"


async def test_handshake_failed_ends_both() -> None:
    async with (
        running_server(**FAST) as server,
        connect(server.ws_url("worker")) as w,
        connect(server.ws_url("client")) as c,
    ):
        await w.send(Register(game=GAME))
        await w.expect(Registered)
        await c.send(Join())
        sid = (await c.expect(Assigned)).session_id
        await w.expect(SessionStart)
        await w.send(WebrtcFailed(session_id=sid, reason="no codec"))
        assert (await c.expect(Shutdown)).reason == "handshake_failed"
        assert (await w.expect(Shutdown)).reason == "handshake_failed"


async def test_handshake_timeout_ends_both() -> None:
    async with (
        running_server(**FAST, handshake_timeout=0.6) as server,
        connect(server.ws_url("worker")) as w,
        connect(server.ws_url("client")) as c,
    ):
        await w.send(Register(game=GAME))
        await w.expect(Registered)
        await c.send(Join())
        await c.expect(Assigned)
        await w.expect(SessionStart)
        assert (await c.expect(Shutdown)).reason == "handshake_timeout"
        assert (await w.expect(Shutdown)).reason == "handshake_timeout"


async def test_error_codes_keep_the_socket_open() -> None:
    async with (
        running_server(**FAST) as server,
        connect(server.ws_url("worker")) as w,
        connect(server.ws_url("client")) as c,
    ):
        await w.send_raw("{not json")
        assert (await w.expect(Error)).code == "bad_message"
        await w.send_raw({"type": "offer", "session_id": "x", "sdp": "y"})
        assert (await w.expect(Error)).code == "not_registered"
        await c.send_raw({"type": "input", "event": {}})
        assert (await c.expect(Error)).code == "not_registered"
        await c.send(Pong(ts=0.0))  # always fine
        await w.send(Register(game=GAME))
        await w.expect(Registered)
        await w.send(Join())
        assert (await w.expect(Error)).code == "unexpected_message"
        await c.send_raw({"type": "join", "game": 12})
        err = await c.expect(Error)
        assert err.code == "bad_message" and "game" in err.message
        await c.send(Join())
        assert (await c.expect(Assigned)).worker_id
        await c.ws.send_bytes(b"\x00\x01")
        assert (await c.expect(Error)).code == "bad_message"
        assert not w.closed.is_set() and not c.closed.is_set()
        await consistent(server)


async def test_frame_over_64_kib_is_refused_with_1009() -> None:
    async with in_session() as (server, w, c, sid):
        await w.send_raw(json.dumps({"type": "offer", "session_id": sid, "sdp": "x" * 65536}))
        assert await w.wait_closed() == 1009
        assert (await c.expect(Shutdown)).reason == "worker_failed"
        await consistent(server)


async def test_flood_is_closed_with_1008_and_partner_shut_down() -> None:
    async with (
        running_server(**FAST) as server,
        connect(server.ws_url("worker")) as w,
        connect(server.ws_url("client")) as c,
        connect(server.ws_url("client")) as bystander,
    ):
        await w.send(Register(game=GAME))
        await w.expect(Registered)
        await c.send(Join())
        await handshake(w, c)
        for _ in range(2000):  # far past the burst of 400
            try:
                await c.send_raw('{"type":"input","event":{}}')
            except ConnectionError:
                break  # closed mid-flood; which close code the flooder reads is a race
        await c.wait_closed()
        await server.wait_for_log(r"client_flood_closed limit=message rate")
        assert (await w.expect(Shutdown)).reason == "client_failed"
        await bystander.send(Pong(ts=1.0))  # the server still serves everyone else
        doc = await consistent(server)
        assert len(doc["clients"]) == 1
        assert 'playcast_rate_limit_closes_total{role="client"} 1.0' in await server.metrics()


async def test_sigterm_shuts_everyone_down_waits_for_acks_and_exits_0() -> None:
    async with (
        running_server(**FAST) as server,
        connect(server.ws_url("worker")) as busy,
        connect(server.ws_url("worker")) as idle,
        connect(server.ws_url("client")) as c,
        connect(server.ws_url("client")) as waiting,
    ):
        for w in (busy, idle):
            await w.send(Register(game=GAME))
            await w.expect(Registered)
        await c.send(Join())
        await handshake(busy, c)
        await waiting.send(Pong(ts=0))
        await server.wait_status(lambda d: len(d["clients"]) == 2)
        server.send_signal(signal.SIGTERM)
        for peer in (busy, idle, c, waiting):
            assert (await peer.expect(Shutdown)).reason == "server_shutdown"
            await peer.send(ShutdownAck(ok=True, detail=""))
            assert await peer.wait_closed() == 1000
        assert await server.stop(sig=None) == 0
        await server.wait_for_log(r"server_stopped unacked=0")


async def test_sigterm_does_not_wait_forever_for_a_silent_peer() -> None:
    async with (
        running_server(**FAST) as server,
        connect(server.ws_url("worker"), auto_pong=False) as w,
    ):
        await w.send(Register(game=GAME))
        await w.expect(Registered)
        server.send_signal(signal.SIGINT)
        assert (await w.expect(Shutdown)).reason == "server_shutdown"
        assert await w.wait_closed() == 1000  # closed at the ack deadline
        assert await server.stop(sig=None) == 0


async def test_new_connections_are_refused_while_stopping() -> None:
    async with running_server(**FAST) as server, connect(server.ws_url("worker")) as w:
        await w.send(Register(game=GAME))
        await w.expect(Registered)
        server.send_signal(signal.SIGTERM)
        await w.expect(Shutdown)  # the server is now draining; w does not ack
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await http.ws_connect(server.ws_url("client"))
            assert info.value.status == 503


async def test_settings_come_from_the_environment() -> None:
    env = {"PLAYCAST_HEARTBEAT_INTERVAL": "0.3", "PLAYCAST_HEARTBEAT_TIMEOUT": "2.5"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "playcast", "server", "--help",
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert "default: 0.3" in out.decode() and "default: 2.5" in out.decode()
    os.environ.update(env)
    try:
        async with running_server() as server, connect(server.ws_url("worker")) as w:
            await w.send(Register(game=GAME))
            reg = await w.expect(Registered)
            assert (reg.heartbeat_interval, reg.heartbeat_timeout) == (0.3, 2.5)
    finally:
        for key in env:
            del os.environ[key]


async def test_ice_servers_from_flags_reach_both_peers() -> None:
    turn = '{"urls":["turn:turn.example.org:3478"],"username":"u","credential":"p"}'
    async with (
        running_server(
            "--ice-server", "stun:stun.example.org:3478", "--ice-server", turn
        ) as server,
        connect(server.ws_url("worker")) as w,
        connect(server.ws_url("client")) as c,
    ):
        await w.send(Register(game=GAME))
        await w.expect(Registered)
        await c.send(Join())
        assigned = await c.expect(Assigned)
        start = await w.expect(SessionStart)
        assert assigned.ice_servers == start.ice_servers
        assert [s.urls for s in start.ice_servers] == [
            ["stun:stun.example.org:3478"],
            ["turn:turn.example.org:3478"],
        ]
        assert start.ice_servers[1].credential == "p"
