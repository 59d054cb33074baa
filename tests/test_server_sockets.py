"""The signaling sockets over real TCP, byte by byte (sockets.server): the
upgrade, control frames, the close handshake, protocol errors and refusals,
and the hand-over of every other request to aiohttp on the same port."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace

import aiohttp
import pytest
from playcast_testing.rawws import upgrade_request
from playcast_testing.servers import ServerProcess, running_server
from test_wsproto import client_frame

from playcast.signaling.cluster.local import LocalCluster
from playcast.signaling.hub import Hub
from playcast.signaling.rules.settings import Settings
from playcast.signaling.sockets import http
from playcast.signaling.sockets import server as wsserver
from playcast.signaling.sockets import websocket as wp
from playcast.signaling.sockets.server import Front

KEY = base64.b64encode(os.urandom(16)).decode()


def upgrade_head(path: str = "/ws/worker", **extra: str) -> bytes:
    return upgrade_request(path, KEY, **extra)


class Raw:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def head(self) -> str:
        return (await self.reader.readuntil(b"\r\n\r\n")).decode()

    async def frame(self) -> tuple[int, bytes]:
        b0, b1 = await self.reader.readexactly(2)
        assert not b1 & 0x80, "a server's frames are not masked"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return b0 & 0x0F, await self.reader.readexactly(n)

    async def control(self) -> tuple[int, bytes]:
        """The next control frame; text (the server's JSON pings) skipped."""
        while True:
            op, payload = await self.frame()
            if op >= wp.OP_CLOSE:
                return op, payload

    async def message(self, type_: str) -> dict[str, object]:
        while True:
            op, payload = await self.frame()
            assert op == wp.OP_TEXT, (op, payload)
            doc = json.loads(payload)
            if doc["type"] == type_:
                return dict(doc)

    async def eof(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), 5) == b""

    async def close_code(self) -> int:
        op, payload = await self.control()
        assert op == wp.OP_CLOSE
        return int(struct.unpack("!H", payload[:2])[0])


@asynccontextmanager
async def raw(server: ServerProcess) -> AsyncIterator[Raw]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        yield Raw(reader, writer)
    finally:
        writer.close()


REGISTER = json.dumps(
    {"type": "register", "game": "com.supercell.clashroyale", "addr": "10.0.0.1:1"}
).encode()


async def test_the_upgrade_ping_and_a_clean_close_by_the_peer() -> None:
    async with running_server() as server, raw(server) as ws:
        ws.send(upgrade_head())
        head = await ws.head()
        assert head.startswith("HTTP/1.1 101 ")
        assert f"Sec-WebSocket-Accept: {http.accept_key(KEY)}\r\n" in head
        ws.send(client_frame(wp.OP_PING, b"are you there"))
        assert await ws.control() == (wp.OP_PONG, b"are you there")
        ws.send(client_frame(wp.OP_CLOSE, struct.pack("!H", 1000) + b"bye"))
        assert await ws.close_code() == 1000  # echoed
        assert await ws.eof()  # and the server closes TCP first
        await server.wait_for_log(r"worker_disconnected code=1000")


async def test_frames_sent_right_behind_the_head_are_read() -> None:
    async with running_server() as server, raw(server) as ws:
        ws.send(upgrade_head() + client_frame(wp.OP_TEXT, REGISTER))
        assert (await ws.head()).startswith("HTTP/1.1 101 ")
        registered = await ws.message("registered")
        assert str(registered["worker_id"]).startswith("w-")


async def test_a_broken_frame_closes_with_its_code_and_a_log_line() -> None:
    cases = [
        (client_frame(wp.OP_TEXT, b"{}", masked=False), 1002),
        (client_frame(wp.OP_TEXT, b"\xff\xfe"), 1007),
        (client_frame(wp.OP_TEXT, b"x" * (64 * 1024 + 1)), 1009),
    ]
    async with running_server() as server:
        for frame, code in cases:
            async with raw(server) as ws:
                ws.send(upgrade_head("/ws/client"))
                await ws.head()
                ws.send(frame)
                assert await ws.close_code() == code
                ws.send(client_frame(wp.OP_CLOSE, struct.pack("!H", code)))
                assert await ws.eof()
        await server.wait_for_log(r"client_socket_error .*more than 65536 bytes")
        assert await server.wait_status(lambda doc: not doc["clients"])


async def test_refusals_are_plain_http_and_end_the_connection() -> None:
    async with running_server(worker_token="s3cret", hello_timeout=0.5) as server:
        cases = [
            (upgrade_head(), 401),
            (upgrade_head(Authorization="Bearer wrong"), 401),
            (upgrade_head("/ws/client", **{"Sec-WebSocket-Version": "8"}), 426),
            (upgrade_head("/ws/client", Upgrade="h2c"), 400),
            (b"GET /ws/client HTTP/1.1\r\nX: " + b"y" * 9000, 431),
            (b"BROKEN\r\n\r\n", 400),
        ]
        for data, status in cases:
            async with raw(server) as ws:
                ws.send(data)
                head = await ws.head()
                assert head.startswith(f"HTTP/1.1 {status} "), (data[:40], head)
                assert "Connection: close" in head
                await ws.reader.read()  # the body, then the end
                assert ws.reader.at_eof()
        async with raw(server) as ws:  # the right token
            ws.send(upgrade_head(Authorization="Bearer s3cret"))
            assert (await ws.head()).startswith("HTTP/1.1 101 ")
        async with raw(server) as ws:  # a head that never ends is not kept
            ws.send(b"GET /ws/client HTTP/1.1\r\n")
            assert await ws.eof()


async def test_other_requests_are_served_and_a_kept_alive_connection_may_upgrade() -> None:
    async with running_server() as server:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.url}/healthz") as r:
                assert r.status == 200 and (await r.json())["ok"] is True
            async with http.get(f"{server.url}/nowhere") as r:
                assert r.status == 404
        async with raw(server) as ws:
            # The upgrade comes on a connection that served a request before
            # (aiohttp's client reuses a kept-alive connection that way).
            ws.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            head = await ws.head()
            assert head.startswith("HTTP/1.1 200 ") and "Connection: close" not in head
            length = int(head.lower().split("content-length: ")[1].split("\r\n")[0])
            assert json.loads(await ws.reader.readexactly(length))["ok"] is True
            ws.send(upgrade_head() + client_frame(wp.OP_TEXT, REGISTER))
            assert (await ws.head()).startswith("HTTP/1.1 101 ")
            await ws.message("registered")
            assert len((await server.status())["workers"]) == 1
            ws.send(client_frame(wp.OP_CLOSE, struct.pack("!H", 1000)))
            assert await ws.close_code() == 1000
            assert await ws.eof()
        assert await server.wait_status(lambda doc: not doc["workers"])
        assert await server.stop() == 0
        problems = [line for line in server.lines if "Traceback" in line or " ERROR " in line]
        assert problems == []


async def test_a_bug_while_delivering_is_logged_and_fails_only_that_socket(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # In process, on a real socket: a rule that raises closes its socket with
    # 1011, with the traceback in the log, and the server serves on.
    hub = Hub(Settings(port=0))
    front = Front(hub, LocalCluster(hub), head_timeout=5.0)

    def buggy(peer: object, frame: str | bytes) -> None:
        raise RuntimeError("a bug in a rule")

    server = await asyncio.get_running_loop().create_server(front, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        target = SimpleNamespace(port=port)
        async with raw(target) as ws:  # type: ignore[arg-type]
            ws.send(upgrade_head("/ws/client"))
            await ws.head()
            hub.on_message = buggy  # type: ignore[method-assign]
            ws.send(client_frame(wp.OP_TEXT, b'{"type":"join"}'))
            assert await ws.close_code() == 1011
        assert "internal error delivering a frame from c-" in caplog.text
        assert "a bug in a rule" in caplog.text  # with its traceback
        del hub.on_message  # the class's own again
        async with raw(target) as ws:  # type: ignore[arg-type]
            ws.send(upgrade_head("/ws/client"))
            assert (await ws.head()).startswith("HTTP/1.1 101 ")
    finally:
        server.close()
        front.abort_all()


async def test_a_peer_that_never_answers_our_close_is_cut_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wsserver, "CLOSE_TIMEOUT", 0.2)
    hub = Hub(Settings(port=0))
    front = Front(hub, LocalCluster(hub), head_timeout=5.0)
    server = await asyncio.get_running_loop().create_server(front, "127.0.0.1", 0)
    try:
        target = SimpleNamespace(port=server.sockets[0].getsockname()[1])
        async with raw(target) as ws:  # type: ignore[arg-type]
            ws.send(upgrade_head("/ws/client"))
            await ws.head()
            (sock,) = front.sockets
            assert front.per_ip == {"127.0.0.1": 1} and len(hub.clients) == 1
            sock.close(1000, "bye")
            assert await ws.close_code() == 1000
            # No close frame back: the server ends the connection by itself.
            assert await ws.eof()
        assert front.sockets == set() and front.per_ip == {} and not hub.clients
    finally:
        server.close()


async def test_a_bug_while_opening_leaves_no_count_behind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A socket whose opening step raises is cut, and holds no place in the
    # per-address count (which would otherwise refuse its address for ever).
    hub = Hub(Settings(port=0, max_connections_per_ip=1))
    front = Front(hub, LocalCluster(hub), head_timeout=5.0)

    def buggy(ws: object) -> None:
        raise RuntimeError("a bug while opening")

    server = await asyncio.get_running_loop().create_server(front, "127.0.0.1", 0)
    try:
        target = SimpleNamespace(port=server.sockets[0].getsockname()[1])
        hub.open_client = buggy  # type: ignore[method-assign,assignment]
        async with raw(target) as ws:  # type: ignore[arg-type]
            ws.send(upgrade_head("/ws/client"))
            await asyncio.wait_for(ws.reader.read(), 5)  # (the 101 may or may not come first)
        assert "internal error opening a client socket" in caplog.text
        assert front.per_ip == {} and front.sockets == set()
        del hub.open_client  # the class's own again: the address is still welcome
        async with raw(target) as ws:  # type: ignore[arg-type]
            ws.send(upgrade_head("/ws/client"))
            assert (await ws.head()).startswith("HTTP/1.1 101 ")
    finally:
        server.close()
        front.abort_all()
