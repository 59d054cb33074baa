"""A phone's state, what takes it out of the pool, and what brings it back.

One state per phone, derived (never stored) from what the farm knows: adb's
state for it, its worker's (from the worker's log), the holds its health
reading puts on it, and whether its worker keeps failing. The order below is
the precedence: a session in progress shows as busy even on a phone that has
just turned hot (it leaves the pool once the session ends).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from playcast.farm.health import Health


class State(enum.StrEnum):
    STARTING = "starting"  # a worker is on its way to registering (or between sessions)
    AVAILABLE = "available"  # registered, waiting for a player
    BUSY = "busy"  # in a session
    OFFLINE = "offline"  # unplugged, or adb says offline, recovery, bootloader…
    UNAUTHORIZED = "unauthorized"  # the USB debugging prompt was not accepted
    HOT = "hot"  # battery above --max-battery-temp: out of the pool until it cools
    LOW_BATTERY = "low_battery"  # below --min-battery: out until it has charged
    GAME_MISSING = "game_missing"  # pm path finds no game: out until it is installed
    FAILING = "failing"  # its worker exits or its game fails, retried on the backoff


class WorkerState(enum.StrEnum):
    NONE = "none"  # no worker process
    STARTING = "starting"
    AVAILABLE = "available"
    BUSY = "busy"


class Hold(enum.StrEnum):
    """Why a healthy, plugged-in phone is kept out of the pool (most serious first)."""

    GAME_MISSING = "game_missing"
    HOT = "hot"
    LOW_BATTERY = "low_battery"


@dataclass(frozen=True, slots=True)
class Limits:
    max_temp_c: float = 45.0
    temp_hysteresis_c: float = 3.0  # back in the pool at or below max - this
    min_battery: float = 15.0
    battery_hysteresis: float = 5.0  # back at or above min + this


def next_holds(current: frozenset[Hold], health: Health, limits: Limits) -> frozenset[Hold]:
    """The holds after a reading. Leaving takes crossing the limit; coming back
    takes the margin on the right side of it, so a phone at the limit does
    not flap in and out of the pool. A reading that failed changes nothing,
    nor does a field the phone did not print."""
    if health.error is not None:
        return current
    holds: set[Hold] = set()
    temp = health.temperature_c
    if temp is None:
        holds |= current & {Hold.HOT}
    elif temp > limits.max_temp_c or (
        Hold.HOT in current and temp > limits.max_temp_c - limits.temp_hysteresis_c
    ):
        holds.add(Hold.HOT)
    level = health.battery_percent
    if level is None:
        holds |= current & {Hold.LOW_BATTERY}
    elif level < limits.min_battery or (
        Hold.LOW_BATTERY in current and level < limits.min_battery + limits.battery_hysteresis
    ):
        holds.add(Hold.LOW_BATTERY)
    if health.game_installed is False or (
        health.game_installed is None and Hold.GAME_MISSING in current
    ):
        holds.add(Hold.GAME_MISSING)
    return frozenset(holds)


def phone_state(
    adb_state: str | None, worker: WorkerState, holds: frozenset[Hold], failing: bool
) -> State:
    if adb_state != "device":
        return State.UNAUTHORIZED if adb_state == "unauthorized" else State.OFFLINE
    if worker is WorkerState.BUSY:
        return State.BUSY
    for hold in Hold:
        if hold in holds:
            return State(hold.value)
    if failing:
        return State.FAILING
    if worker is WorkerState.AVAILABLE:
        return State.AVAILABLE
    return State.STARTING
