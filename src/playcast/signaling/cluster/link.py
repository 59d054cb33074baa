"""This node's side of a cluster: the I/O that joins the core to Redis.

Three loops, each thin: the **outbound** loop carries out, in order and
pipelined, what the core asked of the shared state (one script each) and
told other nodes (a numbered entry on their channel, ``busorder``), feeding
each outcome back as a step; the **bus** link, subscribed to this node's
channel, feeds what other nodes publish there to the core at once, in each
sender's order, asking a sender again for a gap; the **liveness** loop
(``liveness.py``) renews this node's key and finds dead nodes. A short
Redis outage (under ``node_ttl``) loses nothing: what could not be written
is retried in order. A longer one cuts the node off (``hub.cut_off``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from playcast.signaling.cluster.busorder import Ask, Inbox, Outbox, parse
from playcast.signaling.cluster.earlystart import EarlyStarts
from playcast.signaling.cluster.liveness import Liveness
from playcast.signaling.cluster.loops import Loops
from playcast.signaling.cluster.outbound import Batch, Outbound, Raw
from playcast.signaling.cluster.precise_sleep import PreciseSleep
from playcast.signaling.cluster.redis_link import RedisLink
from playcast.signaling.cluster.status import answer, gather, text
from playcast.signaling.rules import bus
from playcast.signaling.rules.events import event
from playcast.signaling.shared.records import Op, Pair, Publish
from playcast.signaling.shared.redis_state import RedisShared, outcome_of

if TYPE_CHECKING:
    from playcast.signaling.hub import Hub

log = logging.getLogger("playcast.signaling")


BUS_PING = 0.5  # seconds between checks that the bus link still answers
# Entries published with their answers skipped are confirmed by the next
# answer on the link; with none coming, a PING after this long confirms them
# (a link lost before that sends them again: the receiver drops doubles).
CONFIRM = 0.25
_REQUEUED: Any = object()  # an operation put back in the queue, no answer yet


class ClusterLink:
    def __init__(
        self, hub: Hub, flush: Any, url: str, on_fatal: Callable[[], None] = lambda: None
    ) -> None:
        self.hub = hub
        self.flush = flush  # the front's: carry out what the core owes after a step
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
        self.liveness = Liveness(
            hub, self.redis, self.shared, flush, forget=self._forget, overdue=self._overdue
        )
        self.loops = Loops(hub.counters.internal_errors, on_fatal, quiet=self.ttl)
        self._jobs: set[asyncio.Task[None]] = set()  # answers to other nodes' status asks
        # Set by stop: the loops end at their next turn even if a cancellation
        # is lost (Python 3.11's wait_for, which redis-py uses for writes,
        # drops one that lands as the write completes).
        self._stopping = False
        self.commands = 0  # Redis commands sent (pipelined ones counted one by one)

    # --- from the front ----------------------------------------------------

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
        stopping = lambda: self._stopping  # noqa: E731
        self.loops.start("liveness", lambda: self.liveness.run(self._subscribed, stopping))
        self.loops.start("outbound", self._outbound)
        self.loops.start("bus", self._bus)

    async def stop(self) -> None:
        """Leave the cluster in order: what is queued is written, then this
        node's records go (its peers have been drained already)."""
        if self.out and self.reachable:
            await self.settle(2.0)
        self._stopping = True
        self._wake.set()
        await self.loops.stop()
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            grace = self.hub.settings.resume_grace
            await self.shared.forget_node(self.node, force=True, grace=grace)
        self._sleep.close()
        await self.out_link.close()
        await self.bus_link.close()
        await self.redis.aclose()

    async def take_over(self) -> None:
        await self.liveness.take_over()

    @property
    def known(self) -> set[str]:
        """The other nodes alive at the last look."""
        return self.liveness.known

    @property
    def reachable(self) -> bool:
        return self.liveness.reachable

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
                self.liveness.reached()
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
                        live = self.known | {text(m) for m in await self.redis.smembers("pc:nodes")}
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
                job = asyncio.get_running_loop().create_task(self._answer_snap(msg.reply))
                self._jobs.add(job)
                job.add_done_callback(self._jobs.discard)
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
                self.hub.counters.node_events.inc("bus_entries_lost")
                for body in self.inbox.lost(sender, epoch, msg.upto):
                    self._deliver(body)
            elif isinstance(msg, bus.Upto):
                ask = self.inbox.upto(sender, epoch, msg.last, time.monotonic())
                if ask is not None:
                    self._ask(ask, "lost_again")

    def _ask(self, ask: Ask, why: str) -> None:
        """What ``ask.sender`` sent may have been missed: ask it for the rest."""
        self.hub.counters.node_events.inc("bus_resend_asked")
        event("bus_resend_asked", sender=ask.sender, after=ask.after, why=why)
        self._queue_control(ask.sender, bus.Resend(after=ask.after, epoch=ask.epoch))

    def _queue_control(self, node: str, msg: bus.Control) -> None:
        self._queue(Raw(node, self.outbox.control(node, bus.pack([msg]))))

    def _queue(self, raw: Raw) -> None:
        self.out.add_raw(raw)
        self._queued()

    def _unreachable(self, exc: BaseException) -> None:
        if self.liveness.unreachable(exc):
            self.out.keep_only(lambda op: isinstance(op, Pair | Publish))
            self.flush()

    def _forget(self, node: str | None) -> None:
        """The bus numbering with ``node`` starts over (None: with every node)."""
        if node is None:
            self.outbox.forget_all()
            self.inbox.forget_all()
            self._unconfirmed = []
        else:
            self.outbox.forget(node)
            self.inbox.forget(node)

    def _overdue(self) -> None:
        for ask in self.inbox.overdue(time.monotonic()):
            self._ask(ask, "still_missing")

    def health(self) -> dict[str, Any]:
        """What /healthz adds about the cluster."""
        return {"redis": self.reachable}

    @property
    def serving(self) -> bool:
        # (subscribed: what other nodes tell it reaches it, not only later)
        live = self.liveness
        if self.loops.broken or self.hub.isolated or not self.bus_link.connected:
            return False
        return live.reachable and live.renewed

    # --- the whole cluster's status --------------------------------------------

    async def _snapshot(self) -> dict[str, Any]:
        """This node's snapshot and broken invariants, once what it queued
        for Redis is written."""
        await self.settle()
        doc = self.hub.snapshot()
        doc["violations"] = list(self.hub.check_invariants())
        return doc

    async def _answer_snap(self, reply: str) -> None:
        await answer(self.redis, await self._snapshot(), reply)

    async def status(self, check: bool) -> dict[str, Any]:
        """Every live node's snapshot, merged (``status.gather``)."""
        return await gather(
            self.redis, self.node, self._snapshot, self.outbox.control, self.ttl / 4, check
        )


def _unpack(body: bytes) -> list[bus.BusMessage]:
    """An entry's messages; none if it cannot be read (logged: a bug, or a
    node of another version)."""
    try:
        return bus.unpack(body)
    except (ValueError, msgspec.DecodeError):
        log.exception("unreadable bus entry dropped: %r", body[:80])
        return []
