"""RFC 6455 on the server's side, without sockets (sockets.websocket, sockets.http)."""

from __future__ import annotations

import os
import struct

import pytest
from playcast_testing.rawws import frame

from playcast.signaling.sockets import http
from playcast.signaling.sockets import websocket as wp


def client_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    mask: bytes | None = None,
    rsv: int = 0,
    masked: bool = True,
) -> bytes:
    """A frame as a client sends it (masked with a random key): the test
    kit's, ``rsv`` given as the header's bits."""
    return frame(opcode, payload, fin=fin, rsv=rsv >> 4, masked=masked, key=mask)


class Reader:
    def __init__(self, max_size: int = 1 << 16) -> None:
        self.messages: list[tuple[int, bytes]] = []
        self.controls: list[tuple[int, bytes]] = []
        self.r = wp.FrameReader(
            max_size,
            lambda op, p: self.messages.append((op, p)),
            lambda op, p: self.controls.append((op, p)),
        )


def test_the_rfc_s_own_handshake_example() -> None:
    # RFC 6455 section 1.3.
    assert http.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    head = (
        b"GET /ws/client?x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\n"
        b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    assert http.head_end(head) == len(head) and http.head_end(head[:-1]) == -1
    request = http.parse_request(head)
    assert (request.method, request.path, request.query) == ("GET", "/ws/client", "x=1")
    answer = http.handshake(request)
    assert answer.startswith(b"HTTP/1.1 101 ")
    assert b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in answer


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"upgrade": "h2c"}, 400),
        ({"connection": "keep-alive"}, 400),
        ({"sec-websocket-version": "8"}, 426),
        ({"sec-websocket-key": "short"}, 400),
        ({"sec-websocket-key": ""}, 400),
    ],
)
def test_a_bad_upgrade_is_refused_with_its_reason(change: dict[str, str], status: int) -> None:
    headers = {
        "upgrade": "websocket",
        "connection": "Upgrade",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
        "sec-websocket-version": "13",
    }
    headers.update(change)
    with pytest.raises(http.BadRequest) as caught:
        http.handshake(http.Request("GET", "/ws/client", "", headers))
    assert caught.value.status == status
    answer = http.http_error(status, caught.value.text)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode())
    assert b"\r\nConnection: close\r\n" in answer
    assert answer.endswith(caught.value.text.encode())


@pytest.mark.parametrize(
    "head",
    [
        b"GET /\r\n\r\n",
        b"GET / HTTP/2\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
        b"GET / HTTP/1.1\r\n : v\r\n\r\n",
    ],
)
def test_a_malformed_head_is_a_bad_request(head: bytes) -> None:
    with pytest.raises(http.BadRequest) as caught:
        http.parse_request(head)
    assert caught.value.status == 400


def test_repeated_headers_are_joined() -> None:
    r = http.parse_request(
        b"GET / HTTP/1.1\r\nConnection: keep-alive\r\nconnection: Upgrade\r\n\r\n"
    )
    assert r.headers["connection"] == "keep-alive, Upgrade"


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 125, 126, 127, 1000, 65535, 65536, 70000])
def test_unmasking_matches_the_definition(n: int) -> None:
    payload, key = os.urandom(n), os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    assert wp.unmask(masked, key) == payload


def test_messages_in_any_split_come_out_whole_and_in_order() -> None:
    texts = [b"", b"a", b"x" * 125, b"y" * 126, b"z" * 70_000]
    stream = b"".join(client_frame(wp.OP_TEXT, t) for t in texts)
    stream += client_frame(wp.OP_BINARY, b"\x00\xff")
    for size in (1, 2, 3, 7, 4096, len(stream)):
        rd = Reader(max_size=1 << 17)
        for i in range(0, len(stream), size):
            rd.r.feed(stream[i : i + size])
        assert rd.messages == [(wp.OP_TEXT, t) for t in texts] + [(wp.OP_BINARY, b"\x00\xff")]


def test_fragments_are_joined_and_control_frames_may_come_between() -> None:
    rd = Reader()
    rd.r.feed(
        client_frame(wp.OP_TEXT, b"he", fin=False)
        + client_frame(wp.OP_PING, b"p")
        + client_frame(wp.OP_CONT, b"ll", fin=False)
        + client_frame(wp.OP_CONT, b"o")
        + client_frame(wp.OP_TEXT, b"next")
    )
    assert rd.messages == [(wp.OP_TEXT, b"hello"), (wp.OP_TEXT, b"next")]
    assert rd.controls == [(wp.OP_PING, b"p")]


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        (client_frame(wp.OP_TEXT, b"x", masked=False), 1002),
        (client_frame(wp.OP_TEXT, b"x", rsv=0x40), 1002),  # compression was never agreed
        (client_frame(0x3, b"x"), 1002),
        (client_frame(0xB, b"x"), 1002),
        (client_frame(wp.OP_PING, b"x", fin=False), 1002),
        (client_frame(wp.OP_PING, b"x" * 126), 1002),
        (client_frame(wp.OP_CONT, b"x"), 1002),
        (client_frame(wp.OP_TEXT, b"a", fin=False) + client_frame(wp.OP_TEXT, b"b"), 1002),
        (client_frame(wp.OP_TEXT, b"x" * 101), 1009),
        (
            client_frame(wp.OP_TEXT, b"x" * 60, fin=False) + client_frame(wp.OP_CONT, b"y" * 41),
            1009,
        ),
    ],
)
def test_what_a_client_may_not_send_is_a_protocol_error(frames: bytes, code: int) -> None:
    rd = Reader(max_size=100)
    with pytest.raises(wp.ProtocolError) as caught:
        rd.r.feed(frames)
    assert caught.value.code == code
    assert rd.messages == []


def test_a_frame_too_big_is_refused_from_its_header_alone() -> None:
    # The length is known before the payload: nothing is buffered for it.
    rd = Reader(max_size=1000)
    with pytest.raises(wp.ProtocolError) as caught:
        rd.r.feed(client_frame(wp.OP_BINARY, b"\0" * 70_000)[:14])
    assert caught.value.code == 1009


def test_close_frames() -> None:
    assert wp.parse_close(b"") == 1005
    assert wp.parse_close(struct.pack("!H", 1000) + b"bye") == 1000
    assert wp.parse_close(struct.pack("!H", 4001)) == 4001
    for bad, code in [
        (b"\x03", 1002),
        (struct.pack("!H", 1005), 1002),
        (struct.pack("!H", 999), 1002),
        (struct.pack("!H", 1000) + b"\xff", 1007),
    ]:
        with pytest.raises(wp.ProtocolError) as caught:
            wp.parse_close(bad)
        assert caught.value.code == code
    frame = wp.close_frame(1008, "r" * 300)
    assert frame[0] == 0x88 and frame[1] == 125  # a control frame's payload is at most 125
    assert struct.unpack("!H", frame[2:4])[0] == 1008


@pytest.mark.parametrize("n", [0, 125, 126, 65535, 65536])
def test_server_frames_are_unmasked_with_the_shortest_length(n: int) -> None:
    frame = wp.frame(wp.OP_TEXT, b"q" * n)
    assert frame[0] == 0x81 and not frame[1] & 0x80
    head = 2 if n < 126 else 4 if n < 65536 else 10
    assert len(frame) == head + n
