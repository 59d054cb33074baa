"""``playcast farm`` end to end: a real server, the real farm and its real
worker processes, phones faked behind one fake adb server (tests/fake_adb/adb).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

import psutil
from farmkit import PHONE, TIMEOUT, farm_rig
from playcast_testing.fake_farm import FakeAdbServer
from playcast_testing.farms import farm_env, worker_serials
from playcast_testing.metrics import parse_metrics
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


def _stray(serial: str, farm_pid: int) -> list[str]:
    """Processes for ``serial`` that are not the farm's: a worker or adb it lost."""
    out = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            argv = proc.info["cmdline"] or []
            if serial not in argv or ("worker" not in argv and "-s" not in argv):
                continue
            parents = {p.pid for p in proc.parents()}
            if farm_pid not in parents:
                out.append(" ".join(argv))
    return out


async def test_a_flapping_phone_leaves_no_duplicate_worker_and_no_stray_process(
    tmp_path: Path,
) -> None:
    serials = ["steady", "flappy"]
    async with asyncio.timeout(TIMEOUT * 4), farm_rig(tmp_path, serials) as rig:
        await rig.wait_states({s: "available" for s in serials})
        steady_id = (await rig.worker_ids())["steady"]
        pid = rig.farm.proc.pid
        for cycle in range(4):
            mark = len(rig.farm.lines)
            rig.adb.unplug("flappy")
            await rig.farm.wait_event("phone_gone", after=mark, serial="flappy")
            # Plugged back at once on odd cycles: while its worker may still be starting.
            if cycle % 2:
                await rig.farm.wait_event("worker_exited", after=mark, serial="flappy")
            rig.adb.plug("flappy")
            await rig.farm.wait_event("worker_started", after=mark, serial="flappy")
            assert worker_serials(rig.farm).count("flappy") <= 1
            assert _stray("flappy", pid) == []
        await rig.wait_states({"flappy": "available", "steady": "available"})
        assert worker_serials(rig.farm) == ["flappy", "steady"]
        assert _stray("flappy", pid) == []
        assert (await rig.worker_ids())["steady"] == steady_id
        doc = await rig.farm.status()
        flappy = next(p for p in doc["phones"] if p["serial"] == "flappy")
        assert flappy["restarts"] == 0  # stopped on purpose each time: no failure
        assert flappy["starts"] == 5


async def test_phones_not_ready_are_shown_and_never_started(tmp_path: Path) -> None:
    states = {"locked": "unauthorized", "asleep": "offline", "fixing": "recovery"}
    serials = ["ready", *states]
    async with asyncio.timeout(TIMEOUT * 3), farm_rig(tmp_path, serials, states=states) as rig:
        doc = await rig.wait_states(
            {
                "ready": "available",
                "locked": "unauthorized",
                "asleep": "offline",
                "fixing": "offline",
            }
        )
        adb_states = {p["serial"]: p["adb_state"] for p in doc["phones"]}
        assert adb_states == {"ready": "device", **states}
        assert worker_serials(rig.farm) == ["ready"]
        metrics = parse_metrics(await rig.farm.metrics())
        assert metrics['playcast_devices{state="available"}'] == 1
        assert metrics['playcast_devices{state="unauthorized"}'] == 1
        assert metrics['playcast_devices{state="offline"}'] == 2
        assert metrics['playcast_devices{state="busy"}'] == 0
        # Nobody asked the unready phones for anything but their place in the list.
        asked = {argv[1] for argv in rig.adb.commands if argv[:1] == ["-s"]}
        assert asked == {"ready"}

        rig.adb.set_state("locked", "device")  # the operator accepted the USB prompt
        await rig.wait_states({"locked": "available"})
        assert worker_serials(rig.farm) == ["locked", "ready"]


async def test_the_farm_follows_adb_restarts(tmp_path: Path) -> None:
    async with asyncio.timeout(TIMEOUT * 3), farm_rig(tmp_path, ["a", "b"]) as rig:
        await rig.wait_states({"a": "available", "b": "available"})
        mark = len(rig.farm.lines)
        rig.adb.restart_adb()
        await rig.farm.find_line(r"adb track-devices ended", after=mark)
        # The tracker is back: a phone plugged now is seen and served.
        await rig.adb.add_phone("c", screen=(360, 640), fps=10)
        await rig.wait_states({"a": "available", "b": "available", "c": "available"})
        doc = await rig.farm.status()
        assert doc["adb"]["tracking"] is True and doc["adb"]["restarts"] >= 1
        metrics = parse_metrics(await rig.farm.metrics())
        assert metrics["playcast_farm_adb_tracker_restarts_total"] >= 1


async def test_a_worker_that_dies_is_restarted_and_the_others_are_untouched(
    tmp_path: Path,
) -> None:
    async with asyncio.timeout(TIMEOUT * 3), farm_rig(tmp_path, ["a", "b"]) as rig:
        await rig.wait_states({"a": "available", "b": "available"})
        ids = await rig.worker_ids()
        doomed = rig.farm.worker("a")
        mark = len(rig.farm.lines)
        doomed.kill()
        await rig.farm.wait_event("worker_exited", after=mark, serial="a", code="-9")
        await rig.farm.wait_event("worker_registered", after=mark, serial="a")
        doc = await rig.wait_states({"a": "available"})
        phone_a = next(p for p in doc["phones"] if p["serial"] == "a")
        assert phone_a["restarts"] == 1
        after = await rig.worker_ids()
        assert after["b"] == ids["b"] and after["a"] != ids["a"]
        metrics = parse_metrics(await rig.farm.metrics())
        assert metrics['playcast_farm_worker_restarts_total{serial="a"}'] == 1
        assert metrics['playcast_farm_worker_restarts_total{serial="b"}'] == 0


async def test_serials_and_skip_serials_choose_the_phones(tmp_path: Path) -> None:
    serials = ["mine", "theirs", "skipped"]
    flags = ("--serials", "mine,skipped", "--skip-serials", "skipped")
    async with asyncio.timeout(TIMEOUT * 3), farm_rig(tmp_path, serials, *flags) as rig:
        await rig.wait_states({"mine": "available"})
        await rig.farm.wait_event("phone_ignored", serial="theirs")
        await rig.farm.wait_event("phone_ignored", serial="skipped")
        doc = await rig.farm.status()
        assert [p["serial"] for p in doc["phones"]] == ["mine"]
        assert worker_serials(rig.farm) == ["mine"]


async def test_worker_flags_no_worker_accepts_stop_the_farm_with_the_reason(
    tmp_path: Path,
) -> None:
    async with FakeAdbServer() as adb:
        await adb.add_phone("a", **PHONE)
        argv = [sys.executable, "-m", "playcast", "farm", "--server", "ws://127.0.0.1:9"]
        argv += ["--", "--no-such-flag"]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env=farm_env(adb),
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    text = out.decode()
    assert proc.returncode == 2, text
    assert "the worker refused its flags" in text and "--no-such-flag" in text


async def test_a_killed_farm_takes_its_workers_with_it(tmp_path: Path) -> None:
    async with asyncio.timeout(TIMEOUT * 3), farm_rig(tmp_path, ["a", "b"]) as rig:
        await rig.wait_states({"a": "available", "b": "available"})
        workers = rig.farm.workers()
        assert len(workers) == 2
        rig.farm.proc.kill()  # no chance to stop them itself
        _, alive = await asyncio.to_thread(psutil.wait_procs, workers, TIMEOUT)
        assert alive == []
        # Each left properly: the server saw its socket close, not a silence.
        await rig.server.wait_status(lambda d: d["workers"] == [])


async def test_a_dead_zygote_takes_its_workers_and_a_new_one_serves_every_phone(
    tmp_path: Path,
) -> None:
    async with asyncio.timeout(TIMEOUT * 3), farm_rig(tmp_path, ["a", "b"]) as rig:
        await rig.wait_states({"a": "available", "b": "available"})
        ids = await rig.worker_ids()
        zygote = rig.farm.zygote()
        assert zygote is not None
        mark = len(rig.farm.lines)
        zygote.kill()
        # Its workers die with it (PDEATHSIG).
        await rig.farm.wait_event("zygote_exited", after=mark, code="-9")
        await rig.farm.wait_event("worker_exited", after=mark, serial="a")
        await rig.farm.wait_event("worker_exited", after=mark, serial="b")
        # The next worker wanted brings a new zygote; every phone is served again.
        await rig.farm.wait_event("zygote_ready", after=mark)
        doc = await rig.wait_states({"a": "available", "b": "available"})
        assert doc["zygote"]["starts"] == 2 and doc["zygote"]["pid"] != zygote.pid
        after = await rig.worker_ids()
        assert after["a"] not in (None, ids["a"]) and after["b"] not in (None, ids["b"])
        assert worker_serials(rig.farm) == ["a", "b"]
        await rig.server.wait_status(lambda d: len(d["workers"]) == 2)
