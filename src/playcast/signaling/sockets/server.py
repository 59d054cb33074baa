"""The signaling sockets: a thin asyncio server around the core.

Every connection starts here, on the same port as the page. A request for
``/ws/worker`` or ``/ws/client`` is admitted and upgraded here and then fed
to its WebSocket state machine (``websocket.Connection``), whose messages go
straight to the core (``hub``); any other request (the page, ``/static/``,
``/healthz``, ``/metrics``, ``/api/status``) is handed, with its connection,
to aiohttp. aiohttp's own upgrade and WebSocket path cost a signaling setup
more CPU than everything else in the server together (docs/performance.md).

``Front`` is the loop around the core: each step (a read's messages, a tick,
a word from the cluster) runs corked, and then everything it owes is carried
out (``flush``): each socket written to sends its frames in one system call,
and the core's shared-state requests go to the cluster.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, ParamSpec, Protocol, cast
from urllib.parse import parse_qs

from playcast.protocol import MAX_FRAME_BYTES, Message, encode
from playcast.signaling.rules.events import CLOSE_INTERNAL, CLOSE_NORMAL, event
from playcast.signaling.sockets import http
from playcast.signaling.sockets.websocket import OPEN, Connection, ProtocolError

if TYPE_CHECKING:
    from playcast.signaling.hub import Hub
    from playcast.signaling.types import Peer

log = logging.getLogger("playcast.signaling")

CLOSE_TIMEOUT: Final = 5.0  # for the peer's close frame after ours
# After failing a connection (its FIN sent right behind our close frame), for
# the peer to close its side: what it still sends meanwhile is read and
# dropped, so the kernel does not answer it with a reset that could cost the
# peer our close frame.
FAIL_LINGER: Final = 1.0
ROLES: Final = {"/ws/worker": "worker", "/ws/client": "client"}

_P = ParamSpec("_P")


class Cluster(Protocol):
    """What the sockets need of the cluster layer."""

    @property
    def serving(self) -> bool:
        """Taking new peers (in a cluster: reaching Redis, announced)."""

    def submit(self) -> None:
        """Take the core's shared-state requests and words for other nodes."""


class Front:
    """What every connection shares: the core and the cluster, aiohttp for
    other requests, the live sockets (for shutdown) and the per-address
    counts."""

    def __init__(self, hub: Hub, cluster: Cluster, head_timeout: float) -> None:
        self.hub = hub
        self.cluster = cluster
        self.http: Any = None  # aiohttp's web_server.Server: builds its protocol per connection
        self.head_timeout = head_timeout
        self.sockets: set[SignalingSocket] = set()
        self.per_ip: dict[str, int] = {}
        # While corked: the sockets written to, each sending its frames in one
        # system call when the step is done.
        self.corked_socks: list[SignalingSocket] | None = None
        # Called after a flush once the core is stopping (the drain's waits).
        self.on_stopping: Callable[[], None] | None = None
        self.trusted = http.parse_networks(hub.settings.trusted_proxies)

    def __call__(self) -> SignalingSocket:
        return SignalingSocket(self)

    @property
    def serving(self) -> bool:
        return not self.hub.stopping and self.cluster.serving

    def step(self, step: Callable[_P, None], *args: _P.args, **kwargs: _P.kwargs) -> None:
        """Run one step of the core, then carry out what it owes."""
        self.corked(self._step, step, *args, **kwargs)

    def _step(self, step: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        try:
            step(*args, **kwargs)
        finally:
            self.flush()

    def flush(self) -> None:
        """Carry out what the core owes (called after every step)."""
        self.corked(self.flush_corked)

    def flush_corked(self) -> None:
        """``flush`` for a caller that runs corked already (a socket's read)."""
        hub = self.hub
        hub.flush(_write, _close, self.cluster.submit)
        if hub.stopping and self.on_stopping is not None:
            self.on_stopping()

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
                sock.uncork()

    def abort_all(self) -> None:
        for sock in list(self.sockets):
            if sock.transport is not None:
                sock.transport.abort()


def _write(peer: Peer, msg: Message | bytes) -> bool:
    return cast(SignalingSocket, peer.ws).write(msg)


def _close(peer: Peer, code: int, reason: str) -> None:
    cast(SignalingSocket, peer.ws).close(code, reason)


class SignalingSocket(asyncio.Protocol):
    """One connection: its request head, then a worker's or player's socket.

    It is also the core's ``types.Connection`` for its peer: ``write`` queues
    a whole frame (nothing awaits a peer, no task per message, writes keep
    their order) and reports a peer whose unsent bytes pass the limit, which
    the core then closes as a slow consumer. While the transport's buffer is
    past the limit, nothing more is read from the peer (a peer that sends
    pings and never reads its pongs cannot grow the server's memory).
    """

    __slots__ = (
        "_buffer", "_corked", "_timer", "front", "limit", "peer", "remote", "role",
        "transport", "ws",
    )  # fmt: skip

    def __init__(self, front: Front) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None
        self.remote: tuple[str, int] = ("", 0)
        self.peer: Peer | None = None
        self.ws: Connection | None = None
        self.role = ""
        self.limit = 0
        self._buffer = b""
        self._timer: asyncio.TimerHandle | None = None
        self._corked = False

    # --- asyncio ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = tr = transport  # type: ignore[assignment]
        peername = tr.get_extra_info("peername")
        if peername:
            self.remote = (str(peername[0]), int(peername[1]))
        # A head that never ends (a slow or idle client) must not hold the socket.
        self._timer = asyncio.get_running_loop().call_later(self.front.head_timeout, self._abort)

    def data_received(self, data: bytes) -> None:
        if self.ws is not None:
            # A read often holds several frames (a burst of ICE candidates):
            # what their steps send to each peer goes out in one write.
            self.front.corked(self._feed, data)
            return
        if self.transport is None or self.transport.is_closing():
            return
        buffer = self._buffer + data if self._buffer else data
        end = http.head_end(buffer)
        if (end if end >= 0 else len(buffer)) > http.MAX_HEAD_BYTES:
            self._refuse(431, "request head too large")
            return
        if end < 0:
            self._buffer = buffer
            return
        try:
            request = http.parse_request(buffer[:end])
        except http.BadRequest as exc:
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
        ws, self.ws = self.ws, None
        peer, self.peer = self.peer, None
        if peer is None or ws is None:
            return
        front = self.front
        front.sockets.discard(self)
        host = self.remote[0]
        left = front.per_ip.get(host, 1) - 1
        if left:
            front.per_ip[host] = left
        else:
            front.per_ip.pop(host, None)
        front.step(front.hub.on_close, peer, ws.close_code)

    def pause_writing(self) -> None:
        # The peer does not read what we send: stop reading what it sends.
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    # --- the upgrade ----------------------------------------------------------

    def upgrade(self, request: http.Request) -> bool:
        """Admit and upgrade; False when refused (the connection then closes)."""
        front, role = self.front, ROLES[request.path]
        client = http.client_address(self.remote[0], request.headers, front.trusted)
        if client != self.remote[0]:
            self.remote = (client, 0)  # behind a trusted proxy: the client's own address
        refusal = admission(front, role, request, client)
        if refusal is not None:
            self._refuse(*refusal)
            return False
        try:
            answer = http.handshake(request)
        except http.BadRequest as exc:
            self._refuse(exc.status, exc.text)
            return False
        transport = self.transport
        assert transport is not None
        self._cancel_timer()
        transport.write(answer)
        hub = front.hub
        self.limit = hub.settings.max_send_queue_bytes
        transport.set_write_buffer_limits(high=self.limit)
        self.role = role
        self.ws = Connection(MAX_FRAME_BYTES)
        try:
            front.step(self._open, role)
        except Exception:  # a bug: this socket goes, and counts for nobody
            log.exception("internal error opening a %s socket", role)
            hub.counters.internal_errors.inc("open")
            self.ws = None
            transport.abort()
            return False
        front.per_ip[self.remote[0]] = front.per_ip.get(self.remote[0], 0) + 1
        front.sockets.add(self)
        return True

    def _open(self, role: str) -> None:
        hub = self.front.hub
        self.peer = hub.open_worker(self) if role == "worker" else hub.open_client(self)

    def _hand_to_aiohttp(self, buffer: bytes) -> None:
        self._cancel_timer()
        transport = self.transport
        assert transport is not None
        handler = self.front.http()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        handler.data_received(buffer)

    def _refuse(self, status: int, text: str) -> None:
        self._cancel_timer()
        if self.transport is not None:
            self.transport.write(http.http_error(status, text))
            self.transport.close()

    # --- frames in ------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        ws, peer = self.ws, self.peer
        if ws is None or peer is None:
            return
        front = self.front
        for got in ws.receive_data(data):
            if isinstance(got, str | bytes):
                if ws.state != OPEN:
                    continue  # after our close: what the peer still sends is dropped
                try:
                    front.hub.on_message(peer, got)
                    front.flush_corked()  # data_received corked this read
                except Exception:  # a bug outside the core's own containment
                    log.exception("internal error delivering a frame from %s", peer.id)
                    ws.fail(ProtocolError(CLOSE_INTERNAL, "internal error"))
                    break
            else:
                ws.respond(got)
        if ws.failure is not None and ws.failure.code != CLOSE_INTERNAL:
            event(f"{self.role}_socket_error", peer=peer.id, error=repr(ws.failure.text))
        self._written()
        if ws.eof_now:
            self._end_tcp(ws)

    def _end_tcp(self, ws: Connection) -> None:
        """The closing handshake is over, or the connection failed: the
        server ends the TCP connection now (RFC 6455 §7.1.1, §7.1.7)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.uncork()
        if ws.failure is None or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(FAIL_LINGER, self._abort)

    # --- the core's connection ------------------------------------------------

    def write(self, msg: Message | bytes) -> bool:
        """Send ``msg`` (or its JSON, encoded already); True when the peer is
        not reading (past the limit)."""
        ws, transport = self.ws, self.transport
        if ws is None or transport is None or transport.is_closing():
            return False
        if ws.send(msg if isinstance(msg, bytes) else encode(msg)) and not self._corked:
            # _written, inline: this runs for every message the server sends (a
            # read's one call goes through _written itself)
            corked = self.front.corked_socks
            if corked is None:
                self.uncork()
            else:
                self._corked = True
                corked.append(self)
        return transport.get_write_buffer_size() > self.limit

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Start the close handshake; a peer that does not answer within
        ``CLOSE_TIMEOUT`` (or never reads) is cut off."""
        ws, transport = self.ws, self.transport
        if ws is None or transport is None or transport.is_closing() or not ws.close(code, reason):
            return
        self._written()
        self._timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self._abort)

    def _written(self) -> None:
        """Frames are queued: sent now, or when the step is done if corked."""
        corked = self.front.corked_socks
        if corked is None:
            self.uncork()
        elif not self._corked:
            self._corked = True
            corked.append(self)

    def uncork(self) -> None:
        self._corked = False
        ws, transport = self.ws, self.transport
        if ws is not None and transport is not None and not transport.is_closing():
            out = ws.data_to_send()
            if out:
                transport.write(out)

    def _abort(self) -> None:
        self._timer = None
        if self.transport is not None:
            self.transport.abort()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def admission(front: Front, role: str, request: http.Request, host: str) -> tuple[int, str] | None:
    """Why this socket is refused (HTTP status and text), or None."""
    hub = front.hub
    if hub.stopping:
        return 503, "server is shutting down"
    if role == "worker" and not front.serving:
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
    if cap and front.per_ip.get(host, 0) >= cap:
        hub.counters.per_ip_refusals.inc(role)
        event(f"{role}_refused", remote=host, why="too many connections from this address")
        return 429, "too many connections from your address"
    return None


def token_ok(authorization: str, query_token: str, expected: str) -> bool:
    """A bearer token in the Authorization header, or else ``?token=``."""
    given = authorization[7:] if authorization.startswith("Bearer ") else query_token
    return hmac.compare_digest(given.encode(), expected.encode())
