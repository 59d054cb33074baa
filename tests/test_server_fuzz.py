"""Random frames at both real endpoints: the server stays up and consistent,
and meets no internal error.

The hub contains every exception a rule raises (the peer is closed with
1011, the traceback logged, ``playcast_internal_errors`` counted), so "the
server stays up" alone would pass on a bug: after every example, a socket
closed with 1011, an ERROR or traceback in the server's log (kept in a file,
shown on failure) or a non-zero ``playcast_internal_errors`` fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from playcast_testing.metrics import metric_sum
from playcast_testing.servers import BlockingServer
from test_hub_properties import frames

INTERNAL = 1011


class Fuzzed:
    """The server under fuzz, and how far its log has been checked."""

    def __init__(self, server: BlockingServer) -> None:
        self.server = server
        self.url = server.url
        self.checked = 0

    def assert_no_internal_error(self) -> None:
        lines = self.server.log_path.read_text(errors="replace").splitlines()
        new, self.checked = lines[self.checked :], len(lines)
        first = next(
            (i for i, line in enumerate(new) if "Traceback" in line or " ERROR " in line), -1
        )
        assert first < 0, "internal error logged:\n" + "\n".join(new[first : first + 30])
        counted = metric_sum(self.server.metrics(), "playcast_internal_errors_total")
        assert counted == 0, f"playcast_internal_errors_total = {counted}"


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    log = Path(tmp_path_factory.mktemp("fuzz")) / "server.log"
    server = BlockingServer(
        ["--heartbeat-interval", "0.5", "--shutdown-ack-timeout", "0.5",
         "--handshake-timeout", "2"],
        log,
    )  # fmt: skip
    try:
        yield Fuzzed(server)
    finally:
        code, _ = server.stop()
    assert code == 0, server.log_tail()


async def _play(url: str, script: list[tuple[str, str]]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        sockets = {
            "worker": await http.ws_connect(f"{url}/ws/worker"),
            "client": await http.ws_connect(f"{url}/ws/client"),
        }
        for role, frame in script:
            ws = sockets[role]
            if ws.closed:
                continue
            with contextlib.suppress(ConnectionError):
                await ws.send_str(frame)
        for role, ws in sockets.items():
            await ws.close()
            assert ws.close_code != INTERNAL, f"the {role}'s socket was closed with 1011"
        async with http.get(f"{url}/api/status?check=1") as r:
            assert r.status == 200
            doc: dict[str, Any] = await r.json()
            return doc


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["worker", "client"]), frames()), max_size=30))
def test_random_frames_at_both_endpoints(fuzzed: Fuzzed, script: list[tuple[str, str]]) -> None:
    doc = asyncio.run(_play(fuzzed.url, script))
    assert doc["violations"] == []
    fuzzed.assert_no_internal_error()


HANDSHAKE = st.sampled_from(["offer", "answer", "ice_candidate", "webrtc_connected"])


async def _relay(url: str, script: list[tuple[int, str, int]]) -> list[tuple[str, list[Any]]]:
    """Two live sessions; each step: peer P sends a handshake message naming
    session S (its own or the stranger's). Returns what each peer received."""
    from playcast_testing.scripted import ScriptedPeer

    from playcast.protocol import Error, Join, Register, Registered

    async with aiohttp.ClientSession() as http:
        peers: list[ScriptedPeer] = []
        sids: list[str] = []
        for _ in range(2):
            w = ScriptedPeer(await http.ws_connect(f"{url}/ws/worker"))
            await w.send(Register(game="com.supercell.clashroyale"))
            await w.expect(Registered)
            c = ScriptedPeer(await http.ws_connect(f"{url}/ws/client"))
            await c.send(Join())
            assigned = await c.recv()
            sids.append(getattr(assigned, "session_id", "none"))
            await w.recv()  # session_start
            peers += [w, c]
        for who, kind, which in script:
            body: dict[str, Any] = {"type": kind, "session_id": sids[which]}
            if kind in ("offer", "answer"):
                body["sdp"] = "v=0"
            elif kind == "ice_candidate":
                body["candidate"] = {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"}
            with contextlib.suppress(ConnectionError):
                await peers[who].send_raw(body)
        received: list[tuple[str, list[Any]]] = []
        # Two sync rounds: after the second, everything relayed to a peer
        # was written before its own sync answer, so it has been read.
        for rnd in range(2):
            for i, peer in enumerate(peers):
                if peer.ws.closed:
                    continue
                await peer.send_raw({"type": f"sync-{rnd}-{i}"})
                got: list[Any] = []
                while True:
                    msg = await peer.recv(timeout=10)
                    if isinstance(msg, Error) and f"sync-{rnd}-{i}" in msg.message:
                        break
                    got.append(msg)
                received.append((sids[i // 2], got))
        for peer in peers:
            await peer.close()
            assert peer.close_code != INTERNAL, "a socket was closed with 1011"
        return received


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(0, 3), HANDSHAKE, st.integers(0, 1)), min_size=1, max_size=25)
)
def test_relaying_never_crosses_sessions_over_real_sockets(
    fuzzed: Fuzzed, script: list[tuple[int, str, int]]
) -> None:
    received = asyncio.run(_relay(fuzzed.url, script))
    fuzzed.assert_no_internal_error()
    relayed = sum(len(m) for _, m in received)
    event("relayed something" if relayed else "relayed nothing")
    for own_sid, messages in received:
        for msg in messages:
            sid = getattr(msg, "session_id", own_sid)
            assert sid == own_sid, f"a peer of {own_sid} got {msg!r}"
