"""Worker logic: registration, availability, and the worker's handshake steps."""

from __future__ import annotations

from typing import TYPE_CHECKING

from playcast.protocol import (
    IceCandidate,
    Message,
    Offer,
    Register,
    Registered,
    ShutdownAck,
    WebrtcConnected,
    WebrtcFailed,
    message_type,
)
from playcast.signaling.events import event
from playcast.signaling.types import Worker

if TYPE_CHECKING:
    from playcast.signaling.hub import Hub


def handle(hub: Hub, worker: Worker, msg: Message) -> None:
    if worker.status == "registering":
        if not isinstance(msg, Register):
            hub.error(worker, "not_registered", "a worker's first message must be 'register'")
            return
        register(hub, worker, msg)
        event(
            "worker_registered",
            worker=worker.id,
            game=worker.game,
            addr=f"{worker.addr}:{worker.port}",
            remote=":".join(map(str, worker.ws.remote)),
        )
    elif isinstance(msg, Offer):
        hub.relay_sdp(worker, msg, "awaiting_offer", then="awaiting_answer")
    elif isinstance(msg, IceCandidate):
        hub.relay_candidate(worker, msg)
    elif isinstance(msg, WebrtcConnected):
        hub.report_connected(worker, msg)
    elif isinstance(msg, WebrtcFailed):
        hub.report_failed(worker, msg)
    elif isinstance(msg, Register):
        hub.error(worker, "unexpected_message", "already registered")
    elif isinstance(msg, ShutdownAck):
        hub.error(worker, "unexpected_message", "shutdown_ack without a shutdown")
    else:
        hub.error(worker, "unexpected_message", f"'{message_type(msg)}' is not a worker message")


def register(hub: Hub, worker: Worker, msg: Register) -> None:
    host, port = worker.ws.remote
    worker.game = msg.game
    worker.addr = msg.addr or host
    worker.port = msg.port if msg.port is not None else port
    hub.metrics.count(hub.metrics.registrations, worker.game)
    worker.ws.send(
        Registered(
            worker_id=worker.id,
            heartbeat_interval=hub.settings.heartbeat_interval,
            heartbeat_timeout=hub.settings.heartbeat_timeout,
        )
    )
    make_available(hub, worker)


def make_available(hub: Hub, worker: Worker) -> None:
    worker.status = "available"
    worker.client_id = None
    worker.session_id = None
    hub.available.setdefault(worker.game, {})[worker.id] = None


def take_available(hub: Hub, game: str) -> Worker | None:
    """The worker for ``game`` that has been available longest, now busy."""
    queue = hub.available.get(game)
    if not queue:
        return None
    worker_id = next(iter(queue))
    del queue[worker_id]
    return hub.workers[worker_id]
