"""The fake adb server speaks adb's words: the track-devices stream through
tests/fake_adb/adb byte for byte, and adb's refusals for phones not ready."""

from __future__ import annotations

import asyncio
import os

from playcast_testing.fake_farm import FakeAdbServer
from playcast_testing.farms import farm_env


async def adb(server: FakeAdbServer, *argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        "adb", *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=farm_env(server),
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_track_devices_streams_the_whole_list_on_every_change() -> None:
    async with FakeAdbServer() as server:
        await server.add_phone("emulator-5554", screen=(64, 64), fps=1)
        proc = await asyncio.create_subprocess_exec(
            "adb", "track-devices", "-l", stdout=asyncio.subprocess.PIPE, env=farm_env(server)
        )
        assert proc.stdout is not None

        async def message() -> str:
            size = int(await proc.stdout.readexactly(4), 16)  # type: ignore[union-attr]
            return (await proc.stdout.readexactly(size)).decode()  # type: ignore[union-attr]

        first = await asyncio.wait_for(message(), 30)
        assert first == (
            "emulator-5554          device usb:1-1.1 product:fakephone"
            " model:Playcast_FakePhone device:fakephone transport_id:1\n"
        )
        server.unplug("emulator-5554")
        assert await asyncio.wait_for(message(), 30) == ""
        server.plug("emulator-5554", "unauthorized")
        assert await asyncio.wait_for(message(), 30) == (
            "emulator-5554          unauthorized usb:1-1.1 transport_id:2\n"
        )
        server.restart_adb()  # kill-server: the client sees the stream end
        assert await asyncio.wait_for(proc.wait(), 30) == 0


async def test_commands_to_phones_not_ready_fail_as_adb_says() -> None:
    async with FakeAdbServer() as server:
        for serial, state in (("a", "device"), ("b", "unauthorized"), ("c", "offline")):
            await server.add_phone(serial, state=state, screen=(64, 64), fps=1)
        code, out, _ = await adb(server, "devices", "-l")
        assert code == 0 and out.startswith("List of devices attached\n") and out.endswith("\n\n")
        assert "b                      unauthorized usb:1-1.2 transport_id:2" in out
        code, _, err = await adb(server, "-s", "b", "shell", "dumpsys", "battery")
        assert code == 1 and err.startswith("adb: device unauthorized.")
        code, _, err = await adb(server, "-s", "c", "get-state")
        assert (code, err) == (1, "adb: device offline\n")
        code, _, err = await adb(server, "-s", "gone", "get-state")
        assert (code, err) == (1, "adb: device 'gone' not found\n")
        code, _, err = await adb(server, "get-state")
        assert (code, err) == (1, "adb: more than one device/emulator\n")
        server.phones["a"].temperature_c = 38.4
        code, out, _ = await adb(
            server, "-s", "a", "shell", "dumpsys battery; echo x; pm path nope"
        )
        assert code == 1 and "  temperature: 384\n" in out and out.endswith("x\n")
        assert os.environ.get("PLAYCAST_FAKE_ADB_DEVICE") is None  # only its children see it
