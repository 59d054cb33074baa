"""This node's life in the cluster: its key in Redis renewed, the other
nodes found dead (and cleaned up after, once, cluster-wide), and whether
Redis answers at all.

A node whose key expires is dead: the first live node to notice claims its
cleanup (``forget_node``), every node ends the sessions it shared with it
(``hub.node_down``). A node that cannot reach Redis for longer than
``node_ttl`` is held dead by the others, so it cuts itself off
(``hub.cut_off``): no new sessions until it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from redis.asyncio import Redis
from redis.exceptions import RedisError

from playcast.signaling.cluster.status import text
from playcast.signaling.rules.events import event
from playcast.signaling.shared.redis_state import RedisShared

if TYPE_CHECKING:
    from playcast.signaling.hub import Hub

log = logging.getLogger("playcast.signaling")


class Liveness:
    def __init__(
        self,
        hub: Hub,
        redis: Redis,
        shared: RedisShared,
        flush: Callable[[], None],
        *,
        forget: Callable[[str | None], None],
        overdue: Callable[[], None],
    ) -> None:
        """``forget(node)``: the bus numbering with a dead node starts over
        (``None``: with every node, this one being cut off); ``overdue``: ask
        again for what other nodes sent that never came."""
        self.hub = hub
        self.redis = redis
        self.shared = shared
        self.flush = flush
        self._forget = forget
        self._overdue = overdue
        self.node = hub.node
        self.ttl = hub.settings.node_ttl
        self.reachable = False  # the last exchange with Redis worked
        # This node's liveness was renewed since Redis became reachable again
        # (a restarted Redis has lost every node's key: until this node's is
        # back, the others may take it for dead, so it takes no one new).
        self.renewed = False
        self.last_ok = time.monotonic()
        self.known: set[str] = set()  # the other nodes alive at the last look
        self._announced = False
        self._beat_now = asyncio.Event()

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

    async def run(self, subscribed: asyncio.Event, stopping: Callable[[], bool]) -> None:
        """Renew this node's key a few times per TTL, and look for dead nodes."""
        period = self.ttl / 4
        info = json.dumps({"started": time.time()})
        while not stopping():
            if not subscribed.is_set():
                # Announced only once listening: nothing said to it is missed.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(period):
                        await subscribed.wait()
                continue
            self._beat_now.clear()
            self._overdue()
            try:
                dropped = await self.shared.beat(self.node, self.ttl, info)
                self.reached()
                self.renewed = True
                if dropped and self._announced:
                    # The others found this node dead (a pause longer than the
                    # TTL, or Redis lost its data): what it shared is gone.
                    log.warning("this node was dropped from the cluster; rejoining")
                    self.cut_off()
                if self.hub.isolated:
                    self.hub.reconnected()
                self._announced = True
                self.flush()
                await self._find_dead()
            except (RedisError, OSError) as exc:
                self.unreachable(exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(period * random.uniform(0.8, 1.0)):
                    await self._beat_now.wait()  # or at once when Redis is back

    async def _find_dead(self) -> None:
        hub = self.hub
        members = {text(m) for m in await self.redis.smembers("pc:nodes")}
        partners = {s.worker_node for s in hub.sessions.values()} | {
            s.client_node for s in hub.sessions.values()
        }
        # A dead node still in the set has not been cleaned up yet: kept.
        hub.forget_nodes(members)
        candidates = sorted((self.known | members | partners) - {self.node})
        if not candidates:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for node in candidates:
                pipe.exists(f"pc:node:{node}")
            alive = await pipe.execute()
        self.known = {n for n, up in zip(candidates, alive, strict=True) if up}
        for node, up in zip(candidates, alive, strict=True):
            if up and hub.nodes.is_gone(node):
                hub.node_back(node)  # restarted under its id: a new node
            if up or hub.nodes.is_gone(node):
                continue
            cleaned = await self.shared.forget_node(node, grace=hub.settings.resume_grace)
            event("node_found_dead", node=node, cleaned_here=cleaned is not None)
            self._forget(node)
            hub.node_down(node, cleaned)
            self.flush()

    def reached(self) -> None:
        """An exchange with Redis worked."""
        self.last_ok = time.monotonic()
        if not self.reachable:
            self.reachable = True
            self.renewed = False
            self._beat_now.set()
            self.hub.counters.node_events.inc("redis_reachable")
            event("redis_reachable", node=self.node)

    def unreachable(self, exc: BaseException) -> bool:
        """An exchange with Redis failed; True if that cut this node off now."""
        if self.reachable:
            self.reachable = False
            self.hub.counters.node_events.inc("redis_unreachable")
            log.warning("redis unreachable: %r", exc)
        if time.monotonic() - self.last_ok > self.ttl and not self.hub.isolated:
            self.cut_off()
            return True
        return False

    def cut_off(self) -> None:
        """The others hold this node dead and have forgotten what it told
        them and what they told it: every numbering starts over."""
        self.hub.cut_off()
        self._forget(None)
