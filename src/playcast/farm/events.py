"""The farm's lifecycle log lines: ``name key=value …``, and JSON fields."""

from __future__ import annotations

import logging
from typing import Any

from playcast.logs import emit_event

log = logging.getLogger("playcast.farm")


def event(name: str, **fields: Any) -> None:
    if log.isEnabledFor(logging.INFO):
        text = " ".join([name, *(f"{k}={v}" for k, v in fields.items() if v is not None)])
        emit_event(log, logging.INFO, text, {"event": name, "fields": fields})
