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
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int(record.msecs):03d}Z"


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
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        name = getattr(record, "event", None)
        if name is not None:
            doc["event"] = name
            fields = getattr(record, "fields", {})
            doc.update({k: v for k, v in fields.items() if v is not None})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = CoalescingHandler()
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
