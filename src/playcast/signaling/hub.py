"""The protocol core's entry points: every rule of PROTOCOL.md, with no I/O.

The socket layer feeds the hub what happened (``open_worker``,
``open_client``, ``on_message``, ``on_close``, ``tick``, ``shutdown_all``,
``slow_consumer``) and, after each call, runs ``drain_effects``: the sends
and closes the step owes, in order. No rule ever runs inside another: a
slow reader found while writing is the next step, after the current one.

Below the hub, each module manages one thing and imports only downwards:
``workers``/``clients`` (each role's messages) → ``handshake`` → ``peers``
(errors, floods, bugs) → ``sessions`` → ``closing`` (shutdown and acks) →
``state`` (records and effects) → ``pool``, ``types``, ``settings``,
``metrics``, ``events``; ``heartbeat`` (the sweep) and ``status`` sit beside
the role modules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from playcast.protocol import (
    BadMessage,
    Input,
    Message,
    Pong,
    Resume,
    ShutdownAck,
    decode,
    message_type,
)
from playcast.signaling import (
    clients,
    heartbeat,
    nodes,
    pairing,
    peers,
    resume,
    sessions,
    status,
    workers,
)
from playcast.signaling.bus import BusMessage
from playcast.signaling.closing import acked, release, shut_down
from playcast.signaling.events import event, step
from playcast.signaling.shared import Forgotten, Op, Outcome
from playcast.signaling.state import State, fmt_remote, ids, role, said_hello
from playcast.signaling.types import Client, Connection, Peer, RateLimit, Worker

P = TypeVar("P", bound=Peer)


class Hub(State):
    # --- connections -----------------------------------------------------

    def open_worker(self, ws: Connection) -> Worker:
        worker = self._open(Worker, "w", ws)
        self.workers[worker.id] = worker
        self._greet(worker)
        self._settle()
        return worker

    def open_client(self, ws: Connection) -> Client:
        client = self._open(Client, "c", ws)
        self.clients[client.id] = client
        self._greet(client)
        self._settle()
        return client

    def _open(self, kind: type[P], prefix: str, ws: Connection) -> P:
        now, s = self.clock(), self.settings
        peer = kind(
            id=self.new_id(prefix),
            ws=ws,
            last_ping=now,
            opened_at=now,
            messages=RateLimit(s.max_message_rate, s.max_message_burst, now=now),
            errors=RateLimit(s.max_error_rate, s.max_error_burst, now=now),
        )
        heartbeat.place(self, peer)
        return peer

    def _greet(self, peer: Peer) -> None:
        # At debug: the registered/assigned/rejected line that follows says it all.
        step(f"{role(peer)}_connected", **{role(peer): peer.id}, remote=fmt_remote(peer))
        if self.stopping:  # it slipped in while the server drains: tell it too
            shut_down(self, peer, "server_shutdown")

    def on_close(self, peer: Peer, code: int | None = None) -> None:
        """The socket is gone (closed by the peer, or by us); ``code`` for the log."""
        if release(self, peer) or not self.is_live(peer):
            return
        try:
            if not resume.step_away(self, peer):
                event(f"{role(peer)}_disconnected", code=code, **ids(peer))
                sessions.fail(self, peer)
        except Exception:
            peers.crashed(self, peer, "close")
        self._settle()

    # --- inbound ---------------------------------------------------------

    def on_message(self, peer: Peer, frame: str | bytes) -> None:
        if not self.is_live(peer) and peer.id not in self.closing:
            return  # already dropped; frames still in flight before the close
        try:
            self._on_message(peer, frame)
        except Exception:
            peers.crashed(self, peer, "message")
        self._settle()

    def _on_message(self, peer: Peer, frame: str | bytes) -> None:
        now = self.clock()
        if not peer.messages.take(now):
            peers.flooded(self, peer, "message rate")
            return
        if isinstance(frame, bytes):
            peers.error(self, peer, "bad_message", "binary frames are not accepted; send JSON text")
            return
        try:
            msg = decode(frame)
        except BadMessage as exc:
            peers.error(self, peer, "bad_message", str(exc))
            return
        peer.last_ping = now
        if isinstance(msg, Pong):
            if 0.0 <= now - msg.ts < 3600.0:
                self.metrics.heartbeat_rtt_seconds.observe(now - msg.ts)
            return
        if peer.id in self.closing:
            self._while_closing(peer, msg)
        elif isinstance(msg, Resume):
            if said_hello(peer):
                peers.error(self, peer, "unexpected_message", "resume must be the first message")
            else:
                resume.come_back(self, peer, msg)
        elif isinstance(peer, Worker):
            workers.handle(self, peer, msg)
        elif isinstance(peer, Client):
            clients.handle(self, peer, msg)

    def _while_closing(self, peer: Peer, msg: Message) -> None:
        if isinstance(msg, ShutdownAck):
            acked(self, peer, msg)
        elif not (isinstance(msg, Input) and isinstance(peer, Client) and peer.joined):
            # Input is accepted in every state after join, even now: the
            # player may still be tapping while its session winds down.
            peers.error(self, peer, "unexpected_message", f"'{message_type(msg)}' after shutdown")

    def slow_consumer(self, peer: Peer) -> None:
        """The socket layer found ``peer``'s unsent data past the limit."""
        peers.slow_consumer(self, peer)
        self._settle()

    # --- the rest of the cluster -----------------------------------------

    def on_outcome(self, op: Op, outcome: Outcome | None) -> None:
        """The shared state's answer to ``op`` (None: it could not be asked)."""
        pairing.settle(self, op, outcome)
        self._settle()

    def on_bus(self, msg: BusMessage) -> None:
        """Another node's word about a session shared with it."""
        try:
            nodes.on_bus(self, msg)
        except Exception:
            peers.log.exception("internal error handling %r", msg)
            self.metrics.count(self.metrics.internal_errors, "bus")
        self._settle()

    def node_down(self, node: str, cleaned: Forgotten | None = None) -> None:
        """``node`` is dead. ``cleaned``: what its shared state's cleanup
        found, for the node that cleaned it up to announce."""
        nodes.node_down(self, node, cleaned)
        self._settle()

    def node_back(self, node: str) -> None:
        pairing.node_back(self, node)
        self._settle()

    def cut_off(self) -> None:
        nodes.cut_off(self)
        self._settle()

    def reconnected(self) -> None:
        nodes.reconnected(self)

    def _settle(self) -> None:
        """A lone server answers its own shared-state requests, each as the
        step after the one that asked (a cluster's come back as on_outcome)."""
        memory = self.memory
        if memory is None:
            return
        while self.requests:
            for op in self.take_requests():
                pairing.settle(self, op, memory.apply(op))

    # --- timers and stopping ---------------------------------------------

    @property
    def tick_interval(self) -> float:
        return heartbeat.tick_interval(self)

    def tick(self) -> None:
        """Run every ``tick_interval``: one slot's pings and checks, and deadlines."""
        heartbeat.tick(self)
        self._settle()

    def shutdown_all(self, reconnect: bool = False) -> None:
        """Server stop: everyone here, idle or not, is shut down with
        server_shutdown; a partner on another node hears its partner failed.

        ``reconnect`` (other nodes live, resume on): everyone is told
        ``reconnect`` instead, and session members resume elsewhere, their
        sessions waiting for them here until another node takes them over."""
        self.stopping = True
        event(
            "server_stopping",
            workers=len(self.workers),
            clients=len(self.clients),
            reconnect=reconnect or None,
        )
        if reconnect:
            resume.send_elsewhere(self, list(self.sessions.values()))
            self._settle()
            return
        for session in list(self.sessions.values()):
            here = self.node
            sessions.end(
                self,
                session,
                "server_shutdown" if session.worker_node == here else "client_failed",
                "server_shutdown" if session.client_node == here else "worker_failed",
            )
        for peer in [*self.workers.values(), *self.clients.values()]:
            shut_down(self, peer, "server_shutdown")
        self._settle()

    # --- observation -----------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return status.snapshot(self)

    def check_invariants(self) -> Iterator[str]:
        return status.check_invariants(self)


def drain_effects(
    hub: Hub,
    write: Callable[[Peer, Message | bytes], bool],
    close: Callable[[Peer, int, str], None],
) -> None:
    """Carry out what the last step owes, in order: the loop of every I/O layer.

    ``write`` returns True when the peer's unsent data is past the limit;
    such a peer is closed as a slow consumer once the batch is written, as a
    step of its own, and that step's effects are carried out in turn.
    """
    while hub.effects:
        slow: list[Peer] = []
        for peer, msg, code, reason in hub.take_effects():
            if msg is not None:
                if write(peer, msg):
                    slow.append(peer)
            else:
                close(peer, code, reason)
        for peer in slow:
            hub.slow_consumer(peer)
