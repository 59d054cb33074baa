#!/usr/bin/env python3
"""What a WebSocket connection and a frame cost a server: aiohttp, the server's
own layer (sockets.websocket on an asyncio protocol) and picows.

Issue 10 asks whether aiohttp's own per-connection and per-frame work keeps the
signaling server above 0.70 ms of CPU per setup (two connections and about 30
frames). Each engine runs as a bare server process on uvloop, shaped like the
signaling server's socket layer: a handler per connection, every text frame
answered with one frame written straight to the transport, and the server
closing with 1000 when the peer says ``bye`` (as after ``leave`` and
``shutdown_ack``). A client process opens ``--connections`` sockets, at most
``--concurrency`` at a time, each sending ``--frames`` frames one round trip
at a time, and the server's CPU (user + system) is read with psutil. Run once
with no frames and once with frames: per connection = CPU(0) / connections,
per frame = (CPU(frames) - CPU(0)) / (connections x frames).

  .venv/bin/python bench/ws_engines.py                 # every engine
  .venv/bin/python bench/ws_engines.py --engine aiohttp

picows is not a dependency of the project: install it to measure it
(``.venv/bin/pip install picows``); the engine is skipped otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import subprocess
import sys
import time

import psutil

HOST = "127.0.0.1"
ENGINES = ["aiohttp", "playcast", "picows"]
PAYLOAD = b'{"type":"ice_candidate","session_id":"s-0123456789ab","candidate":null}'


def serve_aiohttp() -> None:
    import uvloop
    from aiohttp import WSMsgType, web

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=65536, compress=False)
        await ws.prepare(request)
        transport = request.transport
        assert transport is not None
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                if msg.data == "bye":
                    await ws.close(code=1000)
                    break
                data = msg.data.encode()
                transport.write(bytes((0x81, len(data))) + data)
        return ws

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/ws/client", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0, backlog=1024)
        await site.start()
        print("port", site._server.sockets[0].getsockname()[1], flush=True)  # type: ignore[union-attr]
        await asyncio.Event().wait()

    uvloop.run(main())


def serve_playcast() -> None:
    """The signaling server's own WebSocket layer (``sockets.websocket``), bare."""
    import uvloop

    from playcast.signaling.sockets import http
    from playcast.signaling.sockets.websocket import Connection

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.Transport = transport  # type: ignore[assignment]
            self.ws: Connection | None = None
            self.head = b""

        def data_received(self, data: bytes) -> None:
            ws = self.ws
            if ws is not None:
                for got in ws.receive_data(data):
                    if got == "bye":
                        ws.close(1000)
                    elif isinstance(got, str):
                        ws.send(got.encode())
                    elif isinstance(got, bytes):
                        ws.send(got)
                    else:
                        ws.respond(got)
                out = ws.data_to_send()
                if out:
                    self.transport.write(out)
                if ws.eof_now:
                    self.transport.close()
                return
            self.head += data
            end = http.head_end(self.head)
            if end >= 0:
                self.transport.write(http.handshake(http.parse_request(self.head[:end])))
                self.ws = Connection(65536)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, HOST, 0, backlog=1024)
        print("port", server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


def serve_picows() -> None:
    import uvloop
    from picows import (
        WSFrame,
        WSListener,
        WSMsgType,
        WSTransport,
        WSUpgradeRequest,
        ws_create_server,
    )

    class Listener(WSListener):  # type: ignore[misc]
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                data = frame.get_payload_as_bytes()
                if data == b"bye":
                    transport.send_close(1000)  # disconnect on the peer's close frame
                else:
                    transport.send(WSMsgType.TEXT, data)
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.disconnect()

    def route(request: WSUpgradeRequest) -> Listener | None:
        return Listener() if request.path in (b"/ws/client", "/ws/client") else None

    async def main() -> None:
        server = await ws_create_server(route, HOST, 0, backlog=1024, max_frame_size=65536)
        print("port", server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


async def one_connection(port: int, frames: int) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /ws/client HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert b" 101 " in head.split(b"\r\n")[0], head

    def frame(payload: bytes, opcode: int = 0x1) -> bytes:
        # A zero mask: the XOR is the identity, and the server cannot tell.
        return bytes((0x80 | opcode, 0x80 | len(payload))) + b"\0\0\0\0" + payload

    for _ in range(frames):
        writer.write(frame(PAYLOAD))
        got = await reader.readexactly(2 + len(PAYLOAD))
        assert got[2:] == PAYLOAD
    writer.write(frame(b"bye"))
    closing = await reader.readexactly(4)  # the server's close frame, code 1000
    assert closing[0] == 0x88, closing
    writer.write(frame(closing[2:4], 0x8))
    await reader.read()  # the server closes TCP first
    writer.close()


async def drive(port: int, connections: int, frames: int, concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await one_connection(port, frames)

    await asyncio.gather(*(one() for _ in range(connections)))


def measure(engine: str, connections: int, frames: int, concurrency: int) -> float:
    """Server CPU seconds for ``connections`` connections of ``frames`` frames."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", engine], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        m = re.match(r"port (\d+)", proc.stdout.readline())
        assert m, "server did not start"
        port = int(m.group(1))
        ps = psutil.Process(proc.pid)
        asyncio.run(drive(port, 200, frames, concurrency))  # warm-up
        t0 = ps.cpu_times()
        asyncio.run(drive(port, connections, frames, concurrency))
        t1 = ps.cpu_times()
        return float((t1.user + t1.system) - (t0.user + t0.system))
    finally:
        proc.kill()
        proc.wait()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--engine", choices=ENGINES, action="append")
    p.add_argument("--connections", type=int, default=3000)
    p.add_argument("--frames", type=int, default=15, help="frames each way per connection")
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--serve", choices=ENGINES, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        {"aiohttp": serve_aiohttp, "picows": serve_picows, "playcast": serve_playcast}[args.serve]()
        return 0
    print(f"ws_engines: load average {os.getloadavg()[0]:.2f}", flush=True)
    for engine in args.engine or ENGINES:
        if engine == "picows":
            try:
                import picows  # noqa: F401
            except ImportError:
                print("picows: not installed, skipped")
                continue
        n, k = args.connections, args.frames
        bare = measure(engine, n, 0, args.concurrency)
        full = measure(engine, n, k, args.concurrency)
        per_conn = bare / n * 1e6
        per_frame = (full - bare) / (n * k) * 1e6
        print(
            f"{engine:8s} per connection {per_conn:6.1f} us   per frame (in + out) "
            f"{per_frame:5.1f} us   load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    t = time.monotonic()
    code = main()
    print(f"({time.monotonic() - t:.0f} s)")
    raise SystemExit(code)
