"""What this node owes Redis, and when it goes: the cluster link's outbound
queue, free of I/O (``cluster.py`` carries each batch out, one pipeline).

Three kinds of item, each kept in order:
- operations on the shared state (``shared.Op``): a batch takes them all;
- messages for another node, per node: a batch takes a node's messages as
  one entry (numbered then, ``busorder``), one push to it;
- entries numbered already (a resend, a control): ``Raw``, asked for now.

When a batch goes: as soon as something queued is waited for (a pairing, a
relayed offer), but a busy node at most once per ``gather`` seconds: a round
trip costs Redis and the node a write and a wake-up each, with cold caches,
however little it carries, so what comes meanwhile rides along. What nobody
waits for (``may_linger``: the bookkeeping after a session, the word that a
session is over, a worker's registration, a line's new order) rides with the
next batch, or goes after ``LINGER``. A node's messages that may wait stay
for a batch that pushes to that node anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from playcast.signaling.rules import bus
from playcast.signaling.shared.records import EndSession, Op, Publish

LINGER = 0.005  # seconds what may wait waits, at most
BATCH = 512  # operations (and numbered entries) a batch takes, at most


@dataclass(frozen=True, slots=True)
class Raw:
    """An entry for ``node`` numbered already: sent again, or a control."""

    node: str
    data: bytes


@dataclass(slots=True)
class Batch:
    ops: list[Op] = field(default_factory=list)
    raws: list[Raw] = field(default_factory=list)  # they go before new entries
    tells: dict[str, list[bus.BusMessage]] = field(default_factory=dict)  # one entry each


def may_linger_op(op: Op) -> bool:
    # Not MarkConnected: a node dying within LINGER of a handshake's end
    # would leave the shared phase behind, and a resume elsewhere reads it.
    # Not Pair: a player waits for its answer.
    return isinstance(op, EndSession | Publish)


def may_linger_tell(msg: bus.BusMessage) -> bool:
    # Not Connected: the owner times the handshake by it.
    return isinstance(msg, bus.Up | bus.End | bus.Line)


class Outbound:
    """``spare(msg)``: a message that may linger although its kind may not
    (the core's ``Start`` for a worker the pairing script told already)."""

    def __init__(
        self, gather: float, spare: Callable[[bus.BusMessage], bool] = lambda m: False
    ) -> None:
        self.gather = gather
        self.spare = spare
        self.ops: list[Op] = []
        self.raws: list[Raw] = []
        self.tells: dict[str, list[bus.BusMessage]] = {}
        self.urgent = False  # an operation (or everything: ``hurry``) is waited for
        self.pressing: set[str] = set()  # nodes with a message waited for
        self.ops_since: float | None = None  # the oldest operation that may wait
        self.since: dict[str, float] = {}  # each node's oldest message that may wait
        self.sent_at = -1e9  # when the last batch went

    def __bool__(self) -> bool:
        return bool(self.ops or self.raws or self.tells)

    # --- what comes in ---------------------------------------------------------

    def add(
        self, ops: Iterable[Op], tells: Iterable[tuple[str, bus.BusMessage]], now: float
    ) -> None:
        for op in ops:
            self.ops.append(op)
            if self.urgent:
                continue
            if may_linger_op(op):
                if self.ops_since is None:
                    self.ops_since = now
            else:
                self.urgent = True
        for node, msg in tells:
            queued = self.tells.get(node)
            if queued is None:
                self.tells[node] = [msg]
                self.since[node] = now
            else:
                queued.append(msg)
            if node not in self.pressing and not (may_linger_tell(msg) or self.spare(msg)):
                self.pressing.add(node)

    def add_raw(self, raw: Raw) -> None:
        self.raws.append(raw)

    def put_back(self, ops: list[Op], raws: list[Raw]) -> None:
        """What a failed batch held, at the head of the queue, waited for."""
        self.ops[:0] = ops
        self.raws[:0] = raws
        if ops:
            self.urgent = True

    def hurry(self) -> None:
        """Everything queued goes with the next batch (a status read, stop)."""
        self.urgent = True
        self.pressing.update(self.tells)

    def keep_only(self, keep: Callable[[Op], bool]) -> None:
        """Cut off: the others forgot this node; only ``keep``'s operations stay."""
        self.ops = [op for op in self.ops if keep(op)]
        self.raws.clear()
        self.tells.clear()
        self.since.clear()
        self.pressing.clear()
        if not self.ops:
            self.urgent = False
            self.ops_since = None

    # --- what goes out ---------------------------------------------------------

    def due(self, now: float) -> float | None:
        """When the next batch may go; None: nothing is queued."""
        if not self:
            return None
        return now + max(self.lingering(now), self.gathering(now))

    def lingering(self, now: float) -> float:
        """How long what is queued may still wait (0: something is waited
        for, or has waited LINGER)."""
        if self.urgent or self.raws or self.pressing:
            return 0.0
        at = min(self.since.values(), default=now)
        if self.ops_since is not None:
            at = min(at, self.ops_since)
        return max(0.0, at + LINGER - now)

    def gathering(self, now: float) -> float:
        """How long until a batch may go after the last one (``gather``)."""
        return max(0.0, self.sent_at + self.gather - now)

    def take(self, now: float) -> Batch:
        """The next batch: every operation (up to BATCH), every numbered
        entry, and, once no operation stays behind, the messages of each
        node that has one waited for or has waited LINGER."""
        self.sent_at = now
        batch = Batch(self.ops[:BATCH], self.raws[:BATCH])
        del self.ops[:BATCH], self.raws[:BATCH]
        self.urgent = bool(self.ops)
        self.ops_since = None
        # A message goes after every operation queued before it (a worker's
        # End after the EndSession that takes it out of the directory): none
        # goes while operations stay for the next batch.
        if self.tells and not self.ops:
            due = self.pressing.union(r.node for r in batch.raws)
            for node, since in self.since.items():
                if since + LINGER <= now:  # (as ``due`` reckons it)
                    due.add(node)
            for node in due:
                msgs = self.tells.pop(node, None)
                if msgs is not None:
                    batch.tells[node] = msgs
                    del self.since[node]
            self.pressing.clear()
        return batch
