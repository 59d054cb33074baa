"""Soak: the real system, with sessions started and ended by every cause, for minutes.

Starts a real signaling server process and N real synthetic worker processes
(small video, so a 2-core machine copes), then keeps every worker busy with
players that end their sessions in every way the protocol knows:

- ``leave`` / ``drop``: the aiortc test peer plays (video up, a touch seen in
  the decoded picture), then sends ``leave`` or closes its socket;
- ``scripted_leave`` / ``scripted_drop``: a scripted protocol client joins and,
  once the worker's offer arrives, leaves or drops its TCP link without a
  WebSocket close (cheap sessions, ended mid-handshake);
- ``inactivity``: the test peer plays but sends no input (short
  ``--inactivity-timeout``; the ``inactivity_warning`` must come first);
- ``webrtc_failed`` / ``bad_answer``: the peer reports ``webrtc_failed``, or
  answers an SDP the worker cannot apply (the worker reports it);
- ``no_answer``: a scripted client never answers the offer
  (``handshake_timeout``);
- ``silent`` / ``scripted_silent``: the test peer connects, or a scripted
  client joins, then stops answering pings (``heartbeat_timeout`` for the
  client, ``client_failed`` for the worker);
- ``kill``: the worker serving a session is SIGKILLed (after video is up, or
  right after the assignment) and started again, as systemd would;
- ``rejected``: a client joins while every worker is busy.

One worker (slot 0) is the one that gets killed; the others live through the
whole soak, so their memory and descriptors can be trended. Every few seconds
the soak samples the RSS, open file descriptors and threads of the server and
of each worker (psutil) and reads ``/api/status?check=1``, whose
``violations`` must stay empty. At the end of the warm-up and at the end of the
run it drains the load (no new players, every worker back and available, no
client, session or closing peer left) and measures again: descriptors at those
two quiet points must match (within a small slack) and RSS must not grow past
the tolerance, nor may the trend of the samples taken under load (median of
the last third against the first third). Finally every session the soak saw
end is checked against the server's own counters (``/metrics``), and server
and workers are stopped with SIGTERM and must exit 0.

    .venv/bin/python bench/soak.py --ci                 # one minute (CI)
    .venv/bin/python bench/soak.py --duration 600       # the long soak (default)

Cluster mode (``--cluster N``): N signaling nodes on one real redis-server,
reached by players and workers through one URL, a round-robin TCP balancer
that skips a node that refuses connections (playcast_testing.balancer), as
behind any load balancer. Node n1 lives through the soak and is measured;
every ``--node-kill-every`` seconds another node is SIGKILLed and started
again under its own ``--node-id`` on its port, as systemd restarts
``playcast-server@nX``. Sessions that had a member on the killed node end by
its death (counted apart, ``node_killed``); every other session must still
end by its own cause. ``/api/status?check=1`` is read on n1 (cluster-wide;
a read missing a node's answer is partial and not judged; a violation
counts when a second read confirms it). Redis's keys are counted at the
quiet points and after everything stopped: nothing may be left behind but
the arrival counter ``pc:seq``.

    .venv/bin/python bench/soak.py --ci --cluster 2           # CI (tests/test_soak_cluster_ci.py)
    .venv/bin/python bench/soak.py --cluster 3 --duration 600 # the long cluster soak

``run_soak(cfg)`` returns a ``SoakResult`` with every figure and decides
nothing: CI runs the one-minute soak through tests/test_soak_ci.py, which
asserts the limits on that object, one concern a test. Run as a script, the
soak prints its report and a verdict (``problems``: the same limits) and exits
1 when a limit is exceeded; the last line of the output is
``SOAK_RESULT {json}`` with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import math
import os
import random
import re
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import psutil  # type: ignore[import-untyped]
from playcast_testing.balancer import RoundRobinBalancer
from playcast_testing.metrics import by_label, parse_metrics, slope_per_minute
from playcast_testing.peer import HandshakeMode, PeerOptions, TestPeer
from playcast_testing.redis_server import RedisServer
from playcast_testing.scripted import ScriptedPeer, connect
from playcast_testing.servers import ServerProcess, running_server
from playcast_testing.workers import WorkerProcess, running_worker
from redis.asyncio import Redis

from playcast import protocol as t

MB = 1024 * 1024

# Short timeouts so every cause comes round often, ordered so each one can
# happen: a silent client (heartbeat 4 s, noticed within 4.5 s of its last
# message) times out before its inactivity (8 s from join) or its handshake
# could; a normal handshake takes well under a second even on a busy machine.
SERVER_SETTINGS: dict[str, float] = {
    "heartbeat_interval": 0.5,
    "heartbeat_timeout": 4.0,
    "inactivity_timeout": 8.0,
    "inactivity_warning": 2.0,
    "handshake_timeout": 6.0,
    "shutdown_ack_timeout": 3.0,
}
NODE_TTL = 2.0  # cluster: the nodes' --node-ttl (the default)

# Scenario -> the end cause the soak expects to see.
EXPECTED = {
    "leave": "client_left",
    "drop": "client_disconnected",
    "scripted_leave": "client_left",
    "scripted_drop": "client_disconnected",
    "inactivity": "inactivity_timeout",
    "webrtc_failed": "handshake_failed",
    "bad_answer": "handshake_failed",
    "no_answer": "handshake_timeout",
    "silent": "client_heartbeat_timeout",
    "scripted_silent": "client_heartbeat_timeout",
    "kill": "worker_killed",
    "probe": "rejected",
}

# The soak's end causes as the server counts them (playcast_sessions_ended_total).
SERVER_REASON = {
    "client_left": "client_left",
    "client_disconnected": "client_failed",
    "client_heartbeat_timeout": "client_failed",
    "inactivity_timeout": "inactivity_timeout",
    "handshake_failed": "handshake_failed",
    "handshake_timeout": "handshake_timeout",
    "worker_killed": "worker_failed",
    "worker_failed": "worker_failed",
}

# Handed out in turn to whichever lane is free: every cause within the first
# dozen sessions, quick sessions more often than the slow timeouts. A "kill"
# replaces the next leave or drop that lands on the victim worker.
SEQUENCE = (
    "leave",
    "inactivity",
    "drop",
    "webrtc_failed",
    "no_answer",
    "scripted_leave",
    "silent",
    "bad_answer",
    "leave",
    "scripted_drop",
    "drop",
    "scripted_leave",
    "leave",
    "scripted_silent",
    "webrtc_failed",
    "scripted_drop",
)

PEER_HANDSHAKE: dict[str, HandshakeMode] = {
    "webrtc_failed": "report_failure",
    "bad_answer": "bad_answer",
}


@dataclass(frozen=True)
class Config:
    duration: float
    warmup: float
    workers: int
    sample_interval: float
    kill_every: float
    probe_every: float
    width: int
    height: int
    fps: int
    seed: int
    rss_tolerance_mb: float = 8.0
    rss_tolerance_fraction: float = 0.10
    fd_slack_quiet: int = 2  # descriptors, quiet point against quiet point
    fd_slack_trend: int = 4  # descriptors, medians of samples under load
    json_path: str | None = None
    cluster: int = 0  # nodes on one redis-server behind a balancer; 0: one lone server
    node_kill_every: float = 60.0  # cluster: seconds between a node's SIGKILL and restart


# --- measuring processes ------------------------------------------------------


@dataclass
class Sample:
    at: float  # seconds since the load started
    rss: int
    fds: int
    threads: int
    fd_kinds: Counter[str] = field(default_factory=Counter)  # quiet points only


def fd_kinds(proc: psutil.Process) -> Counter[str]:
    """What a process's descriptors are, so that a growth names its cause:
    sockets by protocol, state and remote port, the rest by what they point to."""
    kinds: Counter[str] = Counter()
    with contextlib.suppress(psutil.Error, OSError):
        for c in proc.net_connections(kind="inet"):
            proto = "tcp" if c.type == socket.SOCK_STREAM else "udp"
            remote = f"->{c.raddr.port}" if c.raddr else ""
            kinds[f"{proto} {c.status}{remote}".replace(" NONE", "")] += 1
        for fd in os.listdir(f"/proc/{proc.pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{proc.pid}/fd/{fd}")
                if not target.startswith("socket:"):
                    kinds[re.sub(r"\[\d+\]$", "", target)] += 1
    return kinds


def fd_growth(before: Sample, after: Sample, slack: int) -> str | None:
    """``7 -> 10 (+3 udp)`` when ``after`` holds more than ``slack`` descriptors
    over ``before``, naming the kinds that grew; None otherwise."""
    if after.fds - before.fds <= slack:
        return None
    more = after.fd_kinds - before.fd_kinds
    kinds = ", ".join(f"+{n} {k}" for k, n in sorted(more.items())) or "no kind grew"
    return f"{before.fds} -> {after.fds} ({kinds})"


@dataclass
class Series:
    """One process role's samples (a worker slot may change process)."""

    name: str
    measured: bool  # trended and checked (the victim worker is not)
    samples: list[Sample] = field(default_factory=list)
    quiet: dict[str, Sample] = field(default_factory=dict)  # "start", "warm", "end"
    pids: list[int] = field(default_factory=list)


def measure(proc: psutil.Process, at: float) -> Sample:
    with proc.oneshot():
        return Sample(at, proc.memory_info().rss, proc.num_fds(), proc.num_threads())


def median_sample(samples: list[Sample]) -> Sample:
    return Sample(
        at=samples[-1].at,
        rss=int(statistics.median(s.rss for s in samples)),
        fds=int(statistics.median(s.fds for s in samples)),
        threads=int(statistics.median(s.threads for s in samples)),
    )


# --- the worker pool ----------------------------------------------------------


@dataclass
class Slot:
    index: int
    victim: bool
    name: str = ""
    proc: WorkerProcess | None = None
    stack: contextlib.AsyncExitStack | None = None
    current_id: str | None = None
    killing: bool = False
    history: list[WorkerProcess] = field(default_factory=list)


class Pool:
    """The worker processes, followed through their logs."""

    def __init__(self, server: ServerProcess | ClusterFront, flags: list[str], n: int) -> None:
        self.server = server
        self.flags = flags
        self.slots = [
            Slot(i, victim=(i == 0), name=f"worker{i}" + (" (killed)" if i == 0 else ""))
            for i in range(n)
        ]
        self.changed = asyncio.Condition()
        self.registrations = 0
        self.id_to_slot: dict[str, int] = {}
        self.closing = False
        self.unexpected_exits: list[str] = []
        self.recoveries: list[float] = []  # SIGKILL to the new process registered, s
        self.exit_codes: list[int] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self, slot: Slot) -> WorkerProcess:
        stack = contextlib.AsyncExitStack()
        wp = await stack.enter_async_context(running_worker(self.server.ws_base, *self.flags))
        slot.proc, slot.stack = wp, stack
        slot.history.append(wp)
        self._spawn(self._follow(slot, wp))
        self._spawn(self._watch(slot, wp))
        return wp

    async def _follow(self, slot: Slot, wp: WorkerProcess) -> None:
        after = 0
        while True:
            try:
                i, worker_id = await wp.wait_registered(after=after, timeout=3600)
            except (RuntimeError, TimeoutError):
                return  # the process is gone
            after = i + 1
            async with self.changed:
                self.id_to_slot[worker_id] = slot.index
                slot.current_id = worker_id
                self.registrations += 1
                self.changed.notify_all()

    async def _watch(self, slot: Slot, wp: WorkerProcess) -> None:
        code = await wp.proc.wait()
        if self.closing:
            return
        if not slot.killing:
            self.unexpected_exits.append(f"worker slot {slot.index} exited by itself, code {code}")
        killed_at = time.monotonic()
        slot.killing = False
        slot.current_id = None
        if slot.stack is not None:
            await slot.stack.aclose()
        new = await self.start(slot)
        with contextlib.suppress(TimeoutError, RuntimeError):
            await new.wait_registered(timeout=60)
            self.recoveries.append(time.monotonic() - killed_at)

    def kill(self, slot: Slot) -> None:
        assert slot.proc is not None
        slot.killing = True
        slot.proc.send_signal(signal.SIGKILL)

    async def slot_of(self, worker_id: str, timeout: float = 10.0) -> Slot:
        """The slot whose process registered as ``worker_id`` (its log may lag)."""
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: worker_id in self.id_to_slot)
        return self.slots[self.id_to_slot[worker_id]]

    async def wait_registration(self, after: int, timeout: float) -> None:
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: self.registrations > after)

    async def wait_current(self, ids: set[str], timeout: float = 10.0) -> None:
        """Until the slots' latest registrations are exactly ``ids``."""
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: {s.current_id for s in self.slots} == ids)

    async def stop(self) -> None:
        """SIGTERM every worker; each must exit 0."""
        self.closing = True
        for slot in self.slots:
            if slot.proc is not None and slot.proc.proc.returncode is None:
                self.exit_codes.append(await slot.proc.stop(signal.SIGTERM, timeout=30))
        for slot in self.slots:
            if slot.stack is not None:
                await slot.stack.aclose()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


# --- the cluster (--cluster N) ---------------------------------------------------

# Redis keys by kind (shared/redis_state.py's layout): what may stay while the
# cluster is at rest, and what must be gone when no session, player or worker
# is left. At rest: per worker one pc:w; per node at most its liveness key,
# its workers' set and its stream; per game a pool and a codec count.
PER_SESSION_KINDS = ("pc:s", "pc:c", "pc:ns", "pc:nc", "pc:line")


def key_kind(key: str) -> str:
    """``pc:w:w-1a2b`` -> ``pc:w``; ``pc:nodes`` -> ``pc:nodes``."""
    parts = key.split(":")
    return ":".join(parts[:2])


@dataclass
class NodeLife:
    name: str
    port: int
    proc: ServerProcess
    stack: contextlib.AsyncExitStack


class ClusterFront:
    """The soak's server in cluster mode: N nodes on a real redis-server, behind
    a round-robin balancer whose URL is all that players and workers know."""

    def __init__(self, n: int) -> None:
        self.names = [f"n{i + 1}" for i in range(n)]
        self.redis = RedisServer()
        self.nodes: dict[str, NodeLife] = {}
        self.history: list[ServerProcess] = []
        self.balancer: RoundRobinBalancer | None = None
        self.kills: list[tuple[float, float]] = []  # (SIGKILL, listening again), monotonic
        self.restart_seconds: list[float] = []
        self.census: dict[str, dict[str, int]] = {}
        self.leftover: dict[str, int] = {}  # keys after everything stopped, by kind
        self.leftover_without_ttl: list[str] = []

    @property
    def settings(self) -> dict[str, float | str]:
        return {**SERVER_SETTINGS, "redis": self.redis.url}

    @property
    def lb(self) -> RoundRobinBalancer:
        assert self.balancer is not None
        return self.balancer

    @property
    def url(self) -> str:
        return self.lb.url

    @property
    def ws_base(self) -> str:
        return self.lb.ws_base

    def ws_url(self, role: str) -> str:
        return self.lb.ws_url(role)

    @property
    def status_url(self) -> str:
        """n1 lives through the soak: the cluster-wide status is read there."""
        return self.nodes[self.names[0]].proc.url

    @property
    def victims(self) -> list[str]:
        return self.names[1:]

    @property
    def lines(self) -> list[str]:
        return [line for proc in self.history for line in proc.lines]

    async def start(self) -> None:
        await self.redis.start()
        for name in self.names:
            await self._start_node(name, 0)
        self.balancer = RoundRobinBalancer([life.port for life in self.nodes.values()])
        await self.balancer.start()

    async def _start_node(self, name: str, port: int) -> None:
        stack = contextlib.AsyncExitStack()
        flags = {**self.settings, "node_id": name}
        if port:
            flags["port"] = port  # the balancer knows the node by its port
        proc = await stack.enter_async_context(running_server(**flags))
        self.nodes[name] = NodeLife(name, proc.port, proc, stack)
        self.history.append(proc)

    async def kill_and_restart(self, name: str) -> float:
        """SIGKILL, and start again at once under the same id and port (it
        listens once its first life is dealt with): seconds until listening."""
        life = self.nodes[name]
        killed = time.monotonic()
        self.kills.append((killed, math.inf))  # under way: ends seen now are its
        life.proc.send_signal(signal.SIGKILL)
        await life.proc.stop(None)
        await life.stack.aclose()
        await self._start_node(name, life.port)
        back = time.monotonic()
        self.kills[-1] = (killed, back)
        self.restart_seconds.append(back - killed)
        return back - killed

    def touched(self, began: float, ended: float, settle: float) -> bool:
        """Did a node kill fall within a scenario that ran from ``began`` to
        ``ended`` (monotonic), its effects lasting ``settle`` past the restart?"""
        return any(began < back + settle and ended > killed for killed, back in self.kills)

    def pids(self) -> Iterator[tuple[str, int]]:
        for name, life in self.nodes.items():
            if life.proc.proc.returncode is None:
                yield f"node {name}", life.proc.proc.pid
        if self.redis.proc is not None:
            yield "redis", self.redis.proc.pid

    async def keys(self) -> list[str]:
        r = Redis.from_url(self.redis.url, decode_responses=True)
        try:
            return [k async for k in r.scan_iter(match="pc:*", count=1000)]
        finally:
            await r.aclose()

    async def count_keys(self, point: str) -> dict[str, int]:
        counted = dict(Counter(key_kind(k) for k in await self.keys()))
        self.census[point] = counted
        return counted

    async def stop(self) -> list[int]:
        """SIGTERM every node (each must exit 0), then what Redis still holds."""
        codes = [await life.proc.stop(signal.SIGTERM) for life in self.nodes.values()]
        for life in self.nodes.values():
            await life.stack.aclose()
        if self.balancer is not None:
            await self.balancer.close()
        keys = await self.keys()
        self.leftover = dict(Counter(key_kind(k) for k in keys))
        r = Redis.from_url(self.redis.url, decode_responses=True)
        try:
            for key in keys:
                if key != "pc:seq" and await r.ttl(key) == -1:
                    self.leftover_without_ttl.append(key)
        finally:
            await r.aclose()
        return codes

    async def close(self) -> None:
        for life in self.nodes.values():
            await life.stack.aclose()
        if self.balancer is not None:
            await self.balancer.close()
        await self.redis.kill()

    def at_rest_problems(self, workers: int) -> list[str]:
        """What the key counts at the quiet points say is left behind."""
        out: list[str] = []
        n = len(self.names)
        for point, kinds in self.census.items():
            for kind in PER_SESSION_KINDS:
                if kinds.get(kind):
                    out.append(f"at rest ({point}): {kinds[kind]} {kind}:* keys left")
            if kinds.get("pc:w", 0) != workers:
                out.append(
                    f"at rest ({point}): {kinds.get('pc:w', 0)} pc:w keys, {workers} workers"
                )
            for kind in ("pc:node", "pc:nw", "pc:bus"):
                if kinds.get(kind, 0) > n:
                    out.append(f"at rest ({point}): {kinds[kind]} {kind}:* keys for {n} nodes")
            bound = workers + 3 * n + 2 * len(SOAK_GAMES) + 2  # + pc:nodes, pc:seq
            if sum(kinds.values()) > bound:
                out.append(f"at rest ({point}): {sum(kinds.values())} keys, more than {bound}")
        return out


SOAK_GAMES = (t.DEFAULT_GAME,)


# --- the soak -----------------------------------------------------------------


@dataclass
class Tally:
    started: int = 0  # sessions assigned
    causes: Counter[str] = field(default_factory=Counter)  # sessions by observed end
    rejected: Counter[str] = field(default_factory=Counter)  # "probe" / "lane"
    by_scenario: Counter[tuple[str, str]] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    kills: Counter[str] = field(default_factory=Counter)  # by variant
    inactivity_warnings: int = 0
    touches_seen: int = 0
    node_losses: list[str] = field(default_factory=list)  # ended by a node's death
    partial_reads: int = 0  # cluster status reads missing a node's answer
    transient: list[str] = field(default_factory=list)  # violations gone on a re-read
    settling: list[str] = field(default_factory=list)  # fds over the slack at a first read


class Soak:
    def __init__(self, cfg: Config, server: ServerProcess | ClusterFront, pool: Pool) -> None:
        self.cfg = cfg
        self.server = server
        self.front = server if isinstance(server, ClusterFront) else None
        self.node_lock = asyncio.Lock()  # a node restart and a quiet point exclude each other
        self.pool = pool
        self.rng = random.Random(cfg.seed)
        self.tally = Tally()
        self.gate = asyncio.Event()  # set: lanes may start scenarios
        self.idle = asyncio.Condition()
        self.inflight = 0
        self.kill_pending = False
        self.kill_variants = itertools.cycle(("connected", "handshake"))
        self.scenarios = itertools.cycle(SEQUENCE)
        self.t0 = time.monotonic()
        self.http: aiohttp.ClientSession | None = None
        self.measure_lock = asyncio.Lock()
        self.series: dict[str, Series] = {}
        if self.front is None:
            self.series["server"] = Series("server", measured=True)
        else:
            for name in self.front.names:  # n1 lives; the others are killed in turn
                label = f"node {name}"
                self.series[label] = Series(label, measured=name == self.front.names[0])
            self.series["redis"] = Series("redis", measured=False)
        for slot in pool.slots:
            self.series[slot.name] = Series(slot.name, measured=not slot.victim)
        self.series["soak"] = Series("soak (load generator)", measured=False)
        self._procs: dict[int, psutil.Process] = {}
        self.last_status: dict[str, Any] = {}
        self.last_probe = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self.warm_at = 0.0
        self.load_seconds = 0.0
        s = SERVER_SETTINGS
        self.scenario_timeout = max(s["inactivity_timeout"], s["handshake_timeout"]) + 30.0

    def now(self) -> float:
        return time.monotonic() - self.t0

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- sampling ------------------------------------------------------

    def _pids(self) -> Iterator[tuple[str, int]]:
        if self.front is not None:
            yield from self.front.pids()
        else:
            assert isinstance(self.server, ServerProcess)
            yield "server", self.server.proc.pid
        for slot in self.pool.slots:
            if slot.proc is not None and slot.proc.proc.returncode is None:
                yield slot.name, slot.proc.proc.pid
        yield "soak", os.getpid()

    def _process(self, pid: int) -> psutil.Process:
        proc = self._procs.get(pid)
        if proc is None:
            proc = self._procs[pid] = psutil.Process(pid)
        return proc

    async def _read_status(self) -> dict[str, Any]:
        assert self.http is not None
        url = self.front.status_url if self.front is not None else self.server.url
        async with self.http.get(f"{url}/api/status?check=1") as r:
            doc: dict[str, Any] = await r.json()
        return doc

    async def status(self) -> dict[str, Any]:
        doc = await self._read_status()
        found = list(doc.get("violations", []))
        if self.front is not None and doc.get("unanswered_nodes"):
            # A node is dead or restarting: its part is missing, nothing to judge.
            self.tally.partial_reads += 1
            found = []
        elif self.front is not None and found:
            # The nodes' snapshots and the scan of Redis are taken one after
            # the other, not at one instant: a violation counts when a second
            # read, a moment later, still shows it.
            await asyncio.sleep(0.2)  # a moment for in-flight steps to land
            again = await self._read_status()
            if again.get("unanswered_nodes"):
                self.tally.partial_reads += 1
                again["violations"] = []
            still = set(again.get("violations", []))
            self.tally.transient += [f"{self.now():.1f}s: {v}" for v in found if v not in still]
            found = [v for v in found if v in still]
        for v in found:
            self.tally.violations.append(f"{self.now():.1f}s: {v}")
        self.last_status = doc
        return doc

    async def sample(self) -> dict[str, Sample]:
        """One status read (invariants) and one sample of every process."""
        async with self.measure_lock:
            doc = await self.status()
            at = self.now()
            # Cluster: the balancer spreads peers over the nodes differently
            # from one moment to the next, so a node's descriptors are counted
            # net of its peers' sockets (one each).
            peers = Counter(
                f"node {p['node']}" for p in doc["workers"] + doc["clients"] if "node" in p
            )
            out: dict[str, Sample] = {}
            for name, pid in self._pids():
                with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
                    out[name] = measure(self._process(pid), at)
                    if self.front is not None:
                        out[name].fds -= peers[name]
                    series = self.series[name]
                    if pid not in series.pids:
                        series.pids.append(pid)
            return out

    async def sampler(self) -> None:
        while True:
            try:
                readings = await self.sample()
                if self.gate.is_set():  # under load only: drains are measured apart
                    for name, s in readings.items():
                        self.series[name].samples.append(s)
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.tally.errors.append(f"{self.now():.1f}s: status read failed: {exc!r}")
            self._maybe_probe()
            await asyncio.sleep(self.cfg.sample_interval)  # the sampling period

    async def quiet_point(self, name: str) -> None:
        """Drain the load, wait for the pool to be whole and idle, measure."""
        self.gate.clear()
        try:
            async with asyncio.timeout(self.scenario_timeout + 30), self.idle:
                await self.idle.wait_for(lambda: self.inflight == 0)
        except TimeoutError:
            self.tally.errors.append(f"{name}: {self.inflight} players still busy after drain")
        async with self.node_lock:  # no node restart under way
            await self._quiet_point(name)

    async def _quiet_point(self, name: str) -> None:
        n = self.cfg.workers
        nodes = self.cfg.cluster

        def whole(doc: dict[str, Any]) -> bool:
            return (
                len(doc["workers"]) == n
                and all(w["status"] == "available" for w in doc["workers"])
                and not doc["clients"]
                and not doc["sessions"]
                and doc["closing"] == 0
                and (not nodes or (len(doc["nodes"]) == nodes and not doc.get("unanswered_nodes")))
            )

        try:
            async with asyncio.timeout(90):
                while True:
                    if whole(await self.status()):
                        break
                    await asyncio.sleep(0.1)  # /api/status has no push channel
            await self.pool.wait_current({w["id"] for w in self.last_status["workers"]})
        except TimeoutError:
            doc = self.last_status
            self.tally.errors.append(
                f"{name}: the pool did not come back whole and idle: workers "
                f"{[(w['id'], w['status']) for w in doc['workers']]}, slots "
                f"{[s.current_id for s in self.pool.slots]}, {len(doc['clients'])} clients, "
                f"{len(doc['sessions'])} sessions, {doc['closing']} closing"
            )
        if self.front is not None:
            await self.front.count_keys(name)
        # A socket still closing (a peer connection's transports, a link
        # torn down a moment ago) is not a leak: a growth over the slack
        # counts when it is still there after a few seconds, as a leak would be.
        for attempt in range(6):
            readings: list[dict[str, Sample]] = []
            for _ in range(3):
                readings.append(await self.sample())
                await asyncio.sleep(0.2)
            for series_name, series in self.series.items():
                got = [r[series_name] for r in readings if series_name in r]
                if got:
                    series.quiet[name] = median_sample(got)
                    pid = series.pids[-1] if series.pids else None
                    if pid is not None:
                        with contextlib.suppress(psutil.Error):
                            series.quiet[name].fd_kinds = fd_kinds(self._process(pid))
            grown = [
                f"{series_name}: {growth}"
                for series_name, series in self.series.items()
                if name != "warm"
                and series.measured
                and (start := series.quiet.get("warm")) is not None
                and name in series.quiet
                and (growth := fd_growth(start, series.quiet[name], self.cfg.fd_slack_quiet))
            ]
            if not grown:
                break
            self.tally.settling.append(f"{name}, read {attempt + 1}: {'; '.join(grown)}")
            await asyncio.sleep(1.0)  # give a closing socket the time to go

    # --- the load --------------------------------------------------------

    async def lane(self) -> None:
        scenario: str | None = None
        while True:
            await self.gate.wait()
            if not self.gate.is_set():
                continue  # a drain began between the wake-up and now
            scenario = scenario or next(self.scenarios)
            self.inflight += 1  # before any await: a drain must see it
            mark = await self.run(scenario)
            if mark is None:
                scenario = None  # played; a rejected one is tried again
                continue
            # Every worker was busy or restarting: wait for one to come back.
            with contextlib.suppress(TimeoutError):
                await self.pool.wait_registration(mark, timeout=30)

    def _maybe_probe(self) -> None:
        """While every worker is busy, a client joins: it must be rejected."""
        doc = self.last_status
        if (
            not self.gate.is_set()
            or not doc
            or time.monotonic() - self.last_probe < self.cfg.probe_every
        ):
            return
        workers = doc["workers"]
        if len(workers) == self.cfg.workers and all(w["status"] == "busy" for w in workers):
            self.last_probe = time.monotonic()
            self.inflight += 1
            self._spawn(self._probe())

    async def _probe(self) -> None:
        await self.run("probe")

    async def run(self, scenario: str) -> int | None:
        """Play one scenario (the caller has counted it in ``inflight``). When
        the player was rejected: the pool's registration count at that moment."""
        began = time.monotonic()
        try:
            async with asyncio.timeout(self.scenario_timeout):
                played, cause = await self._play(scenario)
            if cause == "rejected":
                self.tally.rejected["probe" if played == "probe" else "lane"] += 1
                return self.pool.registrations
            expected = EXPECTED[played] == cause or (played == "probe" and cause == "client_left")
            if not expected and self._node_killed(began, f"{played} ended by {cause}"):
                cause = "node_killed"
            self.tally.causes[cause] += 1
            self.tally.by_scenario[played, cause] += 1
            if not expected and cause != "node_killed":
                self.tally.unexpected.append(f"{self.now():.1f}s: {played} ended by {cause}")
        except TimeoutError:
            if not self._node_killed(began, f"{scenario}: no end within the bound"):
                self.tally.errors.append(f"{self.now():.1f}s: {scenario}: no end within the bound")
        except Exception as exc:
            if not self._node_killed(began, f"{scenario}: {exc!r}"):
                self.tally.errors.append(f"{self.now():.1f}s: {scenario}: {exc!r}")
        finally:
            async with self.idle:
                self.inflight -= 1
                self.idle.notify_all()
        return None

    def _node_killed(self, began: float, what: str) -> bool:
        """Cluster: a node died while this scenario ran (its peer or its
        partner may have been there): the end is the node's, counted apart."""
        settle = 2 * NODE_TTL + 1.0  # found dead within the TTL, then told
        if self.front is None or not self.front.touched(began, time.monotonic(), settle):
            return False
        self.tally.node_losses.append(f"{self.now():.1f}s: {what}")
        return True

    async def _play(self, scenario: str) -> tuple[str, str]:
        if scenario in ("scripted_leave", "scripted_drop", "scripted_silent", "no_answer", "probe"):
            return await self._play_scripted(scenario)
        return await self._play_peer(scenario)

    async def _play_peer(self, scenario: str) -> tuple[str, str]:
        options = PeerOptions(
            handshake=PEER_HANDSHAKE.get(scenario, "normal"),
            answer_pings=scenario != "silent",
        )
        async with TestPeer.join(self.server.url, options) as peer:
            if not await _first(peer.assigned_event.wait(), peer.socket_closed.wait(), 15):
                raise TimeoutError("neither assigned nor rejected")
            if peer.assigned is None:
                if peer.rejected is not None:
                    return scenario, "rejected"
                raise RuntimeError("socket closed before assigned or rejected")
            self.tally.started += 1
            slot: Slot | None = None
            if scenario in ("leave", "drop") and self.kill_pending:
                slot = await self.pool.slot_of(peer.assigned.worker_id)
                if slot.victim and self.kill_pending:
                    self.kill_pending = False
                    scenario = "kill"
            if scenario == "kill" and next(self.kill_variants) == "handshake":
                assert slot is not None
                self.tally.kills["during the handshake"] += 1
                self.pool.kill(slot)
            elif scenario in ("leave", "drop", "inactivity", "silent", "kill"):
                bound = SERVER_SETTINGS["handshake_timeout"] + 5
                if not await _first(peer.wait_connected(), peer.socket_closed.wait(), bound):
                    raise TimeoutError("no video and no end")
                if peer.socket_closed.is_set():
                    return scenario, self._cause(peer, scenario)
                if scenario in ("leave", "drop", "kill"):
                    await self._touch_and_hold(peer)
                if scenario == "kill":
                    assert slot is not None
                    self.tally.kills["with video up"] += 1
                    self.pool.kill(slot)
                elif scenario == "leave":
                    await peer.leave()
                elif scenario == "drop" and peer.shutdown is None:
                    await peer.drop_socket()
                    return scenario, "client_disconnected"
            async with asyncio.timeout(self.scenario_timeout - 5):
                await peer.socket_closed.wait()
            cause = self._cause(peer, scenario)
            # Warned before its timeout (a player whose node died meanwhile
            # may have been warned and then ended otherwise: not counted).
            if cause == "inactivity_timeout" and any(
                isinstance(m, t.InactivityWarning) for m in peer.log.messages
            ):
                self.tally.inactivity_warnings += 1
            return scenario, cause

    async def _touch_and_hold(self, peer: TestPeer) -> None:
        """A touch must show in the decoded video; then play for a moment."""
        x, y = self.rng.uniform(0.2, 0.8), self.rng.uniform(0.2, 0.8)
        await peer.touch(x, y)
        async with asyncio.timeout(10):
            await peer.wait_mark(x, y)
        self.tally.touches_seen += 1
        hold_until = time.monotonic() + self.rng.uniform(0.3, 1.5)
        while time.monotonic() < hold_until and peer.shutdown is None:
            await peer.touch(self.rng.uniform(0.1, 0.9), self.rng.uniform(0.1, 0.9))
            await asyncio.sleep(0.25)  # a player's pace

    @staticmethod
    def _cause(peer: TestPeer, scenario: str) -> str:
        if peer.shutdown is not None:
            reason = peer.shutdown.reason
            if reason == "worker_failed" and scenario == "kill":
                return "worker_killed"
            if reason == "heartbeat_timeout":
                return "client_heartbeat_timeout"
            return str(reason)
        if scenario == "leave":
            return "client_left"
        return "closed_without_shutdown"

    async def _play_scripted(self, scenario: str) -> tuple[str, str]:
        silent = scenario == "scripted_silent"
        async with connect(self.server.ws_url("client"), auto_pong=not silent) as p:
            await p.send(t.Join(game=t.DEFAULT_GAME))
            first = await _until(p, (t.Assigned, t.Rejected), 15)
            if isinstance(first, t.Rejected):
                await p.wait_closed(10)
                return scenario, "rejected"
            self.tally.started += 1
            if isinstance(first, t.Shutdown):
                return scenario, await _acknowledge(p, first)
            if scenario == "probe":  # a worker came free in between: give it back
                await p.send(t.Leave())
                await p.wait_closed(10)
                return scenario, "client_left"
            if scenario == "no_answer":
                bound = SERVER_SETTINGS["handshake_timeout"] + 15
                end = await _until(p, (t.Shutdown,), bound)
                return scenario, await _acknowledge(p, end)
            if silent:  # joined, then nothing: not even pongs
                bound = SERVER_SETTINGS["heartbeat_timeout"] + 15
                end = await _until(p, (t.Shutdown,), bound)
                await p.wait_closed(10)  # closed at once, no ack awaited
                assert isinstance(end, t.Shutdown)
                reason = str(end.reason)
                return scenario, (
                    "client_heartbeat_timeout" if reason == "heartbeat_timeout" else reason
                )
            got = await _until(p, (t.Offer,), 15)  # the worker is mid-handshake
            if isinstance(got, t.Shutdown):
                return scenario, await _acknowledge(p, got)
            if scenario == "scripted_leave":
                await p.send(t.Leave())
                await p.wait_closed(10)
                return scenario, "client_left"
            # A vanished network: TCP ends with no WebSocket close frame.
            sock = p.ws.get_extra_info("socket")
            if sock is None:
                raise RuntimeError("no socket under the WebSocket")
            sock.shutdown(socket.SHUT_RDWR)
            await p.wait_closed(10)
            return scenario, "client_disconnected"

    async def killer(self) -> None:
        """Arm a SIGKILL every kill_every seconds; the next fitting session takes it."""
        for n in itertools.count(1):
            await asyncio.sleep(max(0.0, self.t0 + n * self.cfg.kill_every - time.monotonic()))
            self.kill_pending = True

    async def node_killer(self) -> None:
        """Cluster: every node_kill_every seconds under load, SIGKILL the next
        node but n1 and start it again under its own id, as systemd would."""
        assert self.front is not None
        victims = itertools.cycle(self.front.victims)
        for n in itertools.count(1):
            every = self.cfg.node_kill_every
            await asyncio.sleep(max(0.0, self.t0 + n * every - time.monotonic()))
            async with self.node_lock:
                if not self.gate.is_set():
                    continue  # a quiet point: this round is skipped
                await self.front.kill_and_restart(next(victims))

    # --- the run ---------------------------------------------------------

    async def run_all(self) -> None:
        cfg = self.cfg
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1)  # one kept-alive connection: steady fds
        ) as self.http:
            await self.quiet_point("start")
            self.t0 = time.monotonic()
            self.gate.set()
            tasks = [self._spawn(self.lane()) for _ in range(cfg.workers)]
            tasks += [self._spawn(self.sampler()), self._spawn(self.killer())]
            if self.front is not None and self.front.victims:
                tasks.append(self._spawn(self.node_killer()))
            self.warm_at = self.now()
            if cfg.warmup > 0:
                await asyncio.sleep(cfg.warmup)  # the schedule: warm-up, then measure
                await self.quiet_point("warm")
                self.warm_at = self.now()
                self.gate.set()
            await asyncio.sleep(max(0.0, cfg.duration - self.now()))
            self.load_seconds = self.now()
            await self.quiet_point("end")
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _first(a: Awaitable[Any], b: Awaitable[Any], timeout: float) -> bool:
    """Until either finishes; False on timeout."""
    tasks = [asyncio.ensure_future(a), asyncio.ensure_future(b)]
    try:
        done, _ = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            raise exc
    return bool(done)


async def _until(p: ScriptedPeer, kinds: tuple[type[Any], ...], timeout: float) -> t.Message:
    """The first message of ``kinds`` (or a shutdown), skipping relayed handshake noise."""
    async with asyncio.timeout(timeout):
        while True:
            if p.inbox.empty() and p.closed.is_set():
                # Closed with nothing more to read: its node died (cluster).
                raise ConnectionError(f"socket closed ({p.close_code}) before {kinds}")
            get = asyncio.ensure_future(p.inbox.get())
            closed = asyncio.ensure_future(p.closed.wait())
            await asyncio.wait((get, closed), return_when=asyncio.FIRST_COMPLETED)
            closed.cancel()
            if not get.done():
                get.cancel()
                continue
            msg = get.result()
            if isinstance(msg, (*kinds, t.Shutdown)):
                return msg
            if isinstance(msg, t.Error):
                raise RuntimeError(f"server error {msg.code}: {msg.message}")


async def _acknowledge(p: ScriptedPeer, msg: t.Message) -> str:
    assert isinstance(msg, t.Shutdown)
    await p.send(t.ShutdownAck(ok=True, detail="soak"))
    await p.wait_closed(10)
    return str(msg.reason)


# --- checks and the report ----------------------------------------------------


@dataclass
class ProcessFigures:
    """One process role's memory and descriptors: at the quiet points and under load."""

    name: str
    measured: bool  # held to the growth limits (the killed worker and the soak are not)
    pids: int  # processes it ran as (a measured role must stay one process)
    quiet: dict[str, Sample]  # "start", "warm", "end"
    trend: dict[str, float] | None  # under load after warm-up; None: too few samples

    def to_json(self) -> dict[str, Any]:
        fig: dict[str, Any] = {"pids": self.pids, "measured": self.measured}
        for point, s in self.quiet.items():
            fig[f"quiet_{point}"] = {"rss_mb": s.rss / MB, "fds": s.fds, "threads": s.threads}
        if self.trend is not None:
            fig["trend"] = self.trend
        return fig


@dataclass
class Accounting:
    """Every session the soak saw end, beside the server's own counters (/metrics)."""

    soak_started: int
    server_started: int
    soak_ended: dict[str, int]  # by the server's reason names (SERVER_REASON)
    server_ended: dict[str, int]
    soak_rejections: int
    server_rejections: int
    soak_client_heartbeat_timeouts: int
    server_heartbeat_timeouts: dict[str, int]  # by role
    server_shutdown_acks: dict[str, int]


@dataclass
class SoakResult:
    """What one soak measured. It decides nothing: tests/test_soak_ci.py holds the
    limits that CI enforces, and ``problems`` the same ones for a person's verdict."""

    cfg: Config
    load_seconds: float
    wall_seconds: float
    sessions_started: int
    ended_by_cause: dict[str, int]
    inactivity_timeouts: int
    inactivity_warnings: int
    processes: dict[str, ProcessFigures]
    accounting: Accounting
    violations: list[str]  # /api/status?check=1 during the run
    end_state: list[str]  # what was wrong with the server's state at the end
    unexpected: list[str]  # sessions that ended by another cause than their scenario's
    errors: list[str]  # scenarios that failed to run
    unexpected_exits: list[str]  # workers that exited when nobody killed them
    exit_codes: dict[str, Any]  # on SIGTERM: {"server": n, "workers": [n, ...]}
    log_errors: dict[str, list[str]]  # tracebacks and ERROR lines, by "server"/"workers"
    known_issues: dict[str, int]
    figures: dict[str, Any]  # every figure, JSON-ready (SOAK_RESULT, --json)
    cluster: ClusterFigures | None = None  # --cluster N only

    def rss_allowance(self, before: float) -> float:
        """Bytes of RSS growth tolerated from ``before`` bytes."""
        return max(self.cfg.rss_tolerance_mb * MB, self.cfg.rss_tolerance_fraction * before)


@dataclass
class ClusterFigures:
    """What cluster mode adds: node kills, partial reads, Redis's keys."""

    nodes: int
    node_kills: int
    restart_seconds: list[float]  # SIGKILL to listening again (waits out its first life)
    node_losses: list[str]  # scenarios ended by a node's death
    partial_reads: int
    transient_violations: list[str]  # seen once, gone on the re-read
    census: dict[str, dict[str, int]]  # keys by kind at the quiet points
    at_rest_problems: list[str]
    leftover: dict[str, int]  # keys by kind after everything stopped
    leftover_without_ttl: list[str]  # of those: neither pc:seq nor expiring
    balancer: dict[str, int]  # connections per node port, skipped connects

    def to_json(self) -> dict[str, Any]:
        return vars(self)


def trend(series: Series, since: float) -> dict[str, float] | None:
    """Growth of RSS and fds under load after warm-up: last third vs first third."""
    points = [s for s in series.samples if s.at >= since]
    if len(points) < 6:
        return None
    third = len(points) // 3
    first, last = points[:third], points[-third:]
    return {
        "samples": len(points),
        "rss_first_mb": statistics.median(s.rss for s in first) / MB,
        "rss_last_mb": statistics.median(s.rss for s in last) / MB,
        "rss_slope_mb_per_min": slope_per_minute([(s.at, s.rss / MB) for s in points]),
        "fds_first": statistics.median(s.fds for s in first),
        "fds_last": statistics.median(s.fds for s in last),
        "fds_slope_per_min": slope_per_minute([(s.at, s.fds) for s in points]),
        "threads_first": statistics.median(s.threads for s in first),
        "threads_last": statistics.median(s.threads for s in last),
    }


def process_figures(soak: Soak) -> dict[str, ProcessFigures]:
    return {
        name: ProcessFigures(
            name=name,
            measured=series.measured,
            pids=len(series.pids),
            quiet=dict(series.quiet),
            trend=trend(series, soak.warm_at),
        )
        for name, series in soak.series.items()
    }


def accounting(soak: Soak, metrics: dict[str, float]) -> Accounting:
    tally = soak.tally
    ours: Counter[str] = Counter()
    for cause, n in tally.causes.items():
        ours[SERVER_REASON.get(cause, cause)] += n

    def counts(name: str) -> dict[str, int]:
        return {k: int(v) for k, v in by_label(metrics, name).items() if v}

    return Accounting(
        soak_started=tally.started,
        server_started=sum(counts("playcast_sessions_started_total").values()),
        soak_ended=dict(ours),
        server_ended=counts("playcast_sessions_ended_total"),
        soak_rejections=sum(tally.rejected.values()),
        server_rejections=sum(counts("playcast_rejections_total").values()),
        soak_client_heartbeat_timeouts=tally.causes["client_heartbeat_timeout"],
        server_heartbeat_timeouts=counts("playcast_heartbeat_timeouts_total"),
        server_shutdown_acks=counts("playcast_shutdown_acks_total"),
    )


def problems(r: SoakResult) -> list[str]:
    """The soak's verdict for a person reading its report (CI asserts the same limits,
    one by one, in tests/test_soak_ci.py)."""
    out: list[str] = []
    for name, p in r.processes.items():
        if not p.measured:
            continue
        if p.pids != 1:
            out.append(f"{name}: ran as {p.pids} processes")
            continue
        tr = p.trend
        if tr is not None:
            if (tr["rss_last_mb"] - tr["rss_first_mb"]) * MB > r.rss_allowance(
                tr["rss_first_mb"] * MB
            ):
                out.append(
                    f"{name}: RSS grew under load, {tr['rss_first_mb']:.1f} -> "
                    f"{tr['rss_last_mb']:.1f} MB (median of first third -> last third)"
                )
            if tr["fds_last"] - tr["fds_first"] > r.cfg.fd_slack_trend:
                out.append(
                    f"{name}: open fds grew under load, {tr['fds_first']:.0f} -> "
                    f"{tr['fds_last']:.0f} (median of first third -> last third)"
                )
        warm, end = p.quiet.get("warm"), p.quiet.get("end")
        if warm is not None and end is not None:
            if end.rss - warm.rss > r.rss_allowance(warm.rss):
                out.append(f"{name}: RSS at rest grew {warm.rss / MB:.1f} -> {end.rss / MB:.1f} MB")
            if growth := fd_growth(warm, end, r.cfg.fd_slack_quiet):
                out.append(f"{name}: open fds at rest grew {growth}")
    a = r.accounting
    c = r.cluster
    if c is not None:
        out += c.at_rest_problems
        if c.node_kills == 0 and c.nodes > 1:
            out.append("no node was killed")
        if c.leftover_without_ttl:
            out.append(f"left behind in Redis: {c.leftover_without_ttl[:10]}")
    elif a.server_started != a.soak_started:
        out.append(
            f"sessions started: server counted {a.server_started}, the soak {a.soak_started}"
        )
    if c is None and a.server_ended != a.soak_ended:
        out.append(f"sessions ended by reason: server {a.server_ended}, the soak {a.soak_ended}")
    if c is None and a.server_rejections != a.soak_rejections:
        out.append(f"rejections: server {a.server_rejections}, the soak {a.soak_rejections}")
    hb = a.server_heartbeat_timeouts
    if c is None and (
        hb.get("client", 0) != a.soak_client_heartbeat_timeouts or hb.get("worker", 0)
    ):
        out.append(f"heartbeat timeouts: server {hb}, the soak {a.soak_client_heartbeat_timeouts}")
    out += r.end_state + r.unexpected_exits
    if r.violations:
        out.append(f"{len(r.violations)} invariant violations")
    if r.errors:
        out.append(f"{len(r.errors)} scenarios failed")
    if r.unexpected:
        out.append(f"{len(r.unexpected)} sessions ended unexpectedly")
    if r.exit_codes["server"] != 0 or any(r.exit_codes["workers"]) or any(r.exit_codes["nodes"]):
        out.append(f"exit codes on SIGTERM: {r.exit_codes}")
    for who, lines in r.log_errors.items():
        if lines:
            out.append(f"{who} logged {len(lines)} errors/tracebacks")
    if r.inactivity_timeouts != r.inactivity_warnings:
        out.append("an inactivity timeout came without its warning")
    return out


# Log lines that are known, understood and not yet fixed: (pattern, a pattern
# in the line after it, what it is). Empty: anything else fails the soak.
KNOWN_ISSUES: tuple[tuple[str, str, str], ...] = ()


def scan_logs(lines: list[str]) -> tuple[list[str], Counter[str]]:
    """Tracebacks and ERROR lines (a healthy program logs none under churn), and
    how many lines matched each known issue instead."""
    bad: list[str] = []
    known: Counter[str] = Counter()
    for i, line in enumerate(lines):
        if not ("Traceback" in line or " ERROR " in line or " CRITICAL " in line):
            continue
        following = lines[i + 1] if i + 1 < len(lines) else ""
        for pattern, next_pattern, what in KNOWN_ISSUES:
            if pattern in line and re.search(next_pattern, following):
                known[what] += 1
                break
        else:
            bad.append(line)
    return bad, known


def fmt_mb(s: Sample | None) -> str:
    return "-" if s is None else f"{s.rss / MB:6.1f}"


def report(soak: Soak, r: SoakResult, failures: list[str]) -> None:
    cfg, tally = soak.cfg, soak.tally
    minutes = soak.load_seconds / 60
    print()
    print(
        f"Soak: {cfg.workers} workers ({cfg.width}x{cfg.height} @ {cfg.fps} fps), "
        f"{soak.load_seconds:.0f} s of load, warm-up {cfg.warmup:.0f} s, "
        f"samples every {cfg.sample_interval:g} s, {r.wall_seconds:.0f} s in all; "
        "load average at the end "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(f"  server settings: {SERVER_SETTINGS}")
    print(
        f"\nsessions: {tally.started} started, {sum(tally.causes.values())} ended, "
        f"{tally.started / minutes:.1f}/min; rejections {sum(tally.rejected.values())} "
        f"({tally.rejected['probe']} probes while all busy, {tally.rejected['lane']} "
        "players between restarts)"
    )
    print("  ended by cause:")
    for cause, n in sorted(tally.causes.items(), key=lambda kv: -kv[1]):
        scen = ", ".join(
            f"{s} {k}" for (s, c), k in sorted(tally.by_scenario.items()) if c == cause
        )
        print(f"    {cause:28} {n:5}   ({scen})")
    print(
        f"  kills: {dict(tally.kills)}; restart to re-registered: "
        + (
            f"median {statistics.median(soak.pool.recoveries):.2f} s, "
            f"max {max(soak.pool.recoveries):.2f} s"
            if soak.pool.recoveries
            else "-"
        )
    )
    print(
        f"  touches seen in decoded video: {tally.touches_seen}; inactivity warnings before "
        f"the timeout: {tally.inactivity_warnings}/{tally.causes['inactivity_timeout']}"
    )
    srv = r.accounting
    print(
        f"  server counters: ended {srv.server_ended}, rejections "
        f"{srv.server_rejections}, heartbeat timeouts {srv.server_heartbeat_timeouts}, "
        f"shutdown acks {srv.server_shutdown_acks}"
    )
    print("\nmemory and descriptors (RSS MB / open fds / threads):")
    print(
        f"  {'process':24} {'start':>16} {'warm':>16} {'end':>16}   "
        "under load after warm-up: first third -> last third (slope/min)"
    )
    for name, series in soak.series.items():
        cells = []
        for point in ("start", "warm", "end"):
            s = series.quiet.get(point)
            cells.append("-" if s is None else f"{s.rss / MB:.1f}/{s.fds}/{s.threads}")
        tr = r.processes[name].trend
        tail = (
            f"{tr['rss_first_mb']:.1f} -> {tr['rss_last_mb']:.1f} MB "
            f"({tr['rss_slope_mb_per_min']:+.2f}), fds {tr['fds_first']:.0f} -> "
            f"{tr['fds_last']:.0f} ({tr['fds_slope_per_min']:+.2f})"
            if tr
            else "-"
        )
        mark = "" if series.measured else "*"
        print(f"  {name + mark:24} {cells[0]:>16} {cells[1]:>16} {cells[2]:>16}   {tail}")
    print("  * not checked (killed and restarted, or the soak itself, or redis-server)")
    for line in tally.settling:
        print(f"  descriptors still closing at a quiet point (read again): {line}")
    main = "server" if soak.front is None else f"node {soak.front.names[0]}"
    server_series = soak.series[main].samples
    if server_series:
        step = max(1, len(server_series) // 10)
        picks = server_series[::step] + ([server_series[-1]] if len(server_series) > 1 else [])
        print(
            f"  {main} under load, t s: RSS MB/fds: "
            + ", ".join(f"{s.at:.0f}: {s.rss / MB:.1f}/{s.fds}" for s in picks)
        )
    print(
        f"\ninvariants: {len(tally.violations)} violations in "
        f"{len(soak.series[main].samples)} status reads; "
        f"exit codes on SIGTERM: server {r.exit_codes['server']}, "
        f"workers {r.exit_codes['workers']}"
    )
    for line in tally.violations[:10]:
        print(f"  violation {line}")
    c = r.cluster
    if c is not None:
        print(
            f"\ncluster: {c.nodes} nodes behind a round-robin balancer "
            f"(connections by node port {c.balancer}); {c.node_kills} node SIGKILLs, "
            "kill to listening again "
            + (
                f"median {statistics.median(c.restart_seconds):.2f} s, "
                f"max {max(c.restart_seconds):.2f} s"
                if c.restart_seconds
                else "-"
            )
        )
        print(
            f"  sessions ended by a node's death: {len(c.node_losses)}; status reads missing "
            f"a node (not judged): {c.partial_reads}; violations gone on a re-read: "
            f"{len(c.transient_violations)}"
        )
        for line in (c.node_losses + c.transient_violations)[:10]:
            print(f"    {line}")
        for point, kinds in c.census.items():
            shown = dict(sorted(kinds.items()))
            print(f"  Redis keys at rest ({point}): {sum(kinds.values())} {shown}")
        print(
            f"  Redis keys after every node stopped: {sum(c.leftover.values())} "
            f"{c.leftover}; without a TTL (pc:seq aside): {c.leftover_without_ttl or 'none'}"
        )
    for line in tally.unexpected[:20]:
        print(f"  unexpected: {line}")
    for line in tally.errors[:20]:
        print(f"  error: {line}")
    for what, n in r.known_issues.items():
        print(f"  known issue, {n} log lines: {what}")
    for line in (r.log_errors["server"] + r.log_errors["workers"])[:10]:
        print(f"  logged: {line}")
    for name, p in r.processes.items():
        if p.measured and p.trend is None:
            print(f"  note: {name}: too few samples after warm-up for a trend")
    print()
    if failures:
        print("VERDICT: FAIL")
        for f in failures:
            print(f"  - {f}")
    else:
        print(
            f"VERDICT: PASS (RSS within max({cfg.rss_tolerance_mb:g} MB, "
            f"{cfg.rss_tolerance_fraction:.0%}), fds within +{cfg.fd_slack_quiet} at rest and "
            f"+{cfg.fd_slack_trend} under load, no invariant broken, every end accounted for)"
        )


async def run_soak(cfg: Config) -> SoakResult:
    """Run the soak and return what it measured (tests/test_soak_ci.py judges it)."""
    worker_flags = ["--width", str(cfg.width), "--height", str(cfg.height), "--fps", str(cfg.fps)]
    wall = time.monotonic()
    end_state: list[str] = []
    async with contextlib.AsyncExitStack() as stack:
        server: ServerProcess | ClusterFront
        if cfg.cluster:
            server = front = ClusterFront(cfg.cluster)
            stack.push_async_callback(front.close)
            await front.start()
        else:
            server = await stack.enter_async_context(running_server(**SERVER_SETTINGS))
        pool = Pool(server, worker_flags, cfg.workers)
        try:
            for slot in pool.slots:
                await pool.start(slot)
            soak = Soak(cfg, server, pool)
            async with asyncio.timeout(cfg.duration + 600):
                await soak.run_all()
            metrics, consistent = await _end_check(server, end_state)
            status_ids = {w["id"] for w in consistent["workers"]}
            if status_ids != {s.current_id for s in pool.slots}:
                end_state.append("the workers at the end are not each slot's latest registration")
        finally:
            await pool.stop()
        node_codes: list[int] = []
        if isinstance(server, ClusterFront):
            node_codes = await server.stop()
            server_code = next((c for c in node_codes if c), 0)
        else:
            server_code = await server.stop()
        tally = soak.tally
        server_errors, known = scan_logs(server.lines)
        worker_errors: list[str] = []
        for wp in (wp for slot in pool.slots for wp in slot.history):
            bad, seen = scan_logs(wp.lines)
            worker_errors += bad
            known += seen

    processes = process_figures(soak)
    counted = accounting(soak, metrics)
    figures: dict[str, Any] = {
        "config": {k: v for k, v in vars(cfg).items() if k != "json_path"},
        "server_settings": SERVER_SETTINGS,
        "load_seconds": soak.load_seconds,
        "wall_seconds": time.monotonic() - wall,
        "sessions_started": tally.started,
        "sessions_per_minute": tally.started / (soak.load_seconds / 60),
        "ended_by_cause": dict(tally.causes),
        "by_scenario": {f"{s}->{c}": n for (s, c), n in tally.by_scenario.items()},
        "rejected": dict(tally.rejected),
        "kills": dict(tally.kills),
        "restart_seconds": pool.recoveries,
        "touches_seen": tally.touches_seen,
        "inactivity_warnings": tally.inactivity_warnings,
        "violations": tally.violations,
        "unexpected": tally.unexpected,
        "errors": tally.errors,
        "end_state": end_state,
        "exit_codes": {"server": server_code, "workers": pool.exit_codes, "nodes": node_codes},
        "log_errors": {"server": server_errors[:20], "workers": worker_errors[:20]},
        "known_issues": dict(known),
        "fds_settling": tally.settling,  # over the slack at a first read, gone later
        "processes": {name: p.to_json() for name, p in processes.items()},
        "server": vars(counted),
    }
    cluster = None
    if isinstance(server, ClusterFront):
        lb = server.lb
        cluster = ClusterFigures(
            nodes=cfg.cluster,
            node_kills=len(server.kills),
            restart_seconds=server.restart_seconds,
            node_losses=list(tally.node_losses),
            partial_reads=tally.partial_reads,
            transient_violations=list(tally.transient),
            census=server.census,
            at_rest_problems=server.at_rest_problems(cfg.workers),
            leftover=server.leftover,
            leftover_without_ttl=server.leftover_without_ttl,
            balancer={**{str(k): v for k, v in lb.by_port.items()}, "skipped": lb.skipped},
        )
        figures["cluster"] = cluster.to_json()
    result = SoakResult(
        cfg=cfg,
        load_seconds=soak.load_seconds,
        wall_seconds=figures["wall_seconds"],
        sessions_started=tally.started,
        ended_by_cause=dict(tally.causes),
        inactivity_timeouts=tally.causes["inactivity_timeout"],
        inactivity_warnings=tally.inactivity_warnings,
        processes=processes,
        accounting=counted,
        violations=list(tally.violations),
        end_state=end_state,
        unexpected=list(tally.unexpected),
        errors=list(tally.errors),
        unexpected_exits=list(pool.unexpected_exits),
        exit_codes=figures["exit_codes"],
        log_errors={"server": server_errors, "workers": worker_errors},
        known_issues=dict(known),
        figures=figures,
        cluster=cluster,
    )
    failures = problems(result)
    figures["failures"] = failures
    report(soak, result, failures)
    if failures:
        with tempfile.NamedTemporaryFile(
            "w", prefix="playcast-soak-", suffix=".log", delete=False
        ) as f:
            f.write("\n".join(server.lines))
            for slot in pool.slots:
                for i, wp in enumerate(slot.history):
                    f.write(f"\n\n===== worker slot {slot.index}, process {i} =====\n")
                    f.write("\n".join(wp.lines))
        print(f"  logs: {f.name}")
    text = json.dumps(figures, default=str)
    if cfg.json_path:
        _write(cfg.json_path, text)
    print("SOAK_RESULT " + text)
    return result


async def _end_check(
    server: ServerProcess | ClusterFront, end_state: list[str]
) -> tuple[dict[str, float], dict[str, Any]]:
    """The end's status (no violation) and metrics: a lone server's /metrics must
    agree with its /api/status; a cluster's status is read on n1, its counters
    summed over the nodes alive now (a killed node's went with it)."""
    if isinstance(server, ServerProcess):
        try:
            doc = await server.assert_consistent()
        except AssertionError as exc:
            end_state.append(f"/api/status and /metrics disagree at the end: {exc}")
            doc = await server.status()
        return parse_metrics(await server.metrics()), doc
    summed: Counter[str] = Counter()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.status_url}/api/status?check=1") as r:
            doc = await r.json()
        for life in server.nodes.values():
            async with http.get(f"{life.proc.url}/metrics") as r:
                for key, value in parse_metrics(await r.text()).items():
                    summed[re.sub(r'node="[^"]*",?', "", key).replace("{}", "")] += value
    if doc["violations"]:
        end_state.append(f"violations at the end: {doc['violations']}")
    if doc.get("unanswered_nodes"):
        end_state.append(f"nodes not answering at the end: {doc['unanswered_nodes']}")
    return dict(summed), doc


def _write(path: str, text: str) -> None:
    with open(path, "w") as out:
        out.write(text)


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--ci", action="store_true", help="one-minute version for CI")
    p.add_argument("--duration", type=float, help="seconds of load (default 600; --ci 60)")
    p.add_argument("--warmup", type=float, help="seconds before measuring (default 60; --ci 15)")
    p.add_argument("--workers", type=int, default=3, help="worker processes (default 3)")
    p.add_argument("--sample-interval", type=float, help="seconds (default 3; --ci 1)")
    p.add_argument("--kill-every", type=float, help="seconds between SIGKILLs (30; --ci 20)")
    p.add_argument("--probe-every", type=float, help="seconds between busy probes (10; --ci 5)")
    p.add_argument("--width", type=int, default=192)
    p.add_argument("--height", type=int, default=352)
    p.add_argument("--fps", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", dest="json_path", help="write every figure here")
    p.add_argument(
        "--cluster",
        type=int,
        default=0,
        help="nodes on one redis-server behind a balancer (default 0: one lone server)",
    )
    p.add_argument(
        "--node-kill-every", type=float, help="cluster: seconds between node SIGKILLs (60; --ci 20)"
    )
    a = p.parse_args(argv)
    ci = a.ci

    def pick(value: float | None, long: float, short: float) -> float:
        return value if value is not None else (short if ci else long)

    cfg = Config(
        duration=pick(a.duration, 600, 60),
        warmup=pick(a.warmup, 60, 15),
        workers=a.workers,
        sample_interval=pick(a.sample_interval, 3, 1),
        kill_every=pick(a.kill_every, 30, 20),
        probe_every=pick(a.probe_every, 10, 5),
        width=a.width,
        height=a.height,
        fps=a.fps,
        seed=a.seed,
        json_path=a.json_path,
        cluster=a.cluster,
        node_kill_every=pick(a.node_kill_every, 60, 20),
    )
    if cfg.workers < 2:
        p.error("--workers must be at least 2 (one is killed, the others are measured)")
    if cfg.cluster == 1 or cfg.cluster < 0:
        p.error("--cluster needs at least 2 nodes (n1 lives, the others are killed in turn)")
    if cfg.warmup >= cfg.duration:
        p.error("--warmup must be shorter than --duration")
    return cfg


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="soak %(levelname)s %(name)s %(message)s")
    # The peers that fail handshakes on purpose make aiortc complain; that is the point.
    for noisy in ("aiortc", "aioice"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    result = asyncio.run(run_soak(cfg))
    return 1 if problems(result) else 0


if __name__ == "__main__":
    sys.exit(main())
