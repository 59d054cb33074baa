"""What a worker's log says about its state, read line by line.

The farm starts every worker with ``--log-format json``: one object a line
(``ts``, ``level``, ``logger``, ``msg``, and for a lifecycle event ``event``
and its fields). A line that names an ``event`` is read by its name and
fields; the worker today logs its lifecycle as plain messages, so those are
matched by their text (``registered worker_id=…``, ``session_start
session=… client=…``, ``session … ended ok=…``, ``backend failure N in a
row (kind): …``). A line that is not JSON (a traceback printed on a crash)
is kept as text.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Final


@dataclass(frozen=True, slots=True)
class Registered:
    worker_id: str


@dataclass(frozen=True, slots=True)
class SessionStarted:
    session_id: str
    client_id: str


@dataclass(frozen=True, slots=True)
class SessionEnded:
    session_id: str


@dataclass(frozen=True, slots=True)
class BackendFailing:
    streak: int
    detail: str


@dataclass(frozen=True, slots=True)
class Unregistered:
    """The worker left the server (connection lost, or a new life begins)."""

    why: str


@dataclass(frozen=True, slots=True)
class Capabilities:
    """The worker's start line: what the farm may ask of it (``drain``: the
    signal that makes it finish its session and exit instead of registering)."""

    drain_signal: str | None


WorkerEvent = (
    Registered | SessionStarted | SessionEnded | BackendFailing | Unregistered | Capabilities
)


@dataclass(frozen=True, slots=True)
class LogLine:
    level: int
    msg: str
    event: WorkerEvent | None


_REGISTERED: Final = re.compile(r"^registered worker_id=(\S+)")
_SESSION_START: Final = re.compile(r"^session_start session=(\S+) client=(\S+)")
_SESSION_END: Final = re.compile(r"^session (\S+) ended ok=")
_FAILURE: Final = re.compile(
    r"^backend failure (\d+) in a row \((\w+)\): (.*?)(?:; \w+ in [\d.]+ s)?$"
)
_LEFT: Final = re.compile(r"^(server connection lost|cannot reach|restarting in)")


def parse_line(raw: str) -> LogLine:
    text = raw.rstrip("\r\n")
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        return LogLine(logging.WARNING, text, None)
    level = logging.getLevelName(str(doc.get("level", "info")).upper())
    level = level if isinstance(level, int) else logging.INFO
    msg = str(doc.get("msg", ""))
    name = doc.get("event")
    event = _from_fields(str(name), doc) if name else None
    return LogLine(level, msg, event or _from_text(msg))


def _from_fields(name: str, doc: dict[str, Any]) -> WorkerEvent | None:
    """The structured form (the worker-side spec in docs/farm.md)."""
    match name:
        case "worker_registered" if doc.get("worker_id"):
            return Registered(str(doc["worker_id"]))
        case "session_started" if doc.get("session_id"):
            return SessionStarted(str(doc["session_id"]), str(doc.get("client_id", "")))
        case "session_ended" if doc.get("session_id"):
            return SessionEnded(str(doc["session_id"]))
        case "backend_failure":
            return BackendFailing(int(doc.get("streak", 1)), str(doc.get("detail", "")))
        case "worker_unregistered":
            return Unregistered(str(doc.get("why", "")))
        case "worker_starting":
            drain = doc.get("drain_signal")
            return Capabilities(str(drain) if drain else None)
    return None


def _from_text(msg: str) -> WorkerEvent | None:
    if m := _REGISTERED.match(msg):
        return Registered(m.group(1))
    if m := _SESSION_START.match(msg):
        return SessionStarted(m.group(1), m.group(2))
    if m := _SESSION_END.match(msg):
        return SessionEnded(m.group(1))
    if m := _FAILURE.match(msg):
        return BackendFailing(int(m.group(1)), f"{m.group(2)}: {m.group(3)}")
    if m := _LEFT.match(msg):
        return Unregistered(msg)
    return None
