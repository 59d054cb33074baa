"""Three signaling nodes as real processes on one real redis-server.

A worker on one node and its player on another complete the whole protocol;
every shutdown reason reaches both; 100 players for 10 workers make exactly
10 pairings; the line keeps arrival order across nodes; and the failure
table of docs/cluster.md holds: a node killed, a node cut off from Redis,
Redis killed and started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from playcast_testing.proxy import BlackholeProxy
from playcast_testing.redis_server import RedisServer, running_redis
from playcast_testing.scripted import ScriptedPeer, connect
from playcast_testing.servers import ServerProcess, running_server

from playcast.protocol import (
    Answer,
    Assigned,
    Candidate,
    IceCandidate,
    Join,
    Leave,
    Offer,
    Queued,
    Reconnect,
    Register,
    Registered,
    Rejected,
    Resume,
    Resumed,
    SessionStart,
    Shutdown,
    ShutdownAck,
    WebrtcConnected,
    WebrtcFailed,
)

GAME = "com.supercell.clashroyale"
FAST: dict[str, float | str] = {
    "heartbeat_interval": 0.2,
    "heartbeat_timeout": 1.0,
    "shutdown_ack_timeout": 1.0,
    "node_ttl": 1.0,
    "hello_timeout": 30,
}
CAND = Candidate(candidate="candidate:1 1 udp 1 127.0.0.1 9 typ host", sdp_mid="0")


@contextlib.asynccontextmanager
async def cluster(
    redis_url: str, names: str = "ABC", **settings: float | str
) -> AsyncIterator[dict[str, ServerProcess]]:
    urls = {name: settings.pop(f"redis_{name}", redis_url) for name in names}
    async with contextlib.AsyncExitStack() as stack:
        nodes = {}
        for name in names:
            nodes[name] = await stack.enter_async_context(
                running_server(**{**FAST, **settings, "redis": str(urls[name]), "node_id": name})
            )
        # Every node has announced itself before the test starts.
        for node in nodes.values():
            await node.wait_status(lambda d: len(d.get("nodes", [])) == len(nodes))
        yield nodes


async def register(node: ServerProcess, stack: contextlib.AsyncExitStack) -> ScriptedPeer:
    worker = await stack.enter_async_context(connect(node.ws_url("worker")))
    await worker.send(Register(game=GAME))
    await worker.expect(Registered)
    return worker


async def join(node: ServerProcess, stack: contextlib.AsyncExitStack) -> ScriptedPeer:
    client = await stack.enter_async_context(connect(node.ws_url("client")))
    await client.send(Join())
    return client


async def handshake(w: ScriptedPeer, c: ScriptedPeer) -> str:
    assigned = await c.expect(Assigned)
    start = await w.expect(SessionStart)
    sid = assigned.session_id
    assert start.session_id == sid and start.client_id == assigned.client_id
    await w.send(Offer(session_id=sid, sdp="offer"))
    assert await c.expect(Offer) == Offer(session_id=sid, sdp="offer")
    await w.send(IceCandidate(session_id=sid, candidate=CAND))
    assert await c.expect(IceCandidate) == IceCandidate(session_id=sid, candidate=CAND)
    await c.send(Answer(session_id=sid, sdp="answer"))
    assert await w.expect(Answer) == Answer(session_id=sid, sdp="answer")
    await c.send(IceCandidate(session_id=sid, candidate=None))
    assert await w.expect(IceCandidate) == IceCandidate(session_id=sid, candidate=None)
    await w.send(WebrtcConnected(session_id=sid))
    await c.send(WebrtcConnected(session_id=sid))
    return sid


async def consistent(nodes: dict[str, ServerProcess]) -> dict[str, Any]:
    docs = []
    for node in nodes.values():
        async with aiohttp.ClientSession() as http, http.get(f"{node.url}/api/status?check=1") as r:
            doc: dict[str, Any] = await r.json()
        assert doc["violations"] == [], (node.url, doc["violations"])
        docs.append(doc)
    return docs[0]


async def test_worker_on_a_player_on_b_the_whole_protocol() -> None:
    async with (
        running_redis() as redis,
        cluster(redis.url) as nodes,
        contextlib.AsyncExitStack() as stack,
    ):
        w = await register(nodes["A"], stack)
        c = await join(nodes["B"], stack)
        sid = await handshake(w, c)
        doc = await nodes["C"].wait_status(
            lambda d: any(s["phase"] == "connected" for s in d["sessions"])
        )
        (session,) = doc["sessions"]
        assert (session["id"], session["worker_node"], session["client_node"]) == (
            sid,
            "A",
            "B",
        )
        assert {n["id"] for n in doc["nodes"]} == {"A", "B", "C"}
        assert [w_["node"] for w_ in doc["workers"]] == ["A"]
        await consistent(nodes)
        await c.send(Leave())
        shutdown = await w.expect(Shutdown)
        assert shutdown.reason == "client_left"
        await w.send(ShutdownAck(ok=True, detail=""))
        assert await w.wait_closed() == 1000
        metrics = await nodes["B"].metrics()
        assert 'playcast_sessions_ended_total{node="B",reason="client_left"} 1.0' in metrics


REASONS = [
    ("leave", "client_left", None),
    ("worker_closes", None, "worker_failed"),
    ("client_closes", "client_failed", None),
    ("webrtc_failed", "handshake_failed", "handshake_failed"),
    ("handshake_timeout", "handshake_timeout", "handshake_timeout"),
    ("inactivity", "inactivity_timeout", "inactivity_timeout"),
    ("worker_silent", "heartbeat_timeout", "worker_failed"),
    ("client_silent", "client_failed", "heartbeat_timeout"),
    ("stop_worker_node", "server_shutdown", "worker_failed"),
]


@pytest.mark.parametrize(("case", "to_worker", "to_client"), REASONS, ids=[r[0] for r in REASONS])
async def test_every_reason_reaches_both_sides_across_nodes(
    case: str, to_worker: str | None, to_client: str | None
) -> None:
    settings: dict[str, float | str] = {
        "handshake_timeout": 1.5,
        "inactivity_timeout": 1.5,
        "inactivity_warning": 0,
    }
    async with (
        running_redis() as redis,
        cluster(redis.url, "AB", **settings) as nodes,
        contextlib.AsyncExitStack() as stack,
    ):
        w = await stack.enter_async_context(connect(nodes["A"].ws_url("worker")))
        await w.send(Register(game=GAME))
        await w.expect(Registered)
        c = await stack.enter_async_context(connect(nodes["B"].ws_url("client")))
        await c.send(Join())
        if case in ("webrtc_failed", "handshake_timeout"):
            sid = (await c.expect(Assigned)).session_id
            await w.expect(SessionStart)
        else:
            sid = await handshake(w, c)
        if case == "leave":
            await c.send(Leave())
        elif case == "worker_closes":
            await w.close()
        elif case == "client_closes":
            await c.close()
        elif case == "webrtc_failed":
            await w.send(WebrtcFailed(session_id=sid, reason="no path", kind="ice"))
        elif case == "stop_worker_node":
            nodes["A"].send_signal(signal.SIGTERM)
        elif case == "worker_silent":
            w.auto_pong = False  # from now on: silent
        elif case == "client_silent":
            c.auto_pong = False
        for peer, reason in ((w, to_worker), (c, to_client)):
            if reason is None:
                continue
            shutdown = await peer.expect(Shutdown, timeout=10)
            assert shutdown.reason == reason, (case, shutdown)
        if case != "stop_worker_node":
            await nodes["B"].wait_status(lambda d: not d["sessions"])
            await consistent(nodes)


async def test_one_hundred_players_on_three_nodes_for_ten_workers() -> None:
    # A hundred sockets at once can hold a node's loop past a 1 s TTL on a busy
    # machine: its key lapses, a pairing skips its workers as dead, and fewer
    # than ten are assigned. Liveness is not this test's subject.
    async with running_redis() as redis, cluster(redis.url, node_ttl=5.0) as nodes:
        names = list(nodes)
        async with contextlib.AsyncExitStack() as stack:
            workers = [await register(nodes[names[i % 3]], stack) for i in range(10)]
            clients = await asyncio.gather(
                *(
                    stack.enter_async_context(connect(nodes[names[i % 3]].ws_url("client")))
                    for i in range(100)
                )
            )
            await asyncio.gather(*(c.send(Join()) for c in clients))
            answers = await asyncio.gather(*(c.recv() for c in clients))
            assigned = [a for a in answers if isinstance(a, Assigned)]
            rejected = [a for a in answers if isinstance(a, Rejected)]
            assert len(assigned) == 10 and len(rejected) == 90
            assert len({a.worker_id for a in assigned}) == 10
            starts = await asyncio.gather(*(w.expect(SessionStart) for w in workers))
            assert {s.session_id for s in starts} == {a.session_id for a in assigned}
            await consistent(nodes)


async def test_the_line_keeps_arrival_order_across_nodes() -> None:
    async with running_redis() as redis, cluster(redis.url, queue_limit=10) as nodes:
        names = list(nodes)
        async with contextlib.AsyncExitStack() as stack:
            first_worker = await register(nodes["A"], stack)
            first = await join(nodes["B"], stack)
            await first.expect(Assigned)
            waiting = []
            for i in range(6):
                c = await join(nodes[names[i % 3]], stack)
                queued = await c.expect(Queued)
                assert queued.position == i + 1
                waiting.append(c)
            order = []
            for i in range(6):  # a worker frees up six times, on any node
                await register(nodes[names[(i + 1) % 3]], stack)
                got = await asyncio.gather(*(_assigned_soon(c) for c in waiting))
                (index,) = [j for j, a in enumerate(got) if a]
                order.append(waiting.index(waiting[index]))
                waiting.pop(index)
            assert order == [0, 0, 0, 0, 0, 0]  # always the head of the line
            del first_worker


async def _assigned_soon(peer: ScriptedPeer) -> bool:
    """True if ``peer`` is assigned now; queued updates are read past."""
    try:
        while True:
            msg = await peer.recv(timeout=0.5)
            if isinstance(msg, Assigned):
                return True
    except TimeoutError:
        return False


async def started(
    nodes: dict[str, ServerProcess], stack: contextlib.AsyncExitStack
) -> tuple[ScriptedPeer, ScriptedPeer, str]:
    """A worker on A, its player on B, their session started."""
    w = await register(nodes["A"], stack)
    c = await join(nodes["B"], stack)
    sid = (await c.expect(Assigned)).session_id
    await w.expect(SessionStart)
    return w, c, sid


async def redis_client(url: str, stack: contextlib.AsyncExitStack) -> aioredis.Redis:
    r = aioredis.Redis.from_url(url)
    stack.push_async_callback(r.aclose)
    return r


async def test_a_dropped_bus_subscription_loses_nothing() -> None:
    """Redis pub/sub hands a message only to whoever is subscribed then:
    the nodes' subscriptions are cut again and again while a worker on A
    sends its player on B a stream of candidates. Each node, subscribed
    again, asks the others for what came meanwhile (busorder): the player
    gets every candidate, once, in order."""
    async with (
        running_redis() as redis,
        cluster(redis.url, names="AB") as nodes,
        contextlib.AsyncExitStack() as stack,
    ):
        w, c, sid = await started(nodes, stack)
        await w.send(Offer(session_id=sid, sdp="offer"))
        await c.expect(Offer)
        r = await redis_client(redis.url, stack)
        sent = []
        for cut in range(5):
            marks = {n: len(node.lines) for n, node in nodes.items()}
            assert await r.client_kill_filter(_type="pubsub") == 2  # one a node
            for i in range(20):
                cand = Candidate(candidate=f"candidate:{cut * 20 + i} 1 udp 1 10.0.0.1 9 typ host")
                sent.append(cand.candidate)
                await w.send(IceCandidate(session_id=sid, candidate=cand))
            for n, node in nodes.items():  # each subscribed again, and asked the other
                await node.find_line("bus_resend_asked .*why=subscribed_again", after=marks[n])
        got = []
        for _ in sent:
            cand = (await c.expect(IceCandidate)).candidate
            assert cand is not None
            got.append(cand.candidate)
        assert got == sent
        await consistent(nodes)


async def test_garbage_on_a_nodes_channel_is_logged_and_loses_nothing() -> None:
    """Anything published on a node's channel that is not a bus entry (a
    stray client, a node of another version) is dropped with an error line;
    the node's sessions go on."""
    async with (
        running_redis() as redis,
        cluster(redis.url, names="AB") as nodes,
        contextlib.AsyncExitStack() as stack,
    ):
        w, c, sid = await started(nodes, stack)
        r = await redis_client(redis.url, stack)
        for junk in (b"not an entry", b"7 x.1 A\nm{not json", b"0 x.1 A\nq[]", b"\xff\xfe"):
            assert await r.publish("pc:bus:B", junk) == 1
        await w.send(Offer(session_id=sid, sdp="offer"))
        assert await c.expect(Offer) == Offer(session_id=sid, sdp="offer")
        await nodes["B"].find_line("unreadable bus entry dropped")
        # The second reads as an entry of a numbering A never used: held, never
        # fed to the core; A's real numbering starts over it.
        assert nodes["B"].count("unreadable bus entry dropped") == 3
        await consistent(nodes)


async def test_a_redis_that_refuses_client_commands_still_carries_the_bus() -> None:
    """A managed Redis may refuse CLIENT (here an ACL user without it): the
    nodes cannot skip their PUBLISH answers, read them instead, and the
    whole protocol still crosses nodes."""
    async with running_redis() as redis:
        admin = aioredis.Redis.from_url(redis.url)
        await admin.execute_command(
            "ACL", "SETUSER", "playcast", "on", ">secret", "~*", "&*", "+@all", "-client"
        )
        url = f"redis://playcast:secret@127.0.0.1:{redis.port}/0"
        async with cluster(url, names="AB") as nodes, contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(admin.aclose)
            w = await register(nodes["A"], stack)
            c = await join(nodes["B"], stack)
            await handshake(w, c)
            await c.send(Leave())
            assert (await w.expect(Shutdown)).reason == "client_left"
            await consistent(nodes)
            stats = await admin.info("commandstats")
            reply = stats.get("cmdstat_client|reply", {})
            assert reply.get("calls", 0) == 0 and reply.get("rejected_calls", 0) >= 2
            assert stats["cmdstat_publish"]["calls"] > 0  # answered, and read


async def test_a_killed_node_ends_its_sessions_on_the_others() -> None:
    async with (
        running_redis() as redis,
        cluster(redis.url) as nodes,
        contextlib.AsyncExitStack() as stack,
    ):
        w_a = await register(nodes["A"], stack)  # A's worker, B's player
        c_b = await join(nodes["B"], stack)
        await handshake(w_a, c_b)
        w_b = await register(nodes["B"], stack)  # B's worker, A's player
        c_a = await join(nodes["A"], stack)
        await handshake(w_b, c_a)
        idle = await register(nodes["A"], stack)
        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        nodes["A"].send_signal(signal.SIGKILL)
        assert (await c_b.expect(Shutdown, timeout=10)).reason == "worker_failed"
        assert (await w_b.expect(Shutdown, timeout=10)).reason == "client_failed"
        assert loop.time() - killed_at < 3.0
        del nodes["A"]
        doc = await nodes["C"].wait_status(lambda d: not d["sessions"] and not d["workers"])
        assert [n["id"] for n in doc["nodes"]] == ["B", "C"] or len(doc["nodes"]) == 2
        late = await join(nodes["C"], stack)  # A's idle worker is not handed out
        assert (await late.expect(Rejected)).reason == "no_worker_available"
        await consistent(nodes)
        del idle


async def test_a_node_cut_off_from_redis() -> None:
    async with running_redis() as redis:
        proxy = BlackholeProxy(redis.port)
        await proxy.start()
        try:
            via = f"redis://127.0.0.1:{proxy.port}/0"
            async with (
                cluster(redis.url, redis_B=via) as nodes,
                contextlib.AsyncExitStack() as stack,
            ):
                w_a = await register(nodes["A"], stack)  # A's worker, B's player
                c_b = await join(nodes["B"], stack)
                await handshake(w_a, c_b)
                w_b = await register(nodes["B"], stack)  # all on B
                c_b2 = await join(nodes["B"], stack)
                await handshake(w_b, c_b2)
                proxy.blackhole()
                assert (await c_b.expect(Shutdown, timeout=10)).reason == "worker_failed"
                assert (await w_a.expect(Shutdown, timeout=10)).reason == "client_failed"
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(f"{nodes['B'].url}/healthz") as r,
                ):
                    assert r.status == 503
                refused = await join(nodes["B"], stack)
                assert (await refused.expect(Rejected)).reason == "service_unavailable"
                await asyncio.sleep(0)  # B's own session is still served:
                await c_b2.send(Leave())
                assert (await w_b.expect(Shutdown)).reason == "client_left"
                proxy.restore()
                await _healthy(nodes["B"])
                await consistent({k: v for k, v in nodes.items() if k != "B"})
        finally:
            await proxy.close()


async def test_redis_killed_and_started_again() -> None:
    async with (
        running_redis() as redis,
        cluster(redis.url, "AB") as nodes,
        contextlib.AsyncExitStack() as stack,
    ):
        w = await register(nodes["A"], stack)
        c = await join(nodes["A"], stack)
        await handshake(w, c)  # a session all on A
        await redis.kill()
        for node in nodes.values():
            await _unhealthy(node)
        refused = await join(nodes["B"], stack)
        assert (await refused.expect(Rejected)).reason == "service_unavailable"
        await c.send(Leave())  # A alone still serves its own session
        assert (await w.expect(Shutdown)).reason == "client_left"
        await redis.start()
        for node in nodes.values():
            await _healthy(node)
        # A new Redis has no scripts: each node loads them on its new
        # connection, ahead of its first batch.
        w2 = await register(nodes["B"], stack)
        c2 = await join(nodes["A"], stack)
        await handshake(w2, c2)
        # Flushed under live connections, the first EVALSHA is refused
        # (NOSCRIPT): the node loads them and sends it again.
        admin = aioredis.Redis.from_url(redis.url)
        await admin.script_flush()
        await admin.aclose()
        w3 = await register(nodes["A"], stack)
        c3 = await join(nodes["B"], stack)
        await handshake(w3, c3)
        await consistent(nodes)


async def test_the_cluster_check_finds_what_no_other_node_can_reach() -> None:
    """A worker available on its node but in no pool, a player waiting on
    its node but in no line: stranded, though each node's own records agree.
    ``?check=1`` names both (here made by hand, behind the nodes' backs)."""
    async with (
        running_redis() as redis,
        cluster(redis.url, "AB", queue_limit=5) as nodes,
        contextlib.AsyncExitStack() as stack,
    ):
        admin = aioredis.Redis.from_url(redis.url)
        await register(nodes["A"], stack)
        await consistent(nodes)
        (wid,) = await admin.zrange(f"pc:pool:{GAME}", 0, -1)
        await admin.delete(f"pc:pool:{GAME}")
        queued = await join(nodes["B"], stack)  # finds no worker: in line
        assert (await queued.expect(Queued)).position == 1
        (cid,) = await admin.zrange(f"pc:line:{GAME}", 0, -1)
        await admin.delete(f"pc:line:{GAME}")
        await admin.aclose()
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{nodes['A'].url}/api/status?check=1") as r,
        ):
            violations = (await r.json())["violations"]
        assert sorted(violations) == [
            f"client {cid.decode()} waits but is in no line",
            f"worker {wid.decode()} is available but in no pool",
        ]


async def _healthy(node: ServerProcess) -> None:
    await _health(node, 200)


async def _unhealthy(node: ServerProcess) -> None:
    await _health(node, 503)


async def _health(node: ServerProcess, status: int) -> None:
    async with asyncio.timeout(15), aiohttp.ClientSession() as http:
        while True:
            async with http.get(f"{node.url}/healthz") as r:
                if r.status == status:
                    return
            await asyncio.sleep(0.05)


__all__ = ["RedisServer"]


async def test_a_node_stopped_while_others_live_exits_once_its_members_moved() -> None:
    """SIGTERM with resume on: reconnect, the members resume on the other
    node, and the stopped node exits then (it used to hang in its bus loop:
    redis-py swallowed the cancellation of the blocking XREAD)."""
    async with (
        running_redis() as redis,
        cluster(redis.url, "AB", resume_grace=5.0) as nodes,
        contextlib.AsyncExitStack() as stack,
    ):
        w = await register(nodes["A"], stack)
        c = await join(nodes["A"], stack)
        assigned = await c.expect(Assigned)
        start = await w.expect(SessionStart)
        assert assigned.resume_token and start.resume_token
        # A learns of B on its next liveness round (node_ttl / 4): no event says so.
        await asyncio.sleep(float(FAST["node_ttl"]) / 2)
        loop = asyncio.get_running_loop()
        stopped_at = loop.time()
        nodes["A"].send_signal(signal.SIGTERM)
        assert isinstance(await w.recv(), Reconnect) and isinstance(await c.recv(), Reconnect)
        for token, role in ((start.resume_token, "worker"), (assigned.resume_token, "client")):
            back = await stack.enter_async_context(connect(nodes["B"].ws_url(role)))
            await back.send(Resume(session_id=assigned.session_id, token=token))
            assert (await back.expect(Resumed)).session_id == assigned.session_id
        assert await nodes["A"].stop(None, timeout=4.0) == 0
        assert loop.time() - stopped_at < 4.0  # not the grace's bound: handed over
        del nodes["A"]
        doc = await consistent(nodes)
        assert [s["id"] for s in doc["sessions"]] == [assigned.session_id]
