"""What comes from the rest of the cluster: another node's word about a
shared session (``bus``), a node found dead, this node cut off.

A dead node's sessions end for their members here with the seed's reasons
(``worker_failed`` to a player whose worker's node died, ``client_failed``
to a worker whose player's node died). A node cut off from the shared state
does the same for its own members, since the other nodes are doing it for
theirs, and turns its idle workers away so they register where they can be
found.
"""

from __future__ import annotations

from playcast.signaling.rules import admin, pairing, resume, sessions
from playcast.signaling.rules.bus import (
    Again,
    Assign,
    BusMessage,
    Connected,
    Control,
    End,
    Line,
    Moved,
    Relay,
    Restart,
    Start,
    Take,
    Up,
)
from playcast.signaling.rules.closing import shut_down
from playcast.signaling.rules.events import event
from playcast.signaling.rules.state import Core
from playcast.signaling.shared.records import Forgotten
from playcast.signaling.types import Role


def on_bus(core: Core, msg: BusMessage) -> None:
    if isinstance(msg, Control):
        return  # the cluster layer's own (a status asked, a resend asked)
    if isinstance(msg, Line):
        pairing.update_positions(core, msg.game, msg.clients)
    elif isinstance(msg, Start):
        pairing.start_worker(core, msg)
    elif isinstance(msg, Assign):
        pairing.assign_client(core, msg)
    elif isinstance(msg, Again):
        pairing.offer_again(core, msg.member, msg.session_id)
    elif isinstance(msg, Take):
        resume.take(core, msg)
    elif isinstance(msg, Moved):
        resume.moved(core, msg)
    elif isinstance(msg, Restart):
        admin.restart_here(core, msg.member)
    else:
        session = core.table.sessions.get(msg.session_id)
        if session is None:
            return  # ended here meanwhile: the partner's node is told by our own End
        if isinstance(msg, Relay):
            sessions.relayed(core, session, msg)
        elif isinstance(msg, Connected):
            sessions.worker_connected(core, session)
        elif isinstance(msg, Up):
            sessions.handshake_over(session)
        elif isinstance(msg, End):
            sessions.end(core, session, msg.reason, msg.reason, msg.detail, origin=False)


def node_down(core: Core, node: str, cleaned: Forgotten | None = None) -> None:
    """``node`` is dead: end every session that had a member there. If this
    node cleaned its shared state up (``cleaned``), it announces the lines
    that changed, and sends each member of its sessions elsewhere back as it
    came: a member whose node never heard of its session (the dead node
    paired it, then died before telling) would otherwise stay out of the
    pool or the line for good; one whose node knows the session is not free
    and stays."""
    if node != core.node and core.nodes.went(node):
        _end_sessions_with(core, node)
    if cleaned is None:
        return
    for game, line in cleaned.lines.items():
        pairing.announce_line(core, game, line)
    for where, member, session_id in cleaned.partners:
        pairing.send_back(core, where, member, session_id)


def _end_sessions_with(core: Core, node: str) -> None:
    ended = waiting = 0
    for session in list(core.table.sessions.values()):
        gone: Role | None = "worker" if session.worker_node == node else None
        if session.client_node == node:
            gone = "client"
        if gone is None:
            continue
        if sessions.resume_enabled(core):
            # Its member may resume on another node within the grace.
            sessions.mark_away(core, session, gone)
            waiting += 1
        elif gone == "worker":
            sessions.end(core, session, None, "worker_failed")
            ended += 1
        else:
            sessions.end(core, session, "client_failed", None)
            ended += 1
    core.counters.node_events.inc("peer_down")
    event("node_down", node=node, sessions_ended=ended, sessions_waiting=waiting)


def cut_off(core: Core) -> None:
    """This node lost the shared state for longer than a node may: the others
    now hold it dead. Its sessions with a member elsewhere end; its idle
    workers go, to register where players can find them; joins are refused
    until it is back."""
    if not core.nodes.isolate(True):
        return
    ended = 0
    if sessions.resume_enabled(core):
        # The others hold these sessions for their members to resume: ours
        # go to another node (reconnect), and this node lets go of them.
        shared = [s for s in core.table.sessions.values() if s.worker_node != s.client_node]
        resume.send_elsewhere_only(core, shared)
    for session in list(core.table.sessions.values()):
        if session.worker_node != core.node:
            sessions.end(core, session, None, "worker_failed")
            ended += 1
        elif session.client_node != core.node:
            sessions.end(core, session, "client_failed", None)
            ended += 1
    idle = [w for w in core.roster.workers.values() if w.status in ("available", "held")]
    for worker in idle:
        shut_down(core, worker, "server_shutdown")
    for client in list(core.line.clients.values()):
        pairing.reject(core, client, "service_unavailable", client.game)
    core.counters.node_events.inc("cut_off")
    event("node_cut_off", sessions_ended=ended, workers_sent_away=len(idle))


def reconnected(core: Core) -> None:
    if core.nodes.isolate(False):
        core.counters.node_events.inc("reconnected")
        event("node_reconnected")
