"""What the property tests check besides production's own ``check_invariants``.

Two things a hub's own check cannot tell:

- **an internal error the core contained.** The hub catches every exception
  a rule raises, closes that peer with 1011, logs the traceback and counts it
  (``playcast_internal_errors``), so a test that only asserts "must not
  raise" passes on a bug. ``InternalErrors`` fails the test on any of the three.
- **the model's own rules, written again from the records** the hub shows
  (``hub.workers``, ``hub.clients``, ``hub.sessions``) and the messages each
  connection received: a worker in at most one session, no busy worker
  without its player, a session's members each other's, a session's messages
  only to its members. Independent of ``status.check_invariants``, so a bug
  in both cannot hide.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from playcast_testing.metrics import metric_sum, parse_metrics

from playcast.protocol import Message
from playcast.signaling.app.metrics import Metrics, readings
from playcast.signaling.hub import Hub

CLOSE_INTERNAL = 1011


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


class InternalErrors:
    """Collects what tells of a contained internal error; ``check`` fails on any."""

    def __init__(self, records: _Records) -> None:
        self._records = records

    def check(self, hubs: Iterable[Hub] = (), conns: Iterable[Any] = ()) -> None:
        """No ERROR log record so far, no connection closed with 1011 and, for
        ``hubs``, no ``playcast_internal_errors`` sample above zero."""
        assert not self._records.lines, "internal error logged:\n" + "\n".join(self._records.lines)
        for conn in conns:
            closed = getattr(conn, "closed", None)
            assert not closed or closed[0] != CLOSE_INTERNAL, f"a socket closed with 1011: {closed}"
        for hub in hubs:
            metrics = Metrics(hub.counters, lambda: readings(hub))  # noqa: B023 (used at once)
            samples = parse_metrics(metrics.render().decode())
            counted = metric_sum(samples, "playcast_internal_errors_total")
            assert counted == 0, f"playcast_internal_errors_total = {counted} on node {hub.node}"


@contextmanager
def internal_errors() -> Iterator[InternalErrors]:
    """While it lasts, the core's ERROR log records are kept for ``check``."""
    records = _Records()
    logger = logging.getLogger("playcast")
    logger.addHandler(records)
    try:
        yield InternalErrors(records)
    finally:
        logger.removeHandler(records)


def model_problems(hubs: Iterable[Hub], *, settled: bool = True) -> list[str]:
    """Broken rules, read from the hubs' records. ``hubs``: every live node
    (one for a lone server). ``settled``: no node has work in flight, so a
    busy worker's player is where its session says."""
    problems: list[str] = []
    hubs = list(hubs)
    node_of = {hub.node: hub for hub in hubs}
    members: dict[str, tuple[str, str]] = {}
    for hub in hubs:
        for sid, s in hub.sessions.items():
            pair = (s.worker_id, s.client_id)
            if sid != s.id or members.setdefault(sid, pair) != pair:
                problems.append(f"{hub.node}: {sid} holds {s.id} of {pair}; also {members[sid]}")
    for role, ids in (("worker", [w for w, _ in members.values()]),
                      ("client", [c for _, c in members.values()])):  # fmt: skip
        problems += [f"{role} {i} in {n} sessions" for i, n in Counter(ids).items() if n > 1]
    for hub in hubs:
        here = hub.node
        for s in hub.sessions.values():
            # A member whose node is this one is here, and says so, unless away.
            if s.worker_node in ("", here) and not s.worker_away_until:
                w = hub.workers.get(s.worker_id)
                got = None if w is None else (w.session_id, w.client_id, w.status)
                if got != (s.id, s.client_id, "busy"):
                    problems.append(f"{here}: {s.id}'s worker {s.worker_id} is {got}")
            if s.client_node in ("", here) and not s.client_away_until:
                c = hub.clients.get(s.client_id)
                got = None if c is None else (c.session_id, c.worker_id)
                if got != (s.id, s.worker_id):
                    problems.append(f"{here}: {s.id}'s client {s.client_id} is {got}")
        for w in hub.workers.values():
            if (w.status == "busy") != (w.session_id is not None):
                problems.append(f"{here}: worker {w.id} {w.status} in session {w.session_id}")
            s = hub.sessions.get(w.session_id or "")
            if w.session_id is None or s is None or s.worker_id != w.id:
                if w.session_id is not None:
                    problems.append(f"{here}: worker {w.id}'s session {w.session_id} is not its")
                continue
            # No busy worker without its player: on the player's node, or
            # away (as the session's copy there, or any copy, says).
            if not settled or any(
                h.sessions[s.id].client_away_until for h in hubs if s.id in h.sessions
            ):
                continue
            player_hub = node_of.get(s.client_node or here)
            if player_hub is None or s.client_id not in player_hub.clients:
                problems.append(f"{here}: busy worker {w.id} has no live player {s.client_id}")
        for c in hub.clients.values():
            s = hub.sessions.get(c.session_id or "")
            if c.session_id is None and c.worker_id is not None:
                problems.append(f"{here}: client {c.id} has worker {c.worker_id}, no session")
            elif c.session_id is not None and (s is None or s.client_id != c.id):
                problems.append(f"{here}: client {c.id}'s session {c.session_id} is not its")
    return problems


class Deliveries:
    """Who may receive what names a session: only its members. Each
    session's members are recorded as the pairing made it (``paired``: a
    cluster's shared state, as each operation runs) or from the hubs'
    records after every step (``note``); every message a connection got that
    names a session is checked against them (``check``)."""

    def __init__(self) -> None:
        self.members: dict[str, set[str]] = {}

    def paired(self, sessions: Iterable[Any]) -> None:
        """The shared state's session entries (``id``, ``worker``, ``client``)."""
        for s in sessions:
            self.members.setdefault(s.id, set()).update((s.worker, s.client))

    def note(self, hubs: Iterable[Hub]) -> None:
        for hub in hubs:
            for s in hub.sessions.values():
                self.members.setdefault(s.id, set()).update((s.worker_id, s.client_id))

    def check(self, peer_id: str, received: Iterable[Message]) -> None:
        for msg in received:
            sid = getattr(msg, "session_id", None)
            if sid is None:
                continue
            assert peer_id in self.members.get(sid, set()), (
                f"{peer_id} got {type(msg).__name__} of session {sid}, "
                f"whose members are {self.members.get(sid)}"
            )
