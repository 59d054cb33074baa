"""``playcast farm`` end to end: a real server, the real farm and its real
worker processes, phones faked behind one fake adb server (tests/fake_adb/adb).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from farmkit import TIMEOUT, farm_rig
from playcast_testing.farms import worker_serials
from playcast_testing.peer import TestPeer

SIX = [f"phone-{i}" for i in range(1, 7)]


async def test_six_phones_each_get_a_worker_and_an_unplugged_one_ends_only_its_session(
    tmp_path: Path,
) -> None:
    async with asyncio.timeout(TIMEOUT * 4), farm_rig(tmp_path, SIX) as rig:
        await rig.wait_states({s: "available" for s in SIX})
        assert worker_serials(rig.farm) == sorted(SIX)
        ids = await rig.worker_ids()
        await rig.server.wait_status(lambda d: len(d["workers"]) == 6)

        async with TestPeer.join(rig.server.url) as victim, TestPeer.join(rig.server.url) as other:
            await asyncio.wait_for(victim.wait_connected(), TIMEOUT)
            await asyncio.wait_for(other.wait_connected(), TIMEOUT)
            assert victim.assigned is not None and other.assigned is not None
            by_id = {v: k for k, v in ids.items()}
            unplugged = by_id[victim.assigned.worker_id]
            kept = by_id[other.assigned.worker_id]
            await rig.wait_states({unplugged: "busy", kept: "busy"})
            mark = len(rig.farm.lines)

            rig.adb.unplug(unplugged)
            await asyncio.wait_for(victim.shutdown_event.wait(), TIMEOUT)
            assert victim.shutdown is not None and victim.shutdown.reason == "worker_failed"
            await rig.farm.wait_event("worker_exited", after=mark, serial=unplugged)
            doc = await rig.wait_states({unplugged: "offline"})
            # The other player plays on; every other phone kept its worker.
            assert other.shutdown is None
            viewer = other.viewer
            assert viewer is not None
            seen = viewer.frames_received
            await asyncio.wait_for(viewer.wait_frame(lambda f: f.index >= seen + 5), TIMEOUT)
            after = {p["serial"]: (p["worker"] or {}).get("worker_id") for p in doc["phones"]}
            assert {s: after[s] for s in SIX if s != unplugged} == {
                s: ids[s] for s in SIX if s != unplugged
            }
            assert worker_serials(rig.farm) == sorted(s for s in SIX if s != unplugged)

            rig.adb.plug(unplugged)
            await rig.wait_states({unplugged: "available"})
            assert worker_serials(rig.farm) == sorted(SIX)
            assert other.shutdown is None
