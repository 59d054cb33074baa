"""A raw WebSocket client for conformance and abuse tests: every byte is the test's.

aiohttp's client will not send what RFC 6455 forbids (unmasked frames,
reserved bits, fragmented pings, bad UTF-8, a close code of 1005) and hides
how a connection ends. This one builds frames byte by byte (``frame``), writes
them whole, frame by frame or chopped, reads the server's frames one at a
time, and tells the server's close frame from the end of the TCP connection,
which must follow at once when the server fails a connection (RFC 6455
§7.1.7): ``tcp_closed`` waits for it up to ``CLOSE_DEADLINE``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import struct
from dataclasses import dataclass
from typing import Any, Final, Self

OP_CONT: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA

_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# Seconds a server has, after its close frame, to end the TCP connection
# when it fails a connection. Far above "at once" on a loaded machine, far
# below the 5 s a server that waits for a close handshake would linger.
CLOSE_DEADLINE: Final = float(os.environ.get("PLAYCAST_TEST_CLOSE_DEADLINE", "2.0"))
# Bounds a read that should be answered at once: only a hang reaches it.
READ_TIMEOUT: Final = float(os.environ.get("PLAYCAST_TEST_READ_TIMEOUT", "30.0"))


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    key: bytes | None = None,
) -> bytes:
    """One frame as a client sends it: masked with a random key unless told.

    ``rsv`` is the three reserved bits as one number, as Autobahn numbers
    them (4 is RSV1, 1 is RSV3).
    """
    n = len(payload)
    b0 = (0x80 if fin else 0) | (rsv & 7) << 4 | opcode
    m = 0x80 if masked else 0
    if n < 126:
        head = struct.pack("!BB", b0, m | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, m | 126, n)
    else:
        head = struct.pack("!BBQ", b0, m | 127, n)
    if not masked:
        return head + payload
    key = os.urandom(4) if key is None else key
    stream = int.from_bytes((key * (n // 4 + 1))[:n], "little")
    body = (int.from_bytes(payload, "little") ^ stream).to_bytes(n, "little")
    return head + key + body


def close_payload(code: int | None = None, reason: bytes = b"") -> bytes:
    return b"" if code is None else struct.pack("!H", code) + reason


def fragments(opcode: int, payload: bytes, size: int) -> bytes:
    """A message split into frames of ``size`` payload bytes (the last may be
    shorter); a message that fits is one frame."""
    parts = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
    return b"".join(
        frame(opcode if i == 0 else OP_CONT, part, fin=i == len(parts) - 1)
        for i, part in enumerate(parts)
    )


def upgrade_request(path: str = "/ws/client", key: str = "", **headers: str) -> bytes:
    fields = {
        "Host": "127.0.0.1",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Version": "13",
        **headers,
    }
    lines = "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return f"GET {path} HTTP/1.1\r\n{lines}\r\n".encode()


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


@dataclass(frozen=True)
class Frame:
    """One frame the server sent."""

    fin: bool
    rsv: int
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def close_reason(self) -> bytes:
        return self.payload[2:]

    def json(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.payload)
        return doc


class ConnectionEnded(Exception):
    """The TCP connection ended (EOF or reset) where more bytes were expected."""


class UpgradeRefused(Exception):
    """The server answered the upgrade with something other than 101."""

    def __init__(self, head: str) -> None:
        super().__init__(head.split("\r\n", 1)[0])
        self.head = head
        self.status = int(head.split(" ", 2)[1]) if head.startswith("HTTP/") else 0


class RawConnection:
    """A TCP connection to the server that the test writes byte by byte.

    On a plain non-blocking socket rather than an asyncio transport: reading
    and writing fail independently. A server that fails a connection may
    reset it right behind its close frame; a write into the reset connection
    must not discard that frame, which is what the test is about, and bytes
    that arrived before a reset stay readable (a StreamReader raises instead).
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.buffer = bytearray()
        self.ended: str | None = None  # "eof", or the error that ended reading
        self._changed = asyncio.Event()
        self.send_failed: str | None = None  # why the socket stopped taking bytes
        self._out = bytearray()
        self._sent = asyncio.Event()
        self._sent.set()
        self.loop.add_reader(sock.fileno(), self._readable)

    @classmethod
    async def open(
        cls,
        port: int,
        host: str = "127.0.0.1",
        *,
        local_host: str | None = None,
        rcvbuf: int | None = None,
        sndbuf: int | None = None,
    ) -> Self:
        """Connect; ``local_host`` binds the client's address (any of 127/8
        on Linux), ``rcvbuf`` shrinks its receive buffer, ``sndbuf`` sizes
        its send buffer (large: a big write goes out as one segment)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if sndbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        if local_host is not None:
            sock.bind((local_host, 0))
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    def _readable(self) -> None:
        try:
            data = self.sock.recv(1 << 18)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._end(repr(exc))
            return
        if not data:
            self._end("eof")
            return
        self.buffer += data
        self._changed.set()

    def _end(self, how: str) -> None:
        self.ended = how
        self.loop.remove_reader(self.sock.fileno())
        self._changed.set()

    def send(self, data: bytes) -> None:
        """Queue ``data``; it goes out as the socket takes it. Writing into an
        ended connection is no error here: the test looks at what the server
        sent."""
        if self.sock.fileno() < 0:
            return
        was_empty = not self._out
        self._out += data
        if was_empty:
            self._sent.clear()
            self._writable()
            if self._out:
                self.loop.add_writer(self.sock.fileno(), self._writable)

    def _writable(self) -> None:
        try:
            while self._out:
                n = self.sock.send(self._out)
                del self._out[:n]
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.send_failed = repr(exc)
            self._out.clear()  # the server is gone: nothing more can be sent
        self.loop.remove_writer(self.sock.fileno())
        self._sent.set()

    async def flush(self) -> None:
        """Until what was sent has gone to the kernel, or cannot go."""
        await self._sent.wait()

    async def send_chopped(self, data: bytes, size: int) -> None:
        """``data`` in writes of ``size`` bytes, each flushed on its own."""
        for i in range(0, len(data), size):
            self.send(data[i : i + size])
            await self.flush()
            await asyncio.sleep(0)

    def stop_reading(self) -> None:
        """Read nothing more: what the server sends waits in the kernel."""
        self.loop.remove_reader(self.sock.fileno())

    async def _wait(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    async def read_exactly(self, n: int, timeout: float = READ_TIMEOUT) -> bytes:
        async with asyncio.timeout(timeout):
            while len(self.buffer) < n:
                if self.ended is not None:
                    raise ConnectionEnded(self.ended)
                await self._wait()
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    async def head(self, timeout: float = READ_TIMEOUT) -> str:
        """An HTTP response head."""
        async with asyncio.timeout(timeout):
            while (end := self.buffer.find(b"\r\n\r\n")) < 0:
                if self.ended is not None:
                    raise ConnectionEnded(self.ended)
                await self._wait()
        return (await self.read_exactly(end + 4)).decode("latin-1")

    async def rest(self, timeout: float = READ_TIMEOUT) -> bytes:
        """Everything until the server ends the connection."""
        async with asyncio.timeout(timeout):
            while self.ended is None:
                await self._wait()
        return await self.read_exactly(len(self.buffer))

    async def tcp_closed(self, deadline: float = CLOSE_DEADLINE) -> tuple[bool, bytes]:
        """Whether the server ended the TCP connection (EOF or reset) within
        ``deadline`` seconds, and any bytes it sent meanwhile."""
        try:
            return True, await self.rest(deadline)
        except TimeoutError:
            return False, await self.read_exactly(len(self.buffer))

    def abort(self) -> None:
        """Drop the connection (a reset, not a close handshake)."""
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.loop.remove_writer(self.sock.fileno())
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.sock.close()


class RawWebSocket(RawConnection):
    """An upgraded connection: frames out as the test builds them, frames in
    one at a time."""

    upgrade_head = ""  # the server's 101 answer

    @classmethod
    async def connect(
        cls,
        port: int,
        path: str = "/ws/client",
        host: str = "127.0.0.1",
        *,
        headers: dict[str, str] | None = None,
        local_host: str | None = None,
        rcvbuf: int | None = None,
    ) -> RawWebSocket:
        ws = await cls.open(port, host, local_host=local_host, rcvbuf=rcvbuf)
        key = base64.b64encode(os.urandom(16)).decode()
        ws.send(upgrade_request(path, key, **(headers or {})))
        head = await ws.head()
        if not head.startswith("HTTP/1.1 101 "):
            ws.abort()
            raise UpgradeRefused(head)
        if f"\r\nSec-WebSocket-Accept: {accept_key(key)}\r\n" not in head:
            ws.abort()
            raise AssertionError(f"wrong or missing Sec-WebSocket-Accept:\n{head}")
        ws.upgrade_head = head
        return ws

    def send_frame(self, opcode: int, payload: bytes = b"", **options: Any) -> None:
        self.send(frame(opcode, payload, **options))

    async def read_frame(self, timeout: float = READ_TIMEOUT) -> Frame:
        """The server's next frame; ``ConnectionEnded`` if the connection
        ends first."""
        async with asyncio.timeout(timeout):
            b0, b1 = await self.read_exactly(2)
            if b1 & 0x80:
                raise AssertionError("a server's frames must not be masked (RFC 6455 §5.1)")
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", await self.read_exactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await self.read_exactly(8))[0]
            payload = await self.read_exactly(n)
        return Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, payload)
