"""Limits an operator relies on, over real sockets: sockets per address, the
hello deadline, the games allowlist, and who may read status and metrics."""

from __future__ import annotations

from unittest import mock

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request
from playcast_testing.scripted import connect
from playcast_testing.servers import running_server

from playcast.protocol import Error, Join, Pong, Register, Rejected
from playcast.signaling.app.access import may_observe as _may_observe
from playcast.signaling.rules.settings import Settings


async def test_sockets_per_address_are_capped() -> None:
    async with (
        running_server(max_connections_per_ip=2, hello_timeout=30) as server,
        aiohttp.ClientSession() as http,
    ):
        first = await http.ws_connect(server.ws_url("client"))
        second = await http.ws_connect(server.ws_url("worker"))
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(server.ws_url("client"))
        assert info.value.status == 429
        await first.close()
        await server.wait_status(lambda doc: len(doc["clients"]) == 0)
        third = await http.ws_connect(server.ws_url("client"))  # a place is free again
        await third.close()
        await second.close()
        assert "playcast_per_ip_refusals_total" in await server.metrics()


async def test_a_socket_that_never_says_hello_is_closed() -> None:
    async with (
        running_server(hello_timeout=0.5, heartbeat_interval=0.2) as server,
        connect(server.ws_url("worker"), auto_pong=True) as silent,
        connect(server.ws_url("client")) as greeted,
    ):
        await greeted.send(Join())  # rejected (no worker) and closed, but it said hello
        await greeted.expect(Rejected)
        await silent.send(Pong(ts=0.0))  # a pong is not a hello
        assert await silent.wait_closed(timeout=10) == 1008
        assert silent.pings >= 1
        await server.wait_for_log(r"worker_hello_timeout")


async def test_only_the_allowed_games_are_served() -> None:
    async with (
        running_server("--games", "com.supercell.clashroyale,com.example.other") as server,
        connect(server.ws_url("worker")) as worker,
        connect(server.ws_url("client")) as client,
    ):
        assert (await server.status())["games"] == [
            "com.example.other",
            "com.supercell.clashroyale",
        ]
        await worker.send(Register(game="com.example.invented"))
        err = await worker.expect(Error)
        assert err.code == "unknown_game"
        assert await worker.wait_closed() == 1008
        await client.send(Join(game="com.example.invented"))
        rejected = await client.expect(Rejected)
        assert rejected.reason == "unknown_game"
        doc = await server.assert_consistent()
        assert doc["workers"] == [] and doc["clients"] == []


async def test_status_and_metrics_are_for_loopback_or_the_token() -> None:
    async with (
        running_server("--status-token", "peek") as server,
        aiohttp.ClientSession() as http,
    ):
        for path in ("/api/status", "/metrics"):
            async with http.get(server.url + path) as r:  # loopback
                assert r.status == 200
            headers = {"Authorization": "Bearer peek"}
            async with http.get(server.url + path, headers=headers) as r:
                assert r.status == 200
        async with http.get(server.url + "/healthz") as r:  # for load balancers: open
            assert r.status == 200


def _request_from(host: str, headers: dict[str, str] | None = None) -> aiohttp.web.Request:
    # No second host exists here (loopback only), so the rule itself is fed
    # a request whose socket comes from elsewhere.
    transport = mock.Mock()
    transport.get_extra_info.return_value = (host, 40000)
    return make_mocked_request("GET", "/api/status", headers=headers or {}, transport=transport)


@pytest.mark.parametrize(
    ("host", "headers", "token", "allowed"),
    [
        ("127.0.0.1", None, None, True),
        ("::1", None, None, True),
        ("203.0.113.7", None, None, False),
        ("203.0.113.7", {"X-Forwarded-For": "127.0.0.1"}, None, False),
        ("203.0.113.7", {"Authorization": "Bearer peek"}, "peek", True),
        ("203.0.113.7", {"Authorization": "Bearer nope"}, "peek", False),
        ("203.0.113.7", {"Authorization": "Bearer peek"}, None, False),
    ],
)
def test_who_may_observe(
    host: str, headers: dict[str, str] | None, token: str | None, allowed: bool
) -> None:
    assert _may_observe(_request_from(host, headers), Settings(status_token=token)) is allowed
