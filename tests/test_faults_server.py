"""Server-side faults: a peer that never reads, floods, and what others see meanwhile."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct

import psutil
from playcast_testing.scripted import connect
from playcast_testing.servers import running_server

from playcast.protocol import (
    Assigned,
    Candidate,
    IceCandidate,
    Join,
    Offer,
    Register,
    Registered,
    SessionStart,
    Shutdown,
)

GAME = "com.supercell.clashroyale"


class DeafClient:
    """A raw WebSocket client that sends but never reads a byte after the upgrade."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter

    async def open(self, path: str) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fill up fast
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.port))
        self.reader, self.writer = await asyncio.open_connection(sock=sock)
        key = base64.b64encode(os.urandom(16)).decode()
        self.writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        assert b" 101 " in head.split(b"\r\n")[0]

    def send(self, obj: dict[str, object]) -> None:
        payload = json.dumps(obj).encode()
        mask = os.urandom(4)
        assert len(payload) < 126
        header = struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask
        self.writer.write(header + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def close(self) -> None:
        self.writer.transport.abort()


async def test_a_client_that_never_reads_is_closed_and_memory_stays_bounded() -> None:
    settings = {"heartbeat_interval": 5.0, "heartbeat_timeout": 30.0, "max_message_burst": 1000}
    async with (
        running_server("--max-send-queue-bytes", str(256 * 1024), **settings) as server,
        connect(server.ws_url("worker")) as w,
        connect(server.ws_url("worker")) as other_w,
        connect(server.ws_url("client")) as other_c,
    ):
        for worker in (w, other_w):
            await worker.send(Register(game=GAME))
            await worker.expect(Registered)
        deaf = DeafClient(server.port)
        await deaf.open("/ws/client")
        deaf.send({"type": "join"})
        sid = (await w.expect(SessionStart)).session_id
        await other_c.send(Join())
        other_sid = (await other_c.expect(Assigned)).session_id
        await other_w.expect(SessionStart)
        rss_before = psutil.Process(server.proc.pid).memory_info().rss

        await w.send(Offer(session_id=sid, sdp="o"))
        big = Candidate(candidate="candidate:" + "x" * 60_000)
        for _ in range(120):  # ~7 MB: past the kernel's buffers and the server's queue
            await w.send(IceCandidate(session_id=sid, candidate=big))
        shutdown = await w.recv()
        while not isinstance(shutdown, Shutdown):  # errors for candidates sent too late
            shutdown = await w.recv()
        assert shutdown.reason == "client_failed"
        await server.wait_for_log(r"client_slow_closed")
        rss_after = psutil.Process(server.proc.pid).memory_info().rss
        assert rss_after - rss_before < 24 * 1024 * 1024

        # The other session went on undisturbed the whole time.
        await other_w.send(Offer(session_id=other_sid, sdp="still here"))
        assert (await other_c.expect(Offer)).sdp == "still here"
        doc = await server.wait_status(lambda d: len(d["clients"]) == 1)
        assert doc["clients"][0]["session_id"] == other_sid
        deaf.close()


async def test_a_junk_flood_is_closed_while_other_sessions_carry_on() -> None:
    async with (
        running_server(heartbeat_interval=0.5, heartbeat_timeout=3.0) as server,
        connect(server.ws_url("worker")) as w,
        connect(server.ws_url("client")) as c,
        connect(server.ws_url("worker")) as flooder,
    ):
        await w.send(Register(game=GAME))
        await w.expect(Registered)
        await c.send(Join())
        sid = (await c.expect(Assigned)).session_id
        await w.expect(SessionStart)
        for _ in range(3000):
            try:
                await flooder.send_raw("junk")
            except ConnectionError:
                break
        await flooder.wait_closed()
        await server.wait_for_log(r"worker_flood_closed limit=error rate")
        await w.send(Offer(session_id=sid, sdp="fine"))
        assert (await c.expect(Offer)).sdp == "fine"
        doc = await server.wait_status(lambda d: len(d["workers"]) == 1)
        assert doc["workers"][0]["status"] == "busy"


async def test_a_silently_dead_link_is_detected_within_the_heartbeat_timeout() -> None:
    from playcast_testing.proxy import blackhole_proxy

    timeout = 1.0
    async with (
        running_server(heartbeat_interval=0.2, heartbeat_timeout=timeout) as server,
        blackhole_proxy(server.port) as proxy,
        connect(server.ws_url("worker")) as w,
        connect(f"ws://127.0.0.1:{proxy.port}/ws/client") as c,
    ):
        await w.send(Register(game=GAME))
        await w.expect(Registered)
        await c.send(Join())
        await c.expect(Assigned)
        await w.expect(SessionStart)
        loop = asyncio.get_running_loop()
        pings_before = c.pings
        proxy.blackhole()
        cut = loop.time()
        assert (await w.expect(Shutdown, timeout=10)).reason == "client_failed"
        noticed = loop.time() - cut
        # Dead once `timeout` has passed since its last pong (up to one interval
        # before the cut); the sweep visits each peer once an interval. The
        # upper bound is generous: it must hold on a loaded machine.
        assert timeout - 0.2 - 0.05 <= noticed < 3 * timeout
        assert c.pings <= pings_before + 1  # the client really heard nothing
        assert not c.closed.is_set()  # and its socket never saw a close
