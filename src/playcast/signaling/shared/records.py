"""What the nodes of a cluster share, the operations the core asks of it and
the outcomes it is told back: plain records, no I/O.

The core never calls the shared state: it asks for an operation (an effect,
``Publish``, ``Pair``, ...) and is fed the ``Outcome`` as a step of its own.
``api.SharedState`` names the interface both implementations keep.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from playcast.protocol import RejectReason

# --- holds (issue 26) ----------------------------------------------------
# Worker names an operator drained, kept out of the pool until released. A
# hold is on a name, not on a worker id: a worker registers again under a
# new id after every session, and keeps its name (a phone's serial). While a
# name is held, a ``Publish`` of a worker of that name lists it in the
# directory but not in its game's pool, and answers ``Held``; the worker's
# node marks it held (registered, idle, never paired).


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


# --- what is shared ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerEntry:
    id: str
    node: str
    game: str
    codecs: tuple[str, ...]
    addr: str = ""
    port: int = 0
    name: str = ""  # the same across its restarts: what a hold names (``Hold``)


@dataclass(frozen=True, slots=True)
class ClientEntry:
    id: str
    node: str
    game: str
    codecs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SessionEntry:
    id: str
    worker: str
    worker_node: str
    client: str
    client_node: str
    game: str
    codec: str
    started_at: float  # wall-clock seconds
    phase: str = "awaiting_offer"


# --- operations the core asks for ------------------------------------------


@dataclass(frozen=True, slots=True)
class Publish:
    """A worker is available: pair it with the first waiting client that can
    use it, or put it in its game's pool. ``session_id`` names the session
    if it is paired at once."""

    worker: WorkerEntry
    session_id: str
    now: float


@dataclass(frozen=True, slots=True)
class Pair:
    """A client wants a worker: the longest-available one of its game that
    sends a codec it decodes; else a place in line (``queue_limit`` > 0).

    With a join ticket (``rules/tickets.py``): its ``jti``, refused if spent
    (``Refused("unauthorized", "spent")``, before anything else), and spent
    only when the join gets a worker or a place in line (a player refused
    ``no_worker_available`` may try again with it), until ``jti_until``
    (wall-clock seconds: the ticket's expiry plus the leeway)."""

    client: ClientEntry
    session_id: str
    queue_limit: int
    now: float
    jti: str = ""
    jti_until: float = 0.0


@dataclass(frozen=True, slots=True)
class Withdraw:
    """A worker is gone: out of the pool and the directory."""

    worker_id: str


@dataclass(frozen=True, slots=True)
class LeaveLine:
    """A waiting client is gone (left, timed out, disconnected)."""

    client_id: str
    game: str


@dataclass(frozen=True, slots=True)
class EndSession:
    """A session is over. ``worker_id``: its worker, which leaves the
    directory in the same step (a worker restarts after every session, so
    its own ``Withdraw`` is not needed). ``client_node``: its player's node,
    as the ending node knows it, for when the shared record has expired."""

    session_id: str
    worker_id: str = ""
    client_node: str = ""


@dataclass(frozen=True, slots=True)
class MarkConnected:
    session_id: str


@dataclass(frozen=True, slots=True)
class SetTokens:
    """Resume: what is kept of each member's token (hex SHA-256)."""

    session_id: str
    worker: str
    client: str


@dataclass(frozen=True, slots=True)
class Reattach:
    """Resume on ``node``: if ``token`` is the member's, spend it (``fresh``
    replaces it) and move the member there."""

    session_id: str
    role: str
    token: str
    fresh: str
    node: str


Op = (
    Publish | Pair | Withdraw | LeaveLine | EndSession | MarkConnected | SetTokens | Reattach | Hold
)


# --- what the core is told back --------------------------------------------


@dataclass(frozen=True, slots=True)
class Paired:
    session: SessionEntry
    worker: WorkerEntry
    client: ClientEntry
    line: tuple[ClientEntry, ...] | None = None  # the line, if pairing changed it


@dataclass(frozen=True, slots=True)
class Listed:
    """The worker is in its game's pool."""


@dataclass(frozen=True, slots=True)
class Queued:
    line: tuple[ClientEntry, ...]  # the whole line, in order; the client is in it


@dataclass(frozen=True, slots=True)
class Refused:
    reason: RejectReason
    detail: str = ""  # with unauthorized: why (a ``tickets.Why``)


@dataclass(frozen=True, slots=True)
class Done:
    """Nothing to report (withdraw, end, mark), but the line if it changed."""

    line: tuple[ClientEntry, ...] | None = None
    game: str = ""


@dataclass(frozen=True, slots=True)
class Reattached:
    session: SessionEntry  # with the member's new node
    old_node: str  # where the member was
    old_alive: bool
    partner_alive: bool


@dataclass(frozen=True, slots=True)
class Denied:
    """No such session, or not that member's token."""


Outcome = Paired | Listed | Queued | Refused | Done | Reattached | Denied | Held | HoldChanged


@dataclass(frozen=True, slots=True)
class Forgotten:
    """A dead node's cleanup: the waiting lines it changed, and each member
    on a live node of a session it ended or kept, as (node, member id,
    session id). Such a member's node may never have been told of the
    session (the dead node paired it, then died before saying so): unless it
    knows the session, the member goes back as it came (``bus.Again``)."""

    lines: dict[str, tuple[ClientEntry, ...]]
    partners: tuple[tuple[str, str, str], ...] = ()


def pxat(until: float) -> int:
    """Wall-clock seconds as Redis's ``PXAT`` takes them (ms since the epoch)."""
    return round(until * 1000)


def shared_codec(worker_codecs: Iterable[str], client_codecs: Iterable[str]) -> str | None:
    """The worker's most preferred codec that the client decodes."""
    wanted = set(client_codecs)
    return next((c for c in worker_codecs if c in wanted), None)
