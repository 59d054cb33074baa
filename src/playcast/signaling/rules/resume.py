"""Resuming a session over a new socket (``--resume-grace``).

Media flows peer to peer once WebRTC connects; the signaling socket only
carries control. So with a grace period, a member whose socket drops
mid-session is not failed at once: it is *away* (``sessions.mark_away``).
Its session waits, its partner is told nothing it must act on, and what the
partner sends meanwhile is held. The member comes back with its token as the
first message of a new socket (``resume``), on this node or any other, and
gets ``resumed`` with a fresh token, then what was held, in order. A token
is bound to one member of one session and replaced on each resume, so an old
one is useless. When the grace runs out, the session ends with the usual
reasons.

There is one path, whether the server is alone or one node of many: the
shared state checks the token, spends it, and moves the member here, in one
step (``shared.Reattach``); a lone server's shared state is in memory.
"""

from __future__ import annotations

from playcast.protocol import Error, Reconnect, Resume
from playcast.signaling.rules.bus import Moved, Take
from playcast.signaling.rules.events import CLOSE_POLICY, CLOSE_SERVICE_RESTART, event
from playcast.signaling.rules.sessions import (
    digest,
    end,
    give_up,
    handed_over,
    let_go,
    mark_away,
    new_token,
    own,
    resume_enabled,
    welcome,
)
from playcast.signaling.rules.state import Core
from playcast.signaling.shared.records import Denied, LeaveLine, Reattach, Reattached, Withdraw
from playcast.signaling.types import (
    Client,
    ConnectionState,
    Peer,
    Role,
    Session,
    Worker,
    ids,
    role,
    said_hello,
)


def step_away(core: Core, peer: Peer) -> bool:
    """``peer``'s socket closed: True if it is now away (its session waits)
    rather than failed."""
    if not resume_enabled(core) or core.stopping or not isinstance(peer, Worker | Client):
        return False
    session = core.table.sessions.get(peer.session_id or "")
    if session is None:
        return False
    core.roster.unlist(peer)
    core.table.step_away(peer)
    mark_away(core, session, role(peer))
    core.counters.resume_events.inc("away")
    event(f"{role(peer)}_away", grace_s=core.settings.resume_grace, **ids(peer))
    return True


def expire(core: Core, now: float) -> None:
    """End the sessions whose away member did not come back in time, and
    those whose player, away, ran out of its inactivity allowance (the
    session's own clocks keep running while a member is away)."""
    for session in list(core.table.waiting.values()):
        client = core.table.away.get(session.client_id)
        if (
            isinstance(client, Client)
            and now - client.last_input > core.settings.inactivity_timeout
        ):
            event("inactivity_timeout", idle_s=round(now - client.last_input, 1), **ids(client))
            end(core, session, "inactivity_timeout", "inactivity_timeout")
            continue
        member_role: Role
        for member_role in ("worker", "client"):
            until = (
                session.worker_away_until if member_role == "worker" else session.client_away_until
            )
            if until and now > until and session.id in core.table.sessions:
                event("resume_grace_over", session=session.id, member=member_role)
                core.counters.resume_events.inc("expired")
                give_up(core, session, member_role)
        if session.id not in core.table.sessions:
            core.table.wait(session, False)


def come_back(core: Core, peer: Peer, msg: Resume) -> None:
    """A new socket's first message is ``resume``: ask the shared state to
    check the token, spend it, and move the member here."""
    if not resume_enabled(core):
        refuse(core, peer, "resume is off on this server")
        return
    raw, kept = new_token()
    op = Reattach(msg.session_id, role(peer), digest(msg.token).hex(), kept.hex(), core.node)
    core.pending.add_resume(op.fresh, peer, raw)
    core.request(op)


def reattached(core: Core, op: Reattach, outcome: Reattached | Denied | None) -> None:
    """The shared state's answer to a resume: the member is now ours."""
    pending = core.pending.take_resume(op.fresh)
    if pending is None:
        return
    peer, raw = pending
    if not isinstance(peer, Worker | Client) or not peer.live or said_hello(peer):
        return  # gone meanwhile; the session's grace decides
    if not isinstance(outcome, Reattached):
        refuse(core, peer, "no such session, or not that member's token")
        return
    entry, here = outcome.session, core.node
    member_role: Role = "worker" if op.role == "worker" else "client"
    member_id = entry.worker if member_role == "worker" else entry.client
    session = core.table.sessions.get(entry.id)
    if session is None:
        session = Session(
            id=entry.id,
            worker_id=entry.worker,
            client_id=entry.client,
            game=entry.game,
            started_at=core.clock(),
            codec=entry.codec,
            phase="connected" if entry.phase == "connected" else "negotiating",
        )
        core.table.add(session)
    session.worker_node, session.client_node = entry.worker_node, entry.client_node
    own(core, session)
    old = core.table.come_back(member_id) if outcome.old_node == here else None
    if old is None and outcome.old_node == here:
        old = _attached(core, member_role, member_id)
        if old is not None:
            # Still attached: a socket half-open on our side. The token
            # holder wins, and the old socket goes.
            core.roster.unlist(old)
            core.close(old, 1000, "resumed on another socket")
    take_place(core, peer, old or _stand_in(peer, member_id, session), session)
    welcome(core, peer, session, raw, bytes.fromhex(op.fresh))
    partner_role: Role = "client" if member_role == "worker" else "worker"
    partner_node = entry.client_node if member_role == "worker" else entry.worker_node
    if partner_node != here and not outcome.partner_alive:
        mark_away(core, session, partner_role)  # its node is gone: it may resume too
    if outcome.old_node != here and outcome.old_alive:
        core.tell(outcome.old_node, Take(session_id=entry.id, role=member_role, node=here))
    if partner_node not in (here, outcome.old_node) and outcome.partner_alive:
        core.tell(partner_node, Moved(session_id=entry.id, role=member_role, node=here))


def _attached(core: Core, member_role: Role, member_id: str) -> Worker | Client | None:
    if member_role == "worker":
        return core.roster.workers.get(member_id)
    return core.roster.clients.get(member_id)


def take_place(core: Core, peer: Worker | Client, old: Peer, session: Session) -> None:
    """``peer`` (a fresh socket) becomes the member ``old`` was. A player's
    inactivity clock goes on: only input resets it, and a player who
    reconnects without playing must not hold a worker for ever (a stand-in,
    whose node is gone with its clock, starts a fresh one)."""
    if isinstance(peer, Worker) and isinstance(old, Worker):
        peer.addr, peer.port, peer.game, peer.codecs = old.addr, old.port, old.game, old.codecs
        peer.status, peer.client_id, peer.session_id = "busy", old.client_id, session.id
        peer.registered, peer.audio, peer.name = True, old.audio, old.name
    elif isinstance(peer, Client) and isinstance(old, Client):
        peer.joined, peer.game, peer.codecs, peer.sub = True, old.game, old.codecs, old.sub
        peer.worker_id, peer.session_id = old.worker_id, session.id
        peer.connection_state = old.connection_state
        if old.last_input:
            peer.last_input, peer.warned = old.last_input, old.warned
        else:
            peer.last_input, peer.warned = core.clock(), False
    core.roster.take_id(peer, old.id)


def refuse(core: Core, peer: Peer, why: str) -> None:
    """Not resumed: the socket that never became anyone is told why and closed."""
    core.counters.resume_events.inc("refused")
    core.counters.bad_messages.inc("resume_failed")
    event(f"{role(peer)}_resume_refused", why=repr(why), peer=peer.id)
    core.send(peer, Error(code="resume_failed", message=why))
    core.roster.unlist(peer)  # nothing else to undo
    core.close(peer, CLOSE_POLICY, "resume failed")


def _stand_in(peer: Peer, member_id: str, session: Session) -> Worker | Client:
    """The member as the shared state knows it (its node is gone or far)."""
    if isinstance(peer, Worker):
        return Worker(
            id=member_id, ws=peer.ws, last_ping=peer.last_ping, opened_at=peer.opened_at,
            messages=peer.messages, errors=peer.errors, game=session.game,
            session_id=session.id, client_id=session.client_id, status="busy",
        )  # fmt: skip
    state_name: ConnectionState = "connected" if session.phase == "connected" else "connecting"
    return Client(
        id=member_id, ws=peer.ws, last_ping=peer.last_ping, opened_at=peer.opened_at,
        messages=peer.messages, errors=peer.errors, game=session.game, joined=True,
        session_id=session.id, worker_id=session.worker_id, connection_state=state_name,
    )  # fmt: skip


def take(core: Core, msg: Take) -> None:
    """This node's member resumed on ``msg.node``: hand it over, let go."""
    session = core.table.sessions.get(msg.session_id)
    if session is None:
        return
    member_role: Role = "worker" if msg.role == "worker" else "client"
    member_id = session.worker_id if member_role == "worker" else session.client_id
    if core.table.come_back(member_id) is None:
        old = _attached(core, member_role, member_id)
        if old is not None and old.session_id == session.id:  # half-open here
            core.roster.unlist(old)
            core.close(old, 1000, "resumed on another node")
    handed_over(core, session, member_role, msg.node)
    partner_node = session.client_node if member_role == "worker" else session.worker_node
    if partner_node != core.node:
        let_go(core, session)  # neither member is here any more


def moved(core: Core, msg: Moved) -> None:
    session = core.table.sessions.get(msg.session_id)
    if session is not None:
        handed_over(core, session, "worker" if msg.role == "worker" else "client", msg.node)


def send_elsewhere(core: Core, chosen: list[Session]) -> None:
    """Every peer here is told ``reconnect`` and closed: idle ones register
    elsewhere; members of ``chosen`` sessions resume elsewhere, their
    sessions waiting here (holding what their partners send) until taken."""
    member_role: Role
    for session in chosen:
        for member_role, member_id, node in (
            ("worker", session.worker_id, session.worker_node),
            ("client", session.client_id, session.client_node),
        ):
            if node != core.node:
                continue
            member = _attached(core, member_role, member_id)
            if member is not None and member.session_id == session.id:
                core.roster.unlist(member)
                core.table.step_away(member)
                mark_away(core, session, member_role)
    away = list(core.table.away.values())
    for peer in away:
        core.roster.unslot(peer)
    for peer in [*core.roster.clear(), *away]:
        core.send(peer, Reconnect())
        core.close(peer, CLOSE_SERVICE_RESTART, "reconnect")
        if not (isinstance(peer, Worker | Client) and peer.session_id in core.table.sessions):
            if isinstance(peer, Worker) and peer.status != "registering":
                core.request(Withdraw(peer.id))
            elif isinstance(peer, Client) and peer.queued_at:
                core.request(LeaveLine(peer.id, peer.game))
    core.line.clear()
    core.counters.resume_events.inc("sent_elsewhere")


def send_elsewhere_only(core: Core, chosen: list[Session]) -> None:
    """Cut off: the members of ``chosen`` sessions (shared with other nodes,
    which now hold them for a resume) are told ``reconnect`` and let go."""
    member_role: Role
    for session in chosen:
        for member_role, member_id in (
            ("worker", session.worker_id),
            ("client", session.client_id),
        ):
            member = _attached(core, member_role, member_id) or core.table.away.get(member_id)
            if member is None or member.session_id != session.id:
                continue
            core.table.come_back(member.id)
            core.roster.unlist(member)
            core.send(member, Reconnect())
            core.close(member, CLOSE_SERVICE_RESTART, "reconnect")
        let_go(core, session)
