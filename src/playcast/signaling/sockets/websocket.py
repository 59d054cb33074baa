"""RFC 6455 on the server's side after the opening handshake, without I/O.

``Connection`` is the whole state machine of one socket, as the
``websockets`` library's ``protocol.py`` is: the socket layer feeds it bytes
(``receive_data``) and writes what it owes (``data_to_send``); it never calls
out. It reassembles a client's messages (text decoded: invalid UTF-8 fails
the connection with 1007), answers pings, runs the closing handshake, and
fails the connection on anything RFC 6455 forbids a client (§7.1.7: the
close frame, then the TCP connection closed at once: ``eof_now``). Only
what a signaling socket needs: no extensions, no subprotocols.

Below it, the frame codec: ``FrameReader`` (a client's frames, masked) and
``frame`` (a server's, unmasked).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final, NamedTuple

OP_CONT: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA

CLOSE_NORMAL: Final = 1000
CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_NO_STATUS: Final = 1005  # the peer's close frame had no code
CLOSE_ABNORMAL: Final = 1006  # the TCP connection ended without a close frame
CLOSE_INVALID_DATA: Final = 1007
CLOSE_TOO_BIG: Final = 1009

# A message may come in this many frames at most: continuation frames cost
# a little each even when empty, so their number is bounded like the bytes.
MAX_FRAGMENTS: Final = 1024
_REASON_BYTES: Final = 123  # a control frame's payload is 125 bytes at most, 2 for the code

_HEAD1 = struct.Struct("!BB").pack
_HEAD2 = struct.Struct("!BBH").pack
_HEAD3 = struct.Struct("!BBQ").pack
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")

OPEN, CLOSING, CLOSED = 1, 2, 3


class ProtocolError(Exception):
    """The peer broke RFC 6455 (or our size limits): fail with ``code``."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class Ping(NamedTuple):
    """The peer pinged: ``Connection.respond`` answers it, in its turn."""

    payload: bytes


class Close(NamedTuple):
    """The peer's close frame: ``Connection.respond`` completes the handshake."""

    code: int
    echo: bytes  # what our close frame carries back (its code; none for 1005)


Event = str | bytes | Ping | Close | ProtocolError


class Connection:
    """One signaling socket's WebSocket, from the upgrade to the end.

    ``receive_data`` parses what the peer sent into events, in order: whole
    messages (text as ``str``, binary as ``bytes``) for the core, and the
    protocol's own (a ``Ping``, the peer's ``Close``, a ``ProtocolError``
    that fails the connection), which the I/O layer hands back to
    ``respond`` in their turn, so that what the core answers to a message is
    written before what the protocol answers to the frames after it.

    ``state``: OPEN; CLOSING once a close frame was sent (ours, or our answer
    to the peer's) and the TCP connection is to end; the peer sends nothing
    we read after its close frame or a failure. ``close_code``: the code the
    core hears when the socket goes (the peer's, ours, or 1006 if neither
    was sent).
    """

    __slots__ = ("_events", "_out", "_reader", "close_code", "eof_now", "failure", "state")

    def __init__(self, max_size: int, max_fragments: int = MAX_FRAGMENTS) -> None:
        self.state = OPEN
        self.close_code: int = CLOSE_ABNORMAL
        self.eof_now = False  # the I/O layer must close the TCP connection now
        self.failure: ProtocolError | None = None
        self._out: list[bytes] = []
        self._events: list[Event] = []
        self._reader: FrameReader | None = FrameReader(
            max_size, self._on_message, self._on_control, max_fragments
        )

    # --- in -----------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes read from the socket; the events they completed, in
        order. Nothing is read after the peer's close frame or a failure
        (RFC 6455 §5.5.1, §7.1.7)."""
        reader = self._reader
        if reader is None:
            return []
        try:
            reader.feed(data)
        except ProtocolError as exc:
            self._events.append(exc)
            self._reader = None
        events, self._events = self._events, []
        return events

    def _on_message(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_TEXT:
            try:
                self._events.append(payload.decode())
            except UnicodeDecodeError:
                raise ProtocolError(CLOSE_INVALID_DATA, "text frame is not UTF-8") from None
        else:
            self._events.append(payload)

    def _on_control(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING:
            self._events.append(Ping(payload))
        elif opcode == OP_CLOSE:
            code = parse_close(payload)
            self._events.append(Close(code, b"" if code == CLOSE_NO_STATUS else payload[:2]))
            self._reader = None
            raise _Done

    def respond(self, event: Ping | Close | ProtocolError) -> None:
        """The protocol's answer to one of its events, in its turn: a pong; the
        closing handshake completed (the server ends the TCP connection first,
        §7.1.1); the connection failed (§7.1.7)."""
        if isinstance(event, Ping):
            if self.state == OPEN:
                self._out.append(frame(OP_PONG, event.payload))
        elif isinstance(event, Close):
            if self.state == OPEN:  # the peer closes: answer with its code
                self.close_code = event.code
                self._out.append(frame(OP_CLOSE, event.echo))
            self.state = CLOSING
            self.eof_now = True
        else:
            self.fail(event)

    # --- out ----------------------------------------------------------------

    def send(self, payload: bytes) -> bool:
        """Queue a text message (its UTF-8 bytes); False if it can no longer go."""
        if self.state != OPEN:
            return False
        self._out.append(frame(OP_TEXT, payload))
        return True

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> bool:
        """Start the closing handshake; False if one was started already. The
        I/O layer then waits a while for the peer's close frame."""
        if self.state != OPEN:
            return False
        self.state = CLOSING
        self.close_code = code
        self._out.append(close_frame(code, reason))
        return True

    def fail(self, exc: ProtocolError) -> None:
        """Fail the connection (§7.1.7): a close frame if none was sent yet,
        then the TCP connection ends at once, whatever the peer still sends."""
        self.failure = exc
        if self.state == OPEN:
            self.state = CLOSING
            self.close_code = exc.code
            self._out.append(close_frame(exc.code, exc.text))
        self.eof_now = True
        self._reader = None

    def data_to_send(self) -> bytes:
        """What to write now, in order (empty if nothing)."""
        out = self._out
        if not out:
            return b""
        self._out = []
        return out[0] if len(out) == 1 else b"".join(out)


class _Done(Exception):
    """The peer's close frame ended the reading: stop feeding."""


# --- the frame codec ------------------------------------------------------------


def frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked frame (a server's), FIN set."""
    n = len(payload)
    if n < 126:
        return _HEAD1(0x80 | opcode, n) + payload
    if n < 65536:
        return _HEAD2(0x80 | opcode, 126, n) + payload
    return _HEAD3(0x80 | opcode, 127, n) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame; the reason cut to fit (on a character boundary)."""
    raw = reason.encode()
    if len(raw) > _REASON_BYTES:
        raw = raw[:_REASON_BYTES].decode("utf-8", "ignore").encode()
    return frame(OP_CLOSE, _U16.pack(code) + raw)


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
    long control frames) and for a message over ``max_size`` bytes or
    ``max_fragments`` frames. Text is handed over as bytes: the caller decodes.
    """

    __slots__ = (
        "_buf", "_count", "_frag_op", "_frags", "_size",
        "max_fragments", "max_size", "on_control", "on_message",
    )  # fmt: skip

    def __init__(
        self,
        max_size: int,
        on_message: Callable[[int, bytes], None],
        on_control: Callable[[int, bytes], None],
        max_fragments: int = MAX_FRAGMENTS,
    ) -> None:
        self.max_size = max_size
        self.max_fragments = max_fragments
        self.on_message = on_message
        self.on_control = on_control
        self._buf = b""
        self._frag_op = 0  # the opcode of the message being reassembled, 0 if none
        self._frags: list[bytes] = []
        self._size = 0
        self._count = 0

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
        except _Done:
            pos = end
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
        if (not b0 & 0x80 or op == OP_CONT) and self._count >= self.max_fragments:
            raise ProtocolError(
                CLOSE_TOO_BIG, f"message in more than {self.max_fragments} frames refused"
            )

    def _fragment(self, fin: int, op: int, payload: bytes) -> None:
        if op:
            self._frag_op = op
        self._frags.append(payload)
        self._size += len(payload)
        self._count += 1
        if fin:
            op, message = self._frag_op, b"".join(self._frags)
            self._frag_op, self._frags, self._size, self._count = 0, [], 0, 0
            self.on_message(op, message)
