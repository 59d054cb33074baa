"""The core never re-enters itself: a slow reader found at any send point is
handled as its own step, after the step that found it.

Each scenario runs once to count the writes to every connection; then once
more for every (connection, write) pair, with that connection reporting "not
reading" from that write on, as a full transport buffer does. Every run must
keep the invariants after each step, send nothing after a close, show each
side its messages in protocol order, and leave nothing behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from hubkit import FakeConn, Rig

from playcast.protocol import (
    Answer,
    Assigned,
    Candidate,
    Error,
    IceCandidate,
    InactivityWarning,
    Input,
    Join,
    Leave,
    Message,
    Offer,
    Ping,
    Pong,
    Register,
    Registered,
    Rejected,
    SessionStart,
    Shutdown,
    ShutdownAck,
    WebrtcConnected,
    WebrtcFailed,
)
from playcast.signaling.types import Client, Peer, Worker

Conns = Callable[[], FakeConn]


class Run:
    """One run of a scenario: connections made in order, some of them slow."""

    def __init__(self, slow: tuple[int, int] | None = None) -> None:
        self.rig = Rig(inactivity_timeout=8.0, inactivity_warning=4.0, handshake_timeout=5.0)
        self.slow = slow
        self.conns: list[FakeConn] = []
        self.peers: list[Peer] = []

    def conn(self) -> FakeConn:
        conn = FakeConn()
        if self.slow is not None and self.slow[0] == len(self.conns):
            conn.slow_at = self.slow[1]
        self.conns.append(conn)
        return conn

    def worker(self) -> Worker:
        worker, _ = self.rig.worker(conn=self.conn())
        self.peers.append(worker)
        self.check()
        return worker

    def client(self) -> Client:
        client, _ = self.rig.client(conn=self.conn())
        self.peers.append(client)
        self.check()
        return client

    def send(self, peer: Peer, msg: Message) -> None:
        self.rig.send(peer, msg)
        self.check()

    def live(self, seconds: float) -> None:
        """Time passes; every open socket answers its pings."""
        self.rig.advance(seconds, pong=self._open())
        self.check()

    def silent(self, seconds: float) -> None:
        self.rig.advance(seconds)
        self.check()

    def ack_all(self) -> None:
        for peer, conn in self._open():
            if any(isinstance(m, Shutdown) for m in conn.sent):
                self.send(peer, ShutdownAck(ok=True, detail=""))

    def _open(self) -> list[tuple[Worker | Client, FakeConn]]:
        return [
            (p, c)
            for p, c in zip(self.peers, self.conns, strict=False)
            if c.closed is None and isinstance(p, Worker | Client)
        ]

    def check(self) -> None:
        self.rig.assert_consistent()
        for peer, conn in zip(self.peers, self.conns, strict=False):
            assert_in_order(peer, conn.sent)

    def finish(self) -> None:
        """Whatever happened, a server stop leaves nothing behind."""
        self.rig.shutdown_all()
        self.ack_all()
        self.silent(3.0)
        hub = self.rig.hub
        assert not hub.workers and not hub.clients and not hub.sessions and not hub.closing
        assert all(not q for q in self.rig.available.values())
        for peer, conn in zip(self.peers, self.conns, strict=False):
            assert conn.closed is not None, f"{peer.id} never closed"


def assert_in_order(peer: Peer, sent: list[Message]) -> None:
    """Each side sees the protocol's order, and nothing after its ending."""
    flow = [m for m in sent if not isinstance(m, Ping | Error | InactivityWarning)]
    if isinstance(peer, Worker):
        order: list[type] = [Registered, SessionStart, Answer, Shutdown]
        relayed: tuple[type, ...] = (Answer, IceCandidate)
    else:
        order = [Assigned, Offer, Shutdown]
        relayed = (Offer, IceCandidate)
        if flow and isinstance(flow[0], Rejected):
            assert len(flow) == 1, f"{peer.id} got {flow[1:]} after rejected"
            return
    rank = -1
    for msg in flow:
        kind = IceCandidate if isinstance(msg, IceCandidate) else type(msg)
        assert rank < order.index(Shutdown), f"{peer.id} got {msg!r} after its shutdown: {flow}"
        if kind is IceCandidate:
            # Candidates follow the offer (client) or the session_start (worker).
            assert rank >= order.index(relayed[0]) - (1 if isinstance(peer, Worker) else 0), (
                f"{peer.id} got a candidate too early: {flow}"
            )
            continue
        index = order.index(kind)
        assert index > rank, f"{peer.id} got {type(msg).__name__} out of order: {flow}"
        rank = index


def full_session(run: Run) -> None:
    worker = run.worker()
    idle = run.worker()
    client = run.client()
    sid = client.session_id or "gone"  # a slow reader may have ended it already
    cand = Candidate(candidate="candidate:1 1 udp 1 127.0.0.1 9 typ host", sdp_mid="0")
    run.send(worker, Offer(session_id=sid, sdp="offer"))
    run.send(worker, IceCandidate(session_id=sid, candidate=cand))
    run.send(client, IceCandidate(session_id=sid, candidate=cand))
    run.send(client, Answer(session_id=sid, sdp="answer"))
    run.send(worker, IceCandidate(session_id=sid, candidate=None))
    run.send(worker, WebrtcConnected(session_id=sid))
    run.send(client, WebrtcConnected(session_id=sid))
    run.send(client, Input(event={"type": "down"}))
    run.live(1.0)
    run.send(client, Leave())
    run.ack_all()
    run.live(1.0)
    del idle


def handshake_timeout(run: Run) -> None:
    worker = run.worker()
    client = run.client()
    run.send(worker, Offer(session_id=client.session_id or "gone", sdp="offer"))
    run.live(6.0)
    run.ack_all()


def inactivity(run: Run) -> None:
    worker = run.worker()
    client = run.client()
    sid = client.session_id or "gone"  # a slow reader may have ended it already
    run.send(worker, Offer(session_id=sid, sdp="offer"))
    run.send(client, Answer(session_id=sid, sdp="answer"))
    run.send(worker, WebrtcConnected(session_id=sid))
    run.send(client, WebrtcConnected(session_id=sid))
    run.live(9.0)  # warned at 4 s left, ended at 8 s
    run.ack_all()


def failures(run: Run) -> None:
    worker = run.worker()
    client = run.client()
    sid = client.session_id or "gone"  # a slow reader may have ended it already
    run.send(worker, Offer(session_id=sid, sdp="offer"))
    run.send(client, WebrtcFailed(session_id=sid, reason="no route"))
    run.ack_all()
    run.live(1.5)  # the worker's restart delay
    worker2 = run.worker()
    client2 = run.client()
    run.send(worker2, Register(game="com.supercell.clashroyale"))  # error: already registered
    run.send(client2, Join())  # error: already joined
    run.silent(4.0)  # nobody answers pings: heartbeat timeouts
    rejected = run.client()  # the worker is gone by now
    del rejected


def server_stop(run: Run) -> None:
    run.worker()
    worker = run.worker()
    client = run.client()
    run.send(worker, Offer(session_id=client.session_id or "gone", sdp="offer"))
    run.rig.shutdown_all()
    run.check()
    late = run.worker()  # slipped in while draining
    del late
    run.ack_all()


SCENARIOS = [full_session, handshake_timeout, inactivity, failures, server_stop]


def slow_points(scenario: Callable[[Run], None]) -> Iterator[tuple[int, int]]:
    clean = Run()
    scenario(clean)
    for index, conn in enumerate(clean.conns):
        for n in range(1, conn.writes + 1):
            yield index, n


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_a_slow_reader_at_every_send_point(scenario: Callable[[Run], None]) -> None:
    points = list(slow_points(scenario))
    assert len(points) >= 8  # the scenario does reach its send points
    for slow in points:
        run = Run(slow)
        scenario(run)
        conn = run.conns[slow[0]]
        assert conn.closed is not None and conn.closed[0] in (1000, 1008), (slow, conn.closed)
        run.finish()


def test_slow_at_registered_leaves_no_ghost_in_the_pool() -> None:
    """The reviewer's first reproduction: the next join used to raise KeyError."""
    rig = Rig()
    conn = FakeConn(slow_at=1)
    worker, _ = rig.worker(conn=conn)
    assert conn.sent[0] == Registered(
        worker_id=worker.id, heartbeat_interval=1.0, heartbeat_timeout=3.0
    )
    assert conn.closed == (1008, "")
    assert not rig.available["com.supercell.clashroyale"]
    client, cconn = rig.client()
    assert isinstance(cconn.sent[0], Rejected) and cconn.sent[0].reason == "no_worker_available"
    rig.assert_consistent()
    del client


def test_slow_worker_at_session_start_client_sees_assigned_then_shutdown() -> None:
    """The second reproduction: the client got shutdown before assigned."""
    rig = Rig()
    _worker, _ = rig.worker(conn=FakeConn(slow_at=2))  # registered, then session_start
    _client, cconn = rig.client()
    kinds = [type(m) for m in cconn.sent if not isinstance(m, Ping)]
    assert kinds == [Assigned, Shutdown]
    shutdown = cconn.sent[-1]
    assert isinstance(shutdown, Shutdown) and shutdown.reason == "worker_failed"
    rig.assert_consistent()


def test_pong_before_hello_is_accepted() -> None:
    rig = Rig()
    conn = FakeConn()
    worker = rig.open_worker(conn)
    rig.send(worker, Pong(ts=rig.clock.now))
    assert conn.sent == []
