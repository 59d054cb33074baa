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

from playcast.signaling.rules import handshake, pairing, resume, sessions
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
    Start,
    Take,
    Up,
)
from playcast.signaling.rules.closing import shut_down
from playcast.signaling.rules.events import event
from playcast.signaling.rules.state import State
from playcast.signaling.shared import Forgotten


def on_bus(state: State, msg: BusMessage) -> None:
    if isinstance(msg, Control):
        return  # the cluster layer's own (a status asked, a resend asked)
    if isinstance(msg, Line):
        pairing.update_positions(state, msg.game, msg.clients)
    elif isinstance(msg, Start):
        pairing.start_worker(state, msg)
    elif isinstance(msg, Assign):
        pairing.assign_client(state, msg)
    elif isinstance(msg, Again):
        pairing.offer_again(state, msg.member, msg.session_id)
    elif isinstance(msg, Take):
        resume.take(state, msg)
    elif isinstance(msg, Moved):
        resume.moved(state, msg)
    else:
        session = state.sessions.get(msg.session_id)
        if session is None:
            return  # ended here meanwhile: the partner's node is told by our own End
        if isinstance(msg, Relay):
            handshake.relayed(state, session, msg)
        elif isinstance(msg, Connected):
            session.worker_connected = True
            handshake.complete(state, session)
        elif isinstance(msg, Up):
            session.phase = "connected"
        elif isinstance(msg, End):
            sessions.end(state, session, msg.reason, msg.reason, msg.detail, origin=False)


def node_down(state: State, node: str, cleaned: Forgotten | None = None) -> None:
    """``node`` is dead: end every session that had a member there. If this
    node cleaned its shared state up (``cleaned``), it announces the lines
    that changed, and sends each member of its sessions elsewhere back as it
    came: a member whose node never heard of its session (the dead node
    paired it, then died before telling) would otherwise stay out of the
    pool or the line for good; one whose node knows the session is not free
    and stays."""
    if node != state.node and node not in state.gone_nodes:
        _end_sessions_with(state, node)
    if cleaned is None:
        return
    for game, line in cleaned.lines.items():
        pairing.announce_line(state, game, line)
    for where, member, session_id in cleaned.partners:
        pairing.send_back(state, where, member, session_id)


def _end_sessions_with(state: State, node: str) -> None:
    state.gone_nodes.add(node)
    ended = waiting = 0
    for session in list(state.sessions.values()):
        gone = "worker" if session.worker_node == node else None
        if session.client_node == node:
            gone = "client"
        if gone is None:
            continue
        if resume.enabled(state):
            # Its member may resume on another node within the grace.
            resume.mark_away(state, session, gone)
            waiting += 1
        elif gone == "worker":
            sessions.end(state, session, None, "worker_failed")
            ended += 1
        else:
            sessions.end(state, session, "client_failed", None)
            ended += 1
    state.metrics.count(state.metrics.node_events, "peer_down")
    event("node_down", node=node, sessions_ended=ended, sessions_waiting=waiting)


def cut_off(state: State) -> None:
    """This node lost the shared state for longer than a node may: the others
    now hold it dead. Its sessions with a member elsewhere end; its idle
    workers go, to register where players can find them; joins are refused
    until it is back."""
    if state.isolated:
        return
    state.isolated = True
    ended = 0
    if resume.enabled(state):
        # The others hold these sessions for their members to resume: ours
        # go to another node (reconnect), and this node lets go of them.
        shared = [s for s in state.sessions.values() if s.worker_node != s.client_node]
        resume.send_elsewhere_only(state, shared)
    for session in list(state.sessions.values()):
        if session.worker_node != state.node:
            sessions.end(state, session, None, "worker_failed")
            ended += 1
        elif session.client_node != state.node:
            sessions.end(state, session, "client_failed", None)
            ended += 1
    idle = [w for w in state.workers.values() if w.status == "available"]
    for worker in idle:
        shut_down(state, worker, "server_shutdown")
    for client in list(state.waiting.values()):
        pairing.reject(state, client, "service_unavailable", client.game)
    state.metrics.count(state.metrics.node_events, "cut_off")
    event("node_cut_off", sessions_ended=ended, workers_sent_away=len(idle))


def reconnected(state: State) -> None:
    if state.isolated:
        state.isolated = False
        state.metrics.count(state.metrics.node_events, "reconnected")
        event("node_reconnected")
