"""What the server does about a peer's conduct: errors, floods, slow readers.

An error answers a message the server cannot accept and keeps the socket
open; a peer that keeps erring, floods, does not read, or trips a bug in the
server is closed with a policy (1008) or internal-error (1011) code, and its
partner is shut down as if it had failed.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import Counter

from playcast.protocol import Error, ErrorCode
from playcast.signaling.rules.closing import release
from playcast.signaling.rules.events import CLOSE_INTERNAL, CLOSE_POLICY, event
from playcast.signaling.rules.sessions import fail
from playcast.signaling.rules.state import State, ids, role
from playcast.signaling.types import Peer

log = logging.getLogger("playcast.signaling")
__all__ = ["crashed", "error", "flooded", "log", "slow_consumer"]


def error(state: State, peer: Peer, code: ErrorCode, message: str) -> None:
    """Answer a message we cannot accept; a peer that keeps erring is a flood."""
    state.metrics.count(state.metrics.bad_messages, code)
    if not peer.errors.take(state.clock()):
        flooded(state, peer, "error rate")
        return
    state.send(peer, Error(code=code, message=message))


def flooded(state: State, peer: Peer, what: str) -> None:
    _close(state, peer, state.metrics.rate_limit_closes, "flood_closed", CLOSE_POLICY, limit=what)


def slow_consumer(state: State, peer: Peer) -> None:
    """The socket layer found ``peer``'s unsent data past the limit."""
    _close(state, peer, state.metrics.slow_closes, "slow_closed", CLOSE_POLICY)


def crashed(state: State, peer: Peer, where: str) -> None:
    """A rule raised while handling ``peer``: a bug, contained to that peer."""
    log.exception("internal error in %s for %s %s", where, role(peer), peer.id)
    state.metrics.count(state.metrics.internal_errors, where)
    try:
        _close(state, peer, state.metrics.internal_closes, "internal_error", CLOSE_INTERNAL)
    except Exception:
        log.exception("could not close %s %s after an internal error", role(peer), peer.id)


def _close(state: State, peer: Peer, counter: Counter, name: str, code: int, **fields: Any) -> None:
    """Close with ``code`` and fail its partner, whatever state the peer was in."""
    if not state.is_live(peer) and peer.id not in state.closing:
        return
    state.metrics.count(counter, role(peer))
    event(f"{role(peer)}_{name}", **fields, **ids(peer))
    release(state, peer)
    fail(state, peer, code=code)
