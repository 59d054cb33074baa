#!/usr/bin/env python3
"""What checking a join ticket costs the server (issue 27): CPU per check of
the rule every join runs with ``--join-secret`` (``rules/tickets.py``: PyJWT's
HS256 signature with every secret, the claims, the times, the game), in
process, for the ticket a player brings and for the ones refused.

Each case is timed in rounds of ``--checks`` checks (process CPU time, so a
busy machine's waiting is left out); the figure is the best round's mean
(the least disturbed) and the median round's, against the target of 30 µs.

Then what a join costs a lone server's core (``Hub``, its shared state in
memory, info logging to /dev/null, the server's collector policy; no
sockets) without and with tickets, in turn: a player joins, is assigned a
worker and leaves, the worker acks its shutdown and registers again. The
difference is what tickets add to a session's setup, the check included
(slower than alone: between two joins, a session's other work has the
caches); the whole setup over real sockets, with and without, is
``signaling_load.py --tickets ab``. Run from the
repository root: ``.venv/bin/python bench/tickets.py``.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable

from playcast.logs import setup_logging
from playcast.protocol import Join, Leave, Message, Register, ShutdownAck, encode_str
from playcast.signaling.app import gcpolicy
from playcast.signaling.cluster.local import LocalCluster
from playcast.signaling.hub import Hub
from playcast.signaling.rules.settings import Settings
from playcast.signaling.rules.tickets import TicketCheck
from playcast.signaling.types import Peer
from playcast.ticket import mint

GAME = "com.supercell.clashroyale"
SECRET = "bench-join-secret-the-current-one-0123456789"
OLD = "bench-join-secret-the-one-going-out-98765432"
TARGET_US = 30.0


def timed(check: Callable[[], object], n: int, rounds: int) -> tuple[float, float]:
    """(best, median) mean CPU µs per call over ``rounds`` rounds of ``n``."""
    per = []
    for _ in range(rounds):
        t0 = time.process_time()
        for _ in range(n):
            check()
        per.append((time.process_time() - t0) / n * 1e6)
    return min(per), statistics.median(per)


class _Socket:
    remote = ("10.0.0.9", 5555)


def _write(peer: Peer, msg: Message | bytes) -> bool:
    return False


def _close(peer: Peer, code: int, reason: str) -> None:
    pass


def core_per_session(sessions: int, tickets: bool) -> float:
    """CPU µs a lone server's core spends on one player's way in and out."""
    settings = Settings(join_secrets=(SECRET,) if tickets else ())
    hub = Hub(settings)
    cluster = LocalCluster(hub)

    def say(peer: Peer, msg: Message) -> None:
        hub.on_message(peer, encode_str(msg))
        hub.flush(_write, _close, cluster.submit)

    tokens = [mint(SECRET, f"p{i}", GAME, ttl=300) if tickets else None for i in range(sessions)]
    worker = hub.open_worker(_Socket())
    say(worker, Register(game=GAME))
    t0 = time.process_time()
    for token in tokens:
        client = hub.open_client(_Socket())
        say(client, Join(game=GAME, ticket=token))
        assert client.session_id is not None, "not assigned"
        say(client, Leave())
        hub.on_close(client)
        say(worker, ShutdownAck(ok=True, detail=""))
        hub.on_close(worker)
        worker = hub.open_worker(_Socket())
        say(worker, Register(game=GAME))
    return (time.process_time() - t0) / sessions * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--checks", type=int, default=20_000, help="checks a round")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="CI size: 2,000 checks, 3 rounds")
    args = p.parse_args(argv)
    n, rounds = (2_000, 3) if args.quick else (args.checks, args.rounds)
    one = TicketCheck((SECRET,), max_age=300, leeway=30)
    two = TicketCheck((SECRET, OLD), max_age=300, leeway=30)
    now = time.time()
    good, by_old = mint(SECRET, "alice", GAME), mint(OLD, "alice", GAME)
    cases: list[tuple[str, TicketCheck, str | None, str | None]] = [
        ("a player's ticket, one secret", one, good, None),
        ("a player's ticket, two secrets (the 1st)", two, good, None),
        ("a player's ticket, two secrets (the 2nd)", two, by_old, None),
        ("refused: bad signature, two secrets", two, mint("x" * 40, "eve", GAME), "bad_signature"),
        ("refused: expired", one, mint(SECRET, "bob", GAME, now=now - 3600), "expired"),
        ("refused: another game", one, mint(SECRET, "bob", "com.example.other"), "wrong_game"),
        ("refused: no ticket", one, None, "missing"),
    ]
    load = os.getloadavg()
    print(
        f"tickets: CPU per check, µs (best round / median round of {rounds} x {n}); "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores"
    )
    worst = 0.0
    for name, checker, token, why in cases:
        verdict = checker.check(token, GAME, now)
        assert verdict.why == why, (name, verdict)

        def check(c: TicketCheck = checker, t: str | None = token) -> object:
            return c.check(t, GAME, now)

        best, median = timed(check, n, rounds)
        if why is None:
            worst = max(worst, best)
        print(f"  {name:<44} {best:6.1f} / {median:6.1f}")
    ok = worst <= TARGET_US
    print(
        f"  a player's ticket, the worst case: {worst:.1f} µs   [target <= {TARGET_US:g} µs: "
        f"{'met' if ok else 'MISSED'}]"
    )
    setup_logging("info")
    handler = logging.root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(open(os.devnull, "w"))  # noqa: SIM115  (for the process's life)
    gcpolicy.after_startup()  # the server's collector policy
    sessions = n // 10
    pairs = [
        (core_per_session(sessions, False), core_per_session(sessions, True)) for _ in range(rounds)
    ]
    off = statistics.median(a for a, _ in pairs)
    on = statistics.median(b for _, b in pairs)
    print(
        f"a lone server's core, CPU per session (join, assigned, leave, the worker back), "
        f"median of {rounds} x {sessions}, in turn:\n"
        f"  without tickets {off:7.1f} µs\n  with tickets    {on:7.1f} µs   "
        f"(+{on - off:.1f} µs a join)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
