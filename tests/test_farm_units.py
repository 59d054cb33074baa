"""The farm's pure parts: adb's lists, Android's health dumps, the worker's log
lines, the pool rules (holds with hysteresis, state precedence), the command lines."""

from __future__ import annotations

import argparse
import json
import logging

import pytest

from playcast.farm import worker_log as wl
from playcast.farm.devices import FramingError, TrackDecoder, parse_list, parse_row
from playcast.farm.health import (
    MARK,
    Health,
    health_script,
    parse_battery,
    parse_df_free,
    parse_health,
    parse_keyguard,
    parse_pm_path,
    parse_screen_on,
)
from playcast.farm.settings import add_arguments, settings_from_args, worker_argv, worker_env
from playcast.farm.states import Hold, Limits, State, WorkerState, next_holds, phone_state
from playcast.logs import JsonFormatter

# --- adb's device list ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "serial", "state", "model", "usb", "tid"),
    [
        (
            "BY900FBH2G             device usb:1-6 product:D6643 model:D6643 device:D6643"
            " transport_id:3",
            "BY900FBH2G", "device", "D6643", "usb:1-6", 3,
        ),
        (
            "emulator-5554          device product:sdk_gphone64_x86_64"
            " model:sdk_gphone64_x86_64 device:emu64xa transport_id:1",
            "emulator-5554", "device", "sdk_gphone64_x86_64", "", 1,
        ),
        # A serial of 22 or more characters gets exactly one space.
        (
            "9b01005930533036340043eb2a5c2c device usb:17907712X product:serenity_p_in"
            " model:25028PC03I device:serenity transport_id:1",
            "9b01005930533036340043eb2a5c2c", "device", "25028PC03I", "usb:17907712X", 1,
        ),
        # mDNS serials hold spaces.
        (
            "adb-26151FDF60083B-9tP4nl (2)._adb-tls-connect._tcp device product:p model:m"
            " device:d transport_id:9",
            "adb-26151FDF60083B-9tP4nl (2)._adb-tls-connect._tcp", "device", "m", "", 9,
        ),
        ("R58M123ABC             unauthorized usb:1-1.2 transport_id:4",
         "R58M123ABC", "unauthorized", "", "usb:1-1.2", 4),
        (
            "0123456789ABCDEF       no permissions (missing udev rules? user is in the"
            " plugdev group); see [http://developer.android.com/tools/device.html]"
            " usb:1-4 transport_id:5",
            "0123456789ABCDEF", "no permissions", "", "usb:1-4", 5,
        ),
        ("emulator-5556\toffline", "emulator-5556", "offline", "", "", None),
    ],
)  # fmt: skip
def test_a_device_row_is_read_as_adb_writes_it(
    line: str, serial: str, state: str, model: str, usb: str, tid: int | None
) -> None:
    row = parse_row(line)
    assert row is not None
    assert (row.serial, row.state, row.model, row.usb, row.transport_id) == (
        serial,
        state,
        model,
        usb,
        tid,
    )


def test_adb_devices_output_lists_only_devices() -> None:
    text = (
        "* daemon not running; starting now at tcp:5037\n"
        "List of devices attached\n"
        "a                      device product:x model:y device:z transport_id:1\n"
        "b                      recovery usb:1-2 transport_id:2\n\n"
    )
    assert {s: r.state for s, r in parse_list(text).items()} == {"a": "device", "b": "recovery"}


def test_track_devices_messages_are_read_across_reads() -> None:
    one = "a                      device transport_id:1\n"
    stream = f"{len(one):04x}{one}0000".encode()
    decoder = TrackDecoder()
    lists = [x for i in range(len(stream)) for x in decoder.feed(stream[i : i + 1])]
    assert [sorted(rows) for rows in lists] == [["a"], []]
    with pytest.raises(FramingError):
        TrackDecoder().feed(b"zz12whatever")


# --- health --------------------------------------------------------------------------

BATTERY_14 = """Current Battery Service state:
  AC powered: false
  USB powered: true
  Wireless powered: false
  Dock powered: false
  Max charging current: 500000
  Max charging voltage: 5000000
  Charge counter: 2869000
  status: 2
  health: 2
  present: true
  level: 87
  scale: 100
  voltage: 4231
  temperature: 463
  technology: Li-ion
  Charging state: 1
  Charging policy: 1
  Capacity level: 3
"""


def test_dumpsys_battery_gives_level_temperature_and_power() -> None:
    fields = parse_battery(BATTERY_14)
    assert fields == {
        "percent": 87.0,
        "temperature": 46.3,
        "charging": True,
        "status": "charging",
        "health": "good",
    }
    unplugged = BATTERY_14.replace("USB powered: true", "USB powered: false")
    unplugged = unplugged.replace("level: 87\n  scale: 100", "level: 30\n  scale: 200")
    assert parse_battery(unplugged)["charging"] is False
    assert parse_battery(unplugged)["percent"] == 15.0
    assert parse_battery("garbage") == {}


def test_screen_and_keyguard_across_android_versions() -> None:
    assert parse_screen_on("  mWakefulness=Awake\nDisplay Power: state=ON\n") is True
    assert parse_screen_on("Display Power: state=DOZE\n") is False
    assert parse_screen_on("  getWakefulnessLocked()=Asleep\n") is False
    assert parse_screen_on("nothing") is None
    android_12 = "    KeyguardServiceDelegate\n      showing=true\n      inputRestricted=true\n"
    assert parse_keyguard(android_12) is True
    android_9 = "    mShowingLockscreen=false mShowingDream=false mDreamingLockscreen=false\n"
    assert parse_keyguard(android_9) is False
    assert parse_keyguard("") is None


def test_df_and_pm_path() -> None:
    toybox = (
        "Filesystem       1K-blocks     Used Available Use% Mounted on\n"
        "/dev/block/dm-5  112346752 30012345  82334407  27% /data\n"
    )
    assert parse_df_free(toybox) == 82334407 * 1024
    wrapped = (
        "Filesystem      1K-blocks    Used Available Use% Mounted on\n"
        "/dev/block/bootdevice/by-name/userdata\n"
        "                 115049000 28430428  86487500  25% /data\n"
    )
    assert parse_df_free(wrapped) == 86487500 * 1024
    toolbox = "Filesystem   Size   Used   Free   Blksize\n/data   12.2G   3.2G   9.0G   4096\n"
    assert parse_df_free(toolbox) == 9 * 1024**3
    assert parse_pm_path("package:/data/app/~~x==/com.supercell.clashroyale-y==/base.apk\n")
    assert parse_pm_path("") is False
    assert parse_pm_path("Error: Could not access the Package Manager.") is None


def test_one_shell_script_reads_everything() -> None:
    script = health_script("com.example.game")
    assert script.count(f"echo {MARK}") == 4
    assert "pm path com.example.game" in script
    parts = [BATTERY_14, "Display Power: state=ON\n", "", "", ""]
    health = parse_health(parts, 1.0)
    assert health.temperature_c == 46.3 and health.screen_on is True
    assert health.game_installed is False
    assert health.keyguard_showing is None and health.storage_free_bytes is None


# --- the pool rules --------------------------------------------------------------------

LIMITS = Limits(max_temp_c=45, temp_hysteresis_c=3, min_battery=15, battery_hysteresis=5)


def reading(temp: float | None = 30, level: float | None = 80, game: bool | None = True) -> Health:
    return Health(0.0, battery_percent=level, temperature_c=temp, game_installed=game)


def test_holds_have_hysteresis() -> None:
    none: frozenset[Hold] = frozenset()
    hot = frozenset({Hold.HOT})
    assert next_holds(none, reading(temp=45), LIMITS) == none  # at the limit: stays
    assert next_holds(none, reading(temp=45.1), LIMITS) == hot
    assert next_holds(hot, reading(temp=43), LIMITS) == hot  # not cool enough yet
    assert next_holds(hot, reading(temp=42), LIMITS) == none
    low = frozenset({Hold.LOW_BATTERY})
    assert next_holds(none, reading(level=15), LIMITS) == none
    assert next_holds(none, reading(level=14), LIMITS) == low
    assert next_holds(low, reading(level=19), LIMITS) == low
    assert next_holds(low, reading(level=20), LIMITS) == none
    missing = frozenset({Hold.GAME_MISSING})
    assert next_holds(none, reading(game=False), LIMITS) == missing
    # What a reading does not say changes nothing; a failed reading changes nothing.
    assert next_holds(hot | missing, reading(temp=None, game=None), LIMITS) == hot | missing
    assert next_holds(low, Health(0.0, error="adb: device offline"), LIMITS) == low


def test_state_precedence() -> None:
    hot = frozenset({Hold.HOT})
    both = frozenset({Hold.LOW_BATTERY, Hold.GAME_MISSING})
    assert phone_state(None, WorkerState.BUSY, hot, False) is State.OFFLINE
    assert phone_state("recovery", WorkerState.NONE, hot, False) is State.OFFLINE
    assert phone_state("unauthorized", WorkerState.NONE, hot, False) is State.UNAUTHORIZED
    assert phone_state("device", WorkerState.BUSY, hot, True) is State.BUSY
    assert phone_state("device", WorkerState.AVAILABLE, both, True) is State.GAME_MISSING
    assert phone_state("device", WorkerState.STARTING, frozenset(), True) is State.FAILING
    assert phone_state("device", WorkerState.AVAILABLE, frozenset(), False) is State.AVAILABLE
    assert phone_state("device", WorkerState.NONE, frozenset(), False) is State.STARTING


# --- the worker's log --------------------------------------------------------------------


def json_line(msg: str, level: int = logging.INFO, **event: object) -> str:
    """A line as the worker's --log-format json writes it."""
    record = logging.LogRecord("playcast.worker", level, __file__, 1, msg, None, None)
    if event:
        record.event = event.pop("event")
        record.fields = event
    return JsonFormatter().format(record)


def test_the_workers_events_name_its_state() -> None:
    cases = [
        (dict(event="worker_registered", worker_id="w-1", game="g"), wl.Registered("w-1")),
        (
            dict(event="session_started", session_id="s-1", client_id="c-1"),
            wl.SessionStarted("s-1", "c-1"),
        ),
        (dict(event="session_ended", session_id="s-1", ok=True), wl.SessionEnded("s-1")),
        (
            dict(event="backend_failure", streak=2, kind="reset", detail="x is offline", delay=0.4),
            wl.BackendFailing(2, "reset: x is offline"),
        ),
        (dict(event="worker_unregistered", why="server lost"), wl.Unregistered("server lost")),
        (dict(event="worker_starting", drain_signal="SIGUSR1"), wl.Capabilities("SIGUSR1")),
        (dict(event="worker_drained"), None),
    ]
    for fields, expected in cases:
        assert wl.parse_line(json_line("some text", **fields)).event == expected, fields
    # Only events count: the text alone names nothing (one way to read a worker).
    assert wl.parse_line(json_line("registered worker_id=w-1 game=g")).event is None
    # A field of the wrong type is no event, and no crash.
    assert wl.parse_line(json_line("x", event="backend_failure", streak="many")).event is None
    line = wl.parse_line(json_line("x", logging.ERROR))
    assert line.level == logging.ERROR
    crash = wl.parse_line("Traceback (most recent call last):")
    assert crash.event is None and crash.level == logging.WARNING
    assert wl.parse_line(json.dumps(["not", "an", "object"])).event is None


# --- command lines ---------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_worker_flags_pass_through_but_the_farm_decides_the_phone() -> None:
    s = settings_from_args(
        parse("--server", "ws://s", "--serials", "a, b", "--", "--serial", "x", "--no-audio")
    )
    assert s.serials == {"a", "b"} and s.selected("a") and not s.selected("c")
    argv = worker_argv(s, "a")
    assert argv[:4] == ["worker", "--serial", "x", "--no-audio"]
    # argparse keeps the last: the farm's own choices come after the operator's.
    last = len(argv) - 1 - argv[::-1].index("--serial")
    assert argv[last + 1] == "a"
    assert argv[argv.index("--name") + 1] == "a"  # the operator page drains it by its serial
    assert argv[argv.index("--log-format") + 1] == "json"
    env = worker_env({"PLAYCAST_METRICS_PORT": "9100", "PLAYCAST_SCRCPY_SERVER": "/s.jar"})
    assert env == {"PLAYCAST_SCRCPY_SERVER": "/s.jar"}
