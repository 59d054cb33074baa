"""Worker logic: registration, availability, and the worker's handshake steps."""

from __future__ import annotations

from playcast.protocol import (
    Error,
    IceCandidate,
    Message,
    Offer,
    Register,
    ShutdownAck,
    WebrtcConnected,
    WebrtcFailed,
    message_type,
)
from playcast.signaling.rules import sessions
from playcast.signaling.rules.closing import forget
from playcast.signaling.rules.events import CLOSE_POLICY, Unexpected, event
from playcast.signaling.rules.pairing import codec_names, entry_of
from playcast.signaling.rules.state import Core
from playcast.signaling.shared.records import Publish
from playcast.signaling.types import Worker, fmt_remote


def handle(core: Core, worker: Worker, msg: Message) -> None:
    """One message from a worker (``Unexpected``: not allowed now)."""
    if worker.status == "registering":
        if not isinstance(msg, Register):
            raise Unexpected("a worker's first message must be 'register'", "not_registered")
        register(core, worker, msg)
    elif isinstance(msg, Offer):
        sessions.relay_sdp(core, worker, msg, "awaiting_offer", then="awaiting_answer")
    elif isinstance(msg, IceCandidate):
        sessions.relay_candidate(core, worker, msg)
    elif isinstance(msg, WebrtcConnected):
        sessions.report_connected(core, worker, msg)
    elif isinstance(msg, WebrtcFailed):
        sessions.report_failed(core, worker, msg)
    elif isinstance(msg, Register):
        raise Unexpected("already registered")
    elif isinstance(msg, ShutdownAck):
        raise Unexpected("shutdown_ack without a shutdown")
    else:
        raise Unexpected(f"'{message_type(msg)}' is not a worker message")


def register(core: Core, worker: Worker, msg: Register) -> None:
    if msg.game not in core.games:
        core.counters.bad_messages.inc("unknown_game")
        event("worker_refused", worker=worker.id, game=repr(msg.game), why="unknown game")
        text = f"this server serves {', '.join(sorted(core.games))}, not {msg.game!r}"
        core.send(worker, Error(code="unknown_game", message=text))
        forget(core, worker)
        core.close(worker, CLOSE_POLICY, "unknown game")
        return
    host, port = worker.ws.remote
    worker.game = msg.game
    worker.codecs = codec_names(msg.codecs)
    if msg.audio is not None:
        worker.audio = {"codec": msg.audio.codec, "detail": msg.audio.detail}
    worker.addr = msg.addr or host
    worker.port = msg.port if msg.port is not None else port
    worker.name = msg.name or ""
    core.counters.registrations.inc(worker.game)
    # Available here at once; in the shared pool once the shared state has
    # listed it (or paired it at once with a client waiting in line), and
    # only then told ``registered``: a player may be paired with it from then.
    worker.status = "available"
    core.request(Publish(entry_of(core, worker), core.new_id("s"), core.wall_clock()))
    event(
        "worker_registered",
        worker=worker.id,
        name=worker.name or None,
        game=worker.game,
        codecs=",".join(worker.codecs),
        addr=f"{worker.addr}:{worker.port}",
        remote=fmt_remote(worker),
    )
