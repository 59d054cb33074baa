"""adb's device list, as ``adb devices -l`` and ``adb track-devices -l`` print it.

A long-listing row is built by adb's ``append_transport`` (transport.cpp):
``"%-22s %s"`` (serial padded to at least 22 columns, one space, the state),
then `` usb:1-1.2`` (the devpath, no key), `` product:…``, `` model:…``,
`` device:…`` (each only when known: an unauthorized phone has none) and
always `` transport_id:N`` last. Serials may hold spaces (an mDNS name such
as ``adb-XYZ (2)._adb-tls-connect._tcp``) and one state does too (``no
permissions (…)``), so a row is split at its state word, not at whitespace.

``track-devices`` streams the whole list again on every change, each time as
four hex digits (the byte length) and the rows: ``0000`` is an empty list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

# connection_state_name() in adb's transport.cpp.
STATES: Final = (
    "device",
    "offline",
    "unauthorized",
    "authorizing",
    "connecting",
    "bootloader",
    "recovery",
    "rescue",
    "sideload",
    "host",
    "detached",
    "unknown",
)
_ROW: Final = re.compile(
    r"^(?P<serial>.+?)\s+(?P<state>" + "|".join(STATES) + r"|no permissions)"
    r"(?:\s+(?P<rest>.*))?$"
)
_KEYS: Final = ("product", "model", "device", "transport_id")


class FramingError(ValueError):
    """The track-devices stream is not four hex digits and a payload."""


@dataclass(frozen=True, slots=True)
class DeviceRow:
    serial: str
    state: str
    usb: str = ""  # the devpath (usb:1-1.2 on Linux), when adb knows it
    product: str = ""
    model: str = ""
    device: str = ""
    transport_id: int | None = None


def parse_row(line: str) -> DeviceRow | None:
    """One row of the list; None for a blank or foreign line (adb's banner)."""
    line = line.rstrip("\r\n")
    if not line.strip() or line.startswith(("List of devices", "* daemon")):
        return None
    if "\t" in line:  # the short listing: serial TAB state
        serial, _, state = line.partition("\t")
        return DeviceRow(serial.strip(), state.strip())
    m = _ROW.match(line)
    if m is None:
        return None
    state = m.group("state")
    if state.startswith("no permissions"):
        state = "no permissions"
    attrs: dict[str, str] = {}
    for word in (m.group("rest") or "").split():
        key, sep, value = word.partition(":")
        if sep and key in _KEYS:
            attrs[key] = value
        elif sep and "usb" not in attrs and "[" not in word:
            attrs["usb"] = word  # the devpath: usb:1-1.2
    tid = attrs.get("transport_id", "")
    return DeviceRow(
        m.group("serial").strip(),
        state,
        usb=attrs.get("usb", ""),
        product=attrs.get("product", ""),
        model=attrs.get("model", ""),
        device=attrs.get("device", ""),
        transport_id=int(tid) if tid.isdigit() else None,
    )


def parse_list(text: str) -> dict[str, DeviceRow]:
    """Every row of a listing, by serial."""
    rows = (parse_row(line) for line in text.splitlines())
    return {row.serial: row for row in rows if row is not None}


class TrackDecoder:
    """Feeds on the track-devices byte stream; each complete message is a list."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[dict[str, DeviceRow]]:
        self._buffer += data
        lists = []
        while len(self._buffer) >= 4:
            head = self._buffer[:4]
            try:
                size = int(head, 16)
            except ValueError:
                raise FramingError(f"bad length prefix {head!r}") from None
            if len(self._buffer) < 4 + size:
                break
            payload = self._buffer[4 : 4 + size]
            self._buffer = self._buffer[4 + size :]
            lists.append(parse_list(payload.decode("utf-8", "replace")))
        return lists
