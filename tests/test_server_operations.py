"""What an operator turns on: worker token, TURN REST credentials, TLS, JSON logs."""

from __future__ import annotations

import json
import ssl
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
from playcast_testing.scripted import ScriptedPeer
from playcast_testing.servers import running_server

from playcast.protocol import Assigned, Join, Register, Registered, SessionStart
from playcast.signaling.rules.ice import turn_rest_credentials

GAME = "com.supercell.clashroyale"


async def test_worker_token_is_required_at_the_upgrade() -> None:
    async with (
        running_server("--worker-token", "s3cret") as server,
        aiohttp.ClientSession() as http,
    ):
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(server.ws_url("worker"))
        assert info.value.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await http.ws_connect(
                server.ws_url("worker"), headers={"Authorization": "Bearer wrong"}
            )
        ws = await http.ws_connect(
            server.ws_url("worker"), headers={"Authorization": "Bearer s3cret"}
        )
        peer = ScriptedPeer(ws)
        await peer.send(Register(game=GAME))
        await peer.expect(Registered)
        await peer.close()
        # Clients need no token: the page is public.
        client = await http.ws_connect(server.ws_url("client"))
        await client.close()
        await server.wait_for_log(r"worker_refused")


def test_turn_rest_credentials_match_coturn_rule() -> None:
    # A known answer, computed once outside Playcast:
    #   printf %s 1900000000:s-1 | openssl dgst -sha1 -hmac sharedsecret -binary | base64
    username, password = turn_rest_credentials("sharedsecret", "s-1", 1_900_000_000)
    assert username == "1900000000:s-1"
    assert password == "MiR/fTWPlXhxji1iUn6m0E8YQto="


async def test_turn_rest_credentials_reach_both_peers() -> None:
    flags = ("--turn-url", "turn:turn.example.org:3478", "--turn-secret", "k", "--turn-ttl", "600")
    async with running_server(*flags) as server, aiohttp.ClientSession() as http:
        worker = ScriptedPeer(await http.ws_connect(server.ws_url("worker")))
        client = ScriptedPeer(await http.ws_connect(server.ws_url("client")))
        await worker.send(Register(game=GAME))
        await worker.expect(Registered)
        await client.send(Join())
        assigned = await client.expect(Assigned)
        start = await worker.expect(SessionStart)
        (turn,) = assigned.ice_servers
        assert start.ice_servers == assigned.ice_servers
        assert turn.urls == ["turn:turn.example.org:3478"]
        assert turn.username is not None and turn.credential is not None
        expiry, name = turn.username.split(":")
        assert name == assigned.session_id
        assert 590 <= int(expiry) - time.time() <= 610
        assert (turn.username, turn.credential) == turn_rest_credentials("k", name, int(expiry))
        await worker.close()
        await client.close()


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls(self_signed: tuple[Path, Path]) -> None:
    cert, key = self_signed
    async with running_server("--tls-cert", str(cert), "--tls-key", str(key)) as server:
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        async with aiohttp.ClientSession() as http:
            url = f"https://127.0.0.1:{server.port}"
            async with http.get(f"{url}/healthz", ssl=context) as r:
                assert r.status == 200
            ws = await http.ws_connect(f"wss://127.0.0.1:{server.port}/ws/worker", ssl=context)
            peer = ScriptedPeer(ws)
            await peer.send(Register(game=GAME))
            await peer.expect(Registered)
            await peer.close()
        await server.wait_for_log(r"server_listening url=https://")


async def test_json_logs_carry_ids() -> None:
    async with running_server("--log-format", "json") as server, aiohttp.ClientSession() as http:
        peer = ScriptedPeer(await http.ws_connect(server.ws_url("worker")))
        await peer.send(Register(game=GAME))
        reg = await peer.expect(Registered)
        await peer.close()
        m = await server.wait_for_log(r'^\{.*"event": "worker_registered".*\}$')
        doc = json.loads(m.string)
        assert doc["worker"] == reg.worker_id and doc["game"] == GAME
        assert doc["level"] == "info" and isinstance(doc["ts"], float)
