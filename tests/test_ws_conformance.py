"""Autobahn|Testsuite's server cases, over real TCP against the real server.

Autobahn (crossbario/autobahn-testsuite) is how WebSocket implementations
prove themselves; it runs on Python 2 and cannot run here, so its fuzzing
client's cases are written out below, one test id per case id, each from its
case module (``autobahntestsuite/case/caseN_N_N.py``): the same frames, the
same chops. What differs is the answer to a valid message: Autobahn expects
an echo, the signaling server answers with the protocol's JSON, and a message
that is valid WebSocket but not a protocol message (anything Autobahn sends)
gets exactly one ``{"type": "error", "code": "bad_message"}``. Where
Autobahn waits a second for "nothing more", these tests send a ping and wait
for its pong: the server answers frames in order, so what came before the
pong is everything the stimulus was answered with.

A connection the server must fail (RFC 6455 §7.1.7) ends with its close
frame with the right code, then the TCP connection closed at once (within
``rawws.CLOSE_DEADLINE``), nothing in between. Limits (9.x) are scaled to the
server's 64 KiB message limit; cases ``limit.*`` are the limit's own edges.
The table of cases and results: docs/websocket-conformance.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from playcast_testing.rawws import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    ConnectionEnded,
    RawWebSocket,
    close_payload,
    fragments,
    frame,
)
from playcast_testing.servers import ServerProcess, running_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

LIMIT = 64 * 1024  # the server's message limit (protocol.MAX_FRAME_BYTES)

Event = tuple[Any, ...]
ERR: Event = ("error", "bad_message")  # the answer to any valid non-protocol message


def pong(payload: bytes | str) -> Event:
    return ("pong", payload.encode() if isinstance(payload, str) else payload)


def close(code: int | None) -> Event:
    return ("close", code)


# --- how a case is written ---------------------------------------------------


@dataclass(frozen=True)
class Chop:
    """``data`` written in pieces of ``size`` bytes (Autobahn's chopsize)."""

    data: bytes
    size: int


@dataclass(frozen=True)
class Each:
    """Frames written one write each (Autobahn's sync=True)."""

    frames: tuple[bytes, ...]


@dataclass(frozen=True)
class Wait:
    """Where Autobahn waits: a ping, and what the server answered before its
    pong must be ``answers``."""

    answers: tuple[Event, ...] = ()


@dataclass(frozen=True)
class MayFailHere:
    """A point where a server that validates as it reads fails the
    connection (Autobahn's "fail fast", strict); one that validates whole
    messages goes on (non-strict). Either passes."""

    code: int


Step = bytes | Chop | Each | Wait | MayFailHere


@dataclass(frozen=True)
class Case:
    id: str
    steps: tuple[Step, ...]
    # What the server sends after the steps, in order: the answers, then a
    # close frame (with one of ``closes``) or, when ``closes`` is empty,
    # nothing more (the connection stays open; the test closes it cleanly).
    answers: tuple[Event, ...] = ()
    closes: frozenset[int | None] = frozenset()


def case(
    id_: str, *steps: Step, answers: Sequence[Event] = (), closes: Sequence[int | None] = ()
) -> Case:
    return Case(id_, steps, tuple(answers), frozenset(closes))


def text(payload: bytes | str, **options: Any) -> bytes:
    return frame(OP_TEXT, payload.encode() if isinstance(payload, str) else payload, **options)


def binary(payload: bytes, **options: Any) -> bytes:
    return frame(OP_BINARY, payload, **options)


def cont(payload: bytes | str, **options: Any) -> bytes:
    return frame(OP_CONT, payload.encode() if isinstance(payload, str) else payload, **options)


def ping(payload: bytes | str = b"", **options: Any) -> bytes:
    return frame(OP_PING, payload.encode() if isinstance(payload, str) else payload, **options)


def close_frame(code: int | None = None, reason: bytes | str = b"") -> bytes:
    reason = reason.encode() if isinstance(reason, str) else reason
    return frame(OP_CLOSE, close_payload(code, reason))


def filled(pattern: bytes, n: int) -> bytes:
    """Autobahn's payload_len: ``pattern`` repeated to ``n`` bytes."""
    return (pattern * (n // len(pattern) + 1))[:n]


# --- 1.x framing (RFC 6455 §5.2, §5.6) ----------------------------------------

SIZES = (0, 125, 126, 127, 128, 65535, 65536)
CASES: list[Case] = []
for i, n in enumerate(SIZES, 1):
    CASES.append(case(f"1.1.{i}", text(b"*" * n), answers=[ERR]))
CASES.append(case("1.1.8", Chop(text(b"*" * 65536), 997), answers=[ERR]))
for i, n in enumerate(SIZES, 1):
    CASES.append(case(f"1.2.{i}", binary(b"\xfe" * n), answers=[ERR]))
CASES.append(case("1.2.8", Chop(binary(b"\xfe" * 65536), 997), answers=[ERR]))

# --- 2.x pings and pongs (§5.5.2, §5.5.3; control frames ≤ 125 bytes, §5.5) --

BIN8 = b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff"
TEN = [f"payload-{i}" for i in range(10)]
CASES += [
    case("2.1", ping(), answers=[pong(b"")]),
    case("2.2", ping("Hello, world!"), answers=[pong("Hello, world!")]),
    case("2.3", ping(BIN8), answers=[pong(BIN8)]),
    case("2.4", ping(b"\xfe" * 125), answers=[pong(b"\xfe" * 125)]),
    case("2.5", ping(b"\xfe" * 126), closes=[1002]),
    case("2.6", Chop(ping(b"\xfe" * 125), 1), answers=[pong(b"\xfe" * 125)]),
    case("2.7", frame(OP_PONG)),
    case("2.8", frame(OP_PONG, b"unsolicited pong payload")),
    case(
        "2.9",
        frame(OP_PONG, b"unsolicited pong payload") + ping("ping payload"),
        answers=[pong("ping payload")],
    ),
    case("2.10", b"".join(ping(p) for p in TEN), answers=[pong(p) for p in TEN]),
    case("2.11", Chop(b"".join(ping(p) for p in TEN), 1), answers=[pong(p) for p in TEN]),
]

# --- 3.x reserved bits (§5.2: nonzero with no extension agreed: fail) --------

HELLO = "Hello, world!"
CASES += [
    case("3.1", text(HELLO, rsv=1), closes=[1002]),
    case("3.2", text(HELLO) + text(HELLO, rsv=2) + ping(), answers=[ERR], closes=[1002]),
    case("3.3", Each((text(HELLO), text(HELLO, rsv=3), ping())), answers=[ERR], closes=[1002]),
    case(
        "3.4",
        Chop(text(HELLO), 1),
        Chop(text(HELLO, rsv=4), 1),
        Chop(ping(), 1),
        answers=[ERR],
        closes=[1002],
    ),
    case("3.5", binary(BIN8, rsv=5), closes=[1002]),
    case("3.6", binary(HELLO.encode(), rsv=6), closes=[1002]),
    case("3.7", frame(OP_CLOSE, rsv=7), closes=[1002]),
]

# --- 4.x opcodes (§5.2: an unknown opcode fails the connection) -------------

PAYLOAD = b"reserved opcode payload"
for sub, ops in (("1", (3, 4, 5, 6, 7)), ("2", (11, 12, 13, 14, 15))):
    a, b, c, d, e = ops
    CASES += [
        case(f"4.{sub}.1", frame(a), closes=[1002]),
        case(f"4.{sub}.2", frame(b, PAYLOAD), closes=[1002]),
        case(f"4.{sub}.3", text(HELLO) + frame(c) + ping(), answers=[ERR], closes=[1002]),
        case(
            f"4.{sub}.4",
            text(HELLO) + frame(d, HELLO.encode()) + ping(),
            answers=[ERR],
            closes=[1002],
        ),
        case(
            f"4.{sub}.5",
            Chop(text(HELLO), 1),
            Chop(frame(e, HELLO.encode()), 1),
            Chop(ping(), 1),
            answers=[ERR],
            closes=[1002],
        ),
    ]

# --- 5.x fragmentation (§5.4; control frames are never fragmented, §5.5) ----

F = [f"fragment{i}" for i in range(1, 6)]
NONCONT = "non-continuation payload"
TWO = text(F[0], fin=False) + cont(F[1])
CASES += [
    case("5.1", ping(F[0], fin=False) + cont(F[1]), closes=[1002]),
    case("5.2", frame(OP_PONG, F[0].encode(), fin=False) + cont(F[1]), closes=[1002]),
    case("5.3", TWO, answers=[ERR]),
    case("5.4", Each((text(F[0], fin=False), cont(F[1]))), answers=[ERR]),
    case("5.5", Chop(text(F[0], fin=False), 1), Chop(cont(F[1]), 1), answers=[ERR]),
    case(
        "5.6",
        text(F[0], fin=False) + ping("ping payload") + cont(F[1]),
        answers=[pong("ping payload"), ERR],
    ),
    case(
        "5.7",
        Each((text(F[0], fin=False), ping("ping payload"), cont(F[1]))),
        answers=[pong("ping payload"), ERR],
    ),
    case(
        "5.8",
        Chop(text(F[0], fin=False), 1),
        Chop(ping("ping payload"), 1),
        Chop(cont(F[1]), 1),
        answers=[pong("ping payload"), ERR],
    ),
    case("5.9", cont(NONCONT) + text(HELLO), closes=[1002]),
    case("5.10", Each((cont(NONCONT), text(HELLO))), closes=[1002]),
    case("5.11", Chop(cont(NONCONT), 1), Chop(text(HELLO), 1), closes=[1002]),
    case("5.12", cont(NONCONT, fin=False) + text(HELLO), closes=[1002]),
    case("5.13", Each((cont(NONCONT, fin=False), text(HELLO))), closes=[1002]),
    case("5.14", Chop(cont(NONCONT, fin=False), 1), Chop(text(HELLO), 1), closes=[1002]),
    case("5.15", TWO + cont(F[2], fin=False) + text(F[3]), answers=[ERR], closes=[1002]),
    case(
        "5.16",
        (cont(F[0], fin=False) + text(F[1], fin=False) + cont(F[2])) * 2,
        closes=[1002],
    ),
    case("5.17", (cont(F[0]) + text(F[1], fin=False) + cont(F[2])) * 2, closes=[1002]),
    case("5.18", text(F[0], fin=False) + text(F[1]), closes=[1002]),
]
for id_, joined in (("5.19", True), ("5.20", False)):

    def group(*frames: bytes, _joined: bool = joined) -> Step:
        return b"".join(frames) if _joined else Each(frames)

    CASES.append(
        case(
            id_,
            group(text(F[0], fin=False), cont(F[1], fin=False), ping("pongme 1!")),
            Wait((pong("pongme 1!"),)),
            group(cont(F[2], fin=False), cont(F[3], fin=False), ping("pongme 2!"), cont(F[4])),
            answers=[pong("pongme 2!"), ERR],
        )
    )

# --- 6.x UTF-8 (§5.6: text is UTF-8; §8.1: invalid UTF-8 fails, code 1007) --

UTF8 = "Hello-µ@ßöäüàá-UTF-8!!".encode()
KOSME = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"
INVALID_6_3 = KOSME + b"\xed\xa0\x80" + b"edited"  # invalid at byte 12 (\xa0)
INVALID_6_4 = KOSME + b"\xf4\x90\x80\x80" + b"edited"  # invalid at byte 12 (\x90)


def octetwise(opcode: int, payload: bytes) -> bytes:
    """A message in frames of one byte each (Autobahn's fragmentSize=1)."""
    return fragments(opcode, payload, 1)


CASES += [
    case("6.1.1", text(b""), answers=[ERR]),
    case("6.1.2", text(b"", fin=False) + cont(b"", fin=False) + cont(b""), answers=[ERR]),
    case(
        "6.1.3",
        text(b"", fin=False) + cont("middle frame payload", fin=False) + cont(b""),
        answers=[ERR],
    ),
    case("6.2.1", text(UTF8), answers=[ERR]),
    case("6.2.2", text("Hello-µ@ßöä", fin=False) + cont("üàá-UTF-8!!"), answers=[ERR]),
    case("6.2.3", octetwise(OP_TEXT, UTF8), answers=[ERR]),
    case("6.2.4", octetwise(OP_TEXT, KOSME), answers=[ERR]),
    case("6.3.1", text(INVALID_6_3), closes=[1007]),
    case("6.3.2", octetwise(OP_TEXT, INVALID_6_3), closes=[1007]),
    case(
        "6.4.1",
        text(KOSME, fin=False),
        Wait(),
        cont(b"\xf4\x90\x80\x80", fin=False),
        MayFailHere(1007),
        cont(b"edited"),
        closes=[1007],
    ),
    case(
        "6.4.2",
        text(INVALID_6_4[:12], fin=False),
        Wait(),
        cont(INVALID_6_4[12:13], fin=False),
        MayFailHere(1007),
        cont(INVALID_6_4[13:]),
        closes=[1007],
    ),
]
# 6.4.3, 6.4.4: the same message as one frame whose bytes come in three
# writes; no ping can go between the writes (it would be payload).
WHOLE_6_4 = text(INVALID_6_4)
HEAD = len(WHOLE_6_4) - len(INVALID_6_4)  # header and mask key
CASES += [
    case(
        "6.4.3",
        WHOLE_6_4[: HEAD + 11],
        WHOLE_6_4[HEAD + 11 : HEAD + 15],
        WHOLE_6_4[HEAD + 15 :],
        closes=[1007],
    ),
    case(
        "6.4.4",
        WHOLE_6_4[: HEAD + 12],
        WHOLE_6_4[HEAD + 12 : HEAD + 13],
        WHOLE_6_4[HEAD + 13 :],
        closes=[1007],
    ),
]


def utf8_sequences() -> list[tuple[str, list[bytes]]]:
    """Autobahn's case6_x_x.py (Markus Kuhn's UTF-8 decoder test), in its
    order: 6.5.x to 6.23.x, each sequence valid or not as Python's strict
    decoder (RFC 3629) says, which is what Autobahn's validator says."""
    prefixes = [KOSME[:i] for i in range(1, len(KOSME) + 1)]
    noncharacters = [b"\xef\xbf\xbe", b"\xef\xbf\xbf"]
    for z1 in b"\xf0\xf1\xf2\xf3\xf4":
        for z2 in b"\x8f\x9f\xaf\xbf":
            if z1 == 0xF4 and z2 != 0x8F:
                continue  # above U+10FFFF
            for z3 in b"\xbe\xbf":
                seq = bytes([z1, z2, 0xBF, z3])
                if seq not in (b"\xf0\x8f\xbf\xbe", b"\xf0\x8f\xbf\xbf"):  # overlong
                    noncharacters.append(seq)
    missing = [
        b"\xc0", b"\xe0\x80", b"\xf0\x80\x80", b"\xf8\x80\x80\x80", b"\xfc\x80\x80\x80\x80",
        b"\xdf", b"\xef\xbf", b"\xf7\xbf\xbf", b"\xfb\xbf\xbf\xbf", b"\xfd\xbf\xbf\xbf\xbf",
    ]  # fmt: skip
    lonely = [
        b"".join(bytes([c, 0x20]) for c in range(lo, hi))
        for lo, hi in ((0xC0, 0xDF), (0xE0, 0xEF), (0xF0, 0xF7), (0xF8, 0xFB), (0xFC, 0xFD))
    ]
    surrogates = [b"\xed\xa0\x80", b"\xed\xad\xbf", b"\xed\xae\x80", b"\xed\xaf\xbf",
                  b"\xed\xb0\x80", b"\xed\xbe\x80", b"\xed\xbf\xbf"]  # fmt: skip
    high, low = surrogates[:4], (b"\xed\xb0\x80", b"\xed\xbf\xbf")
    return [
        ("valid sequences", [b"hello\x24world", b"hello\xc2\xa2world",
                             b"hello\xe2\x82\xacworld", b"hello\xf0\xa4\xad\xa2world", KOSME]),
        ("prefixes of a valid multibyte string", prefixes),
        ("first sequence of each length", [b"\x00", b"\xc2\x80", b"\xe0\xa0\x80",
                                           b"\xf0\x90\x80\x80"]),
        ("first of length 5/6", [b"\xf8\x88\x80\x80\x80", b"\xfc\x84\x80\x80\x80\x80"]),
        ("last sequence of each length", [b"\x7f", b"\xdf\xbf", b"\xef\xbf\xbf",
                                          b"\xf4\x8f\xbf\xbf"]),
        ("last of length 4/5/6", [b"\xf7\xbf\xbf\xbf", b"\xfb\xbf\xbf\xbf\xbf",
                                  b"\xfd\xbf\xbf\xbf\xbf\xbf"]),
        ("other boundaries", [b"\xed\x9f\xbf", b"\xee\x80\x80", b"\xef\xbf\xbd",
                              b"\xf4\x8f\xbf\xbf", b"\xf4\x90\x80\x80"]),
        ("unexpected continuation bytes", [b"\x80", b"\xbf", b"\x80\xbf", b"\x80\xbf\x80",
                                           b"\x80\xbf\x80\xbf", b"\x80\xbf\x80\xbf\x80",
                                           b"\x80\xbf\x80\xbf\x80\xbf",
                                           bytes(range(0x80, 0xBF))]),
        ("lonely start bytes", lonely),
        ("last continuation byte missing", missing),
        ("incomplete sequences concatenated", [b"".join(missing)]),
        ("impossible bytes", [b"\xfe", b"\xff", b"\xfe\xfe\xff\xff"]),
        ("overlong ASCII", [b"\xc0\xaf", b"\xe0\x80\xaf", b"\xf0\x80\x80\xaf",
                            b"\xf8\x80\x80\x80\xaf", b"\xfc\x80\x80\x80\x80\xaf"]),
        ("maximum overlong", [b"\xc1\xbf", b"\xe0\x9f\xbf", b"\xf0\x8f\xbf\xbf",
                              b"\xf8\x87\xbf\xbf\xbf", b"\xfc\x83\xbf\xbf\xbf\xbf"]),
        ("overlong NUL", [b"\xc0\x80", b"\xe0\x80\x80", b"\xf0\x80\x80\x80",
                          b"\xf8\x80\x80\x80\x80", b"\xfc\x80\x80\x80\x80\x80"]),
        ("single UTF-16 surrogates", surrogates),
        ("paired UTF-16 surrogates", [h + lo for h in high for lo in low]),
        ("noncharacters (valid)", noncharacters),
        ("Unicode specials (valid)", [b"\xef\xbf" + bytes([c]) for c in range(0xB9, 0xC0)]),
    ]  # fmt: skip


def is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


for group_no, (_, sequences) in enumerate(utf8_sequences(), 5):
    for j, seq in enumerate(sequences, 1):
        if is_utf8(seq):
            CASES.append(case(f"6.{group_no}.{j}", text(seq), answers=[ERR]))
        else:
            CASES.append(case(f"6.{group_no}.{j}", text(seq), closes=[1007]))

# --- 7.x closing (§5.5.1, §7.1.5-§7.1.7, §7.4) -------------------------------

CLOSE_1000 = close_frame(1000)
CASES += [
    case("7.1.1", text("Hello World!"), answers=[ERR]),
    case("7.1.2", CLOSE_1000 + close_frame(), closes=[1000]),
    case("7.1.3", CLOSE_1000 + ping(), closes=[1000]),
    case("7.1.4", CLOSE_1000 + text("Hello World!"), closes=[1000]),
    case("7.1.5", text(F[0], fin=False) + CLOSE_1000 + cont(F[1]), closes=[1000]),
    # Autobahn sends 256 KiB; the server's limit is 64 KiB.
    case(
        "7.1.6",
        text(filled(b"BAsd7&jh23", LIMIT)) + text("Hello World!") + CLOSE_1000 + ping(),
        answers=[ERR, ERR],
        closes=[1000],
    ),
    # An empty close is answered with an empty one (or 1000); 1005 is never sent (§7.4.1).
    case("7.3.1", close_frame(), closes=[None, 1000]),
    case("7.3.2", frame(OP_CLOSE, b"a"), closes=[1002]),
    case("7.3.3", CLOSE_1000, closes=[1000]),
    case("7.3.4", close_frame(1000, "Hello World!"), closes=[1000]),
    case("7.3.5", close_frame(1000, "*" * 123), closes=[1000]),
    case("7.3.6", close_frame(1000, "*" * 124), closes=[1002]),
    case("7.5.1", close_frame(1000, INVALID_6_3), closes=[1002, 1007]),
]
VALID_CODES = (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999)
INVALID_CODES = (0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999)
for i, code in enumerate(VALID_CODES, 1):
    CASES.append(case(f"7.7.{i}", close_frame(code), closes=[code, 1000]))
for i, code in enumerate(INVALID_CODES, 1):
    CASES.append(case(f"7.9.{i}", close_frame(code), closes=[1002]))
# Undefined by the RFC (Autobahn: informational); any of these answers passes.
for i, code in enumerate((5000, 65535), 1):
    CASES.append(case(f"7.13.{i}", close_frame(code), closes=[1000, code, 1002]))

# --- 9.x limits, scaled to the 64 KiB message limit (§10.4) ------------------
# 9.1/9.2: Autobahn's 64 KiB .. 16 MiB, divided by 256. 9.3/9.4: its 4 MiB
# message becomes 64 KiB, in its own fragment sizes (a fragment of 64 KiB or
# more is the whole message in one frame, as Autobahn's 4 MiB in 4 MiB is).
# 9.5/9.6: its 1 MiB message becomes 64 KiB, in its own chop sizes. 9.7/9.8:
# 40 round trips instead of 1000, under the server's budget of 50 error
# answers in a burst (every one of these messages is answered with one).

for i, n in enumerate((256, 1024, 4096, 16384, 32768, LIMIT), 1):
    CASES.append(case(f"9.1.{i}", text(filled(b"BAsd7&jh23", n)), answers=[ERR]))
    CASES.append(case(f"9.2.{i}", binary(filled(b"\x00\xfe\x23\xfa\xf0", n)), answers=[ERR]))
FRAGMENT_SIZES = (64, 256, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20)
for i, size in enumerate(FRAGMENT_SIZES, 1):
    CASES.append(case(f"9.3.{i}", fragments(OP_TEXT, b"*" * LIMIT, size), answers=[ERR]))
    CASES.append(case(f"9.4.{i}", fragments(OP_BINARY, b"\xfe" * LIMIT, size), answers=[ERR]))
for i, size in enumerate((64, 128, 256, 512, 1024, 2048), 1):
    CASES.append(case(f"9.5.{i}", Chop(text(filled(b"BAsd7&jh23", LIMIT)), size), answers=[ERR]))
    CASES.append(
        case(f"9.6.{i}", Chop(binary(filled(b"\x00\xfe\x23\xfa\xf0", LIMIT)), size), answers=[ERR])
    )
ROUND_TRIPS = 40
for i, n in enumerate((0, 16, 64, 256, 1024, 4096), 1):
    for sub, message in (("7", text(b"*" * n)), ("8", binary(b"\xfe" * n))):
        CASES.append(case(f"9.{sub}.{i}", *[message, Wait((ERR,))] * ROUND_TRIPS))
# 9.9.1: one text message of 4 KiB frames that never ends (Autobahn: for 3 s):
# the frame that takes it past 64 KiB is refused from its header.
CASES.append(
    case(
        "9.9.1",
        text(b"*" * 4096, fin=False) + cont(b"*" * 4096, fin=False) * (LIMIT // 4096),
        closes=[1009],
    )
)
# The limit's own edges.
CASES += [
    case("limit.1", text(b"*" * (LIMIT + 1)), closes=[1009]),
    case("limit.2", binary(b"\xfe" * (LIMIT + 1)), closes=[1009]),
    case("limit.3", text(b"*" * LIMIT, fin=False) + cont(b"*"), closes=[1009]),
    # A frame whose header alone says it is too big (a terabyte): refused
    # before any of it is read.
    case("limit.4", b"\x82\xff" + (1 << 40).to_bytes(8, "big"), closes=[1009]),
]


# --- running a case ------------------------------------------------------------


async def next_event(ws: RawWebSocket) -> Event:
    """The server's next frame, as an event; its JSON heartbeat skipped.

    Checks what RFC 6455 asks of every frame a server sends: unmasked (in
    ``read_frame``), no reserved bit, whole control frames of at most 125
    bytes, a close reason in UTF-8 (§5.5, §5.5.1).
    """
    while True:
        f = await ws.read_frame()
        assert f.rsv == 0, f"reserved bits set on a server frame: {f!r}"
        if f.opcode >= OP_CLOSE:
            assert f.fin and len(f.payload) <= 125, f"malformed control frame {f!r}"
        if f.opcode == OP_TEXT:
            assert f.fin
            doc = f.json()
            if doc.get("type") == "ping":
                continue
            if doc.get("type") == "error":
                return ("error", doc.get("code"))
            return ("json", doc.get("type"))
        if f.opcode == OP_PONG:
            return ("pong", f.payload)
        if f.opcode == OP_CLOSE:
            assert len(f.payload) != 1, "a one-byte close payload"
            f.close_reason.decode("utf-8")  # raises if cut mid-character
            return ("close", f.close_code)
        return ("frame", f.opcode, f.payload)


async def answers_until_pong(ws: RawWebSocket, tag: bytes) -> list[Event]:
    """Ping with ``tag``; what the server sends until its pong (or until it
    closes, the close frame last)."""
    ws.send_frame(OP_PING, tag)
    await ws.flush()
    events: list[Event] = []
    while True:
        try:
            event = await next_event(ws)
        except ConnectionEnded as exc:
            raise AssertionError(f"TCP ended without a close frame after {events}") from exc
        if event == ("pong", tag):
            return events
        events.append(event)
        if event[0] == "close":
            return events


async def play(port: int, c: Case) -> None:
    ws = await RawWebSocket.connect(port)
    try:
        got: list[Event] | None = None
        for n, step in enumerate(c.steps):
            if isinstance(step, bytes):
                ws.send(step)
                await ws.flush()
            elif isinstance(step, Chop):
                await ws.send_chopped(step.data, step.size)
            elif isinstance(step, Each):
                for one in step.frames:
                    ws.send(one)
                    await ws.flush()
            elif isinstance(step, Wait):
                answered = await answers_until_pong(ws, b"wait-%d" % n)
                assert answered == list(step.answers), f"at step {n}"
            else:
                answered = await answers_until_pong(ws, b"fail-fast?")
                if answered:  # strict
                    assert answered == [close(step.code)], answered
                    got = answered
                    break
        if got is None:
            got = await answers_until_pong(ws, b"end")
        if c.closes:
            *before, last = got or [("nothing",)]
            assert before == list(c.answers) and last[0] == "close", (
                f"expected {list(c.answers)} then a close frame {set(c.closes)}, got {got}"
            )
            assert last[1] in c.closes, f"close code {last[1]}, expected one of {set(c.closes)}"
        else:
            assert got == list(c.answers)
            ws.send_frame(OP_CLOSE, close_payload(1000))
            await ws.flush()
            assert await next_event(ws) == close(1000), "our close is answered with 1000"
        ended, extra = await ws.tcp_closed()
        assert extra == b"", f"bytes after the close frame: {extra[:60]!r}"
        assert ended, (
            "the TCP connection is still open after the server's close frame "
            "(RFC 6455 §5.5.1, §7.1.7: the server closes it at once)"
        )
    finally:
        ws.abort()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[ServerProcess]:
    # Heartbeats and hello deadlines out of the way; rates far above the cases'.
    async with running_server(
        hello_timeout=600,
        heartbeat_interval=60,
        heartbeat_timeout=600,
        max_message_rate=100000,
        max_message_burst=100000,
    ) as s:
        yield s


assert len({c.id for c in CASES}) == len(CASES), "a case id used twice"


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
async def test_autobahn_case(server: ServerProcess, c: Case) -> None:
    await play(server.port, c)


async def test_no_extension_is_agreed(server: ServerProcess) -> None:
    """Autobahn 12.x/13.x (permessage-deflate) do not apply: the server
    declines every extension (§9.1: no Sec-WebSocket-Extensions in its
    answer), so a compressed frame (RSV1) fails the connection (§5.2)."""
    ws = await RawWebSocket.connect(
        server.port,
        headers={"Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits"},
    )
    try:
        assert "sec-websocket-extensions" not in ws.upgrade_head.lower()
        ws.send(text(b"\xf2\x48\xcd\xc9\xc9\x07\x00", rsv=4))  # "Hello", deflated
        assert await answers_until_pong(ws, b"end") == [close(1002)]
        assert (await ws.tcp_closed())[0]
    finally:
        ws.abort()


async def test_the_server_logged_no_internal_error(server: ServerProcess) -> None:
    """After every case: no traceback, no ERROR line, no broken invariant,
    and every socket the cases opened is gone."""
    problems = [line for line in server.lines if "Traceback" in line or " ERROR " in line]
    assert problems == []
    doc = await server.wait_status(lambda d: not d["clients"] and not d["workers"])
    status = await server.assert_consistent()
    assert status["violations"] == [] and doc["sessions"] == []
