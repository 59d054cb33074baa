"""The opening handshake of RFC 6455 on the server's side, without I/O: a
request head, the upgrade's answer, and refusals.

Every connection starts as HTTP/1.1: the socket layer finds the end of the
request head (``head_end``; a head longer than ``MAX_HEAD_BYTES``, in one
piece or several, is refused with 431), parses it (``parse_request``) and
either answers the upgrade (``handshake``) or refuses it (``http_error``).
Behind a reverse proxy, the client's own address comes from its forwarding
headers, believed only from ``--trusted-proxy`` addresses (``client_address``).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from typing import Final, NamedTuple

MAX_HEAD_BYTES: Final = 8192  # a request head larger than this is refused (431)
_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


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


Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def parse_networks(cidrs: tuple[str, ...] | list[str]) -> Networks:
    """``--trusted-proxy`` values (an address or a CIDR each); ``ValueError`` names a bad one."""
    out = []
    for cidr in cidrs:
        try:
            out.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an address or a network: {cidr!r}") from None
    return tuple(out)


def forwarded(headers: dict[str, str]) -> bool:
    """The request names someone it was forwarded for (``X-Forwarded-For`` or
    ``Forwarded``): it is never taken for a loopback observer."""
    return "x-forwarded-for" in headers or "forwarded" in headers


def client_address(remote: str, headers: dict[str, str], trusted: Networks) -> str:
    """The client's own address: ``remote`` (the TCP peer), unless that is a
    trusted proxy; then the last address its forwarding headers name that is
    not a trusted proxy itself (proxies append, so what comes from outside
    the trusted ones is never believed past the first untrusted hop)."""
    if not trusted or not _within(remote, trusted):
        return remote
    hops = _hops(headers)
    for hop in reversed(hops):
        if not _within(hop, trusted):
            return hop
    return hops[0] if hops else remote


def _hops(headers: dict[str, str]) -> list[str]:
    """The addresses a request was forwarded for, oldest first (RFC 7239's
    ``Forwarded`` ``for=``, else ``X-Forwarded-For``); what is not an address
    (``unknown``, an obfuscated name) ends the list there."""
    hops: list[str] = []
    if "forwarded" in headers:
        for element in headers["forwarded"].split(","):
            for pair in element.split(";"):
                name, _, value = pair.strip().partition("=")
                if name.lower() == "for":
                    hops.append(_address(value.strip().strip('"')))
    else:
        hops = [_address(part.strip()) for part in headers.get("x-forwarded-for", "").split(",")]
    valid: list[str] = []
    for hop in hops:
        if not hop:
            break
        valid.append(hop)
    return valid


def _address(text: str) -> str:
    """An address from ``1.2.3.4``, ``1.2.3.4:80``, ``[2001:db8::1]:4711``; "" if none."""
    if text.startswith("["):
        text = text[1 : text.find("]")]
    elif text.count(":") == 1:
        text = text.split(":")[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return ""


def _within(address: str, networks: Networks) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)
