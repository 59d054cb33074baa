"""A WebSocket upgrade on a connection aiohttp already serves.

A client that fetched the page or the status first may keep the connection
and upgrade it: aiohttp routes that request here, and the connection leaves
aiohttp to continue as a signaling socket (``server.SignalingSocket``).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from playcast.signaling.sockets import http
from playcast.signaling.sockets.server import Front, SignalingSocket

FRONT_KEY = web.AppKey("front", Front)


async def late_upgrade(request: web.Request) -> web.StreamResponse:
    front = request.app[FRONT_KEY]
    transport = request.transport
    if transport is None or transport.is_closing():
        raise web.HTTPBadRequest(text="connection already closing")
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        name = name.lower()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    head = http.Request(request.method, request.path, request.query_string, headers)
    sock = front()
    done = asyncio.get_running_loop().create_future()
    sock.connection_made(transport)
    transport.set_protocol(_Finishing(sock, done))
    # Frames that came right behind the head wait in aiohttp's handler (which
    # would feed them to its own WebSocket reader); tests pin this seam.
    tail = getattr(request.protocol, "_message_tail", b"")
    if sock.upgrade(head) and tail:  # refused: the connection closes, ending the wait
        sock.data_received(bytes(tail))
    # aiohttp's handler stays until the socket ends; what it would write then
    # goes nowhere (the transport is closed), and it closes nothing of ours.
    await done
    raise web.HTTPGone()


class _Finishing(asyncio.Protocol):
    """The protocol of a taken-over connection: the socket's, plus a signal
    for the aiohttp handler that waits for its end."""

    def __init__(self, sock: SignalingSocket, done: asyncio.Future[None]) -> None:
        self.sock = sock
        self.done = done

    def data_received(self, data: bytes) -> None:
        self.sock.data_received(data)

    def pause_writing(self) -> None:
        self.sock.pause_writing()

    def resume_writing(self) -> None:
        self.sock.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.sock.connection_lost(exc)
        if not self.done.done():
            self.done.set_result(None)
