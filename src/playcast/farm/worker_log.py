"""What a worker's log says about its state, read line by line.

The farm starts every worker with ``--log-format json``: one object a line
(``ts``, ``level``, ``logger``, ``msg``, and for a lifecycle event ``event``
and its fields, as ``worker/link_log.py`` writes them: docs/worker.md#logs).
The farm follows a worker by those events alone; any other line is only
passed on to the farm's log. A line that is not JSON (a traceback printed
on a crash) is kept as text.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any


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
    try:
        event = _event(str(name), doc) if name else None
    except (TypeError, ValueError):  # a field of the wrong type: not an event
        event = None
    return LogLine(level, msg, event)


def _event(name: str, doc: dict[str, Any]) -> WorkerEvent | None:
    match name:
        case "worker_registered" if doc.get("worker_id"):
            return Registered(str(doc["worker_id"]))
        case "session_started" if doc.get("session_id"):
            return SessionStarted(str(doc["session_id"]), str(doc.get("client_id", "")))
        case "session_ended" if doc.get("session_id"):
            return SessionEnded(str(doc["session_id"]))
        case "backend_failure":
            detail = f"{doc.get('kind', 'game')}: {doc.get('detail', '')}"
            return BackendFailing(int(doc.get("streak", 1)), detail)
        case "worker_unregistered":
            return Unregistered(str(doc.get("why", "")))
        case "worker_starting":
            drain = doc.get("drain_signal")
            return Capabilities(str(drain) if drain else None)
    return None
