"""The worker's lifecycle lines: the text is for people, the event's name and
fields (``--log-format json``) for machines; the phone farm follows its
workers by them (docs/farm.md). Written through ``playcast.logformat``, so
the link core logs without importing asyncio."""

from __future__ import annotations

import logging
from typing import Any

from playcast.logformat import emit_event

log = logging.getLogger("playcast.worker")


def log_event(name: str, text: str, /, level: int = logging.INFO, **fields: Any) -> None:
    if log.isEnabledFor(level):
        emit_event(log, level, text, {"event": name, "fields": fields})
