"""Fake clock and fake connections for the sans-I/O hub (unit tests only)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from playcast.protocol import (
    Answer,
    Join,
    Message,
    Offer,
    Ping,
    Pong,
    Register,
    WebrtcConnected,
    encode_str,
)
from playcast.signaling.hub import Hub
from playcast.signaling.settings import Settings
from playcast.signaling.types import Client, Worker

T = TypeVar("T")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass(eq=False)
class FakeConn:
    remote: tuple[str, int] = ("10.0.0.9", 5555)
    sent: list[Message] = field(default_factory=list)
    closed: tuple[int, str] | None = None

    def send(self, msg: Message) -> None:
        assert self.closed is None, f"send after close: {msg!r}"
        self.sent.append(msg)

    def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed is None:
            self.closed = (code, reason)

    def take(self) -> list[Message]:
        out, self.sent = self.sent, []
        return out

    def only(self, kind: type[T]) -> list[T]:
        return [m for m in self.sent if isinstance(m, kind)]

    def last(self) -> Message:
        return self.sent[-1]


class Rig:
    """A hub under a fake clock, with helpers to connect and advance time."""

    def __init__(self, **settings: Any) -> None:
        base = {
            "heartbeat_interval": 1.0,
            "heartbeat_timeout": 3.0,
            "inactivity_timeout": 60.0,
            "inactivity_warning": 10.0,
            "handshake_timeout": 20.0,
            "shutdown_ack_timeout": 2.0,
        }
        base.update(settings)
        self.clock = FakeClock()
        counter = itertools.count(1)
        self.hub = Hub(
            Settings(**base), clock=self.clock, id_factory=lambda p: f"{p}{next(counter)}"
        )

    def send(self, peer: Worker | Client, msg: Message | str) -> None:
        self.hub.on_message(peer, msg if isinstance(msg, str) else encode_str(msg))

    def worker(self, game: str = "com.supercell.clashroyale") -> tuple[Worker, FakeConn]:
        conn = FakeConn()
        worker = self.hub.open_worker(conn)
        self.send(worker, Register(game=game))
        return worker, conn

    def client(self, game: str | None = None) -> tuple[Client, FakeConn]:
        conn = FakeConn()
        client = self.hub.open_client(conn)
        self.send(client, Join() if game is None else Join(game=game))
        return client, conn

    def advance(
        self, seconds: float, *, pong: Sequence[tuple[Worker | Client, FakeConn]] = ()
    ) -> None:
        """Move time forward tick by tick; peers in ``pong`` answer their pings."""
        steps = max(1, round(seconds / self.hub.tick_interval))
        for _ in range(steps):
            self.clock.now += self.hub.tick_interval
            self.hub.tick()
            for peer, conn in pong:
                for msg in conn.take():
                    if isinstance(msg, Ping):
                        self.send(peer, Pong(ts=msg.ts))
                    else:
                        conn.sent.append(msg)  # keep non-pings for the test

    def assert_consistent(self) -> None:
        problems = list(self.hub.check_invariants())
        assert not problems, problems


def connected_pair(rig: Rig) -> tuple[Worker, FakeConn, Client, FakeConn, str]:
    """A worker and a client through the whole handshake, inboxes emptied."""
    worker, wconn = rig.worker()
    client, cconn = rig.client()
    sid = client.session_id
    assert sid is not None
    rig.send(worker, Offer(session_id=sid, sdp="offer-sdp"))
    rig.send(client, Answer(session_id=sid, sdp="answer-sdp"))
    rig.send(worker, WebrtcConnected(session_id=sid))
    rig.send(client, WebrtcConnected(session_id=sid))
    wconn.take()
    cconn.take()
    return worker, wconn, client, cconn, sid
