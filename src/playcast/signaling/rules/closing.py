"""Closing peers: forgetting a record, ``shutdown`` and its ack, ack deadlines.

A peer being shut down leaves the live sets at once (it can never be paired
or relayed to again) and waits in ``closing`` for its ``shutdown_ack`` until
``shutdown_ack_timeout``; then its socket is closed either way.
"""

from __future__ import annotations

from playcast.protocol import FailureKind, Shutdown, ShutdownAck, ShutdownReason
from playcast.signaling.rules.events import CLOSE_NORMAL, REASON_TEXT, event
from playcast.signaling.rules.state import State, ids, role
from playcast.signaling.shared import LeaveLine, Withdraw
from playcast.signaling.types import Client, Peer, Worker


def forget(state: State, peer: Peer, *, withdrawn: bool = False) -> None:
    """Drop ``peer`` from every live set (its heartbeat slot; the shared
    directory, pool and waiting line). ``withdrawn``: a worker whose
    session's end takes it out of the directory already."""
    if not state.unlist(peer):
        return
    if isinstance(peer, Worker):
        # Published at register: the shared directory and pool must let go.
        if peer.status != "registering" and not withdrawn:
            state.request(Withdraw(peer.id))
    elif isinstance(peer, Client) and peer.queued_at:
        state.waiting.pop(peer.id, None)
        state.request(LeaveLine(peer.id, peer.game))


def shut_down(
    state: State,
    peer: Peer,
    reason: ShutdownReason,
    detail: FailureKind | None = None,
    *,
    withdrawn: bool = False,
) -> None:
    """Ask a peer to shut down; its socket closes on ack or at the deadline.
    ``withdrawn``: as for ``forget``."""
    forget(state, peer, withdrawn=withdrawn)
    peer.closing_deadline = state.clock() + state.settings.shutdown_ack_timeout
    peer.shutdown_reason = reason
    state.closing[peer.id] = peer
    state.send(peer, Shutdown(reason=reason, message=REASON_TEXT[reason], detail=detail))
    event(f"{role(peer)}_shutdown", reason=reason, **ids(peer))


def release(state: State, peer: Peer) -> bool:
    """Done waiting for ``peer``'s ack; True if it was being waited for."""
    return state.closing.pop(peer.id, None) is not None


def acked(state: State, peer: Peer, ack: ShutdownAck) -> None:
    release(state, peer)
    state.metrics.count(state.metrics.shutdown_acks, "ok" if ack.ok else "not_ok")
    event(
        f"{role(peer)}_shutdown_ack",
        reason=peer.shutdown_reason,
        ok=ack.ok,
        detail=repr(ack.detail),
        **ids(peer),
    )
    state.close(peer, CLOSE_NORMAL, "shutdown acknowledged")


def expire_acks(state: State, now: float) -> None:
    """Close every peer whose ack deadline has passed."""
    for peer in list(state.closing.values()):
        if peer.closing_deadline is not None and now >= peer.closing_deadline:
            release(state, peer)
            state.metrics.count(state.metrics.shutdown_acks, "missing")
            event(f"{role(peer)}_shutdown_no_ack", reason=peer.shutdown_reason, **ids(peer))
            state.close(peer, CLOSE_NORMAL, "no shutdown_ack")
