"""Closing peers: forgetting a record, ``shutdown`` and its ack, ack deadlines.

A peer being shut down leaves the live sets at once (it can never be paired
or relayed to again) and waits among the closings for its ``shutdown_ack``
until ``shutdown_ack_timeout``; then its socket is closed either way.
"""

from __future__ import annotations

from playcast.protocol import FailureKind, Shutdown, ShutdownAck, ShutdownReason
from playcast.signaling.rules.events import CLOSE_NORMAL, REASON_TEXT, event
from playcast.signaling.rules.state import Core
from playcast.signaling.shared.records import LeaveLine, Withdraw
from playcast.signaling.types import Client, Peer, Worker, ids, role


def forget(core: Core, peer: Peer, *, withdrawn: bool = False) -> None:
    """Drop ``peer`` from every live set (its heartbeat slot; the shared
    directory, pool and waiting line). ``withdrawn``: a worker whose
    session's end takes it out of the directory already."""
    if not core.roster.unlist(peer):
        return
    if isinstance(peer, Worker):
        # Published at register: the shared directory and pool must let go.
        if peer.status != "registering" and not withdrawn:
            core.request(Withdraw(peer.id))
    elif isinstance(peer, Client) and peer.queued_at:
        core.line.leave(peer.id)
        core.request(LeaveLine(peer.id, peer.game))


def shut_down(
    core: Core,
    peer: Peer,
    reason: ShutdownReason,
    detail: FailureKind | None = None,
    *,
    withdrawn: bool = False,
) -> None:
    """Ask a peer to shut down; its socket closes on ack or at the deadline.
    ``withdrawn``: as for ``forget``."""
    forget(core, peer, withdrawn=withdrawn)
    peer.closing_deadline = core.clock() + core.settings.shutdown_ack_timeout
    peer.shutdown_reason = reason
    core.closings.add(peer)
    core.send(peer, Shutdown(reason=reason, message=REASON_TEXT[reason], detail=detail))
    event(f"{role(peer)}_shutdown", reason=reason, **ids(peer))


def acked(core: Core, peer: Peer, ack: ShutdownAck) -> None:
    core.closings.release(peer)
    core.counters.shutdown_acks.inc("ok" if ack.ok else "not_ok")
    event(
        f"{role(peer)}_shutdown_ack",
        reason=peer.shutdown_reason,
        ok=ack.ok,
        detail=repr(ack.detail),
        **ids(peer),
    )
    core.close(peer, CLOSE_NORMAL, "shutdown acknowledged")


def expire_acks(core: Core, now: float) -> None:
    """Close every peer whose ack deadline has passed."""
    for peer in list(core.closings.peers.values()):
        if peer.closing_deadline is not None and now >= peer.closing_deadline:
            core.closings.release(peer)
            core.counters.shutdown_acks.inc("missing")
            event(f"{role(peer)}_shutdown_no_ack", reason=peer.shutdown_reason, **ids(peer))
            core.close(peer, CLOSE_NORMAL, "no shutdown_ack")
