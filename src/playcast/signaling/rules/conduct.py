"""What the server does about a peer's conduct: errors, floods, slow readers.

An error answers a message the server cannot accept and keeps the socket
open; a peer that keeps erring, floods, does not read, or trips a bug in the
server is closed with a policy (1008) or internal-error (1011) code, and its
partner is shut down as if it had failed.
"""

from __future__ import annotations

import logging
from typing import Any

from playcast.protocol import Error, ErrorCode
from playcast.signaling.rules.counters import Count
from playcast.signaling.rules.events import CLOSE_INTERNAL, CLOSE_POLICY, event
from playcast.signaling.rules.sessions import fail
from playcast.signaling.rules.state import Core
from playcast.signaling.types import Peer, ids, role

log = logging.getLogger("playcast.signaling")


def error(core: Core, peer: Peer, code: ErrorCode, message: str) -> None:
    """Answer a message we cannot accept; a peer that keeps erring is a flood."""
    core.counters.bad_messages.inc(code)
    if not peer.errors.take(core.clock()):
        flooded(core, peer, "error rate")
        return
    core.send(peer, Error(code=code, message=message))


def flooded(core: Core, peer: Peer, what: str) -> None:
    _close(core, peer, core.counters.rate_limit_closes, "flood_closed", CLOSE_POLICY, limit=what)


def slow_consumer(core: Core, peer: Peer) -> None:
    """The socket layer found ``peer``'s unsent data past the limit."""
    _close(core, peer, core.counters.slow_closes, "slow_closed", CLOSE_POLICY)


def crashed(core: Core, peer: Peer, where: str) -> None:
    """A rule raised while handling ``peer``: a bug, contained to that peer."""
    log.exception("internal error in %s for %s %s", where, role(peer), peer.id)
    core.counters.internal_errors.inc(where)
    try:
        _close(core, peer, core.counters.internal_closes, "internal_error", CLOSE_INTERNAL)
    except Exception:
        log.exception("could not close %s %s after an internal error", role(peer), peer.id)


def _close(core: Core, peer: Peer, counter: Count, name: str, code: int, **fields: Any) -> None:
    """Close with ``code`` and fail its partner, whatever state the peer was in."""
    if not peer.live and peer.id not in core.closings.peers:
        return
    counter.inc(role(peer))
    event(f"{role(peer)}_{name}", **fields, **ids(peer))
    core.closings.release(peer)
    fail(core, peer, code=code)
