"""Lifecycle lines: the fast path writes exactly what logging's own would."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from playcast import logs
from playcast.signaling.rules.events import event

FIELDS = {"session": "s-1", "worker": "w-2", "client": None, "reason": "client_left"}


@pytest.fixture
def installed() -> Iterator[None]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logs._handler)
    yield
    root.handlers[:], _, logs._handler = saved
    root.setLevel(saved[1])


def _capture(fmt: str) -> io.StringIO:
    logs.setup_logging("info", fmt)
    handler = logs._handler
    assert handler is not None
    out = io.StringIO()
    handler.setStream(out)
    return out


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_fast_line_is_the_record_s_line(fmt: str, installed: None) -> None:
    out = _capture(fmt)
    handler = logs._handler
    assert handler is not None
    log = logging.getLogger("playcast.signaling")
    record = log.makeRecord(
        log.name, logging.INFO, "", 0, "session_ended session=s-1", (), None,
        extra={"event": "session_ended", "fields": FIELDS},
    )  # fmt: skip
    expected = handler.format(record)
    formatter = handler.formatter
    assert isinstance(formatter, logs.TextFormatter | logs.JsonFormatter)
    fast = formatter.line(
        record.created, "INFO", log.name, "session_ended session=s-1",
        {"event": "session_ended", "fields": FIELDS},
    )  # fmt: skip
    assert fast == expected
    event("session_ended", **FIELDS)
    handler._write_out()
    line = out.getvalue().strip()
    if fmt == "json":
        doc = json.loads(line)
        assert doc["event"] == "session_ended" and doc["reason"] == "client_left"
        assert "client" not in doc and doc["msg"].startswith("session_ended session=s-1")
    else:
        assert line.endswith("INFO playcast.signaling session_ended session=s-1 worker=w-2 "
                             "reason=client_left")  # fmt: skip


def test_anything_else_listening_gets_the_ordinary_path(
    installed: None, caplog: pytest.LogCaptureFixture
) -> None:
    out = _capture("text")
    logging.getLogger().addHandler(caplog.handler)  # after setup_logging, which resets
    event("worker_registered", worker="w-9")
    assert logs._handler is not None
    logs._handler._write_out()
    assert out.getvalue().rstrip().endswith("worker_registered worker=w-9")  # still written
    assert [r.getMessage() for r in caplog.records] == ["worker_registered worker=w-9"]
    assert caplog.records[0].event == "worker_registered"  # type: ignore[attr-defined]
