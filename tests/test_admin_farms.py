"""How the operator page reads farms (``app/farms.py``) and joins their
phones to workers (``app/fleet.py``). A farm here is a small HTTP server
in the test, for what the real farm never does: answering late, garbage,
an error, or too much."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from playcast.signaling.app import farms as farms_module
from playcast.signaling.app.farms import Farm, FarmWatch
from playcast.signaling.app.fleet import fleet


def phone(serial: str, state: str, worker_id: str | None = None) -> dict[str, Any]:
    return {
        "serial": serial,
        "state": state,
        "adb_state": "device" if state != "offline" else None,
        "worker": {"worker_id": worker_id} if worker_id else None,
        "health": {"battery_percent": 80.0, "temperature_c": 31.5, "charging": True},
    }


class FakeFarm:
    def __init__(self) -> None:
        self.doc: Any = {"host": "farm-1", "phones": [phone("p1", "available", "w1")]}
        self.delay = 0.0
        self.status = 200
        self.requests = 0
        self.url = ""

    async def handle(self, _: web.Request) -> web.Response:
        self.requests += 1
        await asyncio.sleep(self.delay)
        body = self.doc if isinstance(self.doc, str | bytes) else json.dumps(self.doc)
        return web.Response(body=body, status=self.status, content_type="application/json")


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[FakeFarm]:
    farm = FakeFarm()
    app = web.Application()
    app.router.add_get("/status", farm.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    farm.url = f"http://127.0.0.1:{port}"
    try:
        yield farm
    finally:
        await runner.cleanup()


async def read_again(watch: FarmWatch) -> Farm:
    for farm in watch.farms:
        farm.read_at = 0.0  # (its answer no longer fresh)
    (farm,) = await watch.read()
    return farm


async def test_a_farm_that_stops_answering_is_unreachable_with_its_last_answer() -> None:
    async with serving() as fake:
        watch = FarmWatch((fake.url,), timeout=0.3)
        try:
            farm = await read_again(watch)
            view = farm.view(time.time())
            assert view["reachable"] and view["host"] == "farm-1" and view["age"] == 0.0
            fake.delay = 1.0
            farm = await read_again(watch)
            view = farm.view(time.time() + 5)
            assert not view["reachable"] and view["error"] == "no answer within 0.3 s"
            assert view["age"] is not None and view["age"] >= 5
            assert [p["serial"] for p in farm.phones()] == ["p1"]  # as it last said
        finally:
            await watch.close()


async def test_garbage_an_error_or_too_much_is_a_farm_unreachable_not_a_crash() -> None:
    async with serving() as fake:
        watch = FarmWatch((fake.url + "/status",), timeout=2.0)
        try:
            for doc, status, why in (
                ("not json", 200, "Expecting value"),
                ({"host": "x"}, 200, "not a farm's /status"),
                ({"phones": []}, 500, "HTTP 500"),
                ("[" * 100_000 + "]" * 100_000, 200, "recursion"),
                (b" " * (farms_module.MAX_BYTES + 1), 200, "answer too large"),
            ):
                fake.doc, fake.status = doc, status
                farm = await read_again(watch)
                assert farm.error is not None and why in farm.error, (why, farm.error)
                assert not farm.view(time.time())["reachable"]
        finally:
            await watch.close()
        unreachable = FarmWatch(("http://127.0.0.1:1",), timeout=2.0)
        (farm,) = await unreachable.read()
        assert farm.error and farm.view(time.time())["age"] is None
        await unreachable.close()


async def test_pages_asking_at_once_share_one_read() -> None:
    async with serving() as fake:
        fake.delay = 0.1
        watch = FarmWatch((fake.url,))
        try:
            await asyncio.gather(*(watch.read() for _ in range(5)))
            assert fake.requests == 1
            await watch.read()  # fresh: used again
            assert fake.requests == 1
        finally:
            await watch.close()


def test_phones_join_their_workers_by_id_then_by_serial() -> None:
    status = {
        "node": "A",
        "games": ["g"],
        "clients": [{"id": "c1"}],
        "workers": [
            {"id": "w1", "name": "p1", "status": "busy", "node": "A", "game": "g",
             "session_id": "s1", "client_id": "c1", "connected_for": 9.0},
            {"id": "w9", "name": "p2", "status": "held", "node": "B", "game": "g",
             "session_id": None, "client_id": None, "connected_for": 1.0},
            {"id": "w5", "name": None, "status": "available", "node": "B", "game": "g",
             "session_id": None, "client_id": None, "connected_for": 1.0},
        ],
        "sessions": [{"id": "s1", "worker_id": "w1", "age": 42.5, "phase": "connected"}],
    }  # fmt: skip
    farm = Farm("http://farm", doc={"phones": [
        phone("p1", "busy", "w1"),
        phone("p2", "starting", "w-old"),  # its worker restarted: joined by name
        phone("p3", "offline"),
    ]}, answered_at=time.time())  # fmt: skip
    doc = fleet(status, {"held": ["p1", "p2", "p7"], "lines": {"g": 3}}, [farm], time.time())
    by_id = {w["id"]: w for w in doc["workers"]}
    assert by_id["w1"]["draining"] and by_id["w1"]["session_age"] == 42.5
    assert by_id["w1"]["phone"]["serial"] == "p1" and by_id["w1"]["phone"]["battery_percent"] == 80
    assert by_id["w9"]["phone"]["serial"] == "p2" and not by_id["w9"]["draining"]
    assert by_id["w5"]["phone"] is None and by_id["w5"]["name"] == ""
    assert [p["serial"] for p in doc["phones"]] == ["p3"] and not doc["phones"][0]["stale"]
    assert doc["held"] == [
        {"name": "p1", "connected": True},
        {"name": "p2", "connected": True},
        {"name": "p7", "connected": False},
    ]
    assert doc["nodes"] == [{"id": "A", "workers": 3, "clients": 1}] and doc["lines"] == {"g": 3}
    farm.error = "no answer"
    doc = fleet(status, {"held": [], "lines": {}}, [farm], time.time())
    assert doc["phones"][0]["stale"] and not doc["farms"][0]["reachable"]
