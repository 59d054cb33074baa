"""The server process's garbage-collector policy, and a report of what it finds.

A finished session must be freed by reference counting alone: every record,
socket object and message of it is released the moment the last reference
goes, and the cyclic collector finds nothing of it. ``--debug-gc`` (hidden,
for tests and for hunting cycles) turns the collector off and, on SIGUSR1,
runs one collection that keeps what it finds and logs it by type
(``gc_report unreachable=N types=…``); tests/test_server_gc.py holds the
server to zero.
"""

from __future__ import annotations

import gc
import json
from collections import Counter

from playcast.signaling.rules.events import event

# Objects the youngest generation may gain (allocations less deallocations of
# tracked objects) before a collection: 10,000 instead of 700. A setup frees
# what it allocates, so the count only moves with the work in flight, and at
# 700 it crossed the threshold many times a second for nothing to collect.
YOUNG_THRESHOLD = 10_000


def after_startup() -> None:
    """Once listening: collect start-up's garbage, freeze what is left, and
    collect the young generation only after real growth.

    Everything alive now (modules, the app, its router, the settings, about
    40,000 objects) lives as long as the process: frozen, no collection ever
    walks it again. Older generations keep their default ratios.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)


def debug() -> None:
    """``--debug-gc``: the collector off, so that a cycle stays until reported."""
    gc.collect()
    gc.disable()


def report(top: int = 12) -> int:
    """One full collection, everything it finds logged by type; the count."""
    flags = gc.get_debug()
    gc.set_debug(flags | gc.DEBUG_SAVEALL)
    try:
        found = gc.collect()
        kinds = Counter(type(o).__qualname__ for o in gc.garbage)
    finally:
        gc.garbage.clear()
        gc.set_debug(flags)
    gc.collect()  # now free what was kept for the count
    event("gc_report", unreachable=found, types=json.dumps(dict(kinds.most_common(top))))
    return found
