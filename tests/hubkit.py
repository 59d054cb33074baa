"""Fake clock and fake connections for the sans-I/O hub (unit tests only)."""

from __future__ import annotations

import itertools
import os
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
    decode,
    encode_str,
)
from playcast.signaling.app.metrics import Metrics, readings
from playcast.signaling.cluster.local import LocalCluster
from playcast.signaling.hub import Hub
from playcast.signaling.rules.settings import Settings
from playcast.signaling.shared.records import WorkerEntry
from playcast.signaling.types import Client, Peer, Worker

T = TypeVar("T")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass(eq=False)
class FakeConn:
    """A socket as the socket layer sees it: ``write`` and ``close``.

    ``slow_at``: the n-th write (1-based) and every one after it report the
    peer as not reading, as a full transport buffer would.
    """

    remote: tuple[str, int] = ("10.0.0.9", 5555)
    sent: list[Message] = field(default_factory=list)
    closed: tuple[int, str] | None = None
    slow_at: int | None = None
    writes: int = 0

    def write(self, msg: Message) -> bool:
        self.send(msg)
        self.writes += 1
        return self.slow_at is not None and self.writes >= self.slow_at

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

    def __init__(self, *, wall_clock: FakeClock | None = None, **settings: Any) -> None:
        base = {
            "heartbeat_interval": 1.0,
            "heartbeat_timeout": 3.0,
            "inactivity_timeout": 60.0,
            "inactivity_warning": 10.0,
            "handshake_timeout": 20.0,
            "shutdown_ack_timeout": 2.0,
            "games": ("com.supercell.clashroyale", "com.example.other"),
        }
        base.update(settings)
        self.clock = FakeClock()
        counter = itertools.count(1)
        # ``wall_clock``: the real time the rules read for what other nodes
        # and sites share (tickets' times, TURN credentials); time.time unless given.
        extra: dict[str, Any] = {} if wall_clock is None else {"wall_clock": wall_clock}
        self.hub = Hub(
            Settings(**base), clock=self.clock, id_factory=lambda p: f"{p}{next(counter)}", **extra
        )
        # A lone server: a cluster of one, its shared state in memory. With
        # ``redis`` set, a node of a cluster whose requests the test handles.
        self.cluster = LocalCluster(self.hub)
        self.alone = base.get("redis") is None
        self.metrics = Metrics(self.hub.counters, lambda: readings(self.hub))

    # Each entry point runs one step of the hub, then carries out its
    # effects exactly as the socket layer does (Hub.flush).

    def flush(self) -> None:
        if self.alone:
            self.hub.flush(_write, _close, self.cluster.submit)
        else:
            self.hub.drain_effects(_write, _close)

    @property
    def available(self) -> dict[str, dict[str, WorkerEntry]]:
        """The lone server's pools: game -> available workers, longest-waiting first."""
        return self.cluster.available

    def send(self, peer: Peer, msg: Message | str) -> None:
        self.on_message(peer, msg if isinstance(msg, str) else encode_str(msg))

    def on_message(self, peer: Peer, frame: str | bytes) -> None:
        self.hub.on_message(peer, frame)
        self.flush()

    def open_worker(self, conn: FakeConn) -> Worker:
        worker = self.hub.open_worker(conn)
        self.flush()
        return worker

    def open_client(self, conn: FakeConn) -> Client:
        client = self.hub.open_client(conn)
        self.flush()
        return client

    def on_close(self, peer: Peer, code: int | None = None) -> None:
        self.hub.on_close(peer, code)
        self.flush()

    def tick(self) -> None:
        self.hub.tick()
        self.flush()

    def shutdown_all(self) -> None:
        self.hub.shutdown_all()
        self.flush()

    def slow_consumer(self, peer: Peer) -> None:
        self.hub.slow_consumer(peer)
        self.flush()

    def worker(
        self,
        game: str = "com.supercell.clashroyale",
        conn: FakeConn | None = None,
        name: str | None = None,
    ) -> tuple[Worker, FakeConn]:
        conn = conn or FakeConn()
        worker = self.open_worker(conn)
        self.send(worker, Register(game=game, name=name))
        return worker, conn

    def client(
        self, game: str | None = None, conn: FakeConn | None = None
    ) -> tuple[Client, FakeConn]:
        conn = conn or FakeConn()
        client = self.open_client(conn)
        self.send(client, Join() if game is None else Join(game=game))
        return client, conn

    def advance(
        self, seconds: float, *, pong: Sequence[tuple[Worker | Client, FakeConn]] = ()
    ) -> None:
        """Move time forward tick by tick; peers in ``pong`` answer their pings."""
        steps = max(1, round(seconds / self.hub.tick_interval))
        for _ in range(steps):
            self.clock.now += self.hub.tick_interval
            self.tick()
            for peer, conn in pong:
                for msg in conn.take():
                    if isinstance(msg, Ping):
                        self.send(peer, Pong(ts=msg.ts))
                    else:
                        conn.sent.append(msg)  # keep non-pings for the test

    def assert_consistent(self) -> None:
        problems = [*self.hub.check_invariants(), *self.cluster.check()]
        assert not problems, problems


def connected_pair(
    rig: Rig, name: str | None = None
) -> tuple[Worker, FakeConn, Client, FakeConn, str]:
    """A worker (named ``name``) and a client through the whole handshake,
    inboxes emptied."""
    worker, wconn = rig.worker(name=name)
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


def _write(peer: Peer, msg: Message | bytes) -> bool:
    conn = peer.ws
    assert isinstance(conn, FakeConn)
    # An encoded message (a relayed frame) is read back as the peer would.
    return conn.write(decode(msg) if isinstance(msg, bytes) else msg)


def _close(peer: Peer, code: int, reason: str) -> None:
    conn = peer.ws
    assert isinstance(conn, FakeConn)
    conn.close(code, reason)


def examples(n: int) -> int:
    """A property test's budget: ``n`` under ``make test``, times
    ``PLAYCAST_EXAMPLES_SCALE`` for a deeper search (``make properties``)."""
    return n * int(os.environ.get("PLAYCAST_EXAMPLES_SCALE", "1"))
