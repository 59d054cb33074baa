"""Logging set-up shared by every program: plain text, or one JSON object a line."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
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


class CoalescingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Buffers records and writes them out within ``delay`` seconds.

    On a busy server a write per line was a visible share of its CPU (a
    session logs about ten); coalescing them costs at most ``delay`` of log
    latency. Warnings and errors, and anything logged outside an event loop
    (start-up, exit), are written at once.
    """

    def __init__(self, delay: float = 0.05) -> None:
        raw = io.FileIO(sys.stderr.fileno(), "w", closefd=False)
        super().__init__(io.TextIOWrapper(io.BufferedWriter(raw, 1 << 16), encoding="utf-8"))
        self.delay = delay
        self._pending: asyncio.AbstractEventLoop | None = None  # a write-out is due on it

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        if record.levelno >= logging.WARNING:
            self._write_out()

    def flush(self) -> None:  # called by emit after every record, and at exit
        pending = self._pending
        if pending is not None and pending.is_running():
            # Already due. Checked first: asyncio.get_running_loop() makes a
            # getpid system call (a fork check), one per record otherwise.
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (start-up, exit): a write-out pending on a
            self._write_out()  # finished loop would never run
            return
        self._pending = loop
        loop.call_later(self.delay, self._write_out)

    def _write_out(self) -> None:
        self._pending = None
        super().flush()


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


_handler: CoalescingHandler | None = None  # the one setup_logging installed


def emit_event(logger: logging.Logger, level: int, msg: str, extra: dict[str, Any]) -> None:
    """``logger.log(level, msg, extra=extra)`` for a lifecycle line, the same
    text, through ``setup_logging``'s handler without a ``LogRecord``: the
    record machinery was most of a line's 5 µs, and a busy server writes
    thousands a second. Anything else attached to the logging tree (a test's
    capture, a filter, another handler) gets the ordinary path."""
    h = _handler
    root = logging.root
    if (
        h is None
        or logger.handlers
        or logger.filters
        or root.filters
        or h.filters
        or len(root.handlers) != 1
        or root.handlers[0] is not h
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


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    global _handler
    handler = _handler = CoalescingHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    # Nothing in either format uses the thread or process: not gathering them
    # saves a measurable share of the server's CPU per session.
    logging._srcfile = None  # no caller lookup per record (the logging HOWTO's advice)
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log is noise next to the lifecycle events.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
