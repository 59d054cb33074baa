"""Holds: worker names an operator drained, kept out of the pool until
released (issue 26). The operation and its outcomes, beside ``records.py``'s.

A hold is on a name, not on a worker id: a worker registers again under a
new id after every session, and keeps its name (a phone's serial). While a
name is held, a ``Publish`` of a worker of that name lists it in the
directory but not in its game's pool, and answers ``Held``; the worker's
node marks it held (registered, idle, never paired).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Hold:
    """Hold ``name`` (``on``) or release it. On: the workers of that name
    available in ``games``' pools leave them at once. Off: the workers held
    under it are free to be offered again."""

    name: str
    on: bool
    games: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Held:
    """``Publish``'s answer for a worker whose name is held: in the
    directory, not in the pool."""


@dataclass(frozen=True, slots=True)
class HoldChanged:
    """``Hold``'s answer: the workers whose place changed, as (worker id,
    its node), sorted: taken out of the pool (on), or let go (off). Their
    nodes offer each again (``pairing.offer_again``), and the shared state's
    answer to that says held or listed."""

    workers: tuple[tuple[str, str], ...] = ()
