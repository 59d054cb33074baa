"""What nodes tell each other, in order and with nothing lost, over pub/sub.

Redis pub/sub hands a message to whoever is subscribed at that moment: a
node whose subscription dropped (its connection cut, its output buffer over
Redis's limit) misses what was published meanwhile. So each node numbers
what it sends each other node (from 1, per receiver, under an ``epoch``
naming that numbering), keeps the last ``KEEP`` of them per receiver, and a receiver
delivers in number order: a number skipped means something was missed, and
it asks the sender for everything after what it has (a ``Resend``). A
subscription dropped and made again may have missed the last entries, with
no later one to show the gap: the receiver asks every node then, and each
answers with what it sent since and the last number it sent (``Upto``); an
answer that does not come is asked for again. An entry may come twice; the
receiver drops what it has seen. A sender that no longer holds what was
asked says so (``Lost``), and the receiver skips it.

Entries numbered 0 are controls (a resend asked, a status asked): delivered
at once, never kept. Sans-I/O: ``cluster.py`` moves the bytes. Whoever can
publish on a node's channel can speak for any node: Redis is inside the
cluster's trust boundary (a password, a private network).

An entry on the wire: ``b"SEQ EPOCH SENDER\\n"`` then its body.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

KEEP = 10_000  # entries kept per receiver, to send again
ASK_AGAIN = 0.5  # seconds before a resend still outstanding is asked again


class Entry(NamedTuple):
    seq: int  # 0: a control
    epoch: str
    sender: str
    body: bytes


class Ask(NamedTuple):
    """Ask ``sender`` for what it sent after ``after`` under ``epoch``."""

    sender: str
    after: int
    epoch: str


def parse(data: bytes) -> Entry:
    """Raises ValueError on anything that is not an entry."""
    header, sep, body = data.partition(b"\n")
    seq, epoch, sender = header.decode().split(" ", 2)
    if not sep or not sender:
        raise ValueError("not a bus entry")
    return Entry(int(seq), epoch, sender, body)


@dataclass
class _Sent:
    epoch: str
    kept: deque[tuple[int, bytes]]
    seq: int = 0


class Outbox:
    """This node's numbering of what it sends each other node. Each
    receiver's numbering has its own epoch: when a receiver is forgotten
    (found dead), a process that later runs under its id hears a new epoch
    and starts from 1, never an old process's entries."""

    def __init__(self, sender: str, epoch: str, keep: int = KEEP) -> None:
        self.sender, self.epoch, self.keep = sender, epoch, keep
        self._to: dict[str, _Sent] = {}
        self._generation = 0

    def _sent(self, node: str) -> _Sent:
        sent = self._to.get(node)
        if sent is None:
            self._generation += 1
            epoch = f"{self.epoch}.{self._generation}"
            sent = self._to[node] = _Sent(epoch, deque(maxlen=self.keep))
        return sent

    def _header(self, seq: int, epoch: str) -> bytes:
        return f"{seq} {epoch} {self.sender}\n".encode()

    def stamp(self, node: str, body: bytes) -> bytes:
        """The next entry for ``node``, kept to be sent again if asked."""
        sent = self._sent(node)
        sent.seq += 1
        data = self._header(sent.seq, sent.epoch) + body
        sent.kept.append((sent.seq, data))
        return data

    def control(self, node: str | None, body: bytes) -> bytes:
        """A control for ``node`` (None: for whichever node it reaches)."""
        epoch = self._sent(node).epoch if node is not None else "-"
        return self._header(0, epoch) + body

    def resend(self, node: str, after: int, epoch: str) -> tuple[int, list[bytes]]:
        """What ``node`` asked for: the kept entries after ``after`` (all of
        them if it asks about another epoch), and the last number it will
        never get (0: none lost)."""
        sent = self._to.get(node)
        if sent is None:
            return 0, []
        if epoch != sent.epoch:
            after = 0
        first = sent.kept[0][0] if sent.kept else sent.seq + 1
        lost = first - 1 if first - 1 > after else 0
        return lost, [data for seq, data in sent.kept if seq > after]

    def last(self, node: str) -> int:
        """The last number sent to ``node`` (0: none)."""
        sent = self._to.get(node)
        return sent.seq if sent is not None else 0

    def forget(self, node: str) -> None:
        """``node`` is gone: what was numbered for it is dropped."""
        self._to.pop(node, None)

    def forget_all(self) -> None:
        """This node was dropped from the cluster: every receiver starts over."""
        self._to.clear()


@dataclass
class _Heard:
    epoch: str
    last: int = 0
    held: dict[int, bytes] = field(default_factory=dict)  # came early, waiting for a gap
    asked: float = -math.inf


class Inbox:
    """What this node received from each other node, and what it still misses."""

    def __init__(self) -> None:
        self._from: dict[str, _Heard] = {}
        # Asked after the subscription was made again, no Upto yet: since when.
        self._unsure: dict[str, float] = {}

    def receive(self, entry: Entry, now: float) -> tuple[list[bytes], Ask | None]:
        """The bodies now in order (none, this one, or this one and those
        it unblocked), and a resend to ask for if it showed a gap."""
        heard = self._from.get(entry.sender)
        if heard is None or (heard.epoch != entry.epoch and entry.seq == 1):
            # A first word, or a new numbering from its start (a new process
            # under that id, or one that forgot this node): the old is over.
            heard = self._from[entry.sender] = _Heard(entry.epoch)
        elif heard.epoch != entry.epoch:
            # Another numbering, not from its start: a stray entry, or the
            # start of a new numbering was missed. The sender's answer to an
            # ask about the numbering heard starts the one it uses now (it
            # sends all of it); a stray entry changes nothing.
            if now - heard.asked < ASK_AGAIN:
                return [], None
            heard.asked = now
            return [], Ask(entry.sender, heard.last, heard.epoch)
        seq = entry.seq
        if seq <= heard.last or seq in heard.held:
            return [], None
        if seq != heard.last + 1:
            heard.held[seq] = entry.body
            if now - heard.asked < ASK_AGAIN:
                return [], None
            heard.asked = now
            return [], Ask(entry.sender, heard.last, heard.epoch)
        heard.last = seq
        return [entry.body, *self._unblocked(heard)], None

    def lost(self, sender: str, epoch: str, upto: int) -> list[bytes]:
        """``sender`` no longer holds its entries up to ``upto``: skip them;
        the bodies that then follow in order."""
        heard = self._from.get(sender)
        if heard is None or heard.epoch != epoch or upto <= heard.last:
            return []
        heard.last = upto
        for seq in [s for s in heard.held if s <= upto]:
            del heard.held[seq]
        return self._unblocked(heard)

    def _unblocked(self, heard: _Heard) -> list[bytes]:
        out: list[bytes] = []
        while heard.last + 1 in heard.held:
            heard.last += 1
            out.append(heard.held.pop(heard.last))
        if not heard.held:
            heard.asked = -math.inf
        return out

    def upto(self, sender: str, epoch: str, last: int, now: float) -> Ask | None:
        """``sender`` has sent this node up to ``last`` (its answer to a
        resend: what it sent again came before it). Anything still missing
        was lost on the way again: ask again."""
        self._unsure.pop(sender, None)
        heard = self._from.get(sender)
        if heard is None or heard.epoch != epoch:
            if last == 0:
                return None
            heard = self._from[sender] = _Heard(epoch)
        if last <= heard.last:
            return None
        heard.asked = now
        return Ask(sender, heard.last, epoch)

    def overdue(self, now: float) -> list[Ask]:
        """Gaps still open, and resyncs still unanswered, ``ASK_AGAIN`` after
        they were asked about."""
        out: list[Ask] = []
        for sender, heard in self._from.items():
            if heard.held and now - heard.asked >= ASK_AGAIN:
                heard.asked = now
                out.append(Ask(sender, heard.last, heard.epoch))
        asked = {ask.sender for ask in out}
        for sender, since in list(self._unsure.items()):
            if now - since >= ASK_AGAIN and sender not in asked:
                self._unsure[sender] = now
                known = self._from.get(sender)
                out.append(Ask(sender, known.last, known.epoch) if known else Ask(sender, 0, ""))
        return out

    def resync(self, live: set[str], now: float) -> list[Ask]:
        """After the subscription was lost: ask every sender heard from, and
        every other live node, for what came meanwhile (each answers with an
        ``Upto``; one that does not is asked again)."""
        asks = [Ask(s, h.last, h.epoch) for s, h in self._from.items()]
        asks += [Ask(node, 0, "") for node in sorted(live - self._from.keys())]
        for ask in asks:
            self._unsure[ask.sender] = now
        return asks

    def forget(self, sender: str) -> None:
        self._from.pop(sender, None)
        self._unsure.pop(sender, None)

    def forget_all(self) -> None:
        self._from.clear()
        self._unsure.clear()

    def waiting(self) -> int:
        """Entries held for a gap to fill."""
        return sum(len(h.held) for h in self._from.values())
