"""Resume speed (issue 13): socket drop to ``resumed``, and frames lost.

Real processes throughout: signaling servers (``--resume-grace``), one
synthetic worker with its default backoff, and the aiortc test player, each
with a real peer connection. Measured:

- one node: the player's socket cut (proxy), then the worker's; drop to
  ``resumed`` as each side sees it (the worker logs it), p50/p95;
- across nodes: three nodes on Redis behind a round-robin balancer; both
  sockets cut at once, so each resume lands on another node than before;
- a node kill: every socket on node A, A SIGKILLed; drop to ``resumed``, and
  the frames the player lost meanwhile (gaps in the RTP timestamps), beside
  the same count over an equal stretch before the kill (the synthetic game
  stamps frames by the clock, so a frame it skipped under load shows as a
  gap too), and the longest wait between frames.

    .venv/bin/python bench/resume_latency.py            # full run (about two minutes)
    .venv/bin/python bench/resume_latency.py --quick    # CI: under a minute
    .venv/bin/python bench/resume_latency.py --check    # exit 1 when a target is missed
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field

from playcast_testing.balancer import RoundRobinBalancer, round_robin
from playcast_testing.metrics import percentile
from playcast_testing.peer import PeerOptions, TestPeer, Viewer
from playcast_testing.proxy import BlackholeProxy
from playcast_testing.redis_server import running_redis
from playcast_testing.servers import ServerProcess, running_server
from playcast_testing.workers import WorkerProcess, running_worker

TARGETS = {
    "one_node_p95_ms": 500.0,
    "across_nodes_p95_ms": 500.0,
    "node_kill_p95_ms": 500.0,
    "frames_lost_in_node_kill": 0.0,
}
GRACE = 10.0
SERVER: dict[str, float | str] = {
    "heartbeat_interval": 1.0,
    "heartbeat_timeout": 5.0,
    "inactivity_timeout": 600.0,
    "resume_grace": GRACE,
}
# The worker's own defaults (running_worker starts it with fast test backoffs).
DEFAULT_BACKOFF = ("--backoff-base", "0.5", "--backoff-cap", "30", "--restart-delay", "1")
SMALL = ("--width", "360", "--height", "640", "--fps", "30")
RESUMED = r"resumed session=\S+ after (\d+) ms"
LOAD_BEFORE = os.getloadavg()


@dataclass
class Results:
    one_node_ms: list[float] = field(default_factory=list)
    across_nodes_ms: list[float] = field(default_factory=list)
    node_kill_ms: list[float] = field(default_factory=list)
    frames_lost: list[int] = field(default_factory=list)
    # The same count over an equal stretch just before the kill: frames the
    # synthetic game skipped itself (its timestamps follow the clock), not losses.
    frames_lost_before: list[int] = field(default_factory=list)
    longest_gap_ms: list[float] = field(default_factory=list)
    sessions_ended: int = 0

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, values in (
            ("one_node", self.one_node_ms),
            ("across_nodes", self.across_nodes_ms),
            ("node_kill", self.node_kill_ms),
        ):
            out[f"{name}_p50_ms"] = percentile(values, 50)
            out[f"{name}_p95_ms"] = percentile(values, 95)
            out[f"{name}_max_ms"] = max(values, default=float("nan"))
        out["frames_lost_in_node_kill"] = float(sum(self.frames_lost))
        out["frames_skipped_before_kill"] = float(sum(self.frames_lost_before))
        out["longest_gap_in_node_kill_ms"] = max(self.longest_gap_ms, default=float("nan"))
        out["sessions_ended"] = float(self.sessions_ended)
        return out


async def frames_after(viewer: Viewer, count: int) -> None:
    target = viewer.frames_received + count
    await asyncio.wait_for(viewer.wait_frame(lambda f: f.index + 1 >= target), 20)


async def worker_resumed(worker: WorkerProcess, after: int) -> tuple[int, float]:
    index, m = await worker.wait_for_log(RESUMED, after=after, timeout=GRACE + 5)
    return index, float(m.group(1))


@contextlib.asynccontextmanager
async def playing(
    url_worker: str, url_player: str
) -> AsyncIterator[tuple[WorkerProcess, TestPeer]]:
    async with running_worker(url_worker, *DEFAULT_BACKOFF, *SMALL) as worker:
        await worker.wait_registered()
        options = PeerOptions(resume=True, resume_urls=[url_player])
        async with TestPeer.join(url_player, options) as player:
            await frames_after(await player.wait_connected(), 10)
            yield worker, player


def check_playing(worker: WorkerProcess, player: TestPeer) -> int:
    """Sessions that ended: none, if every resume worked."""
    ended: int = worker.count(r"session \S+ ended")
    return ended + (player.shutdown is not None) + (player.resume_failed is not None)


async def one_node(res: Results, rounds: int) -> None:
    async with running_server(**SERVER) as server, contextlib.AsyncExitStack() as stack:
        proxies = []
        for _ in range(2):
            proxy = BlackholeProxy(server.port)
            await proxy.start()
            stack.push_async_callback(proxy.close)
            proxies.append(proxy)
        to_worker, to_player = proxies
        worker, player = await stack.enter_async_context(
            playing(f"ws://127.0.0.1:{to_worker.port}", f"http://127.0.0.1:{to_player.port}")
        )
        viewer = player.viewer
        assert viewer is not None
        mark = 0
        for n in range(rounds):
            to_player.cut()
            await player.wait_resumed(n + 1)
            res.one_node_ms.append(player.resume_latencies[-1] * 1000)
            to_worker.cut()
            mark, ms = await worker_resumed(worker, mark)
            mark += 1
            res.one_node_ms.append(ms)
            await frames_after(viewer, 5)
        res.sessions_ended += check_playing(worker, player)


@contextlib.asynccontextmanager
async def three_nodes(
    first_only: bool,
) -> AsyncIterator[tuple[dict[str, ServerProcess], RoundRobinBalancer]]:
    async with running_redis() as redis, contextlib.AsyncExitStack() as stack:
        nodes: dict[str, ServerProcess] = {}
        for name in "ABC":
            nodes[name] = await stack.enter_async_context(
                running_server(**{**SERVER, "redis": redis.url, "node_id": name, "node_ttl": 2.0})
            )
        for server in nodes.values():
            await server.wait_status(lambda d: len(d.get("nodes", [])) == 3)
        ports = [nodes["A"].port] if first_only else [s.port for s in nodes.values()]
        balancer = await stack.enter_async_context(round_robin(ports))
        yield nodes, balancer


async def across_nodes(res: Results, rounds: int) -> None:
    async with (
        three_nodes(first_only=False) as (_, balancer),
        playing(balancer.ws_base, balancer.url) as (worker, player),
    ):
        viewer = player.viewer
        assert viewer is not None
        mark = 0
        for n in range(rounds):
            balancer.cut()  # both at once; each comes back on the next node in turn
            await player.wait_resumed(n + 1)
            mark, ms = await worker_resumed(worker, mark)
            mark += 1
            res.across_nodes_ms += [player.resume_latencies[-1] * 1000, ms]
            await frames_after(viewer, 5)
        res.sessions_ended += check_playing(worker, player)


async def node_kill(res: Results, rounds: int) -> None:
    for _ in range(rounds):
        async with (
            three_nodes(first_only=True) as (nodes, balancer),
            playing(balancer.ws_base, balancer.url) as (worker, player),
        ):
            viewer = player.viewer
            assert viewer is not None
            balancer.ports = [s.port for s in nodes.values()]
            mark = len(worker.lines)
            killed = time.monotonic()
            nodes["A"].send_signal(signal.SIGKILL)
            await player.wait_resumed(1)
            _, ms = await worker_resumed(worker, mark)
            res.node_kill_ms += [player.resume_latencies[-1] * 1000, ms]
            await frames_after(viewer, 15)
            end = time.monotonic()
            res.frames_lost.append(viewer.frames_lost(killed - 0.2, end))
            span = end - killed + 0.2
            res.frames_lost_before.append(viewer.frames_lost(killed - 0.2 - span, killed - 0.2))
            res.longest_gap_ms.append(viewer.longest_gap(killed, end) * 1000)
            res.sessions_ended += check_playing(worker, player)


async def bench(args: argparse.Namespace) -> Results:
    res = Results()
    await one_node(res, args.rounds)
    await across_nodes(res, args.rounds)
    await node_kill(res, args.kills)
    return res


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer drops and one kill (CI)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    args.rounds = 4 if args.quick else 20
    args.kills = 1 if args.quick else 5
    started = time.monotonic()
    res = asyncio.run(bench(args))
    summary = res.summary()
    print("resume latency: socket drop -> resumed (player and worker), loopback")
    print(
        f"  drops: one node {len(res.one_node_ms)}, across nodes {len(res.across_nodes_ms)}, "
        f"node kills {len(res.frames_lost)} ({len(res.node_kill_ms)} resumes)"
    )
    missed = [] if res.sessions_ended == 0 else ["sessions_ended"]
    for key, value in summary.items():
        target = TARGETS.get(key)
        verdict = ""
        if target is not None:
            ok = value <= target
            verdict = f"  (target <= {target:g}: {'ok' if ok else 'MISSED'})"
            if not ok:
                missed.append(key)
        print(f"  {key:<30} {value:8.1f}{verdict}")
    load = " ".join(f"{x:.2f}" for x in LOAD_BEFORE)
    print(f"  load average before: {load}; after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"  took {time.monotonic() - started:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "raw": asdict(res)}, f, indent=2)
    return 1 if (args.check and missed) or res.sessions_ended else 0


if __name__ == "__main__":
    sys.exit(main())
