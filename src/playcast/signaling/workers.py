"""Worker logic: registration, availability, and the worker's handshake steps."""

from __future__ import annotations

from playcast.protocol import (
    DEFAULT_CODECS,
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
from playcast.signaling.rules import handshake
from playcast.signaling.rules.closing import forget
from playcast.signaling.rules.conduct import error
from playcast.signaling.rules.events import CLOSE_POLICY, event
from playcast.signaling.rules.state import State, fmt_remote
from playcast.signaling.shared import Publish, WorkerEntry
from playcast.signaling.types import Worker


def handle(state: State, worker: Worker, msg: Message) -> None:
    if worker.status == "registering":
        if not isinstance(msg, Register):
            error(state, worker, "not_registered", "a worker's first message must be 'register'")
            return
        register(state, worker, msg)
    elif isinstance(msg, Offer):
        handshake.relay_sdp(state, worker, msg, "awaiting_offer", then="awaiting_answer")
    elif isinstance(msg, IceCandidate):
        handshake.relay_candidate(state, worker, msg)
    elif isinstance(msg, WebrtcConnected):
        handshake.report_connected(state, worker, msg)
    elif isinstance(msg, WebrtcFailed):
        handshake.report_failed(state, worker, msg)
    elif isinstance(msg, Register):
        error(state, worker, "unexpected_message", "already registered")
    elif isinstance(msg, ShutdownAck):
        error(state, worker, "unexpected_message", "shutdown_ack without a shutdown")
    else:
        error(state, worker, "unexpected_message", f"'{message_type(msg)}' is not a worker message")


def register(state: State, worker: Worker, msg: Register) -> None:
    if msg.game not in state.games:
        state.metrics.count(state.metrics.bad_messages, "unknown_game")
        event("worker_refused", worker=worker.id, game=repr(msg.game), why="unknown game")
        text = f"this server serves {', '.join(sorted(state.games))}, not {msg.game!r}"
        state.send(worker, Error(code="unknown_game", message=text))
        forget(state, worker)
        state.close(worker, CLOSE_POLICY, "unknown game")
        return
    host, port = worker.ws.remote
    worker.game = msg.game
    worker.codecs = codec_names(msg.codecs)
    if msg.audio is not None:
        worker.audio = {"codec": msg.audio.codec, "detail": msg.audio.detail}
    worker.addr = msg.addr or host
    worker.port = msg.port if msg.port is not None else port
    state.metrics.count(state.metrics.registrations, worker.game)
    # Available here at once; in the shared pool once the shared state has
    # listed it (or paired it at once with a client waiting in line), and
    # only then told ``registered``: a player may be paired with it from then.
    worker.status = "available"
    state.request(
        Publish(
            WorkerEntry(
                worker.id, state.node, worker.game, worker.codecs, worker.addr, worker.port
            ),
            state.new_id("s"),
            state.wall_clock(),
        )
    )
    event(
        "worker_registered",
        worker=worker.id,
        game=worker.game,
        codecs=",".join(worker.codecs),
        addr=f"{worker.addr}:{worker.port}",
        remote=fmt_remote(worker),
    )


def codec_names(codecs: list[str] | None) -> tuple[str, ...]:
    """Upper-case, without repeats, in the given order; none named: H.264."""
    if not codecs:
        return DEFAULT_CODECS
    return tuple(dict.fromkeys(c.upper() for c in codecs))
