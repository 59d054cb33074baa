"""A phone's health, read in one ``adb shell`` (one process, not six).

The script runs ``dumpsys battery``, ``dumpsys power``, ``dumpsys window
policy``, ``df /data`` and ``pm path GAME``, separated by marker lines; each
part is parsed as Android prints it, and a part a phone prints differently
leaves its fields unknown (None) rather than failing the whole reading.

The screen: the worker's Android backend wakes the phone and dismisses its
keyguard before each launch of the game, and keeps the screen on for as
long as its scrcpy server runs (scrcpy's ``stay_awake``, put back by
scrcpy's own clean-up process on the phone even when the host dies). The
farm only watches: a phone in the pool whose reading shows the screen off
or the keyguard up is woken again (``Adb.wake_and_unlock``; a PIN cannot be
dismissed, and shows as ``keyguard_showing`` in /status).
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import asdict, dataclass
from typing import Any, Final

from playcast.backends.adb import Adb, AdbError

MARK: Final = "@@playcast-health@@"
# BatteryManager.BATTERY_HEALTH_*.
BATTERY_HEALTH: Final = {
    1: "unknown",
    2: "good",
    3: "overheat",
    4: "dead",
    5: "over_voltage",
    6: "failure",
    7: "cold",
}
# BatteryManager.BATTERY_STATUS_*.
BATTERY_STATUS: Final = {
    1: "unknown",
    2: "charging",
    3: "discharging",
    4: "not_charging",
    5: "full",
}


@dataclass(frozen=True, slots=True)
class Health:
    read_at: float  # time.time()
    battery_percent: float | None = None
    temperature_c: float | None = None
    charging: bool | None = None  # plugged into USB, AC or wireless power
    battery_status: str | None = None
    battery_health: str | None = None
    screen_on: bool | None = None
    keyguard_showing: bool | None = None
    storage_free_bytes: int | None = None
    game_installed: bool | None = None
    error: str | None = None  # the reading failed: nothing above is known

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def health_script(game: str) -> str:
    parts = [
        "dumpsys battery",
        "dumpsys power",
        "dumpsys window policy",
        "df /data",
        f"pm path {game}",
    ]
    return f"; echo {MARK}; ".join(parts)


async def read_health(adb: Adb, game: str, timeout: float) -> Health:
    try:
        result = await adb.run("shell", health_script(game), timeout=timeout, check=False)
    except AdbError as exc:
        return Health(time.time(), error=str(exc))
    parts = result.stdout.split(MARK)
    if len(parts) != 5:
        detail = (result.stderr.strip() or result.stdout.strip())[-300:]
        return Health(time.time(), error=f"adb shell failed ({result.returncode}): {detail}")
    return parse_health(parts, time.time())


def parse_health(parts: list[str], now: float) -> Health:
    battery, power, window, df, pm = parts
    fields = parse_battery(battery)
    return Health(
        now,
        battery_percent=fields.get("percent"),
        temperature_c=fields.get("temperature"),
        charging=fields.get("charging"),
        battery_status=fields.get("status"),
        battery_health=fields.get("health"),
        screen_on=parse_screen_on(power),
        keyguard_showing=parse_keyguard(window),
        storage_free_bytes=parse_df_free(df),
        game_installed=parse_pm_path(pm),
    )


def parse_pm_path(text: str) -> bool | None:
    """``pm path``: ``package:`` lines when installed, nothing when not; anything
    else (a package manager not up yet, while booting) tells nothing."""
    if "package:" in text:
        return True
    return False if not text.strip() else None


def _colon_fields(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep:
            out[key.strip().lower()] = value.strip()
    return out


def parse_battery(text: str) -> dict[str, Any]:
    """``dumpsys battery``: level/scale, temperature in tenths of °C, powered by."""
    f = _colon_fields(text)
    out: dict[str, Any] = {}
    try:
        level, scale = int(f["level"]), int(f.get("scale", "100") or 100)
        out["percent"] = round(100.0 * level / scale, 1) if scale > 0 else None
    except (KeyError, ValueError):
        pass
    with contextlib.suppress(KeyError, ValueError):
        out["temperature"] = int(f["temperature"]) / 10.0
    powered = [f.get(f"{kind} powered") for kind in ("ac", "usb", "wireless", "dock")]
    if any(p is not None for p in powered):
        out["charging"] = any(p == "true" for p in powered)
    for key, names in (("status", BATTERY_STATUS), ("health", BATTERY_HEALTH)):
        value = f.get(key, "")
        if value.isdigit():
            out[key] = names.get(int(value), value)
    return out


_DISPLAY_POWER: Final = re.compile(r"Display Power: state=(\w+)")
_WAKEFULNESS: Final = re.compile(r"(?:mWakefulness|getWakefulnessLocked\(\))=(\w+)")


def parse_screen_on(text: str) -> bool | None:
    """``dumpsys power``: the display's power state, else the wakefulness."""
    m = _DISPLAY_POWER.search(text)
    if m:
        return m.group(1) == "ON"
    m = _WAKEFULNESS.search(text)
    if m:
        return m.group(1) == "Awake"
    return None


_KEYGUARD: Final = (
    # Android 10+: PhoneWindowManager dumps its KeyguardServiceDelegate.
    re.compile(r"KeyguardServiceDelegate\s*\n\s*showing=(true|false)"),
    re.compile(r"\bmIsShowing=(true|false)"),
    # Android 9 and older.
    re.compile(r"\bmShowingLockscreen=(true|false)"),
    re.compile(r"\bisStatusBarKeyguard=(true|false)"),
)


def parse_keyguard(text: str) -> bool | None:
    """``dumpsys window policy``: is the lock screen showing?"""
    for pattern in _KEYGUARD:
        m = pattern.search(text)
        if m:
            return m.group(1) == "true"
    return None


_UNITS: Final = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _size(text: str, unit: int) -> int | None:
    m = re.fullmatch(r"([\d.]+)([KMGT]?)", text)
    if m is None:
        return None
    scale = _UNITS[m.group(2)] if m.group(2) else unit
    return int(float(m.group(1)) * scale)


def parse_df_free(text: str) -> int | None:
    """``df /data``: toybox (1K blocks, ``Available`` column) or old toolbox (``Free``)."""
    lines = [line.replace("Mounted on", "Mounted").split() for line in text.strip().splitlines()]
    lines = [line for line in lines if line]
    if len(lines) < 2:
        return None
    header, row = lines[0], lines[-1]
    for name in ("Available", "Avail", "Free"):
        if name in header:
            index = header.index(name)
            break
    else:
        return None
    # A long device name wraps the row onto two lines: its last one lacks it.
    index -= max(0, len(header) - len(row))
    if not 0 <= index < len(row):
        return None
    unit = 1024 if "1K-blocks" in header else 1
    return _size(row[index], unit)
