"""Pairing and the waiting line: what the shared state answers, applied here.

A ``join`` asks the shared state for a worker (``shared.Pair``); a worker
that registers offers itself (``shared.Publish``). The outcome comes back as
its own step (``settle``): a session to open, a place in line, a refusal.
Either side of a new session may be on another node: it is told through the
cluster (``bus.Start`` / ``bus.Assign``).
"""

from __future__ import annotations

from playcast.protocol import (
    Assigned,
    IceServer,
    Queued,
    Registered,
    Rejected,
    RejectReason,
    SessionStart,
)
from playcast.signaling.rules import resume, sessions
from playcast.signaling.rules.bus import Again, Assign, End, Line, Start
from playcast.signaling.rules.closing import forget, shut_down
from playcast.signaling.rules.events import CLOSE_NORMAL, REJECT_TEXT, event
from playcast.signaling.rules.ice import ice_servers_for
from playcast.signaling.rules.state import State, fmt_remote
from playcast.signaling.shared import (
    ClientEntry,
    Denied,
    Done,
    EndSession,
    LeaveLine,
    Op,
    Outcome,
    Pair,
    Paired,
    Publish,
    Reattach,
    Reattached,
    Refused,
    SessionEntry,
    SetTokens,
    WorkerEntry,
)
from playcast.signaling.shared import (
    Queued as InLine,
)
from playcast.signaling.types import Client, Session, Worker


def settle(state: State, op: Op, outcome: Outcome | None) -> None:
    """Apply the shared state's answer to ``op``; None: it could not be asked."""
    if isinstance(op, Reattach):
        assert outcome is None or isinstance(outcome, Reattached | Denied)
        resume.reattached(state, op, outcome)
    elif isinstance(op, Pair):
        _client_paired(state, op, outcome)
    elif isinstance(op, Publish):
        _worker_published(state, op, outcome)
    elif isinstance(outcome, Done) and outcome.line is not None:
        announce_line(state, outcome.game, outcome.line)


def _client_paired(state: State, op: Pair, outcome: Outcome | None) -> None:
    client = state.clients.get(op.client.id)
    if isinstance(outcome, Paired):
        begin(state, outcome)
    elif isinstance(outcome, InLine):
        if client is None:
            state.request(LeaveLine(op.client.id, op.client.game))
            return
        client.queued_at = state.clock()
        state.waiting[client.id] = client
        event("client_queued", client=client.id, game=op.client.game, line=len(outcome.line))
        announce_line(state, op.client.game, outcome.line)
    elif client is not None:
        reason: RejectReason = (
            outcome.reason if isinstance(outcome, Refused) else "service_unavailable"
        )
        reject(state, client, reason, op.client.game)


def _worker_published(state: State, op: Publish, outcome: Outcome | None) -> None:
    worker = state.workers.get(op.worker.id)
    if worker is not None and not worker.registered and outcome is not None:
        worker.registered = True
        state.send(
            worker,
            Registered(
                worker_id=worker.id,
                heartbeat_interval=state.settings.heartbeat_interval,
                heartbeat_timeout=state.settings.heartbeat_timeout,
                resume_grace=state.settings.resume_grace if resume.enabled(state) else None,
            ),
        )
    if isinstance(outcome, Paired):
        begin(state, outcome)
    elif outcome is None and worker is not None:
        # Not listed (the shared state is out of reach): not available
        # anywhere, so it must go and come back through the load balancer.
        shut_down(state, worker, "server_shutdown")
    held = state.held_starts.pop(op.worker.id, None)
    if held is not None:
        start_worker(state, held, may_wait=False)


def start_worker(state: State, msg: Start, *, may_wait: bool = True) -> None:
    """Another node paired its player with a worker here: greet the worker.
    A worker is told ``registered`` before any session: a pairing script
    may tell this node (``earlystart``) before it has read the worker's
    listing (the answer and the push come on two connections), and then the
    start waits for that answer (``may_wait``)."""
    # It just paired with a worker here: if this node had found it dead, it
    # has come back under its id (as begin reasons for its answer).
    node_back(state, msg.client_node)
    worker = state.workers.get(msg.worker_id) if free_worker(state, msg.worker_id) else None
    if worker is not None and not worker.registered and may_wait:
        state.held_starts[worker.id] = msg
        return
    if worker is None or not worker.registered:
        # Gone between its listing and this word: the player hears it failed.
        state.request(EndSession(msg.session_id))
        state.tell(msg.client_node, End(session_id=msg.session_id, reason="worker_failed"))
        return
    entry = SessionEntry(
        msg.session_id,
        worker.id,
        state.node,
        msg.client_id,
        msg.client_node,
        worker.game,
        msg.codec,
        state.wall_clock(),
    )
    session = sessions.open_session(state, entry)
    if msg.resume_token:
        session.worker_token = resume.digest(msg.resume_token)
    greet_worker(state, worker, session, msg.ice_servers, msg.resume_token or None)


def assign_client(state: State, msg: Assign) -> None:
    """A worker on another node took the player waiting here: greet the
    player (``start_worker``'s other half)."""
    node_back(state, msg.worker_node)  # as in start_worker
    client = state.clients.get(msg.client_id) if free_client(state, msg.client_id) else None
    if client is None:
        # Gone before this word: its worker, already told, hears it failed
        # (and leaves the directory with the session).
        state.request(EndSession(msg.session_id, msg.worker_id))
        state.tell(msg.worker_node, End(session_id=msg.session_id, reason="client_failed"))
        return
    entry = SessionEntry(
        msg.session_id,
        msg.worker_id,
        msg.worker_node,
        client.id,
        state.node,
        client.game,
        msg.codec,
        state.wall_clock(),
    )
    session = sessions.open_session(state, entry)
    if msg.resume_token:
        session.client_token = resume.digest(msg.resume_token)
    greet_client(state, client, session, msg.ice_servers, msg.resume_token or None)


def free_worker(state: State, worker_id: str) -> bool:
    worker = state.workers.get(worker_id)
    return worker is not None and worker.status == "available" and worker.session_id is None


def free_client(state: State, client_id: str) -> bool:
    client = state.clients.get(client_id)
    return client is not None and client.joined and client.session_id is None


def offer_again(state: State, member: str, session_id: str = "") -> None:
    """A pairing fell through for ``member`` (here): worker or client, it
    goes back as it came, to the pool or to look again. ``session_id``: the
    session it was paired in, if still recorded; a member that never heard
    of it ends it (nobody can resume a session one side never joined)."""
    held = state.held_starts.get(member)
    if held is not None and held.session_id == session_id:
        return  # told already: its start waits for its registration's answer
    worker_free, client_free = free_worker(state, member), free_client(state, member)
    if session_id and (worker_free or client_free):
        state.request(EndSession(session_id))
    if worker_free:
        worker = state.workers[member]
        entry = WorkerEntry(
            worker.id, state.node, worker.game, worker.codecs, worker.addr, worker.port
        )
        state.request(Publish(entry, state.new_id("s"), state.wall_clock()))
    elif client_free:
        client = state.clients[member]
        if client.queued_at:
            client.queued_at = 0.0
            state.waiting.pop(client.id, None)
        entry_c = ClientEntry(client.id, state.node, client.game, client.codecs)
        limit = state.settings.queue_limit
        state.request(Pair(entry_c, state.new_id("s"), limit, state.wall_clock()))


def _orphaned(state: State, paired: Paired, gone: str) -> None:
    """Paired with a member that vanished meanwhile: the other goes back."""
    entry = paired.session
    state.request(EndSession(entry.id))
    if gone == "client":
        node, member = entry.worker_node, entry.worker
    else:
        node, member = entry.client_node, entry.client
    event("pairing_orphaned", session=entry.id, gone=gone)
    if gone == "client" and node != state.node and node not in state.gone_nodes:
        # The worker's node may have been told already (a pairing script
        # tells it as it pairs: cluster.py's early Start): that session
        # ends there; a session it never opened, it ignores.
        state.tell(node, End(session_id=entry.id, reason="client_failed"))
    send_back(state, node, member)
    if paired.line is not None:
        announce_line(state, entry.game, paired.line)


def send_back(state: State, node: str, member: str, session_id: str = "") -> None:
    """``member`` of a pairing that fell through, on ``node``, goes back as
    it came (``offer_again``): here at once, elsewhere through its node."""
    if node == state.node:
        offer_again(state, member, session_id)
    elif node not in state.gone_nodes:
        state.tell(node, Again(member=member, session_id=session_id))


def begin(state: State, paired: Paired) -> None:
    """A session was paired: open it here and tell each member, near or far."""
    entry = paired.session
    here = state.node
    if entry.worker_node == here and not free_worker(state, entry.worker):
        _orphaned(state, paired, "worker")
        return
    if entry.client_node == here and not free_client(state, entry.client):
        _orphaned(state, paired, "client")
        return
    # Redis just paired with a member there, so its node is alive: if this
    # node had found it dead, it has come back under the same id.
    for node in (entry.worker_node, entry.client_node):
        if node in state.gone_nodes:
            node_back(state, node)
    session = sessions.open_session(state, entry)
    ice = ice_servers_for(state.settings, entry.id, state.wall_clock())
    worker_token = client_token = None
    if resume.enabled(state):
        worker_token, session.worker_token = resume.new_token()
        client_token, session.client_token = resume.new_token()
        if state.memory is None:  # a member may resume on any node
            state.request(
                SetTokens(entry.id, session.worker_token.hex(), session.client_token.hex())
            )
    worker = sessions.local_worker(state, session)
    if worker is not None:
        greet_worker(state, worker, session, ice, worker_token)
    elif entry.worker_node != state.node:
        state.tell(
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
    client = sessions.local_client(state, session)
    if client is not None:
        greet_client(state, client, session, ice, client_token)
    elif entry.client_node != state.node:
        state.tell(
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
        remote=fmt_remote(client) if client is not None else None,
    )
    if paired.line is not None:
        announce_line(state, entry.game, paired.line)


def greet_worker(
    state: State, worker: Worker, session: Session, ice: list[IceServer], token: str | None
) -> None:
    """Tell a worker here its session has begun (with its resume token)."""
    state.send(
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
    state: State, client: Client, session: Session, ice: list[IceServer], token: str | None
) -> None:
    """Tell a client here it has its worker (with its resume token and grace)."""
    state.send(
        client,
        Assigned(
            session_id=session.id,
            client_id=session.client_id,
            worker_id=session.worker_id,
            ice_servers=ice,
            codec=session.codec,
            resume_token=token,
            resume_grace=state.settings.resume_grace if token else None,
        ),
    )


def node_back(state: State, node: str) -> None:
    """A node found dead earlier is alive again: a new process under the same
    id (its predecessor's records are gone), told and relayed to like any."""
    if node in state.gone_nodes:
        state.gone_nodes.discard(node)
        state.metrics.count(state.metrics.node_events, "peer_back")
        event("node_back", node=node)


def announce_line(state: State, game: str, line: tuple[ClientEntry, ...]) -> None:
    """Tell every waiting client its new place: here directly, elsewhere
    through its node."""
    clients = [c.id for c in line]
    nodes = [c.node for c in line]
    update_positions(state, game, clients)
    for node in dict.fromkeys(nodes):
        if node != state.node and node not in state.gone_nodes:
            state.tell(node, Line(game=game, clients=clients, nodes=nodes))


def update_positions(state: State, game: str, clients: list[str]) -> None:
    for index, client_id in enumerate(clients):
        client = state.waiting.get(client_id)
        if client is not None and client.position != index + 1:
            client.position = index + 1
            state.send(client, Queued(position=index + 1, game=game))


def expire_waits(state: State, client: Client, now: float) -> bool:
    """True when ``client`` waited in line too long and was turned away."""
    if not client.queued_at or now - client.queued_at <= state.settings.queue_timeout:
        return False
    reject(state, client, "queue_timeout", client.game)
    return True


def reject(state: State, client: Client, reason: RejectReason, game: str) -> None:
    state.metrics.count(state.metrics.rejections, reason)
    event(
        "client_rejected",
        client=client.id,
        game=repr(game) if reason == "unknown_game" else game,
        reason=reason,
        codecs=",".join(client.codecs) if reason == "unsupported_browser" else None,
        remote=fmt_remote(client),
    )
    state.send(client, Rejected(reason=reason, message=REJECT_TEXT[reason]))
    forget(state, client)
    state.close(client, CLOSE_NORMAL, reason.replace("_", " "))
