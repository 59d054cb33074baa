"""This node's side of a cluster: the I/O that joins the core to Redis.

Three loops, each thin:
- the **outbound** loop carries out, in order and pipelined, what the core
  asked of the shared state (scripts in ``shared/redis_state``) and told other
  nodes (a numbered entry published on their channel, ``busorder``), and
  feeds each outcome back as a step;
- the **bus** link is subscribed to this node's channel: what other nodes
  publish there is handed over without a request and fed to the core at
  once, in each sender's order; a gap (the subscription dropped, say) is
  filled by asking the sender again;
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
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from playcast.signaling import bus
from playcast.signaling.busorder import Ask, Inbox, Outbox, parse
from playcast.signaling.earlystart import EarlyStarts
from playcast.signaling.events import event
from playcast.signaling.hub import Hub
from playcast.signaling.outbound import Batch, Outbound, Raw
from playcast.signaling.precise_sleep import PreciseSleep
from playcast.signaling.redis_link import RedisLink
from playcast.signaling.shared import Op, Pair, Publish
from playcast.signaling.shared.redis_state import RedisShared, outcome_of

log = logging.getLogger("playcast.signaling")


BUS_PING = 0.5  # seconds between checks that the bus link still answers
# Entries published with their answers skipped are confirmed by the next
# answer on the link; with none coming, a PING after this long confirms them
# (a link lost before that sends them again: the receiver drops doubles).
CONFIRM = 0.25
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
        # Each of its connections loads the scripts first: a refused EVALSHA
        # (NOSCRIPT) would let its batch's messages go before the operation.
        self.out_link = RedisLink(
            self.redis, timeout, on_lost=self._out_lost, greeting=self.shared.load_commands()
        )
        self.bus_link = RedisLink(self.redis, timeout, self._on_push, self._bus_lost)
        self._bus_down = asyncio.Event()  # the bus link's connection was lost
        self._subscribed = asyncio.Event()  # set once: the node listens before it is announced
        self.outbox = Outbox(self.node, secrets.token_hex(4))
        self.inbox = Inbox()
        # Redis takes CLIENT REPLY SKIP (a managed Redis may not): published
        # entries then cost Redis no answer, and this node no wake-up for it.
        self._skip = False
        self._unconfirmed: list[Raw] = []  # published, answer skipped, not yet confirmed
        self._link_lost = False
        self.early = EarlyStarts(hub.settings, self.node)  # a pairing tells the worker's node
        # What is owed Redis, and when it goes (``outbound``, sans-I/O).
        self.out = Outbound(hub.settings.cluster_gather, self.early.spare)
        # The window is milliseconds, uvloop's timers round to one (and wait
        # for a ready loop): a window's end on time is a shorter wait for every
        # crossing, worth the wake-up it may cost (docs/cluster.md, Sizing).
        self._sleep = PreciseSleep()
        self._idle = asyncio.Event()  # nothing queued, nothing being written
        self._idle.set()
        self._wake = asyncio.Event()  # something was queued (or the link lost)
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
        self.out.add(hub.take_requests(), hub.take_tells(), time.monotonic())
        self._queued()

    def _queued(self) -> None:
        """Something was queued: the outbound loop looks, and a settle waits."""
        if self._idle.is_set():
            self._idle.clear()
        self._wake.set()

    async def settle(self, timeout: float = 0.25) -> None:
        """What this node has queued for Redis is written, lingering or not:
        a read of the shared state then sees every change this node made
        (the invariants' check would otherwise find, say, a worker whose
        session ended here still in the directory for a few milliseconds)."""
        if self._idle.is_set():
            return
        self.out.hurry()
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._idle.wait()

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
        if self.out and self.reachable:
            await self.settle(2.0)
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
        self._sleep.close()
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
            (on,) = await self.out_link.run([("CLIENT", "REPLY", "ON")])
            self._skip = on in (b"OK", "OK")
        while not self._stopping:
            if self._unconfirmed and not self.out:
                try:
                    async with asyncio.timeout(CONFIRM):
                        await self._wake.wait()
                except TimeoutError:
                    await self._confirm()
                    continue
            else:
                await self._wake.wait()
            self._wake.clear()
            self._idle.clear()
            if self._link_lost:
                self._link_lost = False
                self._resend_unconfirmed()
            while self.out:
                now = time.monotonic()
                wait = self.out.lingering(now)
                if wait > 0:  # only what may wait: until something may not
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait):
                            await self._wake.wait()
                    continue
                wait = self.out.gathering(now)
                if wait > 0:  # busy: what comes meanwhile goes in the same round trip
                    await self._sleep.sleep(wait)
                ops, raws = self._prepare(self.out.take(time.monotonic()))
                if not (ops or raws):
                    continue
                try:
                    results = await self._write(ops, raws)
                except (RedisError, OSError) as exc:
                    self._unreachable(exc)
                    unconfirmed, self._unconfirmed = self._unconfirmed, []
                    self._requeue(ops, [*unconfirmed, *raws])
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
                    held = self.early.answered(op, outcome) if isinstance(op, Pair) else []
                    self.hub.on_outcome(op, outcome)
                    for msg in held:
                        self.hub.on_bus(msg)
                self.flush()
            self._idle.set()

    def _prepare(self, batch: Batch) -> tuple[list[Op], list[Raw]]:
        """The batch's operations, and its entries: what was numbered already
        first, then one new entry per node holding its messages in order
        (one push, however many messages), numbered now: once, so that if it
        must go again the receiver knows it."""
        raws = batch.raws
        early = self.early
        for node, msgs in batch.tells.items():
            if early.on:
                for msg in msgs:
                    early.sending(msg)
            raws.append(Raw(node, self.outbox.stamp(node, bus.pack(msgs))))
        return batch.ops, raws

    async def _write(self, ops: list[Op], raws: list[Raw]) -> list[tuple[Op, Any]]:
        """One pipeline: each operation one EVALSHA, in order, then each
        entry one PUBLISH on its node's channel, its answer skipped. The
        messages going after the operations only delays them: the other node
        hears when it will anyway, so nothing it can see now was impossible
        before. Returns each operation's raw answer."""
        commands: list[tuple[Any, ...]] = [
            self.shared.evalsha(
                op, self.early.template(op, self.outbox) if isinstance(op, Pair) else None
            )
            for op in ops
        ]
        for raw in raws:
            if self._skip:
                commands.append(("CLIENT", "REPLY", "SKIP"))
            commands.append(("PUBLISH", f"pc:bus:{raw.node}", raw.data))
        self.commands += len(commands)
        results = await self.out_link.run(commands, len(ops) if self._skip else None)
        if self._skip and not ops:
            self._unconfirmed.extend(raws)
        else:
            self._unconfirmed.clear()  # answered: Redis has run all sent before
        answers = list(zip(ops, results, strict=False))
        if any(isinstance(r, NoScriptError) for _, r in answers):
            answers = await self._again(answers)
        return answers

    def _start_once(self, msg: bus.Start) -> None:
        """A Start, early (from a pairing script) or told after it: the core
        gets the first of the two."""
        if self.early.first(msg):
            self.hub.on_bus(msg)

    async def _confirm(self) -> None:
        """Entries published with no answer since: a PING's answer confirms them."""
        try:
            await self.out_link.run([("PING",)])
            self._unconfirmed.clear()
        except (RedisError, OSError) as exc:
            self._unreachable(exc)
            self._resend_unconfirmed()

    def _out_lost(self) -> None:
        self._link_lost = True
        self._wake.set()

    def _resend_unconfirmed(self) -> None:
        """The link was lost: what it may not have delivered goes again."""
        unconfirmed, self._unconfirmed = self._unconfirmed, []
        if unconfirmed and not self.hub.isolated:
            self.out.put_back([], unconfirmed)

    async def _again(self, answers: list[tuple[Op, Any]]) -> list[tuple[Op, Any]]:
        """Redis lost its script cache under a live connection (``SCRIPT
        FLUSH``; a new connection loads them first): load the scripts and
        send the operations it refused again, in order. If that fails, they
        go back at the head of the queue. The batch's messages went already:
        a partner may act on them before these run."""
        refused = [op for op, r in answers if isinstance(r, NoScriptError)]
        commands: list[tuple[Any, ...]] = [self.shared.evalsha(op) for op in refused]
        for op in refused:  # sent again without an early Start
            if isinstance(op, Pair):
                self.early.unanswered(op)
        try:
            self.commands += len(commands)
            again = iter(await self.out_link.run(commands, ahead=self.shared.load_commands()))
        except (RedisError, OSError) as exc:
            self._unreachable(exc)
            self._requeue(refused, [])
            return [(op, _REQUEUED if isinstance(r, NoScriptError) else r) for op, r in answers]
        return [(op, next(again) if isinstance(r, NoScriptError) else r) for op, r in answers]

    def _requeue(self, ops: list[Op], raws: list[Raw]) -> None:
        """Back at the head, in order; but a join or a registration is not
        kept waiting on an outage: it is refused now (outcome None)."""
        keep: list[Op] = []
        for op in ops:
            if isinstance(op, Pair | Publish):
                if isinstance(op, Pair) and self.early.unanswered(op):
                    # It may have run, its answer lost, its early Start out:
                    # whichever node got it ends that session.
                    end = bus.End(session_id=op.session_id, reason="client_failed")
                    self.out.add((), [(node, end) for node in sorted(self.known)], time.monotonic())
                self.hub.on_outcome(op, None)
            elif not self.hub.isolated:
                keep.append(op)
        if not self.hub.isolated:
            self.out.put_back(keep, raws)
        self.flush()

    async def _bus(self) -> None:
        """Keep the bus link subscribed to this node's channel (asking the
        others for what came meanwhile each time it subscribes again) and
        check that it answers."""
        key = f"pc:bus:{self.node}"
        while not self._stopping:
            try:
                if not self.bus_link.connected:
                    self._bus_down.clear()
                    (answer,) = await self.bus_link.run([("SUBSCRIBE", key)])
                    if isinstance(answer, ResponseError):
                        raise answer
                    if self._subscribed.is_set():
                        live = self.known | {
                            _text(m) for m in await self.redis.smembers("pc:nodes")
                        }
                        for ask in self.inbox.resync(live - {self.node}, time.monotonic()):
                            self._ask(ask, "subscribed_again")
                    self._subscribed.set()
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

    def _on_push(self, pushes: list[list[Any]]) -> None:
        """Entries published on this node's channel: ``[b"message", channel,
        entry]`` each, fed to the core in each sender's order."""
        if self._stopping:
            return  # leaving: the core takes no more steps from the cluster
        now = time.monotonic()
        for push in pushes:
            try:
                entry = parse(push[2])
            except (ValueError, UnicodeDecodeError):
                log.error("unreadable bus entry dropped: %r", push[2][:80])
                continue
            if entry.seq == 0:
                self._control(entry.sender, entry.epoch, entry.body)
                continue
            bodies, ask = self.inbox.receive(entry, now)
            if ask is not None:
                self._ask(ask, "gap")
            for body in bodies:
                self._deliver(body)
        self.flush()

    def _deliver(self, body: bytes) -> None:
        for msg in _unpack(body):
            if isinstance(msg, bus.Start):
                self._start_once(msg)
            elif not self.early.hold(msg):
                self.hub.on_bus(msg)

    def _control(self, sender: str, epoch: str, body: bytes) -> None:
        for msg in _unpack(body):
            if isinstance(msg, bus.Start):
                self._start_once(msg)  # early, from a pairing script
            elif isinstance(msg, bus.Snap):
                asyncio.get_running_loop().create_task(self._answer_snap(msg.reply))
            elif isinstance(msg, bus.Resend):
                lost, entries = self.outbox.resend(sender, msg.after, msg.epoch)
                event("bus_resend", to=sender, after=msg.after, entries=len(entries), lost=lost)
                if lost:
                    self._queue_control(sender, bus.Lost(upto=lost))
                for data in entries:
                    self._queue(Raw(sender, data))
                self._queue_control(sender, bus.Upto(last=self.outbox.last(sender)))
            elif isinstance(msg, bus.Lost):
                log.error(
                    "node %s no longer holds its entries up to %d for this node", sender, msg.upto
                )
                self.hub.metrics.count(self.hub.metrics.node_events, "bus_entries_lost")
                for body in self.inbox.lost(sender, epoch, msg.upto):
                    self._deliver(body)
            elif isinstance(msg, bus.Upto):
                ask = self.inbox.upto(sender, epoch, msg.last, time.monotonic())
                if ask is not None:
                    self._ask(ask, "lost_again")

    def _ask(self, ask: Ask, why: str) -> None:
        """What ``ask.sender`` sent may have been missed: ask it for the rest."""
        self.hub.metrics.count(self.hub.metrics.node_events, "bus_resend_asked")
        event("bus_resend_asked", sender=ask.sender, after=ask.after, why=why)
        self._queue_control(ask.sender, bus.Resend(after=ask.after, epoch=ask.epoch))

    def _queue_control(self, node: str, msg: bus.Control) -> None:
        self._queue(Raw(node, self.outbox.control(node, bus.pack([msg]))))

    def _queue(self, raw: Raw) -> None:
        self.out.add_raw(raw)
        self._queued()

    async def _liveness(self) -> None:
        period = self.ttl / 4
        info = json.dumps({"started": time.time()})
        while not self._stopping:
            if not self._subscribed.is_set():
                # Announced only once listening: nothing said to it is missed.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(period):
                        await self._subscribed.wait()
                continue
            self._beat_now.clear()
            for ask in self.inbox.overdue(time.monotonic()):
                self._ask(ask, "still_missing")
            try:
                dropped = await self.shared.beat(self.node, self.ttl, info)
                self._reached()
                self.renewed = True
                if dropped and self._announced:
                    # The others found this node dead (a pause longer than the
                    # TTL, or Redis lost its data): what it shared is gone.
                    log.warning("this node was dropped from the cluster; rejoining")
                    self._cut_off()
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
            cleaned = await self.shared.forget_node(node, grace=self.hub.settings.resume_grace)
            event("node_found_dead", node=node, cleaned_here=cleaned is not None)
            self.outbox.forget(node)
            self.inbox.forget(node)
            self.hub.node_down(node, cleaned)
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
            self._cut_off()
            self.out.keep_only(lambda op: isinstance(op, Pair | Publish))
            self.flush()

    def _cut_off(self) -> None:
        """The others hold this node dead and have forgotten what it told
        them and what they told it: every numbering starts over."""
        self.hub.cut_off()
        self.outbox.forget_all()
        self.inbox.forget_all()
        self._unconfirmed = []

    @property
    def serving(self) -> bool:
        # (subscribed: what other nodes tell it reaches it, not only later)
        return self.reachable and self.renewed and not self.hub.isolated and self.bus_link.connected

    # --- the whole cluster's status --------------------------------------------

    async def _answer_snap(self, reply: str) -> None:
        await self.settle()
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
            ask = bus.pack([bus.Snap(reply=reply)])
            async with self.redis.pipeline(transaction=False) as pipe:
                for node in others:
                    pipe.publish(f"pc:bus:{node}", self.outbox.control(node, ask))
                await pipe.execute()
        await self.settle()
        mine = self.hub.snapshot()
        mine["violations"] = list(self.hub.check_invariants())
        docs = [mine]
        deadline = time.monotonic() + 1.0
        while len(docs) < len(others) + 1:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            # Each wait well within the client's socket timeout: a node that
            # does not answer is reported missing, not taken for Redis failing.
            wait = max(0.01, min(left, self.ttl / 4))
            got = await self.redis.blpop([reply], timeout=wait)
            if got is None:
                continue
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
        paired_clients: set[str] = set()
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
            paired_clients.add(s["client"])
            if s["worker"] not in live_workers or s["client"] not in live_clients:
                out.append(f"session {sid} has a member that is gone")
        async for key in self.redis.scan_iter(match="pc:w:*", count=500):
            wid = _text(key)[5:]
            if wid not in live_workers:
                out.append(f"ghost in the directory: worker {wid}")
        pooled: set[str] = set()
        async for key in self.redis.scan_iter(match="pc:pool:*", count=500):
            for raw in await self.redis.zrange(key, 0, -1):
                wid = _text(raw)
                pooled.add(wid)
                w = live_workers.get(wid)
                if wid in in_session or (w is not None and w["status"] == "busy"):
                    out.append(f"worker {wid} both available and busy")
                elif w is None:
                    out.append(f"pool holds {wid}, which is gone")
        # What a node holds ready must be where the others can find it (a
        # pairing on its way is in a session record).
        for wid, w in live_workers.items():
            listed = w["status"] == "available" and w.get("registered", True)
            if listed and wid not in pooled and wid not in in_session:
                out.append(f"worker {wid} is available but in no pool")
        lined: set[str] = set()
        async for key in self.redis.scan_iter(match="pc:line:*", count=500):
            lined.update(_text(raw) for raw in await self.redis.zrange(key, 0, -1))
        for d in docs:
            for c in d["clients"]:
                waits = c["position"] is not None and c["session_id"] is None
                if waits and c["id"] not in lined and c["id"] not in paired_clients:
                    out.append(f"client {c['id']} waits but is in no line")
        return out


def _unpack(body: bytes) -> list[bus.BusMessage]:
    """An entry's messages; none if it cannot be read (logged: a bug, or a
    node of another version)."""
    try:
        return bus.unpack(body)
    except (ValueError, msgspec.DecodeError):
        log.exception("unreadable bus entry dropped: %r", body[:80])
        return []


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
