"""Resume (issue 13) with real processes: servers, workers, aiortc players.

One node: the player's signaling socket, then the worker's, cut mid-game by
a proxy; both resume and the video never stops. Three nodes on a real Redis
behind a round-robin balancer: the node holding 20 sessions' sockets is
SIGKILLed, and then every node is restarted in turn; no session ends. Only
one session per test carries real media (frames counted through the drop);
the others are scripted members, since only their signaling matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from playcast_testing.balancer import RoundRobinBalancer, round_robin
from playcast_testing.metrics import metric_sum, parse_metrics
from playcast_testing.peer import PeerOptions, TestPeer, Viewer
from playcast_testing.proxy import BlackholeProxy
from playcast_testing.redis_server import running_redis
from playcast_testing.scripted import ResumingMember, ScriptedPeer
from playcast_testing.servers import ServerProcess, running_server
from playcast_testing.workers import WorkerProcess, running_worker

from playcast.protocol import (
    Answer,
    Assigned,
    Error,
    Join,
    Offer,
    Register,
    Registered,
    Resume,
    SessionStart,
    WebrtcConnected,
)

GAME = "com.supercell.clashroyale"
GRACE = 4.0
SERVER: dict[str, float | str] = {
    "heartbeat_interval": 0.5,
    "heartbeat_timeout": 3.0,
    "shutdown_ack_timeout": 1.0,
    "inactivity_timeout": 300.0,
    "resume_grace": GRACE,
}
# node_ttl 2 s: a loaded CI machine must not find a live node dead.
CLUSTER: dict[str, float | str] = {**SERVER, "node_ttl": 2.0, "hello_timeout": 30}
SMALL = ("--width", "180", "--height", "320", "--fps", "15")
SESSIONS = 20


async def frames_after(viewer: Viewer, count: int) -> None:
    """Until ``count`` more frames have arrived from now on."""
    target = viewer.frames_received + count
    await asyncio.wait_for(viewer.wait_frame(lambda f: f.index + 1 >= target), 15)


async def metrics_of(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as r:
        return parse_metrics(await r.text())


def ended(samples: dict[str, float]) -> float:
    return metric_sum(samples, "playcast_sessions_ended_total")


async def test_one_node_both_sockets_cut_mid_game_and_the_video_never_stops() -> None:
    async with running_server(**SERVER) as server, contextlib.AsyncExitStack() as stack:
        to_worker, to_player = BlackholeProxy(server.port), BlackholeProxy(server.port)
        for proxy in (to_worker, to_player):
            await proxy.start()
            stack.push_async_callback(proxy.close)
        worker = await stack.enter_async_context(
            running_worker(f"ws://127.0.0.1:{to_worker.port}", *SMALL)
        )
        await worker.wait_registered()
        via = f"http://127.0.0.1:{to_player.port}"
        player = await stack.enter_async_context(TestPeer.join(via, PeerOptions(resume=True)))
        viewer = await player.wait_connected()
        await frames_after(viewer, 5)
        assert player.resume_token is not None
        started = time.monotonic()

        # The player's socket, cut: it resumes; frames arrive all along.
        assert to_player.cut() == 1
        await player.wait_resumed(1)
        await frames_after(viewer, 10)

        # The worker's socket, cut: it resumes, keeping its game and peer connection.
        mark = len(worker.lines)
        assert to_worker.cut() == 1
        _, resumed = await worker.wait_for_log(r"resumed session=\S+ after (\d+) ms", after=mark)
        await frames_after(viewer, 10)
        # The player's input still reaches the game over the data channel.
        await player.touch(0.5, 0.5)
        await asyncio.wait_for(player.wait_mark(0.5, 0.5), 15)

        # A wrong token over a real socket: refused, closed 1008; the game plays on.
        sid = player.assigned.session_id if player.assigned else ""
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(server.ws_url("client"))
            stranger = ScriptedPeer(ws)
            await stranger.send(Resume(session_id=sid, token="not-the-token"))
            refused = await stranger.expect(Error)
            assert refused.code == "resume_failed"
            assert await stranger.wait_closed() == 1008
            await stranger.close()
        await frames_after(viewer, 5)
        finished = time.monotonic()

        assert viewer.longest_gap(started, finished) < 1.0, "the video stopped"
        assert viewer.frames_lost(started, finished) <= 2
        assert player.shutdown is None and player.resumes == 1
        assert player.resume_latencies[0] < GRACE
        assert int(resumed.group(1)) < GRACE * 1000
        assert worker.count(r"session \S+ ended") == 0, "the worker ended its session"
        assert worker.count(r"resume attempt|resume refused") == 0  # first try each time
        samples = await metrics_of(server.url)
        assert ended(samples) == 0
        assert metric_sum(samples, "playcast_resume_events_total", event="resumed") == 2
        assert metric_sum(samples, "playcast_resume_events_total", event="refused") == 1
        doc = await server.assert_consistent()
        assert [s["phase"] for s in doc["sessions"]] == ["connected"]


# --- three nodes --------------------------------------------------------------


@contextlib.asynccontextmanager
async def node(redis_url: str, name: str) -> AsyncIterator[ServerProcess]:
    async with running_server(**{**CLUSTER, "redis": redis_url, "node_id": name}) as server:
        yield server


async def scripted_session(
    balancer: RoundRobinBalancer, http: aiohttp.ClientSession
) -> tuple[ResumingMember, ResumingMember]:
    """A worker and a player through the balancer, connected, each resuming on a drop."""
    w = ScriptedPeer(await http.ws_connect(balancer.ws_url("worker"), max_msg_size=0))
    await w.send(Register(game=GAME))
    await w.expect(Registered)
    c = ScriptedPeer(await http.ws_connect(balancer.ws_url("client"), max_msg_size=0))
    await c.send(Join())
    assigned = await c.expect(Assigned)
    start = await w.expect(SessionStart)
    sid = assigned.session_id
    assert start.session_id == sid and start.resume_token and assigned.resume_token
    await w.send(Offer(session_id=sid, sdp="offer"))
    await c.expect(Offer)
    await c.send(Answer(session_id=sid, sdp="answer"))
    await w.expect(Answer)
    await w.send(WebrtcConnected(session_id=sid))
    await c.send(WebrtcConnected(session_id=sid))
    members = []
    for role, peer, token in (
        ("worker", w, start.resume_token),
        ("client", c, assigned.resume_token),
    ):
        member = ResumingMember(http, [balancer.ws_url(role)], peer, sid, token, GRACE)
        member.watch()
        members.append(member)
    return members[0], members[1]


@contextlib.asynccontextmanager
async def playing_cluster(
    first_only: bool,
) -> AsyncIterator[
    tuple[
        dict[str, ServerProcess],
        RoundRobinBalancer,
        contextlib.AsyncExitStack,
        list[ResumingMember],
        TestPeer,
        WorkerProcess,
        str,
    ]
]:
    """Three nodes, a balancer, one real media session and 19 scripted ones,
    all playing; ``first_only``: every socket on node A."""
    async with (
        running_redis() as redis,
        contextlib.AsyncExitStack() as nodes_stack,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
        contextlib.AsyncExitStack() as stack,
    ):
        nodes = {n: await nodes_stack.enter_async_context(node(redis.url, n)) for n in "ABC"}
        for server in nodes.values():
            await server.wait_status(lambda d: len(d.get("nodes", [])) == 3)
        ports = [nodes["A"].port] if first_only else [s.port for s in nodes.values()]
        balancer = await stack.enter_async_context(round_robin(ports))
        worker = await stack.enter_async_context(running_worker(balancer.ws_base, *SMALL))
        await worker.wait_registered()
        options = PeerOptions(resume=True, resume_urls=[balancer.url])
        player = await stack.enter_async_context(TestPeer.join(balancer.url, options))
        await frames_after(await player.wait_connected(), 5)
        members: list[ResumingMember] = []
        for _ in range(SESSIONS - 1):
            members.extend(await scripted_session(balancer, http))
        for member in members:
            stack.push_async_callback(member.stop)
        # (the last session's webrtc_connected may still be on its way)
        await nodes["B"].wait_status(
            lambda d: (
                len(d["sessions"]) == SESSIONS
                and all(s["phase"] == "connected" for s in d["sessions"])
            )
        )
        balancer.ports = [s.port for s in nodes.values()]
        yield nodes, balancer, nodes_stack, members, player, worker, redis.url


async def node_docs(nodes: dict[str, ServerProcess]) -> list[dict[str, Any]]:
    docs = []
    async with aiohttp.ClientSession() as http:
        for server in nodes.values():
            async with http.get(f"{server.url}/api/status?scope=node") as r:
                docs.append(await r.json())
    return docs


async def all_attached(
    nodes: dict[str, ServerProcess], members: list[ResumingMember] = ()
) -> list[dict[str, Any]]:
    """Until every session's two members are live on some node: nobody away.
    Returns the sessions (each node's own snapshot, merged)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        docs = await node_docs(nodes)
        workers = {w["id"] for d in docs for w in d["workers"]}
        clients = {c["id"] for d in docs for c in d["clients"]}
        sessions = {s["id"]: s for d in docs for s in d["sessions"]}
        away = [
            (s["id"], s["worker_node"], s["client_node"])
            for s in sessions.values()
            if s["worker_id"] not in workers or s["client_id"] not in clients
        ]
        if len(sessions) == SESSIONS and not away:
            return list(sessions.values())
        assert loop.time() < deadline, (
            len(sessions),
            away,
            [(m.session_id, m.history[-4:]) for m in members if m.failed or m.ended],
        )
        await asyncio.sleep(0.05)  # /api/status has no push channel


def assert_nothing_ended(
    members: list[ResumingMember], player: TestPeer, worker: WorkerProcess
) -> None:
    assert [m.ended for m in members if m.ended] == []
    assert [m.failed for m in members if m.failed] == []
    assert player.shutdown is None and player.resume_failed is None
    assert worker.count(r"session \S+ ended") == 0, "the real worker ended its session"


async def test_a_killed_node_s_twenty_sessions_all_resume_on_the_others() -> None:
    async with playing_cluster(first_only=True) as (nodes, _, __, members, player, worker, ___):
        viewer = player.viewer
        assert viewer is not None
        mark = len(worker.lines)
        killed = time.monotonic()
        nodes.pop("A").send_signal(signal.SIGKILL)
        for member in members:
            await member.wait_resumes(1)
        await player.wait_resumed(1)
        await worker.wait_for_log(r"resumed session=", after=mark)
        await all_attached(nodes)
        # Past the grace (and the dead node's discovery): proving that nothing
        # ends needs the deadlines that could end it to pass.
        await asyncio.sleep(max(0.0, killed + GRACE + 1.5 - time.monotonic()))
        await frames_after(viewer, 5)
        finished = time.monotonic()
        assert max(m.latencies[0] for m in members) < GRACE
        assert viewer.longest_gap(killed, finished) < 1.0, "the video stopped"
        assert_nothing_ended(members, player, worker)
        sessions = await all_attached(nodes)
        assert all(s["phase"] == "connected" for s in sessions)
        for server in nodes.values():
            assert ended(await metrics_of(server.url)) == 0, server.url


async def test_a_rolling_restart_of_all_three_nodes_ends_no_session() -> None:
    async with playing_cluster(first_only=False) as (
        nodes,
        balancer,
        nodes_stack,
        members,
        player,
        worker,
        redis_url,
    ):
        viewer = player.viewer
        assert viewer is not None
        started = time.monotonic()
        for name in "ABC":
            old = nodes.pop(name)
            assert ended(await metrics_of(old.url)) == 0, name
            # SIGTERM with others alive: everyone there is told reconnect, and
            # the node leaves once other nodes have taken its members.
            assert await old.stop(signal.SIGTERM) == 0
            balancer.ports = [s.port for s in nodes.values()]
            fresh = await nodes_stack.enter_async_context(node(redis_url, name))
            nodes[name] = fresh
            await fresh.wait_status(lambda d: len(d.get("nodes", [])) == 3)
            balancer.ports = [s.port for s in nodes.values()]
            await all_attached(nodes, members)
        await frames_after(viewer, 5)
        finished = time.monotonic()
        assert all(m.resumes >= 1 for m in members)  # every node held some: all moved
        assert viewer.longest_gap(started, finished) < 1.0, "the video stopped"
        assert_nothing_ended(members, player, worker)
        for server in nodes.values():
            assert ended(await metrics_of(server.url)) == 0, server.url
