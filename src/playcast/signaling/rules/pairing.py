"""Pairing and the waiting line: what the shared state answers, applied here.

A ``join`` asks the shared state for a worker (``shared.Pair``); a worker
that registers offers itself (``shared.Publish``). The outcome comes back as
its own step (the hub's ``on_outcome``): a session to open, a place in line, a refusal.
Either side of a new session may be on another node: it is told through the
cluster (``bus.Start`` / ``bus.Assign``).
"""

from __future__ import annotations

from playcast.protocol import (
    DEFAULT_CODECS,
    Assigned,
    IceServer,
    Queued,
    Registered,
    Rejected,
    RejectReason,
    SessionStart,
)
from playcast.signaling.rules.bus import Again, Assign, End, Line, Start
from playcast.signaling.rules.closing import forget, shut_down
from playcast.signaling.rules.events import (
    CLOSE_NORMAL,
    REJECT_TEXT,
    TICKET_TEXT,
    TicketWhy,
    event,
)
from playcast.signaling.rules.ice import ice_servers_for
from playcast.signaling.rules.sessions import (
    digest,
    local_client,
    local_worker,
    new_token,
    open_session,
    resume_enabled,
)
from playcast.signaling.rules.state import Core
from playcast.signaling.shared.records import (
    ClientEntry,
    EndSession,
    Held,
    Hold,
    HoldChanged,
    LeaveLine,
    Outcome,
    Pair,
    Paired,
    Publish,
    Refused,
    SessionEntry,
    SetTokens,
    WorkerEntry,
)
from playcast.signaling.shared.records import Queued as InLine
from playcast.signaling.types import Client, Session, Worker, fmt_remote


def client_paired(core: Core, op: Pair, outcome: Outcome | None) -> None:
    """The shared state's answer to a join: a session, a place in line, or a refusal."""
    client = core.roster.clients.get(op.client.id)
    if isinstance(outcome, Paired):
        begin(core, outcome)
    elif isinstance(outcome, InLine):
        if client is None:
            core.request(LeaveLine(op.client.id, op.client.game))
            return
        client.queued_at = core.clock()
        core.line.join(client)
        event("client_queued", client=client.id, game=op.client.game, line=len(outcome.line))
        announce_line(core, op.client.game, outcome.line)
    elif isinstance(outcome, Refused) and client is not None:
        # A spent ticket: the one refusal of the shared state's that has a why.
        spent: TicketWhy | None = "spent" if outcome.detail == "spent" else None
        reject(core, client, outcome.reason, op.client.game, spent)
    elif client is not None:
        reject(core, client, "service_unavailable", op.client.game)


def worker_published(core: Core, op: Publish, outcome: Outcome | None) -> None:
    """The shared state's answer to a registration: listed, or paired at once."""
    worker = core.roster.workers.get(op.worker.id)
    if worker is not None and outcome is not None and worker.status in ("available", "held"):
        _held(worker, isinstance(outcome, Held))
    if worker is not None and not worker.registered and outcome is not None:
        worker.registered = True
        core.send(
            worker,
            Registered(
                worker_id=worker.id,
                heartbeat_interval=core.settings.heartbeat_interval,
                heartbeat_timeout=core.settings.heartbeat_timeout,
                resume_grace=core.settings.resume_grace if resume_enabled(core) else None,
            ),
        )
    if isinstance(outcome, Paired):
        begin(core, outcome)
    elif outcome is None and worker is not None:
        # Not listed (the shared state is out of reach): not available
        # anywhere, so it must go and come back through the load balancer.
        shut_down(core, worker, "server_shutdown")
    held = core.pending.take_start(op.worker.id)
    if held is not None:
        start_worker(core, held, may_wait=False)


def _held(worker: Worker, held: bool) -> None:
    """The shared state's latest answer says whether the worker's name is
    held (``rules/admin.py``): out of the pool, never paired, until released."""
    if held == (worker.status == "held"):
        return
    worker.status = "held" if held else "available"
    event("worker_held" if held else "worker_released", worker=worker.id, name=worker.name)


def start_worker(core: Core, msg: Start, *, may_wait: bool = True) -> None:
    """Another node paired its player with a worker here: greet the worker.
    A worker is told ``registered`` before any session: a pairing script
    may tell this node (``earlystart``) before it has read the worker's
    listing (the answer and the push come on two connections), and then the
    start waits for that answer (``may_wait``)."""
    # It just paired with a worker here: if this node had found it dead, it
    # has come back under its id (as begin reasons for its answer).
    node_back(core, msg.client_node)
    worker = core.roster.workers.get(msg.worker_id) if free_worker(core, msg.worker_id) else None
    if worker is not None and not worker.registered and may_wait:
        core.pending.hold_start(worker.id, msg)
        return
    if worker is None or not worker.registered:
        # Gone between its listing and this word: the player hears it failed.
        core.request(EndSession(msg.session_id))
        core.tell(msg.client_node, End(session_id=msg.session_id, reason="worker_failed"))
        return
    entry = SessionEntry(
        msg.session_id,
        worker.id,
        core.node,
        msg.client_id,
        msg.client_node,
        worker.game,
        msg.codec,
        core.wall_clock(),
    )
    session = open_session(core, entry)
    if msg.resume_token:
        session.worker_token = digest(msg.resume_token)
    greet_worker(core, worker, session, msg.ice_servers, msg.resume_token or None)


def assign_client(core: Core, msg: Assign) -> None:
    """A worker on another node took the player waiting here: greet the
    player (``start_worker``'s other half)."""
    node_back(core, msg.worker_node)  # as in start_worker
    client = core.roster.clients.get(msg.client_id) if free_client(core, msg.client_id) else None
    if client is None:
        # Gone before this word: its worker, already told, hears it failed
        # (and leaves the directory with the session).
        core.request(EndSession(msg.session_id, msg.worker_id))
        core.tell(msg.worker_node, End(session_id=msg.session_id, reason="client_failed"))
        return
    entry = SessionEntry(
        msg.session_id,
        msg.worker_id,
        msg.worker_node,
        client.id,
        core.node,
        client.game,
        msg.codec,
        core.wall_clock(),
    )
    session = open_session(core, entry)
    if msg.resume_token:
        session.client_token = digest(msg.resume_token)
    greet_client(core, client, session, msg.ice_servers, msg.resume_token or None)


def free_worker(core: Core, worker_id: str) -> bool:
    worker = core.roster.workers.get(worker_id)
    return worker is not None and worker.status == "available" and worker.session_id is None


def held_worker(core: Core, worker_id: str) -> bool:
    worker = core.roster.workers.get(worker_id)
    return worker is not None and worker.status == "held"


def entry_of(core: Core, w: Worker) -> WorkerEntry:
    """What the shared state keeps of a worker here."""
    return WorkerEntry(w.id, core.node, w.game, w.codecs, w.addr, w.port, w.name)


def free_client(core: Core, client_id: str) -> bool:
    client = core.roster.clients.get(client_id)
    return client is not None and client.joined and client.session_id is None


def offer_again(core: Core, member: str, session_id: str = "") -> None:
    """A pairing fell through for ``member`` (here): worker or client, it
    goes back as it came, to the pool or to look again. ``session_id``: the
    session it was paired in, if still recorded; a member that never heard
    of it ends it (nobody can resume a session one side never joined)."""
    held = core.pending.starts.get(member)
    if held is not None and held.session_id == session_id:
        return  # told already: its start waits for its registration's answer
    worker_free, client_free = free_worker(core, member), free_client(core, member)
    if session_id and (worker_free or client_free):
        core.request(EndSession(session_id))
    if worker_free or held_worker(core, member):
        # (held: its name's hold was lifted, or set: the answer says which)
        entry = entry_of(core, core.roster.workers[member])
        core.request(Publish(entry, core.new_id("s"), core.wall_clock()))
    elif client_free:
        client = core.roster.clients[member]
        if client.queued_at:
            client.queued_at = 0.0
            core.line.leave(client.id)
        entry_c = ClientEntry(client.id, core.node, client.game, client.codecs)
        limit = core.settings.queue_limit
        core.request(Pair(entry_c, core.new_id("s"), limit, core.wall_clock()))


def _orphaned(core: Core, paired: Paired, gone: str) -> None:
    """Paired with a member that vanished meanwhile: the other goes back."""
    entry = paired.session
    core.request(EndSession(entry.id))
    if gone == "client":
        node, member = entry.worker_node, entry.worker
    else:
        node, member = entry.client_node, entry.client
    event("pairing_orphaned", session=entry.id, gone=gone)
    if gone == "client" and node != core.node and not core.nodes.is_gone(node):
        # The worker's node may have been told already (a pairing script
        # tells it as it pairs: cluster.py's early Start): that session
        # ends there; a session it never opened, it ignores.
        core.tell(node, End(session_id=entry.id, reason="client_failed"))
    send_back(core, node, member)
    if paired.line is not None:
        announce_line(core, entry.game, paired.line)


def hold_changed(core: Core, op: Hold, outcome: Outcome | None) -> None:
    """The shared state's answer to a hold: each worker it moved is offered
    again through its node, whose answer marks it held or available."""
    if not isinstance(outcome, HoldChanged):
        # Not asked (the shared state out of reach): nothing changed there.
        event("worker_name_hold_failed", name=op.name, on=op.on)
        return
    for worker_id, node in outcome.workers:
        send_back(core, node, worker_id)


def send_back(core: Core, node: str, member: str, session_id: str = "") -> None:
    """``member`` of a pairing that fell through, on ``node``, goes back as
    it came (``offer_again``): here at once, elsewhere through its node."""
    if node == core.node:
        offer_again(core, member, session_id)
    elif not core.nodes.is_gone(node):
        core.tell(node, Again(member=member, session_id=session_id))


def begin(core: Core, paired: Paired) -> None:
    """A session was paired: open it here and tell each member, near or far."""
    entry = paired.session
    here = core.node
    if entry.worker_node == here and not free_worker(core, entry.worker):
        _orphaned(core, paired, "worker")
        return
    if entry.client_node == here and not free_client(core, entry.client):
        _orphaned(core, paired, "client")
        return
    # Redis just paired with a member there, so its node is alive: if this
    # node had found it dead, it has come back under the same id.
    for node in (entry.worker_node, entry.client_node):
        if core.nodes.is_gone(node):
            node_back(core, node)
    session = open_session(core, entry)
    ice = ice_servers_for(core.settings, entry.id, core.wall_clock())
    worker_token = client_token = None
    if resume_enabled(core):
        worker_token, session.worker_token = new_token()
        client_token, session.client_token = new_token()
        # A member may resume on any node: the shared state checks its token.
        core.request(SetTokens(entry.id, session.worker_token.hex(), session.client_token.hex()))
    worker = local_worker(core, session)
    if worker is not None:
        greet_worker(core, worker, session, ice, worker_token)
    elif entry.worker_node != core.node:
        core.tell(
            entry.worker_node,
            Start(
                session_id=entry.id,
                worker_id=entry.worker,
                client_id=entry.client,
                client_node=entry.client_node,
                codec=entry.codec,
                ice_servers=ice,
                resume_token=worker_token or "",
            ),
        )
    client = local_client(core, session)
    if client is not None:
        greet_client(core, client, session, ice, client_token)
    elif entry.client_node != core.node:
        core.tell(
            entry.client_node,
            Assign(
                session_id=entry.id,
                worker_id=entry.worker,
                worker_node=entry.worker_node,
                client_id=entry.client,
                codec=entry.codec,
                ice_servers=ice,
                resume_token=client_token or "",
            ),
        )
    event(
        "client_assigned",
        session=entry.id,
        client=entry.client,
        worker=entry.worker,
        game=entry.game,
        codec=entry.codec,
        nodes=None
        if entry.worker_node == entry.client_node
        else f"{entry.worker_node}/{entry.client_node}",
        sub=session.client_sub or None,
        remote=fmt_remote(client) if client is not None else None,
    )
    if paired.line is not None:
        announce_line(core, entry.game, paired.line)


def greet_worker(
    core: Core, worker: Worker, session: Session, ice: list[IceServer], token: str | None
) -> None:
    """Tell a worker here its session has begun (with its resume token)."""
    core.send(
        worker,
        SessionStart(
            session_id=session.id,
            client_id=session.client_id,
            ice_servers=ice,
            codec=session.codec,
            resume_token=token,
        ),
    )


def greet_client(
    core: Core, client: Client, session: Session, ice: list[IceServer], token: str | None
) -> None:
    """Tell a client here it has its worker (with its resume token and grace)."""
    core.send(
        client,
        Assigned(
            session_id=session.id,
            client_id=session.client_id,
            worker_id=session.worker_id,
            ice_servers=ice,
            codec=session.codec,
            resume_token=token,
            resume_grace=core.settings.resume_grace if token else None,
        ),
    )


def node_back(core: Core, node: str) -> None:
    """A node found dead earlier is alive again: a new process under the same
    id (its predecessor's records are gone), told and relayed to like any."""
    if core.nodes.back(node):
        core.counters.node_events.inc("peer_back")
        event("node_back", node=node)


def announce_line(core: Core, game: str, line: tuple[ClientEntry, ...]) -> None:
    """Tell every waiting client its new place: here directly, elsewhere
    through its node."""
    clients = [c.id for c in line]
    nodes = [c.node for c in line]
    update_positions(core, game, clients)
    for node in dict.fromkeys(nodes):
        if node != core.node and not core.nodes.is_gone(node):
            core.tell(node, Line(game=game, clients=clients, nodes=nodes))


def update_positions(core: Core, game: str, clients: list[str]) -> None:
    for index, client_id in enumerate(clients):
        client = core.line.clients.get(client_id)
        if client is not None and client.position != index + 1:
            client.position = index + 1
            core.send(client, Queued(position=index + 1, game=game))


def expire_waits(core: Core, client: Client, now: float) -> bool:
    """True when ``client`` waited in line too long and was turned away."""
    if not client.queued_at or now - client.queued_at <= core.settings.queue_timeout:
        return False
    reject(core, client, "queue_timeout", client.game)
    return True


def reject(
    core: Core,
    client: Client,
    reason: RejectReason,
    game: str,
    why: TicketWhy | None = None,
    detail: str = "",
) -> None:
    """Turn ``client`` away; ``why``: what was wrong with its ticket (unauthorized)."""
    core.counters.rejections.inc(reason)
    if why is not None:
        core.counters.ticket_refusals.inc(why)
        detail = detail or TICKET_TEXT[why]
    event(
        "client_rejected",
        client=client.id,
        game=repr(game) if reason in ("unknown_game", "unauthorized") else game,
        reason=reason,
        why=why,
        sub=client.sub or None,
        codecs=",".join(client.codecs) if reason == "unsupported_browser" else None,
        remote=fmt_remote(client),
    )
    core.send(client, Rejected(reason=reason, message=REJECT_TEXT[reason], detail=detail or None))
    forget(core, client)
    core.close(client, CLOSE_NORMAL, reason.replace("_", " "))


def codec_names(codecs: list[str] | None) -> tuple[str, ...]:
    """Upper-case, without repeats, in the given order; none named: H.264."""
    if not codecs:
        return DEFAULT_CODECS
    return tuple(dict.fromkeys(c.upper() for c in codecs))
