"""The log lines' two formats, and the fast path of a lifecycle line.

Kept apart from the handler set-up (``logs.py``, which defers writes on the
event loop) so that the I/O-free cores can log without importing asyncio.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any


class TextFormatter(logging.Formatter):
    """``2026-01-02T03:04:05.678Z LEVEL logger message``, in UTC.

    The date part is formatted once a second, not once a record: on a busy
    server strftime was a visible share of the logging cost."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return self._time(record.created, record.msecs)

    def _time(self, created: float, msecs: float) -> str:
        second = int(created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int(msecs):03d}Z"

    def line(self, created: float, level: str, logger: str, msg: str, extra: dict[str, Any]) -> str:
        """What ``format`` makes of such a record, without building one."""
        msecs = int((created - int(created)) * 1000) + 0.0  # as LogRecord computes it
        return f"{self._time(created, msecs)} {level} {logger} {msg}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = _json_doc(
            record.created,
            record.levelname,
            record.name,
            record.getMessage(),
            getattr(record, "event", None),
            getattr(record, "fields", {}),
        )
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)

    def line(self, created: float, level: str, logger: str, msg: str, extra: dict[str, Any]) -> str:
        """What ``format`` makes of an event's record, without building one."""
        doc = _json_doc(created, level, logger, msg, extra["event"], extra["fields"])
        return json.dumps(doc, default=str)


def _json_doc(
    created: float, level: str, logger: str, msg: str, event: str | None, fields: dict[str, Any]
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "ts": round(created, 3),
        "level": level.lower(),
        "logger": logger,
        "msg": msg,
    }
    if event is not None:
        doc["event"] = event
        doc.update({k: v for k, v in fields.items() if v is not None})
    return doc


def emit_event(logger: logging.Logger, level: int, msg: str, extra: dict[str, Any]) -> None:
    """``logger.log(level, msg, extra=extra)`` for a lifecycle line, the same
    text, through the one handler ``setup_logging`` installs (``logs.py``),
    without a ``LogRecord``: the
    record machinery was most of a line's 5 µs, and a busy server writes
    thousands a second. Anything else attached to the logging tree (a test's
    capture, a filter, another handler) gets the ordinary path."""
    root = logging.root
    h = root.handlers[0] if len(root.handlers) == 1 else None
    if (
        not isinstance(h, logging.StreamHandler)
        or logger.handlers
        or logger.filters
        or root.filters
        or h.filters
        or not logger.propagate
        or h.level > level
    ):
        logger.log(level, msg, extra=extra)
        return
    fmt = h.formatter
    if not isinstance(fmt, TextFormatter | JsonFormatter):
        logger.log(level, msg, extra=extra)
        return
    text = fmt.line(time.time(), logging.getLevelName(level), logger.name, msg, extra)
    h.acquire()  # as Handler.handle: other threads may log too
    try:
        h.stream.write(text + h.terminator)
        h.flush()
    except Exception:  # as Handler.emit: a broken stream must not break the caller
        h.handleError(logging.makeLogRecord({"msg": msg, "levelno": level}))
    finally:
        h.release()
