"""Join tickets (--join-secret, issue 27) on a lone server, under fake clocks:
who may play is the site's call; every refusal says why, is counted, and
takes neither a worker nor a place in line."""

from __future__ import annotations

import logging
from typing import Any

import jwt
import pytest
from hubkit import FakeClock, FakeConn, Rig, examples
from hypothesis import given, settings
from hypothesis import strategies as st
from jwt.api_jws import PyJWS
from jwt.exceptions import DecodeError

from playcast.protocol import (
    Answer,
    Assigned,
    Join,
    Offer,
    Queued,
    Rejected,
    Resume,
    Resumed,
    WebrtcConnected,
)
from playcast.signaling.rules.events import TICKET_TEXT
from playcast.signaling.rules.tickets import _Jws
from playcast.signaling.types import Client
from playcast.ticket import mint

GAME = "com.supercell.clashroyale"
OTHER_GAME = "com.example.other"
SECRET = "a-join-secret-for-the-tests-32-bytes-or-more"
NEXT = "the-next-join-secret-in-a-rotation-0123456789"
NOW = 1_800_000_000.0  # the wall clock's start (2027)


def rig(**settings: Any) -> tuple[Rig, FakeClock]:
    wall = FakeClock()
    wall.now = NOW
    return Rig(wall_clock=wall, join_secrets=(SECRET,), **settings), wall


def join(rig: Rig, ticket: str | None, game: str = GAME) -> tuple[Client, FakeConn]:
    conn = FakeConn()
    client = rig.open_client(conn)
    rig.send(client, Join(game=game, ticket=ticket))
    return client, conn


def ticket(secret: str = SECRET, *, sub: str = "alice", game: str = GAME, **claims: Any) -> str:
    return mint(secret, sub, game, ttl=60, now=NOW, **claims)


# What each refusal's detail says (the player's page shows it in its console).
SAYS = {
    "missing": "no ticket",
    "malformed": "not a JWT",
    "bad_signature": "sign",
    "expired": "expired",
    "not_yet_valid": "not valid yet",
    "too_long_lived": "lives",
    "wrong_game": "another game",
}


def refused(rig: Rig, conn: FakeConn, why: str) -> Rejected:
    """``conn`` was turned away unauthorized for ``why``, and closed."""
    (msg,) = conn.sent
    assert isinstance(msg, Rejected) and msg.reason == "unauthorized"
    assert msg.detail and SECRET not in msg.detail and NEXT not in msg.detail
    assert conn.closed is not None
    labels = {"why": why}
    assert rig.metrics.sample("playcast_ticket_refusals_total", labels) == 1.0
    rejections = rig.metrics.sample("playcast_rejections_total", {"reason": "unauthorized"})
    assert rejections is not None and rejections >= 1.0
    return msg


def test_a_ticket_lets_its_player_in_and_names_it() -> None:
    r, _ = rig()
    r.worker()
    client, conn = join(r, ticket(sub="alice@example.com"))
    assert isinstance(conn.last(), Assigned)
    assert client.sub == "alice@example.com"
    (shown,) = r.hub.snapshot()["clients"]
    assert shown["sub"] == "alice@example.com"
    assert r.hub.table.sessions[client.session_id or ""].client_sub == "alice@example.com"
    r.assert_consistent()


def test_the_player_s_identity_is_in_its_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    r, _ = rig()
    caplog.set_level(logging.INFO, logger="playcast.signaling")
    r.worker()
    client, _ = join(r, ticket(sub="bob"))
    r.on_close(client)  # its session ends
    join(r, ticket(sub="carol", game=OTHER_GAME))  # refused
    lines = {rec.getMessage().split()[0]: rec.getMessage() for rec in caplog.records}
    assert "sub=bob" in lines["client_assigned"]
    assert "sub=bob" in lines["session_ended"]
    assert "sub=carol" in lines["client_rejected"] and "why=wrong_game" in lines["client_rejected"]


@pytest.mark.parametrize(
    ("why", "token"),
    [
        ("missing", None),
        ("missing", ""),
        ("malformed", "not.a.jwt"),
        ("malformed", "nothing-like-a-jwt"),
        ("malformed", jwt.encode({"sub": "x", "game": GAME}, SECRET, algorithm="HS256")),
        ("malformed", ticket(jti=None)),
        ("malformed", ticket(sub="two words")),
        ("malformed", ticket(sub="line\nbreak")),
        ("malformed", ticket(exp="soon")),
        ("bad_signature", ticket(NEXT)),
        ("bad_signature", jwt.encode({"sub": "x"}, None, algorithm="none")),
        ("bad_signature", jwt.encode({"sub": "x"}, SECRET * 2, algorithm="HS512")),
        ("expired", ticket(exp=int(NOW) - 31)),
        ("not_yet_valid", ticket(nbf=int(NOW) + 31)),
        ("not_yet_valid", ticket(iat=int(NOW) + 31, nbf=int(NOW), exp=int(NOW) + 90)),
        ("too_long_lived", ticket(exp=int(NOW) + 301)),
        ("wrong_game", ticket(game=OTHER_GAME)),
    ],
)
def test_each_refusal_says_why_and_takes_nothing(why: str, token: str | None) -> None:
    r, _ = rig(queue_limit=5)
    r.worker()
    r.worker()
    join(r, ticket())  # takes one worker: the other is free
    client, conn = join(r, token)
    msg = refused(r, conn, why)
    assert msg.detail is not None and SAYS[why] in msg.detail
    assert not client.live and client.session_id is None
    assert len(r.available[GAME]) == 1  # no worker taken
    assert r.hub.line.clients == {}  # no place in line
    r.assert_consistent()


def test_a_ticket_is_played_once() -> None:
    r, _ = rig()
    r.worker()
    r.worker()
    token = ticket()
    join(r, token)
    _, conn = join(r, token)
    assert refused(r, conn, "spent").detail == TICKET_TEXT["spent"]
    assert len(r.available[GAME]) == 1


def test_a_place_in_line_spends_the_ticket() -> None:
    r, _ = rig(queue_limit=5)
    r.worker()
    join(r, ticket())
    token = ticket()
    _, first = join(r, token)
    assert isinstance(first.last(), Queued)
    _, again = join(r, token)
    refused(r, again, "spent")
    assert len(r.hub.line.clients) == 1


def test_no_worker_free_leaves_the_ticket_for_another_try() -> None:
    r, _ = rig()
    token = ticket()
    _, conn = join(r, token)
    assert isinstance(conn.last(), Rejected) and conn.last().reason == "no_worker_available"
    r.worker()
    _, conn = join(r, token)  # the player presses Play again with the same link
    assert isinstance(conn.last(), Assigned)


def test_any_configured_secret_signs_a_ticket() -> None:
    """Rotation: the old and the new secret both let in, each ticket once."""
    wall = FakeClock()
    wall.now = NOW
    r = Rig(wall_clock=wall, join_secrets=(NEXT, SECRET))
    r.worker()
    r.worker()
    _, a = join(r, ticket(SECRET))
    _, b = join(r, ticket(NEXT))
    assert isinstance(a.last(), Assigned) and isinstance(b.last(), Assigned)


@pytest.mark.parametrize(
    ("skew", "why"), [(-30, None), (30, None), (-31, "expired"), (31, "not_yet_valid")]
)
def test_a_site_clock_30_s_off_is_tolerated_31_s_is_not(skew: int, why: str | None) -> None:
    """The site's clock ``skew`` seconds ahead of ours (its iat and nbf in
    our future), or behind (its exp that long in our past)."""
    r, wall = rig()
    r.worker()
    if skew > 0:
        token = ticket(iat=int(NOW) + skew, nbf=int(NOW) + skew, exp=int(NOW) + skew + 60)
    else:
        token = ticket()
        wall.now = NOW + 60 - skew  # its exp, -skew seconds ago
    _, conn = join(r, token)
    if why is None:
        assert isinstance(conn.last(), Assigned)
    else:
        refused(r, conn, why)


def test_a_resume_needs_no_ticket_once_it_has_expired() -> None:
    """The session was let in once: a socket that drops after the ticket's
    expiry comes back with its resume token alone, and keeps its name."""
    r, wall = rig(resume_grace=5.0)
    worker, _ = r.worker()
    client, cconn = join(r, ticket(sub="dana"))
    assigned = cconn.last()
    assert isinstance(assigned, Assigned) and assigned.resume_token
    sid = assigned.session_id
    r.send(worker, Offer(session_id=sid, sdp="o"))
    r.send(client, Answer(session_id=sid, sdp="a"))
    r.send(worker, WebrtcConnected(session_id=sid))
    r.send(client, WebrtcConnected(session_id=sid))
    wall.now = NOW + 3600.0  # an hour on: the ticket long expired
    r.on_close(client)
    conn = FakeConn()
    back = r.open_client(conn)
    r.send(back, Resume(session_id=sid, token=assigned.resume_token))
    assert isinstance(conn.last(), Resumed)
    assert back.sub == "dana" and r.hub.snapshot()["clients"][0]["sub"] == "dana"
    r.assert_consistent()


def test_without_a_secret_the_server_stays_open() -> None:
    r = Rig()
    assert r.hub.tickets is None
    r.worker()
    r.worker()
    _, a = join(r, None)
    _, b = join(r, "whatever a page sends")  # not read
    assert isinstance(a.last(), Assigned) and isinstance(b.last(), Assigned)
    assert r.hub.snapshot()["clients"][0]["sub"] is None


_SEGMENT_BYTES = st.sampled_from(
    [*b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=", *b"!\x00\xff"]
)


@settings(max_examples=examples(400), deadline=None)
@given(st.lists(_SEGMENT_BYTES, max_size=40).map(bytes))
def test_the_fast_segment_rule_is_pyjwt_s_own(segment: bytes) -> None:
    """The ticket check's base64url segment rule (in C) answers as PyJWT's
    (in Python) on any segment: the same bytes, or the same refusal."""

    def outcome(decode: Any) -> bytes | str:
        try:
            result: bytes = decode(segment, "payload")
            return result
        except DecodeError as exc:
            return str(exc)

    assert outcome(_Jws._decode_base64url_segment) == outcome(PyJWS._decode_base64url_segment)
