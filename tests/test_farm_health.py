"""Phone health on a running farm: hot, flat and game-less phones leave the pool
(after their session) and come back when they recover; the screen is kept on
while a phone serves and its own setting put back when it stops.

Readings come every ``--phone-health-interval`` (short here) and between
sessions; the tests wait for the farm's ``phone_held`` / ``phone_released``
lines, never for time.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from farmkit import GAME, TIMEOUT, farm_rig
from playcast_testing.fake_farm import STAY_ON
from playcast_testing.farms import worker_serials
from playcast_testing.metrics import parse_metrics
from playcast_testing.peer import TestPeer

FAST_READINGS = ("--phone-health-interval", "0.3")


async def test_a_hot_phone_finishes_its_session_then_leaves_until_it_cools(
    tmp_path: Path,
) -> None:
    async with (
        asyncio.timeout(TIMEOUT * 3),
        farm_rig(tmp_path, ["hot", "cool"], *FAST_READINGS) as rig,
    ):
        await rig.wait_states({"hot": "available", "cool": "available"})
        ids = await rig.worker_ids()
        phone = rig.phones["hot"]
        async with TestPeer.join(rig.server.url) as peer:
            viewer = await asyncio.wait_for(peer.wait_connected(), TIMEOUT)
            assert peer.assigned is not None
            serial = "hot" if peer.assigned.worker_id == ids["hot"] else "cool"
            phone = rig.phones[serial]
            mark = len(rig.farm.lines)
            phone.temperature_c = 47.5
            await rig.farm.wait_event("phone_held", after=mark, serial=serial, why="hot")
            # Never mid-session: the game plays on after the farm decided.
            seen = viewer.frames_received
            await asyncio.wait_for(viewer.wait_frame(lambda f: f.index >= seen + 5), TIMEOUT)
            assert peer.shutdown is None
            doc = await rig.wait_states({serial: "busy"})
            held = next(p for p in doc["phones"] if p["serial"] == serial)
            assert held["holds"] == ["hot"] and held["worker"]["draining"] is True
            assert held["health"]["temperature_c"] == 47.5
            await peer.leave()
        # Drained by its signal: it finished the session and left by itself.
        await rig.farm.wait_event(
            "worker_draining", after=mark, serial=serial, signal="SIGUSR1", busy="True"
        )
        await rig.farm.wait_event("worker_exited", after=mark, serial=serial, code="0")
        await rig.farm.find_line(
            rf"\[{serial}\] drained: exiting instead of registering", after=mark
        )
        await rig.wait_states({serial: "hot"})
        assert serial not in worker_serials(rig.farm)
        # It did not register between its session and its exit.
        assert rig.farm.count(rf"worker_registered serial={serial}\b") == 1
        status = await rig.server.status()
        assert len(status["workers"]) == 1
        metrics = parse_metrics(await rig.farm.metrics())
        assert metrics['playcast_devices{state="hot"}'] == 1
        assert metrics[f'playcast_device_temperature_celsius{{serial="{serial}"}}'] == 47.5

        # Cooling to just under the limit is not enough (hysteresis: 3 °C).
        phone.temperature_c = 44.0
        await rig.farm.wait_status(lambda d: _reading(d, serial) == 44.0)
        assert (await rig.farm.phone(serial))["state"] == "hot"
        mark = len(rig.farm.lines)
        phone.temperature_c = 41.0
        await rig.farm.wait_event("phone_released", after=mark, serial=serial, why="hot")
        await rig.wait_states(
            {serial: "available", "cool" if serial == "hot" else "hot": "available"}
        )


def _reading(doc: dict[str, object], serial: str) -> object:
    for phone in doc["phones"]:  # type: ignore[attr-defined]
        if phone["serial"] == serial and phone["health"]:
            return phone["health"]["temperature_c"]
    return None


async def test_an_idle_phone_low_on_battery_leaves_at_once_and_returns_charged(
    tmp_path: Path,
) -> None:
    async with asyncio.timeout(TIMEOUT * 3), farm_rig(tmp_path, ["flat"], *FAST_READINGS) as rig:
        await rig.wait_states({"flat": "available"})
        phone = rig.phones["flat"]
        phone.battery_level = 12
        await rig.farm.wait_event("phone_held", serial="flat", why="low_battery")
        await rig.wait_states({"flat": "low_battery"})
        await rig.farm.wait_event("worker_exited", serial="flat")
        await rig.server.wait_status(lambda d: d["workers"] == [])
        assert worker_serials(rig.farm) == []
        # Its scrcpy server is gone, and with it the stay-awake it had set.
        assert phone.settings[STAY_ON] == "0"
        phone.battery_level = 17  # above the limit, within the 5 % margin: stays out
        await rig.farm.wait_status(lambda d: d["phones"][0]["health"]["battery_percent"] == 17.0)
        assert (await rig.farm.phone("flat"))["state"] == "low_battery"
        phone.battery_level = 21
        await rig.wait_states({"flat": "available"})
        assert phone.settings[STAY_ON] == "7"


async def test_a_phone_without_the_game_is_game_missing_until_it_is_installed(
    tmp_path: Path,
) -> None:
    async with asyncio.timeout(TIMEOUT * 3):
        async with farm_rig(tmp_path, ["bare", "full"], *FAST_READINGS) as rig:
            rig.phones["bare"].remove_game()  # before any reading: never started
            await rig.wait_states({"bare": "game_missing", "full": "available"})
            assert worker_serials(rig.farm) == ["full"]
            assert rig.farm.count(r"worker_started serial=bare\b") == 0
            rig.phones["bare"].install_game(GAME)
            await rig.wait_states({"bare": "available"})


async def test_a_serving_phone_whose_screen_goes_dark_is_woken_and_unlocked(
    tmp_path: Path,
) -> None:
    async with asyncio.timeout(TIMEOUT * 3), farm_rig(tmp_path, ["p"], *FAST_READINGS) as rig:
        phone = rig.phones["p"]
        await rig.wait_states({"p": "available"})
        assert phone.settings[STAY_ON] == "7"  # the worker's scrcpy server: stay awake
        # The worker woke it and dismissed its keyguard before launching the game.
        assert any("wm dismiss-keyguard" in c for c in phone.shell_commands)
        # The screen went off and locked (a power-key press): woken at the next reading.
        mark = len(phone.shell_commands)
        phone.screen_on, phone.keyguard_showing = False, True
        await rig.farm.wait_status(lambda d: phone.screen_on and not phone.keyguard_showing)
        assert any("wm dismiss-keyguard" in c for c in phone.shell_commands[mark:])
        doc = await rig.farm.wait_status(lambda d: d["phones"][0]["health"]["screen_on"])
        assert doc["phones"][0]["health"]["keyguard_showing"] is False
        # A PIN cannot be dismissed: the phone says so in /status.
        phone.keyguard_secure, phone.keyguard_showing = True, True
        await rig.farm.wait_status(lambda d: d["phones"][0]["health"]["keyguard_showing"])
        assert await rig.farm.stop() == 0
    # Its worker stopped with the farm; scrcpy put the phone's own setting back.
    assert phone.settings[STAY_ON] == "0"
