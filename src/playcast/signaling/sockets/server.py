"""The signaling sockets: a WebSocket server on the same port as the page.

Every connection starts here. A request for ``/ws/worker`` or ``/ws/client``
is upgraded by this module and its frames go straight to the protocol core;
any other request (the page, ``/static/``, ``/healthz``, ``/metrics``,
``/api/status``) is handed, with its connection, to aiohttp. aiohttp's own
upgrade and WebSocket path cost a signaling setup (two sockets, about 30
frames) more CPU than everything else in the server together: a request
object, routing, a handler task, a reader queue, a close task and timer per
socket (issue 10's profile, docs/performance.md).

A client that upgrades a connection aiohttp already serves (a kept-alive
connection that fetched the page or the status first) is taken over by the
same code: see ``late_upgrade``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, ParamSpec
from urllib.parse import parse_qs

from aiohttp import web

from playcast.protocol import MAX_FRAME_BYTES, Message, encode
from playcast.signaling.rules.events import CLOSE_INTERNAL, CLOSE_NORMAL, event
from playcast.signaling.sockets import websocket as wp

if TYPE_CHECKING:
    from playcast.signaling.main import Pump
    from playcast.signaling.types import Peer

log = logging.getLogger("playcast.signaling")

CLOSE_TIMEOUT: Final = 5.0  # for the peer's close frame after ours
ROLES: Final = {"/ws/worker": "worker", "/ws/client": "client"}

_P = ParamSpec("_P")
_HEAD, _OPEN, _CLOSING, _DONE = 0, 1, 2, 3


class Front:
    """What every connection shares: the pump, aiohttp for other requests,
    the live sockets (for shutdown) and the per-address counts."""

    def __init__(self, pump: Pump, http: Any, head_timeout: float) -> None:
        self.pump = pump
        self.http = http  # aiohttp's web_server.Server: builds its protocol per connection
        self.head_timeout = head_timeout
        self.sockets: set[SignalingSocket] = set()
        self.per_ip: dict[str, int] = {}
        # While corked (``corked``): the sockets written to, each sent its
        # frames in one system call when the step is done.
        self.corked_socks: list[SignalingSocket] | None = None

    def __call__(self) -> SignalingSocket:
        return SignalingSocket(self)

    def corked(self, step: Callable[_P, None], *args: _P.args, **kwargs: _P.kwargs) -> None:
        """Run ``step`` holding what it writes: each socket written to sends
        its frames in one system call when it is done (a read's burst of ICE
        candidates, a bus batch's relayed frames). Nested calls join the
        outer one."""
        if self.corked_socks is not None:
            step(*args, **kwargs)
            return
        socks: list[SignalingSocket] = []
        self.corked_socks = socks
        try:
            step(*args, **kwargs)
        finally:
            self.corked_socks = None
            for sock in socks:
                sock._uncork()

    def abort_all(self) -> None:
        for sock in list(self.sockets):
            if sock.transport is not None:
                sock.transport.abort()


class SignalingSocket(asyncio.Protocol):
    """One connection: its request head, then a worker's or player's socket.

    It is also the core's ``types.Connection`` for its peer: ``write`` puts a
    whole frame on the transport at once (nothing awaits a peer, no task per
    message, writes keep their order) and reports a peer whose unsent bytes
    pass the limit, which the pump then closes as a slow consumer.
    """

    __slots__ = (
        "_buffer",
        "_close_code",
        "_out",
        "_state",
        "_timer",
        "front",
        "limit",
        "peer",
        "reader",
        "remote",
        "role",
        "transport",
    )

    def __init__(self, front: Front) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None
        self.remote: tuple[str, int] = ("", 0)
        self.peer: Peer | None = None
        self.reader: wp.FrameReader | None = None
        self.role = ""
        self.limit = 0
        self._buffer = b""
        self._state = _HEAD
        self._close_code: int | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._out: list[bytes] | None = None  # frames held while corked

    # --- asyncio ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = tr = transport  # type: ignore[assignment]
        peername = tr.get_extra_info("peername")
        if peername:
            self.remote = (str(peername[0]), int(peername[1]))
        # A head that never ends (a slow or idle client) must not hold the socket.
        self._timer = asyncio.get_running_loop().call_later(self.front.head_timeout, self._abort)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        if reader is not None:
            # A read often holds several frames (a burst of ICE candidates):
            # what their steps send to each peer goes out in one write.
            self.front.corked(self._feed, reader, data)
            return
        if self._state != _HEAD:
            return
        buffer = self._buffer + data if self._buffer else data
        end = wp.head_end(buffer)
        if end < 0:
            if len(buffer) > wp.MAX_HEAD_BYTES:
                self._refuse(431, "request head too large")
            else:
                self._buffer = buffer
            return
        try:
            request = wp.parse_request(buffer[:end])
        except wp.BadRequest as exc:
            self._refuse(exc.status, exc.text)
            return
        if request.path not in ROLES:
            self._hand_to_aiohttp(buffer)
            return
        self._buffer = b""
        if self.upgrade(request) and end < len(buffer):
            self.data_received(buffer[end:])  # frames sent right behind the head

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        state, self._state = self._state, _DONE
        self.reader = None
        peer, self.peer = self.peer, None
        if peer is None:
            return
        front = self.front
        front.sockets.discard(self)
        host = self.remote[0]
        left = front.per_ip.get(host, 1) - 1
        if left:
            front.per_ip[host] = left
        else:
            front.per_ip.pop(host, None)
        code = self._close_code if state != _OPEN else wp.CLOSE_ABNORMAL
        pump = front.pump
        pump.hub.on_close(peer, code)
        pump.flush()

    # --- the upgrade ----------------------------------------------------------

    def upgrade(self, request: wp.Request) -> bool:
        """Admit and upgrade; False when refused (the connection then closes)."""
        front, role = self.front, ROLES[request.path]
        pump = front.pump
        hub = pump.hub
        refusal = admission(pump, role, request, self.remote[0], front.per_ip)
        if refusal is not None:
            self._refuse(*refusal)
            return False
        try:
            answer = wp.handshake(request)
        except wp.BadRequest as exc:
            self._refuse(exc.status, exc.text)
            return False
        assert self.transport is not None
        self._cancel_timer()
        self.transport.write(answer)
        front.per_ip[self.remote[0]] = front.per_ip.get(self.remote[0], 0) + 1
        front.sockets.add(self)
        self.role = role
        self.limit = hub.settings.max_send_queue_bytes
        self._state = _OPEN
        self.reader = wp.FrameReader(MAX_FRAME_BYTES, self._on_message, self._on_control)
        self.peer = hub.open_worker(self) if role == "worker" else hub.open_client(self)
        pump.flush()
        return True

    def _hand_to_aiohttp(self, buffer: bytes) -> None:
        self._cancel_timer()
        self._state = _DONE
        transport = self.transport
        assert transport is not None
        http = self.front.http()
        transport.set_protocol(http)
        http.connection_made(transport)
        http.data_received(buffer)

    def _refuse(self, status: int, text: str) -> None:
        self._cancel_timer()
        self._state = _DONE
        if self.transport is not None:
            self.transport.write(wp.http_error(status, text))
            self.transport.close()

    # --- frames in ------------------------------------------------------------

    def _feed(self, reader: wp.FrameReader, data: bytes) -> None:
        try:
            reader.feed(data)
        except wp.ProtocolError as exc:
            self._fail(exc.code, exc.text)

    def _on_message(self, opcode: int, payload: bytes) -> None:
        peer = self.peer
        if self._state != _OPEN or peer is None:
            return  # closing: what the peer still sends is dropped (RFC 6455 5.5.1)
        if opcode == wp.OP_TEXT:
            try:
                frame: str | bytes = payload.decode()
            except UnicodeDecodeError:
                raise wp.ProtocolError(wp.CLOSE_INVALID_DATA, "text frame is not UTF-8") from None
        else:
            frame = payload
        try:
            self.front.pump.deliver(peer, frame)
        except Exception:  # a bug outside the core's own containment: only this socket fails
            log.exception("internal error delivering a frame from %s", peer.id)
            self._fail(CLOSE_INTERNAL, "internal error")

    def _on_control(self, opcode: int, payload: bytes) -> None:
        if opcode == wp.OP_PING:
            if self._state == _OPEN:
                self._send(wp.frame(wp.OP_PONG, payload))
        elif opcode == wp.OP_CLOSE:
            code = wp.parse_close(payload)
            if self._state == _OPEN:  # the peer closes: answer with its code
                self._close_code = code
                self._state = _CLOSING
                echo = b"" if code == wp.CLOSE_NO_STATUS else payload[:2]
                self._send(wp.frame(wp.OP_CLOSE, echo))
            # Either way the handshake is complete: the server closes TCP first.
            self.reader = None
            self._uncork()
            if self.transport is not None:
                self.transport.close()

    def _fail(self, code: int, text: str) -> None:
        if self.peer is not None and self._state == _OPEN:
            event(f"{self.role}_socket_error", peer=self.peer.id, error=repr(text))
        self.close(code, text)
        self.reader = None  # nothing more is read from a peer that broke the protocol

    # --- the core's connection ------------------------------------------------

    def write(self, msg: Message | bytes) -> bool:
        """Send ``msg`` (or its JSON, encoded already); True when the peer is
        not reading (past the limit)."""
        transport = self.transport
        if self._state != _OPEN or transport is None or transport.is_closing():
            return False
        self._send(wp.frame(wp.OP_TEXT, msg if isinstance(msg, bytes) else encode(msg)))
        return transport.get_write_buffer_size() > self.limit

    def _send(self, data: bytes) -> None:
        corked = self.front.corked_socks
        if corked is None:
            if self.transport is not None:
                self.transport.write(data)
        elif self._out is None:
            self._out = [data]
            corked.append(self)
        else:
            self._out.append(data)

    def _uncork(self) -> None:
        out, self._out = self._out, None
        transport = self.transport
        if out and transport is not None and not transport.is_closing():
            transport.write(out[0] if len(out) == 1 else b"".join(out))

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Start the close handshake; a peer that does not answer within
        ``CLOSE_TIMEOUT`` (or never reads) is cut off."""
        if self._state != _OPEN:
            return
        self._state = _CLOSING
        self._close_code = code
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self._send(wp.close_frame(code, reason))
        self._timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self._abort)

    def _abort(self) -> None:
        self._timer = None
        if self.transport is not None:
            self.transport.abort()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


FRONT_KEY = web.AppKey("front", Front)


def admission(
    pump: Pump, role: str, request: wp.Request, host: str, per_ip: dict[str, int]
) -> tuple[int, str] | None:
    """Why this socket is refused (HTTP status and text), or None."""
    hub = pump.hub
    if hub.stopping:
        return 503, "server is shutting down"
    if role == "worker" and not pump.serving:
        # A worker here would not be found by players on other nodes: it
        # backs off and comes back through the load balancer.
        return 503, "this node cannot reach the cluster"
    token = hub.settings.worker_token
    if (
        role == "worker"
        and token
        and not token_ok(
            request.headers.get("authorization", ""),
            parse_qs(request.query).get("token", [""])[0],
            token,
        )
    ):
        event("worker_refused", remote=host, why="bad or missing worker token")
        return 401, "worker token required"
    cap = hub.settings.max_connections_per_ip
    if cap and per_ip.get(host, 0) >= cap:
        hub.counters.per_ip_refusals.inc(role)
        event(f"{role}_refused", remote=host, why="too many connections from this address")
        return 429, "too many connections from your address"
    return None


def token_ok(authorization: str, query_token: str, expected: str) -> bool:
    """A bearer token in the Authorization header, or else ``?token=``."""
    given = authorization[7:] if authorization.startswith("Bearer ") else query_token
    return hmac.compare_digest(given.encode(), expected.encode())


async def late_upgrade(request: web.Request) -> web.StreamResponse:
    """A WebSocket upgrade on a connection aiohttp already serves (a client
    that fetched a page or the status first and kept the connection): the
    connection leaves aiohttp and continues as a signaling socket."""
    front = request.app[FRONT_KEY]
    transport = request.transport
    if transport is None or transport.is_closing():
        raise web.HTTPBadRequest(text="connection already closing")
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        name = name.lower()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    head = wp.Request(request.method, request.path, request.query_string, headers)
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

    def connection_lost(self, exc: Exception | None) -> None:
        self.sock.connection_lost(exc)
        if not self.done.done():
            self.done.set_result(None)
