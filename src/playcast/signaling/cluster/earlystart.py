"""Early starts: a pairing tells the worker's node as it pairs.

The ``Pair`` script that hands a player a worker on another node also
publishes the ``start`` to that node (``shared/lua/pair.lua``), so the worker
is greeted while the player's node is still reading the answer: a crossing
of the cluster less on every player's wait. The player's core still tells
its own ``Start`` after the answer, as the numbered copy a resend would
find; that copy may linger, and the worker's node feeds its core only the
first of the two. What the worker's node says of such a session before the
player's node has read the answer is held until it has; a start that
overtakes the answer to the worker's own listing waits for it in the core
(``pairing.start_worker``). Not with resume on:
the worker's resume token is made after the answer.

Sans-I/O, for ``cluster.py``: one instance per node, playing both sides.
"""

from __future__ import annotations

from playcast.signaling.cluster.busorder import Outbox
from playcast.signaling.rules import bus
from playcast.signaling.rules.ice import ice_servers_for
from playcast.signaling.rules.settings import Settings
from playcast.signaling.shared.records import Outcome, Pair, Paired

KEPT = 10_000  # session ids remembered on each side, oldest dropped first
# Where the script puts the worker id and the codec.
_WORKER, _CODEC = b"@@worker@@", b"@@codec@@"


def _remember(ids: dict[str, None], session_id: str) -> None:
    ids[session_id] = None
    if len(ids) > KEPT:
        del ids[next(iter(ids))]


class EarlyStarts:
    def __init__(self, settings: Settings, node: str) -> None:
        self.settings, self.node = settings, node
        self.on = settings.resume_grace <= 0
        self._sent: set[str] = set()  # Pairs sent with one, no answer read yet
        self._held: dict[str, list[bus.BusMessage]] = {}
        self._told: dict[str, None] = {}  # told early: the core's Start is the spare
        self._fed: dict[str, None] = {}  # Starts fed to the core here

    # --- the player's node ---------------------------------------------------

    def template(self, op: Pair, outbox: Outbox) -> tuple[bytes, bytes, bytes] | None:
        """The bus entry the script publishes, cut where the worker id and
        the codec go; None: this Pair goes without one."""
        if not self.on:
            return None
        start = bus.Start(
            session_id=op.session_id,
            worker_id=_WORKER.decode(),
            client_id=op.client.id,
            client_node=self.node,
            codec=_CODEC.decode(),
            ice_servers=ice_servers_for(self.settings, op.session_id, op.now),
        )
        data = outbox.control(None, bus.pack([start]))
        head, _, rest = data.partition(_WORKER)
        middle, _, tail = rest.partition(_CODEC)
        if not tail or _WORKER in tail or _CODEC in head + middle:
            return None  # an id that holds a marker: the Start goes the usual way
        self._sent.add(op.session_id)
        return head, middle, tail

    def answered(self, op: Pair, outcome: Outcome | None) -> list[bus.BusMessage]:
        """The Pair's answer is read (before the core gets it): what was held
        for its session, for the core after it."""
        if op.session_id not in self._sent:
            return []
        self._sent.discard(op.session_id)
        if isinstance(outcome, Paired) and outcome.session.worker_node != self.node:
            _remember(self._told, op.session_id)
        return self._held.pop(op.session_id, [])

    def unanswered(self, op: Pair) -> bool:
        """The Pair goes again without one, or is refused with its answer
        lost; True if it was sent with one (it may have told a worker)."""
        if op.session_id not in self._sent:
            return False
        self._sent.discard(op.session_id)
        self._held.pop(op.session_id, None)
        return True

    def hold(self, msg: bus.BusMessage) -> bool:
        """True (kept for later) if ``msg`` is of a session whose Pair's
        answer has not been read here yet."""
        if msg.session_id not in self._sent:
            return False
        self._held.setdefault(msg.session_id, []).append(msg)
        return True

    def spare(self, msg: bus.BusMessage) -> bool:
        """The core's Start for a worker told early: it may linger."""
        return isinstance(msg, bus.Start) and msg.session_id in self._told

    def sending(self, msg: bus.BusMessage) -> None:
        if isinstance(msg, bus.Start):
            self._told.pop(msg.session_id, None)

    # --- the worker's node -----------------------------------------------------

    def first(self, msg: bus.Start) -> bool:
        """True for the first Start of its session (feed it to the core)."""
        if msg.session_id in self._fed:
            return False
        _remember(self._fed, msg.session_id)
        return True
