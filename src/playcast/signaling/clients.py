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
from playcast.signaling.rules import handshake, sessions
from playcast.signaling.rules.closing import forget
from playcast.signaling.rules.conduct import error
from playcast.signaling.rules.events import CLOSE_NORMAL, event
from playcast.signaling.rules.pairing import reject
from playcast.signaling.rules.state import State
from playcast.signaling.shared import ClientEntry, Pair
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
    if msg.game not in state.games:
        reject(state, client, "unknown_game", msg.game)
        return
    client.game = msg.game
    client.codecs = codec_names(msg.codecs)
    if state.isolated:
        reject(state, client, "service_unavailable", msg.game)
        return
    entry = ClientEntry(client.id, state.node, client.game, client.codecs)
    state.request(Pair(entry, state.new_id("s"), state.settings.queue_limit, state.wall_clock()))


def leave(state: State, client: Client) -> None:
    session = state.sessions.get(client.session_id or "")
    forget(state, client)  # out of the line too, if it was waiting
    state.close(client, CLOSE_NORMAL, "left")
    if session is not None:
        sessions.end(state, session, "client_left", None)  # logged as session_ended
    else:
        event("client_left", client=client.id)
