"""Lifecycle log lines and the fixed texts and codes that go with them."""

from __future__ import annotations

import logging
from typing import Any, Final, Literal

from playcast.logformat import emit_event
from playcast.protocol import ErrorCode, RejectReason, ShutdownReason

log = logging.getLogger("playcast.signaling")

# RFC 6455 close codes: 1000 normal, 1008 policy violation (flood, slow reader,
# no hello), 1011 an internal error of the server's.
CLOSE_NORMAL: Final = 1000
CLOSE_POLICY: Final = 1008
CLOSE_INTERNAL: Final = 1011
CLOSE_SERVICE_RESTART: Final = 1012  # after "reconnect": come back, elsewhere

REASON_TEXT: Final[dict[ShutdownReason, str]] = {
    "inactivity_timeout": "No input from the player for too long.",
    "heartbeat_timeout": "No answer to the server's pings.",
    "worker_failed": "The game machine stopped responding.",
    "client_failed": "The player's connection was lost.",
    "client_left": "The player left.",
    "handshake_failed": "The video connection could not be set up.",
    "handshake_timeout": "The video connection took too long to set up.",
    "server_shutdown": "The server is shutting down.",
}

REJECT_TEXT: Final[dict[RejectReason, str]] = {
    "no_worker_available": "All game machines are busy right now. Please try again in a minute.",
    "unknown_game": "This server does not host that game.",
    "unsupported_browser": "This browser cannot decode the video any game machine here sends.",
    "queue_timeout": "You waited in line too long without a free game machine.",
    "service_unavailable": "The service is having trouble right now. Please try again soon.",
    "unauthorized": "This link has expired or was already used: get a new one from the site.",
}

# Why a join's ticket was refused (``rules/tickets.py``; ``unauthorized``).
TicketWhy = Literal[
    "missing",
    "malformed",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "too_long_lived",
    "wrong_game",
    "spent",
]

# What the player's page is told of it (``rejected.detail``); never the secret.
TICKET_TEXT: Final[dict[TicketWhy, str]] = {
    "missing": "no ticket: this server lets in only players sent by its site",
    "malformed": "the ticket is not a JWT with the claims sub, game, iat, nbf, exp and jti",
    "bad_signature": "the ticket's signature does not match this server's secret",
    "expired": "the ticket has expired",
    "not_yet_valid": "the ticket is not valid yet",
    "too_long_lived": "the ticket lives longer than this server allows",
    "wrong_game": "the ticket is for another game",
    "spent": "the ticket was already used",
}


class Unexpected(Exception):
    """A valid message that is not allowed now (wrong state, wrong session,
    not the first message it must be): a rule raises it before changing
    anything, and the hub answers the peer with ``code`` (``conduct.error``)."""

    def __init__(self, text: str, code: ErrorCode = "unexpected_message") -> None:
        super().__init__(text)
        self.text = text
        self.code: ErrorCode = code


def event(name: str, /, **fields: Any) -> None:
    """One log line per lifecycle event: ids as key=value, and as JSON fields."""
    _emit(logging.INFO, name, fields)


def step(name: str, /, **fields: Any) -> None:
    """Detail logged at debug: each ICE candidate (a session has eight or
    more; at info they cost a tenth of the server's CPU per session; their
    counts are logged with the session's connected and ended events) and each
    socket opening (its registered, assigned or rejected line follows)."""
    _emit(logging.DEBUG, name, fields)


def _emit(level: int, name: str, fields: dict[str, Any]) -> None:
    if log.isEnabledFor(level):
        text = " ".join([name, *(f"{k}={v}" for k, v in fields.items() if v is not None)])
        emit_event(log, level, text, {"event": name, "fields": fields})
