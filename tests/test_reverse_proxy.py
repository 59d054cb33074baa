"""Behind the nginx configs Playcast ships, with Debian's nginx in front of
real servers (playcast_testing.nginx says what a test changes in them: TLS
and ports only).

What the internet may reach is the page and the two sockets: never
/api/status (every peer's address; in a cluster, a fan-out to every node),
/metrics or /healthz (node ids and counts). Monitoring reaches each node's
own from its private network, with the status token. Every request carries
the client's address (X-Forwarded-For), so with ``--trusted-proxy`` the
server counts, checks and logs the client, not nginx; and a request that
says it was forwarded is never a loopback observer, trusted or not. With
Redis down in a cluster every node refuses workers with 503, which must not
take the nodes out of nginx's rotation: the page still loads and a player
is told why by the app (``service_unavailable``), never by nginx's 502.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence

import aiohttp
import pytest
from playcast_testing.metrics import parse_metrics
from playcast_testing.nginx import CLUSTER, SINGLE, Nginx, running_nginx
from playcast_testing.rawws import OP_TEXT, RawWebSocket, UpgradeRefused, frame
from playcast_testing.redis_server import RedisServer, running_redis
from playcast_testing.servers import ServerProcess, running_server

GAME = "com.supercell.clashroyale"
TOKEN = "status-s3cret"
MONITOR = "127.0.0.2"  # stands in for the sample's monitoring network (10.0.0.0/8)
# Every way to name what only operators may read, as nginx normalizes them.
OBSERVERS = [
    "/api/status",
    "/api/status?check=1",
    "/api/status?scope=node",
    "//api/status",
    "/api/%73tatus",
    "/static/../api/status",
    "/metrics",
    "/metrics?x=1",
    "/healthz",
]
NODE_VIEWS = ["/nodes/8081/metrics", "/nodes/8082/healthz", "/nodes/8083/api/status"]


async def get(
    url: str, *, local: str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    connector = aiohttp.TCPConnector(local_addr=(local, 0)) if local else aiohttp.TCPConnector()
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.get(url, headers=headers, allow_redirects=False) as r,
    ):
        return r.status, await r.text()


async def join(port: int, *, local: str | None = None) -> dict[str, object]:
    """A player's socket through ``port``: join, and the server's answer."""
    ws = await RawWebSocket.connect(port, local_host=local)
    try:
        ws.send(frame(OP_TEXT, b'{"type": "join"}'))
        while True:
            doc = (await ws.read_frame()).json()
            if doc["type"] != "ping":
                return doc
    finally:
        ws.abort()


async def refused_observers(proxy: Nginx, paths: Sequence[str], node_ids: Sequence[str]) -> None:
    for path in paths:
        status, body = await get(proxy.url + path)
        assert status == 403, f"{path} through nginx: {status} {body[:200]!r}"
        assert not any(node in body for node in node_ids), f"{path} names a node"


@contextlib.asynccontextmanager
async def cluster(
    redis: RedisServer, *flags: str, **settings: float | str
) -> AsyncIterator[list[ServerProcess]]:
    async with contextlib.AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                running_server(*flags, redis=redis.url, node_id=f"n{i}", **settings)
            )
            for i in (1, 2, 3)
        ]
        yield nodes


# --- one node ----------------------------------------------------------------


async def test_through_nginx_the_page_and_sockets_work_and_observers_are_refused() -> None:
    async with (
        running_server(node_id="n1") as server,
        running_nginx(SINGLE, [server.port]) as proxy,
    ):
        status, page = await get(proxy.url + "/")
        assert status == 200 and "<title>Playcast</title>" in page
        assert (await get(proxy.url + "/static/app.js"))[0] == 200
        answer = await join(proxy.port)
        assert (answer["type"], answer["reason"]) == ("rejected", "no_worker_available")
        await refused_observers(proxy, OBSERVERS, ["n1"])


async def test_monitoring_reads_metrics_and_health_with_the_status_token() -> None:
    async with (
        running_server(node_id="n1", status_token=TOKEN) as server,
        running_nginx(SINGLE, [server.port], monitor=MONITOR) as proxy,
    ):
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        status, text = await get(proxy.url + "/metrics", local=MONITOR, headers=bearer)
        assert status == 200 and "playcast_connections" in text
        status, text = await get(proxy.url + "/healthz", local=MONITOR)
        assert status == 200 and json.loads(text)["ok"] is True
        # From anywhere else, nginx refuses it.
        assert (await get(proxy.url + "/metrics", headers=bearer))[0] == 403


async def test_behind_nginx_metrics_need_the_status_token() -> None:
    """nginx reaches the server from loopback, but says whom for: the
    server must not take its own proxy for a local operator (needs the
    server's side of issue 25)."""
    async with (
        running_server(node_id="n1", status_token=TOKEN) as server,
        running_nginx(SINGLE, [server.port], monitor=MONITOR) as proxy,
    ):
        status, body = await get(proxy.url + "/metrics", local=MONITOR)
        assert status == 403, f"/metrics without the token: {status} {body[:100]!r}"


async def test_behind_a_trusted_nginx_each_client_is_counted_and_logged_as_itself() -> None:
    """``--trusted-proxy``: the per-IP cap counts each client's own address
    (nginx's X-Forwarded-For), not nginx's, and what a client claims of
    itself changes nothing (needs the server's side of issue 25)."""
    async with (
        running_server(
            "--trusted-proxy", "127.0.0.1/32", max_connections_per_ip=1, hello_timeout=60
        ) as server,
        running_nginx(SINGLE, [server.port]) as proxy,
    ):
        first = await RawWebSocket.connect(proxy.port, local_host="127.0.0.2")
        try:
            # Another client, behind the same nginx: its own address, its own count.
            answer = await join(proxy.port, local="127.0.0.3")
            assert answer["type"] == "rejected" and answer["reason"] == "no_worker_available"
            await server.wait_for_log(r"client_rejected .*remote=127\.0\.0\.3\b")
            # The first client again, claiming another address: still itself.
            with pytest.raises(UpgradeRefused) as refused:
                await RawWebSocket.connect(
                    proxy.port, local_host="127.0.0.2", headers={"X-Forwarded-For": "127.0.0.9"}
                )
            assert refused.value.status == 429
        finally:
            first.abort()


# --- without nginx: what says "forwarded" is never local ------------------------


@pytest.mark.parametrize("trusted", [False, True], ids=["untrusted", "trusted"])
@pytest.mark.parametrize(
    "header",
    [{"X-Forwarded-For": "127.0.0.1"}, {"Forwarded": "for=127.0.0.1"}],
    ids=["x-forwarded-for", "forwarded"],
)
@pytest.mark.parametrize("path", ["/api/status", "/metrics"])
async def test_a_forwarded_request_is_never_a_loopback_observer(
    trusted: bool, header: dict[str, str], path: str
) -> None:
    """From loopback, but forwarded for someone (even "127.0.0.1"): the
    request came through a proxy, so its client is not on this host
    (needs the server's side of issue 25)."""
    flags = ("--trusted-proxy", "127.0.0.1/32") if trusted else ()
    async with running_server(*flags) as server:
        assert (await get(server.url + path))[0] == 200  # loopback, not forwarded
        status, body = await get(server.url + path, headers=header)
        assert status == 403, f"{path} with {header}: {status} {body[:100]!r}"


# --- a cluster -------------------------------------------------------------------


async def test_a_cluster_behind_nginx_refuses_observers_and_monitoring_reaches_each_node() -> None:
    async with (
        running_redis() as redis,
        cluster(redis, status_token=TOKEN) as nodes,
        running_nginx(CLUSTER, [n.port for n in nodes], monitor=MONITOR) as proxy,
    ):
        # Through it, a worker registers and a player is paired with it.
        worker = await RawWebSocket.connect(proxy.port, "/ws/worker")
        try:
            worker.send(frame(OP_TEXT, json.dumps({"type": "register", "game": GAME}).encode()))
            assert (await worker.read_frame()).json()["type"] == "registered"
            assert (await join(proxy.port))["type"] == "assigned"
        finally:
            worker.abort()
        await refused_observers(proxy, OBSERVERS, ["n1", "n2", "n3"])
        for path in NODE_VIEWS:  # from elsewhere than the monitoring network
            assert (await get(proxy.url + path))[0] == 403, path
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        for i, port in enumerate((8081, 8082, 8083), 1):
            status, text = await get(
                f"{proxy.url}/nodes/{port}/metrics", local=MONITOR, headers=bearer
            )
            assert status == 200, (port, status, text[:200])
            assert any(f'node="n{i}"' in key for key in parse_metrics(text)), port
            # Open to the load balancer's checks; the node's id and counts only
            # to an observer (the token).
            status, text = await get(f"{proxy.url}/nodes/{port}/healthz", local=MONITOR)
            assert status == 200 and json.loads(text) == {"ok": True}
            status, text = await get(
                f"{proxy.url}/nodes/{port}/healthz", local=MONITOR, headers=bearer
            )
            assert status == 200 and json.loads(text)["node"] == f"n{i}"


async def test_with_redis_down_the_page_loads_and_a_player_is_told_why() -> None:
    async with (
        running_redis() as redis,
        cluster(redis, node_ttl=2, hello_timeout=60) as nodes,
        running_nginx(CLUSTER, [n.port for n in nodes]) as proxy,
    ):
        marks = [len(node.lines) for node in nodes]
        await redis.kill()
        for node, mark in zip(nodes, marks, strict=True):  # at its next exchange with Redis
            await node.wait_for_log(r"redis unreachable", after=mark)
            assert (await get(node.url + "/healthz"))[0] == 503
        # Workers (re)connecting meanwhile: every node refuses them with 503.
        for _ in range(3):
            with pytest.raises(UpgradeRefused) as refused:
                await RawWebSocket.connect(proxy.port, "/ws/worker")
            assert refused.value.status == 503, refused.value.head
        # Right after, a new player: the page, then the app's own answer.
        status, page = await get(proxy.url + "/")
        assert status == 200 and "<title>Playcast</title>" in page, (status, page[:200])
        assert (await get(proxy.url + "/static/app.js"))[0] == 200
        answer = await join(proxy.port)
        assert (answer["type"], answer["reason"]) == ("rejected", "service_unavailable")
        assert "no live upstreams" not in proxy.error_log()
