"""The server side of RFC 6455 WebSockets, without I/O: the upgrade request,
the handshake answer, and a client's frames.

The socket layer (``wsserver``) feeds bytes in and writes bytes out. Only what
a signaling socket needs: no extensions (no compression), text and binary
messages (fragmented or not), ping, pong and close.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Callable
from typing import Final, NamedTuple

MAX_HEAD_BYTES: Final = 8192  # a request head larger than this is refused (431)
_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA

CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_NO_STATUS: Final = 1005  # the peer's close frame had no code
CLOSE_ABNORMAL: Final = 1006  # the TCP connection ended without a close frame
CLOSE_INVALID_DATA: Final = 1007
CLOSE_TOO_BIG: Final = 1009

_HEAD1 = struct.Struct("!BB").pack
_HEAD2 = struct.Struct("!BBH").pack
_HEAD3 = struct.Struct("!BBQ").pack
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


class Request(NamedTuple):
    """An HTTP request head: what routing and the upgrade need."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-cased names; a repeated header's values joined by ", "

    def is_upgrade(self) -> bool:
        h = self.headers
        return (
            self.method == "GET"
            and h.get("upgrade", "").lower() == "websocket"
            and "upgrade" in h.get("connection", "").lower()
        )


class BadRequest(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def head_end(buffer: bytes) -> int:
    """Where the request head ends (after its blank line), or -1 if not yet."""
    end = buffer.find(b"\r\n\r\n")
    return -1 if end < 0 else end + 4


def parse_request(head: bytes) -> Request:
    """The request line and headers of ``head`` (up to and including the blank line)."""
    try:
        text = head.decode("latin-1")
        line, _, rest = text.partition("\r\n")
        method, target, version = line.split(" ")
    except ValueError:
        raise BadRequest(400, "malformed request line") from None
    if not version.startswith("HTTP/1."):
        raise BadRequest(400, "HTTP/1.x only")
    headers: dict[str, str] = {}
    for field in rest.split("\r\n"):
        if not field:
            continue
        name, sep, value = field.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest(400, "malformed header")
        name, value = name.lower(), value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    path, _, query = target.partition("?")
    return Request(method, path, query, headers)


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def handshake(request: Request) -> bytes:
    """The 101 answer to a valid upgrade; ``BadRequest`` for an invalid one."""
    h = request.headers
    if not request.is_upgrade():
        raise BadRequest(400, "a WebSocket upgrade (GET, Upgrade: websocket) is expected here")
    if h.get("sec-websocket-version") != "13":
        raise BadRequest(426, "WebSocket version 13 only")
    key = h.get("sec-websocket-key", "")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError
    except ValueError:
        raise BadRequest(400, "bad Sec-WebSocket-Key") from None
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
    ).encode()


_REASONS: Final = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    426: "Upgrade Required",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


def http_error(status: int, text: str) -> bytes:
    """A refusal; the connection closes after it."""
    body = text.encode()
    extra = "Sec-WebSocket-Version: 13\r\n" if status == 426 else ""
    return (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
        f"{extra}Connection: close\r\n\r\n"
    ).encode() + body


def frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked frame (a server's), FIN set."""
    n = len(payload)
    if n < 126:
        return _HEAD1(0x80 | opcode, n) + payload
    if n < 65536:
        return _HEAD2(0x80 | opcode, 126, n) + payload
    return _HEAD3(0x80 | opcode, 127, n) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    # A control frame's payload is at most 125 bytes: the code and 123 of reason.
    return frame(OP_CLOSE, _U16.pack(code) + reason.encode()[:123])


def parse_close(payload: bytes) -> int:
    """The code of a peer's close frame; ``ProtocolError`` if it is invalid."""
    if not payload:
        return CLOSE_NO_STATUS
    if len(payload) == 1:
        raise ProtocolError(CLOSE_PROTOCOL_ERROR, "close frame of one byte")
    code: int = _U16.unpack_from(payload)[0]
    if not (
        code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014)
        or 3000 <= code < 5000
    ):
        raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        payload[2:].decode()
    except UnicodeDecodeError:
        raise ProtocolError(CLOSE_INVALID_DATA, "close reason is not UTF-8") from None
    return code


class ProtocolError(Exception):
    """The peer broke RFC 6455 (or our size limit): close with ``code``."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


def unmask(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    if n == 0:
        return payload
    # One big-integer XOR: far cheaper in Python than a byte loop.
    key = int.from_bytes((mask * ((n >> 2) + 1))[:n], "little")
    return (int.from_bytes(payload, "little") ^ key).to_bytes(n, "little")


class FrameReader:
    """A client's frames, reassembled into messages.

    ``feed`` calls ``on_message(opcode, payload)`` for each whole text or
    binary message and ``on_control(opcode, payload)`` for each ping, pong or
    close, in order; it raises ``ProtocolError`` for anything RFC 6455 forbids
    a client (an unmasked frame, reserved bits, a bad opcode, fragmented or
    long control frames) and for a message over ``max_size`` bytes. Text is
    handed over as bytes: the caller decodes it (UTF-8, close 1007 if not).
    """

    __slots__ = ("_buf", "_frag_op", "_frags", "_size", "max_size", "on_control", "on_message")

    def __init__(
        self,
        max_size: int,
        on_message: Callable[[int, bytes], None],
        on_control: Callable[[int, bytes], None],
    ) -> None:
        self.max_size = max_size
        self.on_message = on_message
        self.on_control = on_control
        self._buf = b""
        self._frag_op = 0  # the opcode of the message being reassembled, 0 if none
        self._frags: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        end = len(buf)
        pos = 0
        try:
            while end - pos >= 2:
                b0 = buf[pos]
                b1 = buf[pos + 1]
                n = b1 & 0x7F
                at = pos + 2
                if n == 126:
                    if end - at < 2:
                        break
                    n = _U16.unpack_from(buf, at)[0]
                    at += 2
                elif n == 127:
                    if end - at < 8:
                        break
                    n = _U64.unpack_from(buf, at)[0]
                    at += 8
                op = b0 & 0x0F
                self._check(b0, b1, op, n)
                if end - at < n + 4:
                    break
                payload = unmask(buf[at + 4 : at + 4 + n], buf[at : at + 4])
                pos = at + 4 + n
                if op >= OP_CLOSE:
                    self.on_control(op, payload)
                elif b0 & 0x80 and op:  # a whole message in one frame: the usual case
                    self.on_message(op, payload)
                else:
                    self._fragment(b0 & 0x80, op, payload)
        finally:
            self._buf = buf[pos:] if pos < end else b""

    def _check(self, b0: int, b1: int, op: int, n: int) -> None:
        if not b1 & 0x80:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, "a client's frame must be masked")
        if b0 & 0x70:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, "reserved bits set (no extension agreed)")
        if op >= OP_CLOSE:
            if op > OP_PONG:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {op}")
            if not b0 & 0x80 or n > 125:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "control frames are short and whole")
            return
        if op > OP_BINARY:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {op}")
        if op == OP_CONT and not self._frag_op:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, "continuation without a message")
        if op != OP_CONT and self._frag_op:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one")
        if self._size + n > self.max_size:
            raise ProtocolError(
                CLOSE_TOO_BIG, f"message of more than {self.max_size} bytes refused"
            )

    def _fragment(self, fin: int, op: int, payload: bytes) -> None:
        if op:
            self._frag_op = op
        self._frags.append(payload)
        self._size += len(payload)
        if fin:
            op, message = self._frag_op, b"".join(self._frags)
            self._frag_op, self._frags, self._size = 0, [], 0
            self.on_message(op, message)
