"""The shared state's two implementations keep the same rules: every case
runs on MemoryShared and on RedisShared against a real redis-server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import cast

import pytest
from playcast_testing.redis_server import running_redis
from redis.asyncio import Redis

from playcast.signaling.shared.api import SharedState
from playcast.signaling.shared.memory import SWEEP_FROM, MemoryShared
from playcast.signaling.shared.records import (
    ClientEntry,
    Denied,
    Done,
    EndSession,
    Forgotten,
    LeaveLine,
    Listed,
    MarkConnected,
    Op,
    Outcome,
    Pair,
    Paired,
    Publish,
    Queued,
    Reattach,
    Reattached,
    Refused,
    SetTokens,
    Withdraw,
    WorkerEntry,
    pxat,
)
from playcast.signaling.shared.redis_state import RedisShared, outcome_of

GAME = "com.supercell.clashroyale"
OTHER = "com.example.other"
Run = Callable[[Op], Awaitable[Outcome]]
Forget = Callable[[str, float], Awaitable[object]]


@pytest.fixture(params=["memory", "redis"])
async def shared(request: pytest.FixtureRequest) -> AsyncIterator[SharedState]:
    """Each implementation, with nodes A, B and C alive."""
    if request.param == "memory":
        yield MemoryShared([GAME, OTHER])
        return
    async with running_redis() as server:
        redis = Redis.from_url(server.url)
        shared = RedisShared(redis)
        for node in ("A", "B", "C"):
            await shared.beat(node, 60.0, "{}")
        yield shared
        await redis.aclose()


@pytest.fixture
def with_forget(shared: SharedState) -> tuple[Run, Forget]:
    """``run``, and a dead node's cleanup (with a resume grace, seconds, or none)."""

    async def forget(node: str, grace: float) -> object:
        return await shared.forget_node(node, grace=grace)

    return shared.execute, forget


@pytest.fixture
def run(with_forget: tuple[Run, Forget]) -> Run:
    return with_forget[0]


def worker(wid: str, *codecs: str, node: str = "A") -> WorkerEntry:
    return WorkerEntry(wid, node, GAME, codecs or ("H264",), "10.0.0.1", 9)


def client(cid: str, *codecs: str, node: str = "B") -> ClientEntry:
    return ClientEntry(cid, node, GAME, codecs or ("H264",))


async def test_longest_available_sharing_a_codec(run: Run) -> None:
    assert await run(Publish(worker("w1", "H264"), "x1", 1.0)) == Listed()
    assert await run(Publish(worker("w2", "VP8", "H264"), "x2", 2.0)) == Listed()
    out = await run(Pair(client("c1", "VP8"), "s1", 0, 3.0))
    assert isinstance(out, Paired)
    assert (out.worker.id, out.session.codec, out.session.id) == ("w2", "VP8", "s1")
    assert (out.session.worker_node, out.session.client_node) == ("A", "B")
    assert out.worker == worker("w2", "VP8", "H264")
    out = await run(Pair(client("c2", "H264", "VP8"), "s2", 0, 4.0))
    assert isinstance(out, Paired) and out.worker.id == "w1" and out.session.codec == "H264"
    assert await run(Pair(client("c3"), "s3", 0, 5.0)) == Refused("no_worker_available")


async def test_unsupported_browser_and_codecs_leaving(run: Run) -> None:
    await run(Publish(worker("w1", "H264"), "x", 1.0))
    assert await run(Pair(client("c1", "VP8"), "s1", 5, 2.0)) == Refused("unsupported_browser")
    await run(Publish(worker("w2", "VP8"), "x", 3.0))
    await run(Pair(client("c2", "VP8"), "s2", 0, 4.0))  # busy now, still registered
    assert await run(Pair(client("c3", "VP8"), "s3", 0, 5.0)) == Refused("no_worker_available")
    assert await run(Withdraw("w2")) == Done()
    assert await run(Pair(client("c4", "VP8"), "s4", 0, 6.0)) == Refused("unsupported_browser")
    assert await run(Withdraw("w2")) == Done()  # twice: nothing more happens


async def test_a_worker_published_again_counts_its_codecs_once(run: Run) -> None:
    await run(Publish(worker("w1", "H264"), "x", 1.0))
    await run(Publish(worker("w2", "VP8"), "x", 2.0))
    assert isinstance(await run(Pair(client("c1", "VP8"), "s1", 0, 3.0)), Paired)
    assert await run(Publish(worker("w2", "VP8"), "x", 4.0)) == Listed()  # available again
    assert await run(Withdraw("w2")) == Done()
    assert await run(Pair(client("c2", "VP8"), "s2", 0, 5.0)) == Refused("unsupported_browser")


async def test_the_line_first_come_first_served(run: Run) -> None:
    await run(Publish(worker("w1"), "x", 1.0))
    await run(Pair(client("c0"), "s0", 2, 2.0))
    q1 = await run(Pair(client("c1", node="A"), "s1", 2, 3.0))
    assert q1 == Queued((client("c1", node="A"),))
    q2 = await run(Pair(client("c2"), "s2", 2, 4.0))
    assert q2 == Queued((client("c1", node="A"), client("c2")))
    assert await run(Pair(client("c3"), "s3", 2, 5.0)) == Refused("no_worker_available")
    out = await run(Publish(worker("w2"), "s9", 6.0))
    assert isinstance(out, Paired)
    assert out.client == client("c1", node="A") and out.session.id == "s9"
    assert out.line == (client("c2"),)
    assert await run(LeaveLine("c2", GAME)) == Done((), GAME)
    assert await run(LeaveLine("c2", GAME)) == Done()


async def test_leaving_the_line_of_another_game_leaves_nothing(shared: SharedState) -> None:
    run = shared.execute
    await run(Publish(worker("w1"), "x", 1.0))
    await run(Pair(client("c0"), "s0", 2, 2.0))
    assert await run(Pair(client("c1"), "s1", 2, 3.0)) == Queued((client("c1"),))
    assert await run(LeaveLine("c1", OTHER)) == Done()
    assert (await shared.dump())["lines"] == {GAME: ["c1"]}
    assert await run(LeaveLine("c1", GAME)) == Done((), GAME)
    assert (await shared.dump())["lines"] == {}


async def test_asking_again_keeps_one_s_place(shared: SharedState) -> None:
    """A worker offered again while available (an Again told twice), a
    client asking again while in line: each keeps the place it had."""
    run = shared.execute
    await run(Publish(worker("w1"), "x1", 1.0))
    await run(Publish(worker("w2"), "x2", 2.0))
    assert await run(Publish(worker("w1"), "x3", 3.0)) == Listed()
    assert (await shared.dump())["pools"] == {GAME: ["w1", "w2"]}
    assert isinstance(await run(Pair(client("c0"), "s0", 3, 4.0)), Paired)
    assert isinstance(await run(Pair(client("c1"), "s1", 3, 5.0)), Paired)
    assert await run(Pair(client("c2"), "s2", 3, 6.0)) == Queued((client("c2"),))
    assert await run(Pair(client("c3"), "s3", 3, 7.0)) == Queued((client("c2"), client("c3")))
    assert await run(Pair(client("c2"), "s4", 3, 8.0)) == Queued((client("c2"), client("c3")))


async def test_a_vp8_worker_skips_an_h264_only_client_in_line(run: Run) -> None:
    await run(Publish(worker("w1", "H264", "VP8"), "x", 1.0))
    await run(Pair(client("c0"), "s0", 3, 2.0))
    await run(Pair(client("c1", "H264"), "s1", 3, 3.0))
    await run(Pair(client("c2", "VP8"), "s2", 3, 4.0))
    out = await run(Publish(worker("w2", "VP8"), "s3", 5.0))
    assert isinstance(out, Paired) and out.client.id == "c2"
    assert out.line == (client("c1", "H264"),)


async def test_ending_sessions(run: Run) -> None:
    await run(Publish(worker("w1"), "x", 1.0))
    out = await run(Pair(client("c1"), "s1", 0, 2.0))
    assert isinstance(out, Paired)
    assert await run(EndSession("s1")) == Done()
    assert await run(EndSession("s1")) == Done()


@dataclass(frozen=True)
class Unknown:
    session_id: str  # as MarkConnected has: once taken for one


async def test_an_unknown_op_is_an_error(run: Run) -> None:
    with pytest.raises(TypeError, match="not a shared-state operation"):
        await run(cast(Op, Unknown("s1")))


async def test_mark_connected_sets_the_phase_a_resume_reads(shared: SharedState) -> None:
    run = shared.execute
    await run(Publish(worker("w1"), "x", 1.0))
    assert isinstance(await run(Pair(client("c1"), "s1", 0, 2.0)), Paired)
    assert (await shared.dump())["sessions"]["s1"]["phase"] == "awaiting_offer"
    await run(SetTokens("s1", "aa" * 32, "bb" * 32))
    assert await run(MarkConnected("s1")) == Done()
    assert (await shared.dump())["sessions"]["s1"]["phase"] == "connected"
    moved = await run(Reattach("s1", "client", "bb" * 32, "cc" * 32, "C"))
    assert isinstance(moved, Reattached) and moved.session.phase == "connected"
    before = await shared.dump()
    assert await run(MarkConnected("s-gone")) == Done()  # no such session: nothing made
    await run(EndSession("s1"))
    assert await run(MarkConnected("s1")) == Done()
    assert await shared.dump() == {**before, "sessions": {}, "node_sessions": {}}


async def test_ending_a_session_with_its_worker_withdraws_it(run: Run) -> None:
    await run(Publish(worker("w1", "VP8"), "x", 1.0))
    await run(Publish(worker("w2", "H264"), "x", 1.5))
    out = await run(Pair(client("c1", "VP8"), "s1", 0, 2.0))
    assert isinstance(out, Paired) and out.worker.id == "w1"
    assert await run(EndSession("s1", "w1")) == Done()
    # w1 is gone with its codec: a VP8-only browser has nothing left to use.
    assert await run(Pair(client("c2", "VP8"), "s2", 0, 3.0)) == Refused("unsupported_browser")
    assert await run(Withdraw("w1")) == Done()  # the worker's own, late: nothing to do
    await run(Publish(worker("w1b", "VP8"), "x", 4.0))  # restarted, registered anew
    out = await run(Pair(client("c3", "VP8"), "s3", 0, 5.0))
    assert isinstance(out, Paired) and out.worker.id == "w1b"


async def test_reattach_spends_the_token_and_moves_the_member(run: Run) -> None:
    await run(Publish(worker("w1"), "x", 1.0))
    out = await run(Pair(client("c1"), "s1", 0, 2.0))
    assert isinstance(out, Paired)
    assert await run(SetTokens("s1", "aa" * 32, "bb" * 32)) == Done()
    assert await run(Reattach("s1", "client", "aa" * 32, "cc" * 32, "A")) == Denied()
    moved = await run(Reattach("s1", "client", "bb" * 32, "cc" * 32, "A"))
    assert isinstance(moved, Reattached)
    assert (moved.session.client_node, moved.session.worker_node) == ("A", "A")
    assert (moved.old_node, moved.old_alive, moved.partner_alive) == ("B", True, True)
    assert (moved.session.worker, moved.session.client, moved.session.game) == ("w1", "c1", GAME)
    assert await run(Reattach("s1", "client", "bb" * 32, "dd" * 32, "B")) == Denied()  # spent
    back = await run(Reattach("s1", "client", "cc" * 32, "dd" * 32, "B"))
    assert isinstance(back, Reattached) and back.old_node == "A"
    await run(EndSession("s1"))
    assert await run(Reattach("s1", "worker", "aa" * 32, "ee" * 32, "B")) == Denied()


async def paired_with_tokens(run: Run, worker_node: str, client_node: str) -> None:
    await run(Publish(worker("w1", node=worker_node), "x", 1.0))
    assert isinstance(await run(Pair(client("c1", node=client_node), "s1", 0, 2.0)), Paired)
    assert await run(SetTokens("s1", "aa" * 32, "bb" * 32)) == Done()


@pytest.mark.parametrize(
    ("dead", "survivor", "token"),
    [("A", "client", "bb"), ("B", "worker", "aa")],
    ids=["its_workers", "its_players"],
)
async def test_a_dead_node_ends_the_sessions_of(
    with_forget: tuple[Run, Forget], dead: str, survivor: str, token: str
) -> None:
    run, forget = with_forget
    await paired_with_tokens(run, "A", "B")
    await forget(dead, 0.0)
    assert await run(Reattach("s1", survivor, token * 32, "cc" * 32, "C")) == Denied()


@pytest.mark.parametrize("grace", [0.0, 30.0])
async def test_a_dead_node_names_the_members_elsewhere_of_its_sessions(
    with_forget: tuple[Run, Forget], grace: float
) -> None:
    """Their nodes may never have heard of the session (the dead node paired
    it, then died before telling): the cleanup names them, with their node,
    and nobody on a dead node."""
    run, forget = with_forget
    await run(Publish(worker("w1", node="A"), "x", 1.0))
    assert isinstance(await run(Pair(client("c1", node="B"), "s1", 0, 2.0)), Paired)
    await run(Publish(worker("w2", node="B"), "x", 3.0))
    assert isinstance(await run(Pair(client("c2", node="C"), "s2", 0, 4.0)), Paired)
    await run(Publish(worker("w3", node="B"), "x", 5.0))
    assert isinstance(await run(Pair(client("c3", node="B"), "s3", 0, 6.0)), Paired)
    await run(Publish(worker("w4", node="C"), "x", 7.0))
    assert isinstance(await run(Pair(client("c4", node="A"), "s4", 0, 8.0)), Paired)
    await forget("C", grace)  # dead too: s2's player is nobody's to send back
    cleaned = await forget("B", grace)
    assert isinstance(cleaned, Forgotten)
    assert cleaned.partners == (("A", "w1", "s1"),)


async def test_a_dead_node_is_cleaned_up_once_unless_forced(shared: SharedState) -> None:
    """The first node to find it dead cleans it up; the others are told
    nothing is theirs to announce. Forced (a node leaving, or taking its id
    over), the cleanup runs whoever ran it before."""
    run = shared.execute
    await paired_with_tokens(run, "A", "B")
    assert await shared.forget_node("B", grace=30.0) == Forgotten({}, (("A", "w1", "s1"),))
    assert await shared.forget_node("B", grace=30.0) is None
    # Forced again: nothing is left to find; what waits for its grace still does.
    assert await shared.forget_node("B", force=True) == Forgotten({})
    assert list((await shared.dump())["sessions"]) == ["s1"]
    assert await shared.forget_node("B") is None
    assert await shared.forget_node("C", force=True) == Forgotten({})  # alive, leaving


async def test_a_worker_withdrawn_while_paired_is_not_found_by_its_node_s_cleanup(
    shared: SharedState,
) -> None:
    """A node's cleanup finds its workers' sessions through their directory
    records: once the worker is withdrawn (it left before its node heard of
    the pairing), its session is its player's node's to end. (The gap this
    leaves: docs/cluster.md.)"""
    run = shared.execute
    await paired_with_tokens(run, "A", "B")
    await run(Withdraw("w1"))
    assert await shared.forget_node("A") == Forgotten({})
    assert list((await shared.dump())["sessions"]) == ["s1"]
    assert await shared.forget_node("B") == Forgotten({})
    assert (await shared.dump())["sessions"] == {}


async def test_a_player_left_behind_by_its_worker_still_ends_with_its_node(
    with_forget: tuple[Run, Forget],
) -> None:
    """Both members on A, the worker resumes on B: A's death still ends the
    session (the player was on A), in both implementations."""
    run, forget = with_forget
    await paired_with_tokens(run, "A", "A")
    assert isinstance(await run(Reattach("s1", "worker", "aa" * 32, "cc" * 32, "B")), Reattached)
    await forget("A", 0.0)
    assert await run(Reattach("s1", "client", "bb" * 32, "dd" * 32, "C")) == Denied()


async def test_a_worker_resumed_elsewhere_is_its_new_node_s(shared: SharedState) -> None:
    """Its directory record names the node that holds it now: the old
    node's death leaves it registered, its new node's withdraws it."""
    run = shared.execute
    await run(Publish(worker("w1", "VP8", node="A"), "x", 1.0))
    await run(Publish(worker("w2", "H264", node="B"), "x", 1.5))
    assert isinstance(await run(Pair(client("c1", "VP8", node="B"), "s1", 0, 2.0)), Paired)
    await run(SetTokens("s1", "aa" * 32, "bb" * 32))
    moved = await run(Reattach("s1", "worker", "aa" * 32, "cc" * 32, "C"))
    assert isinstance(moved, Reattached) and (moved.old_node, moved.old_alive) == ("A", True)
    state = await shared.dump()
    assert state["directory"]["w1"]["node"] == "C" and state["directory"]["w1"]["busy"]
    assert state["node_workers"] == {"B": ["w2"], "C": ["w1"]}
    assert await shared.forget_node("A") == Forgotten({})
    assert await run(Pair(client("c2", "VP8"), "s2", 0, 3.0)) == Refused("no_worker_available")
    cleaned = await shared.forget_node("C")
    assert cleaned == Forgotten({}, (("B", "c1", "s1"),))
    assert await run(Pair(client("c3", "VP8"), "s3", 0, 4.0)) == Refused("unsupported_browser")
    assert list((await shared.dump())["directory"]) == ["w2"]


async def test_a_busy_worker_of_a_dead_node_no_longer_counts_its_codecs(
    with_forget: tuple[Run, Forget],
) -> None:
    """Its node is dead: the worker is registered nowhere, even while its
    session waits for it to resume."""
    run, forget = with_forget
    await run(Publish(worker("w1", "VP8"), "x", 1.0))
    await run(Publish(worker("w2", "H264", node="B"), "x", 2.0))
    assert isinstance(await run(Pair(client("c1", "VP8"), "s1", 0, 3.0)), Paired)
    await forget("A", 30.0)
    assert await run(Pair(client("c2", "VP8"), "s2", 0, 4.0)) == Refused("unsupported_browser")
    await run(Publish(worker("w3", "VP8", node="B"), "x", 5.0))
    assert await run(EndSession("s1", "w1")) == Done()  # ended later: counted off once only
    assert isinstance(await run(Pair(client("c3", "VP8"), "s3", 0, 6.0)), Paired)
    assert await run(Pair(client("c4", "VP8"), "s4", 0, 7.0)) == Refused("no_worker_available")


async def test_a_dead_node_s_busy_worker_leaves_the_directory_until_it_resumes(
    shared: SharedState,
) -> None:
    """With a grace its session stays, but the worker is registered nowhere
    (in Redis as in memory, which keeps no clock to expire a record): its
    resume writes its record anew, on its new node."""
    run = shared.execute
    await paired_with_tokens(run, "A", "B")
    assert await shared.forget_node("A", grace=30.0) == Forgotten({}, (("B", "c1", "s1"),))
    state = await shared.dump()
    assert (state["directory"], state["node_workers"], list(state["sessions"])) == ({}, {}, ["s1"])
    moved = await run(Reattach("s1", "worker", "aa" * 32, "cc" * 32, "C"))
    assert isinstance(moved, Reattached) and (moved.old_node, moved.old_alive) == ("A", False)
    state = await shared.dump()
    assert state["directory"] == {
        "w1": {
            "node": "C", "game": GAME, "codecs": [], "addr": "", "port": 0, "busy": True,
            "name": "", "held": False,
        }
    }  # fmt: skip
    assert state["node_workers"] == {"C": ["w1"]}
    assert await shared.forget_node("C") == Forgotten({}, (("B", "c1", "s1"),))
    assert (await shared.dump())["sessions"] == {}


async def test_a_dead_node_s_sessions_wait_out_the_grace_on_both_sides() -> None:
    """Redis only (the memory state keeps no clock): with a resume grace, a
    dead node's sessions expire, whichever side it held; its workers and a
    node's sets are gone."""
    async with running_redis() as server:
        redis = Redis.from_url(server.url)
        shared = RedisShared(redis)
        for node in ("A", "B", "C"):
            await shared.beat(node, 60.0, "{}")
        await paired_with_tokens(shared.execute, "A", "A")  # s1: both on A
        await shared.execute(Publish(worker("w2", node="B"), "x", 3.0))
        assert isinstance(await shared.execute(Pair(client("c2", node="A"), "s2", 0, 4.0)), Paired)
        await shared.execute(Publish(worker("w3", node="A"), "x", 5.0))
        assert isinstance(await shared.execute(Pair(client("c3", node="C"), "s3", 0, 6.0)), Paired)
        moved = await shared.execute(Reattach("s1", "worker", "aa" * 32, "cc" * 32, "B"))
        assert isinstance(moved, Reattached)
        await shared.forget_node("A", grace=30.0)
        for sid in ("s1", "s2", "s3"):  # a player on A, a player on A, a worker on A
            assert 0 < await redis.pttl(f"pc:s:{sid}") <= 30_000, sid
        assert not await redis.exists("pc:w:w3")  # registered nowhere until it resumes
        assert await redis.pttl("pc:w:w1") == -1  # resumed on B: no longer A's
        assert not await redis.exists("pc:ns:A", "pc:nw:A", "pc:nc:A")
        await redis.aclose()


async def test_a_session_that_expired_before_its_end_leaves_no_trace() -> None:
    """Redis only (the memory state keeps no clock; its node sets are read
    off its sessions): a player resumed on B; its worker's node A dies, and
    with a grace the session's record expires on Redis's clock about when B
    gives up on the worker and ends it. The end must still take the session
    out of B's set, or B's set keeps it for as long as B lives (issue 25)."""
    async with running_redis() as server:
        redis = Redis.from_url(server.url)
        shared = RedisShared(redis)
        for node in ("A", "B", "C"):
            await shared.beat(node, 60.0, "{}")
        await paired_with_tokens(shared.execute, "A", "A")  # s1: both on A
        moved = await shared.execute(Reattach("s1", "client", "bb" * 32, "dd" * 32, "B"))
        assert isinstance(moved, Reattached)
        assert await redis.smembers("pc:ns:B") == {b"s1"}
        await shared.forget_node("A", grace=30.0)
        await redis.delete("pc:s:s1")  # its grace ran out on Redis's clock first
        assert isinstance(await shared.execute(EndSession("s1", "w1", "B")), Done)
        assert await redis.smembers("pc:ns:B") == set()
        await redis.aclose()


# The scripts read the pool and the line a few entries at a time (CHUNK = 8 in
# shared/lua/lib.lua): a match past several chunks is still found, and what was
# passed over keeps its place.
async def test_a_match_many_entries_down_the_pool(run: Run) -> None:
    for i in range(20):
        await run(Publish(worker(f"h{i:02}", "H264"), "x", float(i)))
    await run(Publish(worker("v", "VP8"), "x", 30.0))
    out = await run(Pair(client("c1", "VP8"), "s1", 0, 31.0))
    assert isinstance(out, Paired) and out.worker.id == "v"
    out = await run(Pair(client("c2", "H264"), "s2", 0, 32.0))
    assert isinstance(out, Paired) and out.worker.id == "h00"


async def test_a_match_many_entries_down_the_line(run: Run) -> None:
    await run(Publish(worker("w0", "H264", "VP8"), "x", 1.0))
    await run(Pair(client("c0"), "s0", 30, 2.0))
    for i in range(20):
        await run(Pair(client(f"h{i:02}", "H264"), f"q{i}", 30, 3.0 + i))
    await run(Pair(client("v", "VP8"), "sv", 30, 30.0))
    out = await run(Publish(worker("w1", "VP8"), "s1", 31.0))
    assert isinstance(out, Paired) and out.client.id == "v"
    assert [c.id for c in out.line] == [f"h{i:02}" for i in range(20)]


async def test_dead_nodes_entries_dropped_across_chunks() -> None:
    """Redis only (the memory state has no liveness): workers of a node whose
    key is gone leave the pool as the scan meets them, chunk after chunk."""
    async with running_redis() as server:
        redis = Redis.from_url(server.url)
        shared = RedisShared(redis)
        await shared.beat("A", 60.0, "{}")
        await shared.beat("B", 60.0, "{}")
        for i in range(20):  # D never beats: dead; every third one on A is H264-only
            node, codecs = ("A", ("H264",)) if i % 3 == 0 else ("D", ("VP8",))
            await shared.execute(Publish(worker(f"w{i:02}", *codecs, node=node), "x", float(i)))
        await shared.execute(Publish(worker("v", "VP8"), "x", 30.0))
        out = await shared.execute(Pair(client("c1", "VP8"), "s1", 0, 31.0))
        assert isinstance(out, Paired) and out.worker.id == "v"
        pool = [m.decode() for m in await redis.zrange(f"pc:pool:{GAME}", 0, -1)]
        assert pool == [f"w{i:02}" for i in range(20) if i % 3 == 0]
        await redis.aclose()


# --- join tickets (issue 27): a jti is spent with the pairing, atomically ---

# A ticket stays spent until its expiry (and the leeway), in wall-clock
# seconds: Redis keeps the key until then by its own clock, memory by the
# time each Pair carries. Far ahead here, so that neither lets it go.
FAR = time.time() + 3600.0


def ticketed(cid: str, sid: str, jti: str, limit: int = 0, until: float = FAR) -> Pair:
    return Pair(client(cid), sid, limit, time.time(), jti, until)


async def test_a_spent_ticket_is_refused_and_takes_no_worker(shared: SharedState) -> None:
    run = shared.execute
    await run(Publish(worker("w1"), "x1", 1.0))
    await run(Publish(worker("w2"), "x2", 2.0))
    assert isinstance(await run(ticketed("c1", "s1", "j1")), Paired)
    assert await run(ticketed("c2", "s2", "j1")) == Refused("unauthorized", "spent")
    assert (await shared.dump())["pools"] == {GAME: ["w2"]}
    assert "s2" not in (await shared.dump())["sessions"]
    out = await run(ticketed("c3", "s3", "j3"))  # another ticket: the worker was kept
    assert isinstance(out, Paired) and out.worker.id == "w2"
    assert sorted((await shared.dump())["spent"]) == ["j1", "j3"]


async def test_a_ticket_refused_no_worker_is_not_spent(shared: SharedState) -> None:
    """A player turned away for want of a worker may press Play again with
    the same link: only a worker or a place in line spends it."""
    run = shared.execute
    assert await run(ticketed("c1", "s1", "j1")) == Refused("no_worker_available")
    await run(Publish(worker("w1", "H264"), "x", 1.0))
    vp8 = Pair(client("c2", "VP8"), "s2", 0, time.time(), "j1", FAR)
    assert await run(vp8) == Refused("unsupported_browser")
    assert (await shared.dump())["spent"] == {}
    assert isinstance(await run(ticketed("c3", "s3", "j1")), Paired)


async def test_a_place_in_line_spends_the_ticket(shared: SharedState) -> None:
    run = shared.execute
    await run(Publish(worker("w1"), "x", 1.0))
    await run(Pair(client("c0"), "s0", 2, 2.0))
    assert await run(ticketed("c1", "s1", "j1", limit=2)) == Queued((client("c1"),))
    assert await run(ticketed("c2", "s2", "j1", limit=2)) == Refused("unauthorized", "spent")
    assert (await shared.dump())["lines"] == {GAME: ["c1"]}


async def test_a_ticket_stays_spent_until_its_expiry(shared: SharedState) -> None:
    run = shared.execute
    await run(Publish(worker("w1"), "x", 1.0))
    await run(Publish(worker("w2"), "x", 2.0))
    await run(ticketed("c1", "s1", "j1", until=FAR))
    assert (await shared.dump())["spent"] == {"j1": pxat(FAR)}
    # One whose expiry has passed already is not kept (it is refused as
    # expired before it gets here): its id may come again.
    past = time.time() - 1.0
    assert isinstance(await run(ticketed("c2", "s2", "j2", until=past)), Paired)
    assert (await shared.dump())["spent"] == {"j1": pxat(FAR)}


async def test_a_join_without_a_ticket_spends_nothing(shared: SharedState) -> None:
    await shared.execute(Publish(worker("w1"), "x", 1.0))
    assert isinstance(await shared.execute(Pair(client("c1"), "s1", 0, 2.0)), Paired)
    assert (await shared.dump())["spent"] == {}


def test_memory_lets_a_ticket_go_by_the_time_a_pair_carries() -> None:
    """Memory has no clock: a ticket is spent while the Pair's ``now`` is
    before its expiry, and the expired ones are swept as the record grows."""
    shared = MemoryShared([GAME])
    for i in range(3):
        shared.apply(Publish(worker(f"w{i}"), "x", float(i)))
    assert isinstance(shared.apply(Pair(client("c1"), "s1", 0, 100.0, "j1", 110.0)), Paired)
    assert shared.apply(Pair(client("c2"), "s2", 0, 109.9, "j1", 110.0)) == Refused(
        "unauthorized", "spent"
    )
    assert isinstance(shared.apply(Pair(client("c3"), "s3", 0, 110.0, "j1", 140.0)), Paired)
    for i in range(SWEEP_FROM - 2):  # spent at 120, expiring at 130
        shared.apply(Publish(worker(f"x{i}"), "x", 120.0))
        shared.apply(Pair(client(f"d{i}"), f"t{i}", 0, 120.0, f"k{i}", 130.0))
    assert len(shared.spent) == SWEEP_FROM - 1
    shared.apply(Publish(worker("y"), "x", 131.0))
    shared.apply(Pair(client("e"), "u", 0, 131.0, "last", 200.0))  # the sweep's turn
    assert shared.spent == {"j1": 140.0, "last": 200.0}


async def test_the_pair_script_tells_the_worker_s_node_with_or_without_a_ticket() -> None:
    """Redis only: the early start (``cluster/earlystart.py``), published by
    the Pair script to the worker's node as it pairs, comes after the
    ticket's arguments and is whole either way."""
    async with running_redis() as server:
        redis = Redis.from_url(server.url)
        shared = RedisShared(redis)
        for node in ("A", "B"):
            await shared.beat(node, 60.0, "{}")
        for command in shared.load_commands():
            await redis.execute_command(*command)
        bus = redis.pubsub()
        await bus.subscribe("pc:bus:A")
        assert (await bus.get_message(timeout=5.0) or {}).get("type") == "subscribe"
        for jti in ("", "j1"):
            await shared.execute(Publish(worker(f"w{jti}"), "x", 1.0))  # on A
            op = ticketed(f"c{jti}", f"s{jti}", jti) if jti else Pair(client("c"), "s", 0, 2.0)
            raw = await redis.execute_command(*shared.evalsha(op, (b"<", b"|", b">")))
            assert isinstance(outcome_of(op, raw), Paired)
            told = await bus.get_message(ignore_subscribe_messages=True, timeout=5.0)
            assert told is not None and told["data"] == f"<w{jti}|H264>".encode()
        assert (await shared.dump())["spent"] == {"j1": pxat(FAR)}
        await bus.aclose()
        await redis.aclose()
