"""Logging set-up shared by every program: plain text, or one JSON object a line."""

from __future__ import annotations

import asyncio
import io
import logging
import sys

from playcast.logformat import JsonFormatter, TextFormatter, emit_event

__all__ = ["CoalescingHandler", "JsonFormatter", "TextFormatter", "emit_event", "setup_logging"]


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


_handler: CoalescingHandler | None = None  # the one setup_logging installed


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
