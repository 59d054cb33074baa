"""Client logic: joining, worker assignment or rejection, the answer, input, leave."""

from __future__ import annotations

from typing import TYPE_CHECKING

from playcast.protocol import (
    Answer,
    Assigned,
    IceCandidate,
    Input,
    Join,
    Leave,
    Message,
    Rejected,
    SessionStart,
    ShutdownAck,
    WebrtcConnected,
    WebrtcFailed,
    message_type,
)
from playcast.signaling import workers
from playcast.signaling.events import CLOSE_NORMAL, NO_WORKER_TEXT, event
from playcast.signaling.ice import ice_servers_for
from playcast.signaling.types import Client

if TYPE_CHECKING:
    from playcast.signaling.hub import Hub


def handle(hub: Hub, client: Client, msg: Message) -> None:
    if not client.joined:
        if not isinstance(msg, Join):
            hub.error(client, "not_registered", "a client's first message must be 'join'")
            return
        join(hub, client, msg)
    elif isinstance(msg, Input):
        client.last_input = hub.clock()
        client.warned = False
    elif isinstance(msg, Answer):
        hub.relay_sdp(client, msg, "awaiting_answer", then="negotiating")
    elif isinstance(msg, IceCandidate):
        hub.relay_candidate(client, msg)
    elif isinstance(msg, WebrtcConnected):
        hub.report_connected(client, msg)
    elif isinstance(msg, WebrtcFailed):
        hub.report_failed(client, msg)
    elif isinstance(msg, Leave):
        leave(hub, client)
    elif isinstance(msg, Join):
        hub.error(client, "unexpected_message", "already joined")
    elif isinstance(msg, ShutdownAck):
        hub.error(client, "unexpected_message", "shutdown_ack without a shutdown")
    else:
        hub.error(client, "unexpected_message", f"'{message_type(msg)}' is not a client message")


def join(hub: Hub, client: Client, msg: Join) -> None:
    client.joined = True
    client.game = msg.game
    client.last_input = hub.clock()
    worker = workers.take_available(hub, msg.game)
    if worker is None:
        hub.metrics.count(hub.metrics.rejections, "no_worker_available")
        event(
            "client_rejected",
            client=client.id,
            game=msg.game,
            reason="no_worker_available",
            remote=":".join(map(str, client.ws.remote)),
        )
        client.ws.send(Rejected(reason="no_worker_available", message=NO_WORKER_TEXT))
        hub.forget(client)
        client.ws.close(CLOSE_NORMAL, "no worker available")
        return
    session = hub.start_session(worker, client)
    ice = ice_servers_for(hub.settings, session.id, hub.wall_clock())
    worker.ws.send(SessionStart(session_id=session.id, client_id=client.id, ice_servers=ice))
    client.ws.send(
        Assigned(session_id=session.id, client_id=client.id, worker_id=worker.id, ice_servers=ice)
    )
    event(
        "client_assigned",
        session=session.id,
        client=client.id,
        worker=worker.id,
        game=msg.game,
        remote=":".join(map(str, client.ws.remote)),
    )


def leave(hub: Hub, client: Client) -> None:
    session = hub.sessions.get(client.session_id or "")
    hub.forget(client)
    client.ws.close(CLOSE_NORMAL, "left")
    if session is not None:
        hub.end_session(session, "client_left", None)  # logged as session_ended
    else:
        event("client_left", client=client.id)
