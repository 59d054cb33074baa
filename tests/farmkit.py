"""The farm tests' rig: a real server, a real farm and its real workers, fake phones."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playcast_testing.fake_farm import FakeAdbServer, FakePhone
from playcast_testing.farms import FarmProcess, running_farm
from playcast_testing.servers import ServerProcess, running_server

from playcast.backends.scrcpy import SCRCPY_VERSION

GAME = "com.supercell.clashroyale"
TIMEOUT = 60.0
SERVER = {
    "heartbeat_interval": 0.2,
    "heartbeat_timeout": 5.0,
    "inactivity_timeout": 60.0,
    "inactivity_warning": 0.0,
    "handshake_timeout": 20.0,
    "shutdown_ack_timeout": 5.0,
}
# Small, slow pictures: six phones' encoders share the test's one process.
PHONE = {"screen": (360, 640), "fps": 10}


def worker_flags(jar: Path) -> tuple[str, ...]:
    return (
        "--scrcpy-server", str(jar),
        "--android-max-size", "320",
        "--restart-delay", "0.05",
        "--no-audio",
    )  # fmt: skip


@dataclass
class FarmRig:
    server: ServerProcess
    farm: FarmProcess
    adb: FakeAdbServer
    phones: dict[str, FakePhone]

    async def worker_ids(self) -> dict[str, str | None]:
        doc = await self.farm.status()
        return {p["serial"]: (p["worker"] or {}).get("worker_id") for p in doc["phones"]}

    async def wait_states(self, want: dict[str, str], timeout: float = TIMEOUT) -> dict[str, Any]:
        """Until each named phone is in its state in /status."""

        def ok(doc: dict[str, Any]) -> bool:
            have = {p["serial"]: p["state"] for p in doc["phones"]}
            return all(have.get(serial) == state for serial, state in want.items())

        return await self.farm.wait_status(ok, timeout=timeout)


def make_jar(tmp_path: Path) -> Path:
    jar = tmp_path / f"scrcpy-server-v{SCRCPY_VERSION}"
    jar.write_bytes(b"PK\x03\x04 not really a jar")
    return jar


@contextlib.asynccontextmanager
async def farm_rig(
    tmp_path: Path,
    serials: Sequence[str],
    *farm_flags: str,
    states: dict[str, str] | None = None,
    plugged: Sequence[str] | None = None,
) -> AsyncIterator[FarmRig]:
    """Phones added (plugged, in ``states`` or ``device``), a server, a farm."""
    jar = make_jar(tmp_path)
    async with FakeAdbServer() as adb:
        phones = {}
        for serial in serials:
            phones[serial] = await adb.add_phone(
                serial,
                state=(states or {}).get(serial, "device"),
                plugged=plugged is None or serial in plugged,
                **PHONE,
            )
        log = os.environ.get("PLAYCAST_TEST_ADB_LOG")
        env = {"PLAYCAST_FAKE_ADB_LOG": log} if log else None
        async with (
            running_server(**SERVER) as server,
            running_farm(
                adb, server.ws_base, *farm_flags, worker_flags=worker_flags(jar), env=env
            ) as farm,
        ):
            yield FarmRig(server, farm, adb, phones)
