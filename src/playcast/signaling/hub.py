"""The core's entry points: every rule of PROTOCOL.md, with no I/O.

The I/O layer feeds the hub what happened (``open_worker``, ``open_client``,
``on_message``, ``on_close``, ``tick``, ``shutdown_all``, ``slow_consumer``;
from the rest of the cluster ``on_outcome``, ``on_bus``, ``node_down``, …)
and after each call carries out what the step owes (``flush``): the sends
and closes, then the shared-state requests and the words for other nodes.
No rule ever runs inside another: a slow reader found while writing is the
next step, after the current one.

The hub is the door: it keeps the message rate, decodes, answers what it
cannot accept (``Unexpected``: ``conduct.error``) and contains a bug to the
peer that met it. Behind it, ``workers`` and ``clients`` take each role's
messages, and ``rules/`` holds the rest, each module importing downwards
only (docs/architecture.md). The hub is also the one ``Core`` the rules see:
it owns the effects, and the records' owners live beside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

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
from playcast.signaling import clients, workers
from playcast.signaling.rules import (
    admin,
    conduct,
    heartbeat,
    nodes,
    pairing,
    resume,
    sessions,
    status,
)
from playcast.signaling.rules.bus import BusMessage, Start
from playcast.signaling.rules.closing import acked, shut_down
from playcast.signaling.rules.counters import Counters
from playcast.signaling.rules.events import Unexpected, event, step
from playcast.signaling.rules.settings import Settings
from playcast.signaling.rules.state import (
    Closings,
    Line,
    Nodes,
    Pending,
    Roster,
    SessionTable,
    new_id,
)
from playcast.signaling.shared.records import (
    Denied,
    Done,
    Forgotten,
    Hold,
    Op,
    Outcome,
    Pair,
    Publish,
    Reattach,
    Reattached,
)
from playcast.signaling.types import (
    Client,
    Connection,
    Peer,
    RateLimit,
    Session,
    Worker,
    fmt_remote,
    ids,
    role,
    said_hello,
)

if TYPE_CHECKING:
    from playcast.signaling.rules.tickets import TicketCheck

P = TypeVar("P", bound=Worker | Client)

# (peer, message, 0, "") is a send; (peer, None, code, reason) a close.
Effect = tuple[Peer, Message | bytes | None, int, str]


class Hub:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        counters: Counters | None = None,
        id_factory: Callable[[str], str] = new_id,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.wall_clock = wall_clock
        self.counters = counters or Counters()
        self.new_id = id_factory
        self.node = settings.node_id or id_factory("n")
        self.games = frozenset(settings.games)
        self.tickets = _ticket_check(settings)
        self.roster = Roster()
        self.table = SessionTable()
        self.line = Line()
        self.closings = Closings()
        self.nodes = Nodes()
        self.pending = Pending()
        self.stopping = False  # a plain attribute: read on every flush
        self.effects: list[Effect] = []
        self.requests: list[Op] = []
        self.tells: list[tuple[str, BusMessage]] = []

    # --- the effect sink (the rules' Core) --------------------------------

    def send(self, peer: Peer, msg: Message) -> None:
        self.effects.append((peer, msg, 0, ""))

    def send_encoded(self, peer: Peer, data: bytes) -> None:
        self.effects.append((peer, data, 0, ""))

    def close(self, peer: Peer, code: int, reason: str) -> None:
        self.effects.append((peer, None, code, reason))

    def request(self, op: Op) -> None:
        self.requests.append(op)

    def tell(self, node: str, msg: BusMessage) -> None:
        self.tells.append((node, msg))

    def flush(
        self,
        write: Callable[[Peer, Message | bytes], bool],
        close: Callable[[Peer, int, str], None],
        submit: Callable[[], None],
    ) -> None:
        """Carry out everything the last step owes: its sends and closes, then
        its requests and words for other nodes (``submit``: the cluster's; a
        cluster of one answers at once, and those answers' effects go out in
        turn). The loop of every I/O layer."""
        if self.effects:
            self.drain_effects(write, close)
        while self.requests or self.tells:
            submit()
            self.drain_effects(write, close)

    def drain_effects(
        self,
        write: Callable[[Peer, Message | bytes], bool],
        close: Callable[[Peer, int, str], None],
    ) -> None:
        """Carry out the sends and closes owed, in order. ``write`` returns
        True when the peer's unsent data is past the limit; such a peer is
        closed as a slow consumer once the batch is written, as a step of its
        own, and that step's effects are carried out in turn."""
        while self.effects:
            slow: list[Peer] = []
            effects, self.effects = self.effects, []
            for peer, msg, code, reason in effects:
                if msg is not None:
                    if write(peer, msg):
                        slow.append(peer)
                else:
                    close(peer, code, reason)
            for peer in slow:
                self.slow_consumer(peer)

    def take_requests(self) -> list[Op]:
        requests, self.requests = self.requests, []
        return requests

    def take_tells(self) -> list[tuple[str, BusMessage]]:
        tells, self.tells = self.tells, []
        return tells

    # --- connections -------------------------------------------------------

    def open_worker(self, ws: Connection) -> Worker:
        return self._open(Worker, "w", ws)

    def open_client(self, ws: Connection) -> Client:
        return self._open(Client, "c", ws)

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
        self.roster.add(peer)
        # At debug: the registered/assigned/rejected line that follows says it all.
        step(f"{role(peer)}_connected", **{role(peer): peer.id}, remote=fmt_remote(peer))
        if self.stopping:  # it slipped in while the server drains: tell it too
            shut_down(self, peer, "server_shutdown")
        return peer

    def on_close(self, peer: Peer, code: int | None = None) -> None:
        """The socket is gone (closed by the peer, or by us); ``code`` for the log."""
        if self.closings.release(peer) or not peer.live:
            return
        try:
            if not resume.step_away(self, peer):
                event(f"{role(peer)}_disconnected", code=code, **ids(peer))
                sessions.fail(self, peer)
        except Exception:
            conduct.crashed(self, peer, "close")

    # --- inbound -------------------------------------------------------------

    def on_message(self, peer: Peer, frame: str | bytes) -> None:
        if not peer.live and peer.id not in self.closings.peers:
            return  # already dropped; frames still in flight before the close
        try:
            self._on_message(peer, frame)
        except Unexpected as refusal:
            conduct.error(self, peer, refusal.code, refusal.text)
        except Exception:
            conduct.crashed(self, peer, "message")

    def _on_message(self, peer: Peer, frame: str | bytes) -> None:
        now = self.clock()
        if not peer.messages.take(now):
            conduct.flooded(self, peer, "message rate")
            return
        if isinstance(frame, bytes):
            raise Unexpected("binary frames are not accepted; send JSON text", "bad_message")
        try:
            msg = decode(frame)
        except BadMessage as exc:
            raise Unexpected(str(exc), "bad_message") from None
        peer.last_ping = now
        if isinstance(msg, Pong):
            if 0.0 <= now - msg.ts < 3600.0:
                self.counters.heartbeat_rtt_seconds.observe(now - msg.ts)
            return
        if peer.id in self.closings.peers:
            self._while_closing(peer, msg)
        elif isinstance(msg, Resume):
            if said_hello(peer):
                raise Unexpected("resume must be the first message")
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
            raise Unexpected(f"'{message_type(msg)}' after shutdown")

    def slow_consumer(self, peer: Peer) -> None:
        """The socket layer found ``peer``'s unsent data past the limit."""
        conduct.slow_consumer(self, peer)

    # --- the rest of the cluster ---------------------------------------------

    def on_outcome(self, op: Op, outcome: Outcome | None) -> None:
        """The shared state's answer to ``op`` (None: it could not be asked)."""
        self._contained("outcome", self._on_outcome, op, outcome)

    def _on_outcome(self, op: Op, outcome: Outcome | None) -> None:
        if isinstance(op, Reattach):
            assert outcome is None or isinstance(outcome, Reattached | Denied)
            resume.reattached(self, op, outcome)
        elif isinstance(op, Pair):
            pairing.client_paired(self, op, outcome)
        elif isinstance(op, Publish):
            pairing.worker_published(self, op, outcome)
        elif isinstance(op, Hold):
            pairing.hold_changed(self, op, outcome)
        elif isinstance(outcome, Done) and outcome.line is not None:
            pairing.announce_line(self, outcome.game, outcome.line)

    def on_bus(self, msg: BusMessage) -> None:
        """Another node's word about a session shared with it."""
        self._contained("bus", nodes.on_bus, self, msg)

    def node_down(self, node: str, cleaned: Forgotten | None = None) -> None:
        """``node`` is dead. ``cleaned``: what its shared state's cleanup
        found, for the node that cleaned it up to announce."""
        self._contained("node_down", nodes.node_down, self, node, cleaned)

    def node_back(self, node: str) -> None:
        self._contained("node_back", pairing.node_back, self, node)

    def hold(self, name: str, on: bool) -> None:
        """An operator drains the worker name ``name`` (``on``) or undrains it."""
        self._contained("hold", admin.hold, self, name, on)

    def restart_worker(self, worker_id: str, node: str) -> None:
        """An operator restarts the worker ``worker_id``, held by ``node``."""
        self._contained("restart", admin.restart, self, worker_id, node)

    def forget_nodes(self, keep: set[str]) -> None:
        """Nodes found dead that nothing here or in the shared state names
        any more are forgotten (a node's id is new for each process)."""
        sessions = self.table.sessions.values()
        named = {s.worker_node for s in sessions} | {s.client_node for s in sessions}
        self.nodes.forget_gone(keep | named)

    def cut_off(self) -> None:
        self._contained("cut_off", nodes.cut_off, self)

    def reconnected(self) -> None:
        self._contained("reconnected", nodes.reconnected, self)

    def _contained(self, where: str, step: Callable[..., None], *args: Any) -> None:
        """A bug in a step from the cluster is logged and counted; it must
        not kill the cluster's loop that fed it (the node would look healthy
        while nothing more reaches it)."""
        try:
            step(*args)
        except Exception:
            conduct.log.exception("internal error in %s", where)
            self.counters.internal_errors.inc(where)

    # --- timers and stopping -------------------------------------------------

    @property
    def tick_interval(self) -> float:
        return heartbeat.tick_interval(self)

    def tick(self) -> None:
        """Run every ``tick_interval``: one slot's pings and checks, and deadlines."""
        heartbeat.tick(self)

    def shutdown_all(self, reconnect: bool = False) -> None:
        """Server stop: everyone here, idle or not, is shut down with
        server_shutdown; a partner on another node hears its partner failed.

        ``reconnect`` (other nodes live, resume on): everyone is told
        ``reconnect`` instead, and session members resume elsewhere, their
        sessions waiting for them here until another node takes them over."""
        self.stopping = True
        event(
            "server_stopping",
            workers=len(self.roster.workers),
            clients=len(self.roster.clients),
            reconnect=reconnect or None,
        )
        if reconnect:
            resume.send_elsewhere(self, list(self.table.sessions.values()))
            return
        here = self.node
        for session in list(self.table.sessions.values()):
            sessions.end(
                self,
                session,
                "server_shutdown" if session.worker_node == here else "client_failed",
                "server_shutdown" if session.client_node == here else "worker_failed",
            )
        for peer in [*self.roster.workers.values(), *self.roster.clients.values()]:
            shut_down(self, peer, "server_shutdown")

    # --- observation -----------------------------------------------------------

    @property
    def drained(self) -> bool:
        """Stopping, and every peer told so has acked or been closed."""
        return self.stopping and not self.closings.peers

    @property
    def workers(self) -> Mapping[str, Worker]:
        return self.roster.workers

    @property
    def clients(self) -> Mapping[str, Client]:
        return self.roster.clients

    @property
    def sessions(self) -> Mapping[str, Session]:
        return self.table.sessions

    @property
    def closing(self) -> Mapping[str, Peer]:
        return self.closings.peers

    @property
    def away(self) -> Mapping[str, Worker | Client]:
        return self.table.away

    @property
    def waiting_for(self) -> Mapping[str, Session]:
        return self.table.waiting

    @property
    def waiting(self) -> Mapping[str, Client]:
        return self.line.clients

    @property
    def held_starts(self) -> Mapping[str, Start]:
        return self.pending.starts

    @property
    def gone_nodes(self) -> frozenset[str]:
        return self.nodes.gone

    @property
    def isolated(self) -> bool:
        return self.nodes.isolated

    def is_live(self, peer: Peer) -> bool:
        return self.roster.is_live(peer)

    def snapshot(self) -> dict[str, Any]:
        return status.snapshot(self)

    def check_invariants(self) -> Iterator[str]:
        return status.check_invariants(self)


def _ticket_check(settings: Settings) -> TicketCheck | None:
    """The join tickets' check, with --join-secret; imported only then (PyJWT
    costs a tenth of a second at start)."""
    if not settings.join_secrets:
        return None
    from playcast.signaling.rules.tickets import TicketCheck

    return TicketCheck(
        settings.join_secrets, max_age=settings.ticket_max_age, leeway=settings.ticket_leeway
    )
