"""Holds on worker names (issue 26's drain), the same in both implementations
of the shared state: every case runs on MemoryShared and on RedisShared
against a real redis-server (the fixtures of ``test_shared_contract.py``)."""

from __future__ import annotations

from playcast_testing.redis_server import running_redis
from redis.asyncio import Redis
from test_shared_contract import GAME, OTHER, Run, client, run, shared, with_forget

from playcast.signaling.shared.api import SharedState
from playcast.signaling.shared.records import (
    Done,
    EndSession,
    Forgotten,
    Held,
    Hold,
    HoldChanged,
    Listed,
    Pair,
    Paired,
    Publish,
    Queued,
    Refused,
    Withdraw,
    WorkerEntry,
)
from playcast.signaling.shared.redis_state import RedisShared

__all__ = ["run", "shared", "with_forget"]  # (fixtures, used by name)
GAMES = (GAME, OTHER)


def named(wid: str, name: str, *, node: str = "A", game: str = GAME) -> WorkerEntry:
    return WorkerEntry(wid, node, game, ("H264",), "10.0.0.1", 9, name)


async def test_a_held_name_s_worker_is_in_the_directory_not_the_pool(shared: SharedState) -> None:
    run = shared.execute
    assert await run(Hold("phone-1", True, GAMES)) == HoldChanged(())
    assert await run(Publish(named("w1", "phone-1"), "x", 1.0)) == Held()
    state = await shared.dump()
    assert state["directory"]["w1"]["held"] and state["directory"]["w1"]["name"] == "phone-1"
    assert state["pools"] == {} and state["holds"] == {"phone-1": ["w1"]}
    # Never paired; its codecs still count (a player waits, or hears "busy").
    assert await run(Pair(client("c1"), "s1", 0, 2.0)) == Refused("no_worker_available")
    assert await run(Publish(named("w2", "phone-2"), "x", 3.0)) == Listed()
    out = await run(Pair(client("c1"), "s1", 0, 4.0))
    assert isinstance(out, Paired) and out.worker == named("w2", "phone-2")


async def test_holding_takes_the_name_s_idle_workers_out_at_once(shared: SharedState) -> None:
    run = shared.execute
    await run(Publish(named("w1", "phone-1"), "x", 1.0))
    await run(Publish(named("w2", "phone-2", node="B"), "x", 2.0))
    await run(Publish(named("w3", "phone-1", node="C", game=OTHER), "x", 3.0))
    await run(Publish(named("w4", "phone-1", node="B"), "x", 4.0))
    # Only the pools of the games named are looked in.
    moved = await run(Hold("phone-1", True, (GAME,)))
    assert moved == HoldChanged((("w1", "A"), ("w4", "B")))
    state = await shared.dump()
    assert state["pools"] == {GAME: ["w2"], OTHER: ["w3"]}
    assert state["holds"] == {"phone-1": ["w1", "w4"]}
    assert await run(Hold("phone-1", True, GAMES)) == HoldChanged((("w3", "C"),))
    assert await run(Hold("phone-1", True, GAMES)) == HoldChanged(())  # twice: nothing more


async def test_releasing_names_the_held_workers_to_offer_again(shared: SharedState) -> None:
    """A released worker is offered again by its node: paired at once with a
    player waiting in line, which it was kept from while held."""
    run = shared.execute
    await run(Hold("phone-1", True, GAMES))
    await run(Publish(named("w0", "phone-0"), "x", 0.5))
    assert isinstance(await run(Pair(client("c0"), "s0", 3, 1.0)), Paired)
    assert await run(Pair(client("c1"), "s1", 3, 2.0)) == Queued((client("c1"),))
    assert await run(Publish(named("w1", "phone-1", node="C"), "x", 3.0)) == Held()
    assert (await shared.dump())["lines"] == {GAME: ["c1"]}  # still waiting
    assert await run(Hold("phone-1", False, GAMES)) == HoldChanged((("w1", "C"),))
    state = await shared.dump()
    assert state["holds"] == {} and not state["directory"]["w1"]["held"]
    out = await run(Publish(named("w1", "phone-1", node="C"), "s2", 4.0))
    assert isinstance(out, Paired) and out.client == client("c1") and out.line == ()
    assert await run(Hold("phone-1", False, GAMES)) == HoldChanged(())


async def test_a_busy_worker_plays_on_and_comes_back_held(run: Run) -> None:
    """Drained mid-session: its session is untouched; its next life (a new
    id, the same name) is held."""
    await run(Publish(named("w1", "phone-1"), "x", 1.0))
    assert isinstance(await run(Pair(client("c1"), "s1", 0, 2.0)), Paired)
    assert await run(Hold("phone-1", True, GAMES)) == HoldChanged(())
    assert await run(EndSession("s1", "w1", "B")) == Done()
    assert await run(Publish(named("w2", "phone-1"), "x", 3.0)) == Held()
    assert await run(Pair(client("c2"), "s2", 0, 4.0)) == Refused("no_worker_available")


async def test_a_held_worker_that_goes_leaves_its_hold(shared: SharedState) -> None:
    run = shared.execute
    await run(Hold("phone-1", True, GAMES))
    await run(Publish(named("w1", "phone-1"), "x", 1.0))
    await run(Publish(named("w2", "phone-1", node="B"), "x", 2.0))
    assert await run(Withdraw("w1")) == Done()
    assert (await shared.dump())["holds"] == {"phone-1": ["w2"]}
    assert await shared.forget_node("B") == Forgotten({})
    state = await shared.dump()
    assert state["holds"] == {"phone-1": []} and state["directory"] == {}
    assert await run(Hold("phone-1", False, GAMES)) == HoldChanged(())
    assert (await shared.dump())["holds"] == {}


async def test_redis_keeps_nothing_of_a_released_hold_and_publish_costs_no_more() -> None:
    """Redis only: the hold's keys go with it; and the listing of a worker
    still runs the commands it did before holds existed (its name's hold is
    read together with the line, in one command)."""
    async with running_redis() as server:
        redis = Redis.from_url(server.url)
        shared = RedisShared(redis)
        await shared.beat("A", 60.0, "{}")
        await shared.execute(Hold("phone-1", True, GAMES))
        await shared.execute(Publish(named("w1", "phone-1"), "x", 1.0))
        await shared.execute(Hold("phone-1", False, GAMES))
        await shared.execute(Withdraw("w1"))
        left = sorted(k.decode() for k in await redis.keys("pc:*"))
        assert left == ["pc:node:A", "pc:nodes"]

        await redis.config_resetstat()
        assert await shared.execute(Publish(named("w2", "phone-2"), "x", 2.0)) == Listed()
        stats = await redis.info("commandstats")
        ran = {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}
        ran = {k: n for k, n in ran.items() if k not in ("evalsha", "config|resetstat", "info")}
        # HSET the record, HINCRBY its one codec, SADD its node's set, the
        # line (with the hold), INCR the order, ZADD the pool: six, as ever.
        assert ran == {"hset": 1, "hincrby": 1, "sadd": 1, "zunion": 1, "incr": 1, "zadd": 1}
        await redis.aclose()
