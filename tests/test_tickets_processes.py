"""Join tickets (issue 27) on real servers: a lone one over real sockets, and
two nodes on a real redis-server, where a ticket played on node A is refused
on node B. The flags: secrets given, in a file, in the environment; too
short a secret stops the server at start; no secret is ever logged."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

from playcast_testing.redis_server import running_redis
from playcast_testing.scripted import ScriptedPeer, connect
from playcast_testing.servers import ServerProcess, running_server, server_argv

from playcast.protocol import Assigned, Join, Register, Registered, Rejected
from playcast.signaling.rules.tickets import TicketCheck
from playcast.ticket import mint

GAME = "com.supercell.clashroyale"
OTHER = "com.example.other"
SECRET = "a-join-secret-for-the-process-tests-0123456789"
OLD = "the-secret-being-rotated-out-of-service-98765"
FAST: dict[str, float | str] = {"heartbeat_interval": 0.2, "heartbeat_timeout": 1.0}


async def register(node: ServerProcess, stack: contextlib.AsyncExitStack) -> ScriptedPeer:
    worker = await stack.enter_async_context(connect(node.ws_url("worker")))
    await worker.send(Register(game=GAME))
    await worker.expect(Registered)
    return worker


async def play(
    node: ServerProcess, stack: contextlib.AsyncExitStack, ticket: str | None, game: str = GAME
) -> Assigned | Rejected:
    client = await stack.enter_async_context(connect(node.ws_url("client")))
    await client.send(Join(game=game, ticket=ticket))
    msg = await client.recv()
    assert isinstance(msg, Assigned | Rejected), msg
    return msg


def unauthorized(msg: Assigned | Rejected, says: str) -> None:
    assert isinstance(msg, Rejected) and msg.reason == "unauthorized", msg
    assert msg.detail is not None and says in msg.detail, msg.detail


async def test_a_lone_server_over_real_sockets(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.write_text(f"# the site's secrets, newest first\n{SECRET}\n\n{OLD}  # going\n")
    async with (
        running_server("--join-secret-file", str(secrets), **FAST) as server,
        contextlib.AsyncExitStack() as stack,
    ):
        for _ in range(3):
            await register(server, stack)
        token = mint(SECRET, "alice", GAME)
        assert isinstance(await play(server, stack, token), Assigned)
        doc = await server.status()
        assert [c["sub"] for c in doc["clients"] if c["session_id"]] == ["alice"]
        unauthorized(await play(server, stack, token), "already used")
        unauthorized(await play(server, stack, None), "no ticket")
        unauthorized(await play(server, stack, mint("x" * 40, "eve", GAME)), "signature")
        unauthorized(await play(server, stack, mint(SECRET, "bob", OTHER)), "another game")
        unauthorized(await play(server, stack, mint(SECRET, "bob", ttl=-60)), "expired")
        assert isinstance(await play(server, stack, mint(OLD, "carol", GAME)), Assigned)
        metrics = await server.metrics()
        for why in ("spent", "missing", "bad_signature", "wrong_game", "expired"):
            assert f'playcast_ticket_refusals_total{{why="{why}"}} 1.0' in metrics
        assert 'playcast_rejections_total{reason="unauthorized"} 5.0' in metrics
        assert len((await server.status())["workers"]) == 3  # one left free
        await server.wait_for_log(r"client_rejected .*reason=unauthorized why=spent sub=alice")
        log = "\n".join(server.lines)
        assert SECRET not in log and OLD not in log
        assert '"join_secrets": ["***", "***"]' in log


async def test_a_ticket_played_on_one_node_is_refused_on_another() -> None:
    async with (
        running_redis() as redis,
        contextlib.AsyncExitStack() as stack,
    ):
        nodes = {}
        for name in "AB":
            nodes[name] = await stack.enter_async_context(
                running_server(
                    "--join-secret", SECRET, **FAST, redis=redis.url, node_id=name, node_ttl=1.0
                )
            )
        for node in nodes.values():
            await node.wait_status(lambda d: len(d.get("nodes", [])) == 2)
        await register(nodes["A"], stack)
        await register(nodes["A"], stack)
        token = mint(SECRET, "alice", GAME)
        assert isinstance(await play(nodes["A"], stack, token), Assigned)
        unauthorized(await play(nodes["B"], stack, token), "already used")
        unauthorized(await play(nodes["B"], stack, None), "no ticket")
        unauthorized(await play(nodes["B"], stack, mint(SECRET, "bob", ttl=-60)), "expired")
        unauthorized(await play(nodes["B"], stack, mint(SECRET, "bob", OTHER)), "game")
        # The worker the refusals did not take is the next ticket's, across nodes.
        assert isinstance(await play(nodes["B"], stack, mint(SECRET, "bob", GAME)), Assigned)
        doc = await nodes["A"].status()  # the whole cluster's, merged
        assert sorted(c["sub"] for c in doc["clients"] if c["session_id"]) == ["alice", "bob"]
        metrics = await nodes["B"].metrics()
        assert 'playcast_ticket_refusals_total{node="B",why="spent"} 1.0' in metrics


async def _start(*flags: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *server_argv(flags),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_a_short_secret_stops_the_server_at_start(tmp_path: Path) -> None:
    code, out = await _start("--join-secret", "too-short-a-secret")
    assert code != 0 and "join secret #1 is 18 bytes: HS256 needs at least 32" in out
    assert "too-short-a-secret" not in out
    short = tmp_path / "secrets"
    short.write_text(f"{SECRET}\nshort\n")
    code, out = await _start("--join-secret-file", str(short))
    assert code != 0 and "join secret #2 is 5 bytes" in out
    code, out = await _start("--join-secret-file", str(tmp_path / "none"))
    assert code != 0 and "cannot read the join secrets" in out
    code, out = await _start(env={"PLAYCAST_JOIN_SECRET": f"{SECRET} tiny"})
    assert code != 0 and "join secret #2 is 4 bytes" in out


def test_the_ticket_command_prints_a_ticket_the_server_accepts(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.write_text(f"{SECRET}\n{OLD}\n")
    argv = [sys.executable, "-m", "playcast", "ticket", "--secret-file", str(secrets)]
    out = subprocess.run(
        [*argv, "--sub", "zoe", "--url", "http://h:8080/?game=x"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out.startswith("http://h:8080/?game=x&ticket=")
    token = out.split("ticket=", 1)[1]
    verdict = TicketCheck((SECRET,), max_age=300, leeway=30).check(token, GAME, time.time())
    assert verdict.why is None and verdict.sub == "zoe"
    bad = subprocess.run([*argv[:4], "--secret", "short", "--sub", "x"], capture_output=True)
    assert bad.returncode == 2 and b"HS256 needs at least 32" in bad.stderr
