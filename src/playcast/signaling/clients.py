"""Client logic: joining, worker assignment or rejection, the answer, input, leave."""

from __future__ import annotations

from playcast.protocol import (
    Answer,
    IceCandidate,
    Input,
    Join,
    Leave,
    Message,
    ShutdownAck,
    WebrtcConnected,
    WebrtcFailed,
    message_type,
)
from playcast.signaling.rules import sessions
from playcast.signaling.rules.closing import forget
from playcast.signaling.rules.events import CLOSE_NORMAL, Unexpected, event
from playcast.signaling.rules.pairing import codec_names, reject
from playcast.signaling.rules.state import Core
from playcast.signaling.shared.records import ClientEntry, Pair
from playcast.signaling.types import Client


def handle(core: Core, client: Client, msg: Message) -> None:
    """One message from a player (``Unexpected``: not allowed now)."""
    if not client.joined:
        if not isinstance(msg, Join):
            raise Unexpected("a client's first message must be 'join'", "not_registered")
        join(core, client, msg)
    elif isinstance(msg, Input):
        client.last_input = core.clock()
        client.warned = False
    elif isinstance(msg, Answer):
        sessions.relay_sdp(core, client, msg, "awaiting_answer", then="negotiating")
    elif isinstance(msg, IceCandidate):
        sessions.relay_candidate(core, client, msg)
    elif isinstance(msg, WebrtcConnected):
        sessions.report_connected(core, client, msg)
    elif isinstance(msg, WebrtcFailed):
        sessions.report_failed(core, client, msg)
    elif isinstance(msg, Leave):
        leave(core, client)
    elif isinstance(msg, Join):
        raise Unexpected("already joined")
    elif isinstance(msg, ShutdownAck):
        raise Unexpected("shutdown_ack without a shutdown")
    else:
        raise Unexpected(f"'{message_type(msg)}' is not a client message")


def join(core: Core, client: Client, msg: Join) -> None:
    client.joined = True
    client.last_input = core.clock()
    now = core.wall_clock()
    jti, jti_until = "", 0.0
    if core.tickets is not None:  # before anything else: a stranger learns nothing
        verdict = core.tickets.check(msg.ticket, msg.game, now)
        client.sub = verdict.sub
        if verdict.why is not None:
            reject(core, client, "unauthorized", msg.game, verdict.why, verdict.detail)
            return
        jti, jti_until = verdict.jti, verdict.until
    if msg.game not in core.games:
        reject(core, client, "unknown_game", msg.game)
        return
    client.game = msg.game
    client.codecs = codec_names(msg.codecs)
    if core.nodes.isolated:
        reject(core, client, "service_unavailable", msg.game)
        return
    entry = ClientEntry(client.id, core.node, client.game, client.codecs)
    limit = core.settings.queue_limit
    core.request(Pair(entry, core.new_id("s"), limit, now, jti, jti_until))


def leave(core: Core, client: Client) -> None:
    session = core.table.sessions.get(client.session_id or "")
    forget(core, client)  # out of the line too, if it was waiting
    core.close(client, CLOSE_NORMAL, "left")
    if session is not None:
        sessions.end(core, session, "client_left", None)  # logged as session_ended
    else:
        event("client_left", client=client.id)
