"""The operator API (issue 26) on real processes: only the status token, as
a bearer header, opens it; drain, undrain and restart act on a worker on
another node of a cluster on a real redis-server; a farm that stops
answering is shown unreachable, with the age of its last answer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from playcast_testing.redis_server import running_redis
from playcast_testing.scripted import connect
from playcast_testing.servers import ServerProcess, running_server
from playcast_testing.workers import running_worker

from playcast.protocol import Join, Register, Registered, Rejected

TOKEN = "op-secret-7"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FAST: dict[str, float | str] = {
    "heartbeat_interval": 0.2,
    "heartbeat_timeout": 2.0,
    "shutdown_ack_timeout": 2.0,
    "node_ttl": 1.0,
    "status_token": TOKEN,
}


async def call(
    url: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.request(method, url, headers=headers) as r:
        return r.status, await r.json()


async def wait_state(
    server: ServerProcess, ok: Callable[[dict[str, Any]], bool], timeout: float = 30.0
) -> dict[str, Any]:
    """Ask /api/admin/state until ``ok`` (the API has no push channel)."""
    async with asyncio.timeout(timeout):
        while True:
            status, doc = await call(f"{server.url}/api/admin/state", headers=AUTH)
            assert status == 200, doc
            if ok(doc):
                return doc
            await asyncio.sleep(0.05)


async def no_violations(node: ServerProcess) -> None:
    """The cluster's invariants, each node's and the shared state's."""
    status, doc = await call(f"{node.url}/api/status?check=1")
    assert status == 200 and doc["violations"] == [], doc["violations"]


def statuses(doc: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {w["name"]: (w["status"], w["id"]) for w in doc["workers"]}


async def test_only_the_bearer_token_opens_the_api_and_the_page_says_nothing() -> None:
    async with running_server(**FAST) as server:
        state = f"{server.url}/api/admin/state"
        drain = f"{server.url}/api/admin/workers/phone-1/drain"
        assert (await call(state))[0] == 403  # loopback is not enough here
        assert (await call(state, headers={"Authorization": "Bearer nope"}))[0] == 403
        assert (await call(f"{state}?token={TOKEN}"))[0] == 403  # never from the query
        assert (await call(f"{drain}?token={TOKEN}", "POST"))[0] == 403
        cookie = {"Cookie": f"token={TOKEN}"}
        assert (await call(drain, "POST", headers=cookie))[0] == 403
        status, doc = await call(state, headers=AUTH)
        assert status == 200 and doc["workers"] == [] and doc["held"] == []
        status, doc = await call(drain, "POST", headers={**AUTH, "Authorization": "bearer x"})
        assert status == 403 and "status token" in doc["error"]
        async with aiohttp.ClientSession() as http, http.get(f"{server.url}/admin") as r:
            page = await r.text()
            assert r.status == 200 and "/static/admin/admin.js" in page and TOKEN not in page
        await server.assert_consistent()
    async with running_server(**{**FAST, "status_token": ""}) as server:
        status, doc = await call(f"{server.url}/api/admin/state", headers=AUTH)
        assert status == 403 and "--status-token" in doc["error"]


@contextlib.asynccontextmanager
async def two_nodes() -> AsyncIterator[tuple[ServerProcess, ServerProcess]]:
    async with (
        running_redis() as redis,
        running_server(**FAST, redis=redis.url, node_id="A") as a,
        running_server(**FAST, redis=redis.url, node_id="B") as b,
    ):
        for node in (a, b):
            await node.wait_status(lambda d: len(d.get("nodes", [])) == 2)
        yield a, b


async def test_drain_undrain_and_restart_from_a_reach_the_worker_on_b() -> None:
    async with two_nodes() as (a, b), running_worker(b.ws_base, "--name", "phone-7") as worker:
        doc = await wait_state(a, lambda d: statuses(d).get("phone-7", ("",))[0] == "available")
        first = statuses(doc)["phone-7"][1]
        assert doc["workers"][0]["node"] == "B" and doc["nodes"][0]["id"] in ("A", "B")
        # The worker's own line for it too: on a busy machine it can come after
        # the server lists it, and must not pass for the restart's below.
        assert (await worker.wait_registered())[1] == first

        status, answer = await call(f"{a.url}/api/admin/workers/phone-7/drain", "POST", AUTH)
        assert status == 202 and answer == {
            "action": "drain",
            "name": "phone-7",
            "workers": [first],
        }
        doc = await wait_state(a, lambda d: statuses(d)["phone-7"][0] == "held")
        assert doc["held"] == [{"name": "phone-7", "connected": True}]
        async with connect(a.ws_url("client")) as player:
            await player.send(Join())
            assert (await player.expect(Rejected)).reason == "no_worker_available"
        for node in (a, b):
            await no_violations(node)

        # By its id as well as by its name; undrained on B this time.
        status, _ = await call(f"{b.url}/api/admin/workers/{first}/undrain", "POST", AUTH)
        assert status == 202
        await wait_state(a, lambda d: statuses(d)["phone-7"][0] == "available" and not d["held"])

        mark = len(worker.lines)
        status, answer = await call(f"{a.url}/api/admin/workers/phone-7/restart", "POST", AUTH)
        assert status == 202 and answer["workers"] == [first]
        _, second = await worker.wait_registered(after=mark)
        assert second != first
        doc = await wait_state(a, lambda d: statuses(d).get("phone-7", ("", ""))[1] == second)
        assert any("shutdown reason=server_shutdown" in line for line in worker.lines[mark:])
        for node in (a, b):
            await no_violations(node)


async def test_an_unnamed_worker_cannot_be_drained_and_nobody_cannot_be_restarted() -> None:
    async with running_server(**FAST) as server:
        async with connect(server.ws_url("worker")) as worker:
            await worker.send(Register(game="com.supercell.clashroyale"))
            wid = (await worker.expect(Registered)).worker_id
            status, doc = await call(f"{server.url}/api/admin/workers/{wid}/drain", "POST", AUTH)
            assert status == 409 and "no name" in doc["error"]
        status, _ = await call(f"{server.url}/api/admin/workers/nobody/restart", "POST", AUTH)
        assert status == 404
        status, _ = await call(f"{server.url}/api/admin/workers/bad%20name/drain", "POST", AUTH)
        assert status == 400
        status, _ = await call(f"{server.url}/api/admin/workers/phone-1/explode", "POST", AUTH)
        assert status == 404
        # A name with no worker connected may be drained ahead, and undrained.
        status, _ = await call(f"{server.url}/api/admin/workers/phone-9/drain", "POST", AUTH)
        assert status == 202
        doc = await wait_state(server, lambda d: bool(d["held"]))
        assert doc["held"] == [{"name": "phone-9", "connected": False}]
        status, _ = await call(f"{server.url}/api/admin/workers/phone-9/undrain", "POST", AUTH)
        assert status == 202
        await wait_state(server, lambda d: not d["held"])
