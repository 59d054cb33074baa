"""Several nodes under one fake clock, sharing one in-memory shared state.

Each node is a real ``Hub`` in cluster mode; its shared-state requests are
executed on one ``MemoryShared`` (the model the Redis scripts follow) and
answered as later steps, and what it tells another node travels on a FIFO
bus, exactly as the cluster layer does over Redis: a node's message goes
on the bus once every request it made before it has run (one pipeline, its
operations before its publishes). ``settle`` runs every
node's pending work to quiet; a test may instead step one node at a time to
interleave them as a loaded cluster would.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Any

from hubkit import FakeClock, FakeConn, _close, _write

from playcast.protocol import Join, Message, Pong, Register, encode_str
from playcast.signaling.hub import Hub
from playcast.signaling.rules.bus import BusMessage, decode, encode
from playcast.signaling.rules.settings import Settings
from playcast.signaling.shared.memory import MemoryShared
from playcast.signaling.shared.records import Op
from playcast.signaling.types import Client, Peer, Worker

GAME = "com.supercell.clashroyale"
BASE: dict[str, Any] = {
    "heartbeat_interval": 1.0,
    "heartbeat_timeout": 3.0,
    "inactivity_timeout": 60.0,
    "inactivity_warning": 10.0,
    "handshake_timeout": 20.0,
    "shutdown_ack_timeout": 2.0,
    "hello_timeout": 30.0,
    "games": (GAME, "com.example.other"),
    "redis": "memory://",
}


class Cluster:
    def __init__(self, names: tuple[str, ...] = ("A", "B", "C"), **settings: Any) -> None:
        self.clock = FakeClock()
        counter = itertools.count(1)
        config = {**BASE, **settings}
        self.shared = MemoryShared(config["games"])
        self.hubs: dict[str, Hub] = {}
        for name in names:
            self.hubs[name] = Hub(
                Settings(**{**config, "node_id": name}),
                clock=self.clock,
                id_factory=lambda p: f"{p}{next(counter)}",
            )
        # A node's requests, and its messages queued behind them.
        self.requests: dict[str, deque[Op | tuple[str, bytes]]] = {n: deque() for n in names}
        self.bus: dict[str, deque[bytes]] = {n: deque() for n in names}
        self.ops = 0
        self.messages = 0

    # --- moving things along ---------------------------------------------

    def collect(self, name: str) -> None:
        """Carry out a node's socket effects; queue its requests and tells."""
        hub = self.hubs[name]
        while hub.effects or hub.requests or hub.tells:
            hub.drain_effects(_write, _close)
            queue = self.requests[name]
            queue.extend(hub.take_requests())
            queue.extend((node, encode(msg)) for node, msg in hub.take_tells())  # as it travels
        self._publish(name)

    def _publish(self, name: str) -> None:
        """Put ``name``'s messages no request stands before on the bus."""
        queue = self.requests[name]
        while queue and isinstance(queue[0], tuple):
            node, data = queue.popleft()
            if node in self.bus:  # a dead node's stream is read by nobody
                self.bus[node].append(data)

    def step(self, name: str) -> bool:
        """One thing for node ``name``: its next request answered, or its
        next bus message delivered. False when it has nothing to do."""
        hub = self.hubs.get(name)
        if hub is None:
            return False
        if self.requests[name]:
            op = self.requests[name].popleft()
            assert not isinstance(op, tuple)  # (published as soon as it led)
            self.ops += 1
            hub.on_outcome(op, self.shared.apply(op))
        elif self.bus[name]:
            msg: BusMessage = decode(self.bus[name].popleft())
            self.messages += 1
            hub.on_bus(msg)
        else:
            return False
        self.collect(name)
        return True

    def pending(self) -> list[str]:
        """Nodes with work queued (after collecting what every node owes)."""
        for name in list(self.hubs):
            self.collect(name)
        return [n for n in self.hubs if self.requests[n] or self.bus[n]]

    def settle(self) -> None:
        while busy := self.pending():
            for name in busy:
                self.step(name)

    # --- peers -----------------------------------------------------------

    def send(self, node: str, peer: Peer, msg: Message | str) -> None:
        self.hubs[node].on_message(peer, msg if isinstance(msg, str) else encode_str(msg))
        self.settle()

    def worker(
        self, node: str, codecs: list[str] | None = None, game: str = GAME, name: str | None = None
    ) -> tuple[Worker, FakeConn]:
        conn = FakeConn()
        worker = self.hubs[node].open_worker(conn)
        self.send(node, worker, Register(game=game, codecs=codecs, name=name))
        return worker, conn

    def client(
        self, node: str, codecs: list[str] | None = None, game: str = GAME
    ) -> tuple[Client, FakeConn]:
        conn = FakeConn()
        client = self.hubs[node].open_client(conn)
        self.send(node, client, Join(game=game, codecs=codecs))
        return client, conn

    def close(self, node: str, peer: Peer) -> None:
        self.hubs[node].on_close(peer, 1006)
        self.settle()

    def advance(
        self, seconds: float, *, pong: list[tuple[str, Peer, FakeConn]] | None = None
    ) -> None:
        """Every node's sweep, tick by tick; the peers in ``pong`` answer."""
        any_hub = next(iter(self.hubs.values()))
        steps = max(1, round(seconds / any_hub.tick_interval))
        for _ in range(steps):
            self.clock.now += any_hub.tick_interval
            for hub in self.hubs.values():
                hub.tick()
            self.settle()
            for node, peer, conn in pong or []:
                for msg in conn.take():
                    if msg.__class__.__name__ == "Ping":
                        self.send(node, peer, Pong(ts=getattr(msg, "ts", 0.0)))
                    else:
                        conn.sent.append(msg)

    # --- failures --------------------------------------------------------

    def kill(self, name: str, *, noticed_by: tuple[str, ...] | None = None) -> None:
        """SIGKILL: the node's sockets are gone with it, its shared state is
        cleaned by the first survivor to notice, and every survivor ends the
        sessions it had with it. Noticed a TTL later: what it had published
        has reached the others by then."""
        del self.hubs[name]
        self.requests.pop(name)
        self.bus.pop(name)
        self.settle()
        grace = next(iter(self.hubs.values())).settings.resume_grace if self.hubs else 0
        cleaned = self.shared.forget(name, grace=grace)
        survivors = noticed_by or tuple(self.hubs)
        for index, node in enumerate(survivors):
            self.hubs[node].node_down(name, cleaned if index == 0 else None)
        self.settle()

    def assert_consistent(self) -> None:
        for name, hub in self.hubs.items():
            problems = list(hub.check_invariants())
            assert not problems, (name, problems)
        busy = [s.worker for s in self.shared.sessions.values()]
        assert len(busy) == len(set(busy)), f"a worker in two sessions: {busy}"
        for game in self.shared.games.values():
            for wid, entry in game.pool.items():
                hub = self.hubs.get(entry.node)
                assert hub is not None, f"{wid} of a dead node is available"
                worker = hub.workers.get(wid)
                assert worker is not None and worker.status == "available", wid
                assert wid not in self.shared.busy
        # At rest, what a node holds available or waiting is where the others
        # can find it (else a worker stays idle, or a player waits, for good).
        pools = {wid for g in self.shared.games.values() for wid in g.pool}
        lines = {cid for g in self.shared.games.values() for cid in g.line}
        for name, hub in self.hubs.items():
            for w in hub.workers.values():
                if w.registered and w.status == "available" and not hub.isolated:
                    assert w.id in pools, f"{w.id}, available on {name}, is in no pool"
                held = w.id in self.shared.holds.get(w.name, ())
                assert (w.status == "held") == held, f"{w.id} is {w.status} on {name}, held {held}"
            for cid in hub.waiting:
                assert cid in lines, f"{cid}, waiting on {name}, is in no line"


def ping_pong_peers(
    peers: list[tuple[str, Peer, FakeConn]],
) -> list[tuple[str, Peer, FakeConn]]:
    return [(n, p, c) for n, p, c in peers if c.closed is None]


__all__ = ["GAME", "Cluster", "FakeConn", "decode", "ping_pong_peers"]
