"""Client logic: joining, worker assignment or rejection, the answer, input, leave."""

from __future__ import annotations

from playcast.protocol import (
    Answer,
    Assigned,
    IceCandidate,
    Input,
    Join,
    Leave,
    Message,
    Rejected,
    RejectReason,
    SessionStart,
    ShutdownAck,
    WebrtcConnected,
    WebrtcFailed,
    message_type,
)
from playcast.signaling import handshake, sessions
from playcast.signaling.closing import forget
from playcast.signaling.events import CLOSE_NORMAL, REJECT_TEXT, event
from playcast.signaling.ice import ice_servers_for
from playcast.signaling.peers import error
from playcast.signaling.state import State, fmt_remote
from playcast.signaling.types import Client
from playcast.signaling.workers import codec_names


def handle(state: State, client: Client, msg: Message) -> None:
    if not client.joined:
        if not isinstance(msg, Join):
            error(state, client, "not_registered", "a client's first message must be 'join'")
            return
        join(state, client, msg)
    elif isinstance(msg, Input):
        client.last_input = state.clock()
        client.warned = False
    elif isinstance(msg, Answer):
        handshake.relay_sdp(state, client, msg, "awaiting_answer", then="negotiating")
    elif isinstance(msg, IceCandidate):
        handshake.relay_candidate(state, client, msg)
    elif isinstance(msg, WebrtcConnected):
        handshake.report_connected(state, client, msg)
    elif isinstance(msg, WebrtcFailed):
        handshake.report_failed(state, client, msg)
    elif isinstance(msg, Leave):
        leave(state, client)
    elif isinstance(msg, Join):
        error(state, client, "unexpected_message", "already joined")
    elif isinstance(msg, ShutdownAck):
        error(state, client, "unexpected_message", "shutdown_ack without a shutdown")
    else:
        error(state, client, "unexpected_message", f"'{message_type(msg)}' is not a client message")


def join(state: State, client: Client, msg: Join) -> None:
    client.joined = True
    client.last_input = state.clock()
    if not state.pool.allows(msg.game):
        reject(state, client, "unknown_game", msg.game)
        return
    client.game = msg.game
    client.codecs = codec_names(msg.codecs)
    taken = state.pool.take(msg.game, client.codecs)
    if taken is None:
        if state.pool.codecs[msg.game] and not state.pool.serves(msg.game, client.codecs):
            # Workers exist, and none of them, free or busy, sends what this
            # browser decodes: waiting would not help, and no worker is taken.
            reject(state, client, "unsupported_browser", msg.game)
        else:
            reject(state, client, "no_worker_available", msg.game)
        return
    worker, codec = taken
    session = sessions.start(state, worker, client)
    session.codec = codec
    ice = ice_servers_for(state.settings, session.id, state.wall_clock())
    state.send(
        worker,
        SessionStart(session_id=session.id, client_id=client.id, ice_servers=ice, codec=codec),
    )
    state.send(
        client,
        Assigned(
            session_id=session.id,
            client_id=client.id,
            worker_id=worker.id,
            ice_servers=ice,
            codec=codec,
        ),
    )
    event(
        "client_assigned",
        session=session.id,
        client=client.id,
        worker=worker.id,
        game=msg.game,
        codec=codec,
        remote=fmt_remote(client),
    )


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


def leave(state: State, client: Client) -> None:
    session = state.sessions.get(client.session_id or "")
    forget(state, client)
    state.close(client, CLOSE_NORMAL, "left")
    if session is not None:
        sessions.end(state, session, "client_left", None)  # logged as session_ended
    else:
        event("client_left", client=client.id)
