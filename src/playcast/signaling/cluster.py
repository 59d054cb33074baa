"""This node's side of a cluster: the I/O that joins the core to Redis.

Three loops, each thin:
- the **outbound** loop carries out, in order and pipelined, what the core
  asked of the shared state (scripts in ``redis_shared``) and told other
  nodes (an entry on their stream), and feeds each outcome back as a step;
- the **bus** link is subscribed to this node's channel: every entry put
  on its stream is also published there, so it is handed over without a
  request and fed to the core at once, in order; the stream is read only to
  catch up, after (re)subscribing;
- the **liveness** loop renews this node's key, finds nodes whose key has
  expired (and cleans up after them, once, cluster-wide), and notices when
  this node is cut off from Redis for longer than a node may be.

A short Redis outage (under ``node_ttl``) loses nothing: what could not be
written is retried in order. A longer one cuts the node off (``hub.cut_off``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
import time
from collections import deque
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from playcast.signaling import bus
from playcast.signaling.events import event
from playcast.signaling.hub import Hub
from playcast.signaling.redis_link import RedisLink
from playcast.signaling.redis_shared import RedisShared, outcome_of
from playcast.signaling.shared import EndSession, Op, Pair, Publish

log = logging.getLogger("playcast.signaling")

# Outbound items: an operation on the shared state, or (node, message).
Item = Op | tuple[str, bus.BusMessage]
BATCH = 512
BUS_PING = 0.5  # seconds between checks that the bus link still answers
# A busy node's round trips to Redis cost more than what they carry (about
# 20 µs of Redis's CPU each, however few commands, and a wake-up of the
# node): the outbound loop sends at most once per GATHER seconds; what comes
# meanwhile rides along. An idle node waits for nothing (its last round trip
# is older than that).
GATHER = 0.001
# What nobody waits for at this scale (the shared state's bookkeeping after
# a session, the word that a handshake or a session is over, a line's new
# order, a worker's registration: a worker restarting takes seconds) does
# not make a round trip of its own: it waits, in order, for the next item
# that is waited for, or at most LINGER seconds.
LINGER = 0.005
STREAM_MAXLEN = 10_000
_REQUEUED: Any = object()  # an operation put back in the queue, no answer yet


class ClusterLink:
    def __init__(self, hub: Hub, flush: Any, url: str) -> None:
        self.hub = hub
        self.flush = flush  # the pump's: carry out the core's effects after a step
        self.node = hub.node
        self.ttl = hub.settings.node_ttl
        timeout = max(0.5, self.ttl)
        self.redis: Redis = Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self.shared = RedisShared(self.redis)
        # The two hot paths each own one connection, used without the
        # client's per-command machinery (``redis_link``).
        self.out_link = RedisLink(self.redis, timeout)
        self.bus_link = RedisLink(self.redis, timeout, self._on_push, self._bus_lost)
        self._bus_down = asyncio.Event()  # the bus link's connection was lost
        # The last entry of this node's stream fed to the core: its id as
        # Redis wrote it, and as numbers (ms, seq) to compare.
        self._last_id: bytes = b"0-0"
        self._last: tuple[int, int] = (0, 0)
        # While catching up on the stream, what is pushed waits here.
        self._catching = True
        self._held: list[list[Any]] = []
        self.outbound: deque[Item] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()  # set whenever the outbound queue empties
        self._sent_at = 0.0  # when the last batch went out (monotonic)
        # The queue holds an item that is waited for (else, since when it
        # has held items that may linger).
        self._urgent = False
        self._lingering_since = 0.0
        self.reachable = False  # the last exchange with Redis worked
        # This node's liveness was renewed since Redis became reachable again
        # (a restarted Redis has lost every node's key: until this node's is
        # back, the others may take it for dead, so it takes no one new).
        self.renewed = False
        self._beat_now = asyncio.Event()
        self.last_ok = time.monotonic()
        self.known: set[str] = set()
        self._announced = False
        self._tasks: list[asyncio.Task[None]] = []
        # Set by stop: the loops end at their next turn even if a cancellation
        # is lost (Python 3.11's wait_for, which redis-py uses for writes,
        # drops one that lands as the write completes).
        self._stopping = False
        self.commands = 0  # Redis commands sent (pipelined ones counted one by one)

    # --- from the pump -----------------------------------------------------

    def submit(self) -> None:
        """Take what the last step asked of the cluster, in order."""
        hub = self.hub
        if not (hub.requests or hub.tells):
            return
        if not self.outbound:
            self._lingering_since = time.monotonic()
        new: list[Item] = [*hub.take_requests(), *hub.take_tells()]
        self.outbound.extend(new)
        if not self._urgent and not all(map(_may_linger, new)):
            self._urgent = True
        self._wake.set()

    # --- lifetime ------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._liveness(), name="cluster-liveness"),
            asyncio.create_task(self._outbound(), name="cluster-outbound"),
            asyncio.create_task(self._bus(), name="cluster-bus"),
        ]

    async def stop(self) -> None:
        """Leave the cluster in order: what is queued is written, then this
        node's records go (its peers have been drained already)."""
        if self.outbound and self.reachable:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._idle.wait()
        self._stopping = True
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                await task
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            grace = self.hub.settings.resume_grace
            await self.shared.forget_node(self.node, force=True, grace=grace)
        await self.out_link.close()
        await self.bus_link.close()
        await self.redis.aclose()

    async def take_over(self) -> None:
        """Before this node listens: a previous process under the same id
        (systemd restarting ``--node-id A`` after a crash) may have died
        within the TTL, unseen by the others, its records and its bus stream
        still in Redis. Wait until its liveness key expires and the others
        have had a TTL to find it dead (each ends the sessions it shared),
        clean up after it, announce this node, and give the others a liveness
        period to see it back before any peer can reach it. Redis out of
        reach: nothing can be checked; the node starts as before (503 until
        Redis answers)."""
        node, redis = self.node, self.redis
        try:
            if not (
                await redis.exists(f"pc:node:{node}") or await redis.sismember("pc:nodes", node)
            ):
                return
            log.warning("node id %s was in use: waiting out its previous process", node)
            while True:  # a live namesake renews its key: this waits, as it should
                left = await redis.pttl(f"pc:node:{node}")
                if left < 0:
                    break
                await asyncio.sleep(left / 1000)  # until the key expires on Redis's clock
            await asyncio.sleep(self.ttl)  # the others' liveness loops find it dead
            # Its sessions stay for the resume grace: their members may be
            # resuming on other nodes right now.
            grace = self.hub.settings.resume_grace
            await self.shared.forget_node(node, force=True, grace=grace)
            await self.shared.beat(node, self.ttl, json.dumps({"started": time.time()}))
            await asyncio.sleep(self.ttl / 2)  # the others see this node back
            event("node_took_over", node=node)
        except (RedisError, OSError) as exc:
            log.warning("cannot check node id %s for a previous process: %r", node, exc)

    # --- the loops -------------------------------------------------------------

    async def _outbound(self) -> None:
        backoff = 0.05
        with contextlib.suppress(RedisError, OSError):
            await self.shared.load()  # else the first NOSCRIPT loads them
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            self._idle.clear()
            while self.outbound:
                if not self._urgent:
                    wait = self._lingering_since + LINGER - time.monotonic()
                    if wait > 0:  # only what may wait: until something may not
                        self._wake.clear()
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(wait):
                                await self._wake.wait()
                        continue
                if GATHER:
                    wait = self._sent_at + GATHER - time.monotonic()
                    if wait > 0:  # busy: what comes meanwhile goes in the same round trip
                        await asyncio.sleep(wait)
                self._sent_at = time.monotonic()
                batch = [self.outbound.popleft() for _ in range(min(BATCH, len(self.outbound)))]
                self._urgent = bool(self.outbound)
                self._lingering_since = self._sent_at
                try:
                    results = await self._write(batch)
                except (RedisError, OSError) as exc:
                    self._unreachable(exc)
                    self._requeue(batch)
                    await asyncio.sleep(backoff)
                    backoff = min(1.0, backoff * 2)
                    continue
                backoff = 0.05
                self._reached()
                for op, result in results:
                    if result is _REQUEUED:
                        continue
                    outcome = None
                    if isinstance(result, Exception):
                        log.error("shared-state op %r failed: %r", op, result)
                    else:
                        outcome = outcome_of(op, result)
                    self.hub.on_outcome(op, outcome)
                self.flush()
            self._idle.set()

    async def _write(self, batch: list[Item]) -> list[tuple[Op, Any]]:
        """One pipeline for the batch: each operation one EVALSHA, in order,
        then one script putting every message on its node's stream, one
        entry per node holding its messages in order (one push, however
        many messages). The messages going after the operations only delays
        them: the other node hears when it will anyway, so nothing it can
        see now was impossible before. Returns each operation's raw answer."""
        ops: list[Op] = []
        tells: dict[str, list[bus.BusMessage]] = {}
        for item in batch:
            if isinstance(item, tuple):
                tells.setdefault(item[0], []).append(item[1])
            else:
                ops.append(item)
        commands: list[tuple[Any, ...]] = [self.shared.evalsha(op) for op in ops]
        if tells:
            entries = [(node, *bus.entry(msgs)) for node, msgs in tells.items()]
            commands.append(self.shared.tell(entries, STREAM_MAXLEN))
        self.commands += len(commands)
        results = await self.out_link.run(commands)
        answers = list(zip(ops, results, strict=False))
        told: Any = results[len(ops)] if tells else None
        messages: list[Item] = [(n, m) for n, msgs in tells.items() for m in msgs]
        if isinstance(told, NoScriptError) or any(isinstance(r, NoScriptError) for _, r in answers):
            answers = await self._again(
                answers, messages if isinstance(told, NoScriptError) else []
            )
        elif isinstance(told, Exception):
            log.error("messages for other nodes refused: %r", told)
        return answers

    async def _again(
        self, answers: list[tuple[Op, Any]], messages: list[Item]
    ) -> list[tuple[Op, Any]]:
        """Redis lost its script cache (restarted, or failed over): load the
        scripts and send what it refused again, in order: the operations,
        then ``messages`` (if refused too). If that fails, they go back at
        the head of the queue."""
        refused = [op for op, r in answers if isinstance(r, NoScriptError)]
        commands: list[tuple[Any, ...]] = [self.shared.evalsha(op) for op in refused]
        tells: dict[str, list[bus.BusMessage]] = {}
        for node, msg in (m for m in messages if isinstance(m, tuple)):
            tells.setdefault(node, []).append(msg)
        if tells:
            entries = [(node, *bus.entry(msgs)) for node, msgs in tells.items()]
            commands.append(self.shared.tell(entries, STREAM_MAXLEN))
        try:
            await self.shared.load()
            self.commands += len(commands)
            again = iter(await self.out_link.run(commands))
        except (RedisError, OSError) as exc:
            self._unreachable(exc)
            self._requeue([*refused, *messages])
            return [(op, _REQUEUED if isinstance(r, NoScriptError) else r) for op, r in answers]
        return [(op, next(again) if isinstance(r, NoScriptError) else r) for op, r in answers]

    def _requeue(self, batch: list[Item]) -> None:
        """Back at the head, in order; but a join or a registration is not
        kept waiting on an outage: it is refused now (outcome None)."""
        keep: list[Item] = []
        for item in batch:
            if isinstance(item, Pair | Publish):
                self.hub.on_outcome(item, None)
            elif not self.hub.isolated:
                keep.append(item)
        self.outbound.extendleft(reversed(keep))
        self._urgent = True
        self.flush()

    async def _bus(self) -> None:
        """Keep the bus link subscribed to this node's channel (catching up
        on the stream each time it subscribes) and check that it answers."""
        key = f"pc:bus:{self.node}"
        while not self._stopping:
            try:
                if not self.bus_link.connected:
                    self._catching, self._held = True, []
                    self._bus_down.clear()
                    (answer,) = await self.bus_link.run([("SUBSCRIBE", key)])
                    if isinstance(answer, ResponseError):
                        raise answer
                    await self._catch_up(key)
                else:
                    (answer,) = await self.bus_link.run([("PING",)])
                    if isinstance(answer, ResponseError):
                        raise answer
            except (RedisError, OSError) as exc:
                self.bus_link.drop()
                self._unreachable(exc)
                await asyncio.sleep(0.1)
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(BUS_PING):
                    await self._bus_down.wait()

    def _bus_lost(self) -> None:
        self._bus_down.set()

    async def _catch_up(self, key: str) -> None:
        """What was put on this node's stream since the last entry read (or
        ever, at start): read it, then what was pushed meanwhile."""
        while True:
            response = await self.redis.xread({key: self._last_id}, count=BATCH)
            entries = [e for _stream, es in _streams(response) for e in es]
            if not entries:
                break
            for entry_id, fields in entries:
                self._deliver(entry_id, _fields(fields))
            self.flush()
        held, self._held, self._catching = self._held, [], False
        if held:
            self._on_push(held)

    def _on_push(self, pushes: list[list[Any]]) -> None:
        """Entries published on this node's channel: ``[b"message", channel,
        b"ID FIELD VALUE"]`` each, in the order of the stream."""
        if self._stopping:
            return  # leaving: the core takes no more steps from the cluster
        if self._catching:
            self._held.extend(pushes)
            return
        for push in pushes:
            data: bytes = push[2]
            entry_id, _, rest = data.partition(b" ")
            self._deliver(entry_id, {rest[:1]: rest[1:]})
        self.flush()

    def _deliver(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        """One stream entry to the core, unless it was fed already."""
        ms, _, seq = entry_id.partition(b"-")
        key = (int(ms), int(seq or 0))
        if key <= self._last:
            return  # read when catching up, and pushed as well
        self._last, self._last_id = key, entry_id
        try:
            msgs = bus.unpack(fields)
        except Exception:
            log.exception("unreadable bus entry dropped")
            return
        for msg in msgs:
            if isinstance(msg, bus.Snap):
                asyncio.get_running_loop().create_task(self._answer_snap(msg.reply))
                continue
            self.hub.on_bus(msg)

    async def _liveness(self) -> None:
        period = self.ttl / 4
        info = json.dumps({"started": time.time()})
        while not self._stopping:
            self._beat_now.clear()
            try:
                dropped = await self.shared.beat(self.node, self.ttl, info)
                self._reached()
                self.renewed = True
                if dropped and self._announced:
                    # The others found this node dead (a pause longer than the
                    # TTL, or Redis lost its data): what it shared is gone.
                    log.warning("this node was dropped from the cluster; rejoining")
                    self.hub.cut_off()
                if self.hub.isolated:
                    self.hub.reconnected()
                self._announced = True
                self.flush()
                await self._find_dead()
            except (RedisError, OSError) as exc:
                self._unreachable(exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(period * random.uniform(0.8, 1.0)):
                    await self._beat_now.wait()  # or at once when Redis is back

    async def _find_dead(self) -> None:
        members = {_text(m) for m in await self.redis.smembers("pc:nodes")}
        partners = {s.worker_node for s in self.hub.sessions.values()} | {
            s.client_node for s in self.hub.sessions.values()
        }
        candidates = sorted((self.known | members | partners) - {self.node})
        if not candidates:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for node in candidates:
                pipe.exists(f"pc:node:{node}")
            alive = await pipe.execute()
        self.known = {n for n, up in zip(candidates, alive, strict=True) if up}
        for node, up in zip(candidates, alive, strict=True):
            if up and node in self.hub.gone_nodes:
                self.hub.node_back(node)  # restarted under its id: a new node
            if up or node in self.hub.gone_nodes:
                continue
            lines = await self.shared.forget_node(node, grace=self.hub.settings.resume_grace)
            event("node_found_dead", node=node, cleaned_here=lines is not None)
            self.hub.node_down(node, lines)
            self.flush()

    # --- reachability --------------------------------------------------------

    def _reached(self) -> None:
        self.last_ok = time.monotonic()
        if not self.reachable:
            self.reachable = True
            self.renewed = False
            self._beat_now.set()
            self.hub.metrics.count(self.hub.metrics.node_events, "redis_reachable")
            event("redis_reachable", node=self.node)

    def _unreachable(self, exc: BaseException) -> None:
        if self.reachable:
            self.reachable = False
            self.hub.metrics.count(self.hub.metrics.node_events, "redis_unreachable")
            log.warning("redis unreachable: %r", exc)
        if time.monotonic() - self.last_ok > self.ttl and not self.hub.isolated:
            self.hub.cut_off()
            self.outbound = deque(i for i in self.outbound if isinstance(i, Pair | Publish))
            self.flush()

    @property
    def serving(self) -> bool:
        return self.reachable and self.renewed and not self.hub.isolated

    # --- the whole cluster's status --------------------------------------------

    async def _answer_snap(self, reply: str) -> None:
        with contextlib.suppress(RedisError, OSError):
            doc = self.hub.snapshot()
            doc["violations"] = list(self.hub.check_invariants())
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.rpush(reply, json.dumps(doc))
                # The asker waits a second at most: an answer later than that
                # is never read, and must not outlive it by much.
                pipe.expire(reply, 3)
                await pipe.execute()

    async def status(self, check: bool) -> dict[str, Any]:
        """Every live node's snapshot, merged; with ``check``, the invariants
        of each node and of the shared state, cluster-wide."""
        nodes = sorted(_text(m) for m in await self.redis.smembers("pc:nodes"))
        others = [n for n in nodes if n != self.node]
        reply = f"pc:reply:{secrets.token_hex(8)}"
        if others:
            ask = bus.entry([bus.Snap(reply=reply)])
            await self.shared.post([(node, *ask) for node in others], STREAM_MAXLEN)
        mine = self.hub.snapshot()
        mine["violations"] = list(self.hub.check_invariants())
        docs = [mine]
        deadline = time.monotonic() + 1.0
        while len(docs) < len(others) + 1:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            got = await self.redis.blpop([reply], timeout=max(0.01, left))
            if got is None:
                break
            docs.append(json.loads(got[1]))
        await self.redis.delete(reply)
        merged = _merge(docs)
        merged["nodes"] = [
            {"id": d["node"], "workers": len(d["workers"]), "clients": len(d["clients"])}
            for d in docs
        ]
        missing = sorted(set(others) - {d["node"] for d in docs})
        if missing:
            merged["unanswered_nodes"] = missing
        if check:
            merged["violations"] = [
                f"{d['node']}: {v}" for d in docs for v in d.get("violations", [])
            ] + await self._check_shared(docs)
        return merged

    async def _check_shared(self, docs: list[dict[str, Any]]) -> list[str]:
        """The invariants only the shared state can tell."""
        out: list[str] = []
        live_workers = {w["id"]: w for d in docs for w in d["workers"]}
        live_clients = {c["id"] for d in docs for c in d["clients"]}
        in_session: dict[str, str] = {}
        async for key in self.redis.scan_iter(match="pc:s:*", count=500):
            s = {_text(k): _text(v) for k, v in (await self.redis.hgetall(key)).items()}
            sid = _text(key)[5:]
            if not s:
                continue
            if s["worker"] in in_session:
                out.append(
                    f"worker {s['worker']} in two sessions: {in_session[s['worker']]}, {sid}"
                )
            in_session[s["worker"]] = sid
            if s["worker"] not in live_workers or s["client"] not in live_clients:
                out.append(f"session {sid} has a member that is gone")
        async for key in self.redis.scan_iter(match="pc:w:*", count=500):
            wid = _text(key)[5:]
            if wid not in live_workers:
                out.append(f"ghost in the directory: worker {wid}")
        async for key in self.redis.scan_iter(match="pc:pool:*", count=500):
            for raw in await self.redis.zrange(key, 0, -1):
                wid = _text(raw)
                w = live_workers.get(wid)
                if wid in in_session or (w is not None and w["status"] == "busy"):
                    out.append(f"worker {wid} both available and busy")
                elif w is None:
                    out.append(f"pool holds {wid}, which is gone")
        return out


def _may_linger(item: Item) -> bool:
    """Nobody waits for it: it may ride with the next round trip (LINGER)."""
    if isinstance(item, tuple):
        return isinstance(item[1], bus.Up | bus.End | bus.Line)
    # Not MarkConnected: a node dying within LINGER of a handshake's end
    # would leave the shared phase behind, and a resume elsewhere reads it.
    return isinstance(item, EndSession | Publish)


def _streams(response: Any) -> Any:
    """XREAD's answer as (stream, entries) pairs: a map in RESP3, a list of
    pairs in RESP2, None when there is nothing new."""
    if response is None:
        return ()
    return response.items() if isinstance(response, dict) else response


def _fields(fields: Any) -> dict[bytes, bytes]:
    if isinstance(fields, dict):
        return fields
    return dict(zip(fields[::2], fields[1::2], strict=True))


def _merge(docs: list[dict[str, Any]]) -> dict[str, Any]:
    sessions: dict[str, dict[str, Any]] = {}
    for d in docs:
        for s in d["sessions"]:
            # Each session is on one or two nodes; the owner's copy (the
            # client's node) has the deadlines and the final phase.
            if s["id"] not in sessions or s["client_node"] == d["node"]:
                sessions[s["id"]] = s
    return {
        "workers": [w for d in docs for w in d["workers"]],
        "clients": [c for d in docs for c in d["clients"]],
        "sessions": list(sessions.values()),
        "games": docs[0]["games"],
        "closing": sum(d["closing"] for d in docs),
        "stopping": any(d["stopping"] for d in docs),
        "node": docs[0]["node"],
    }


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
