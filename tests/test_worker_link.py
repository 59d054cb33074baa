"""The worker's lifecycle core (worker/link.py) with a fake clock: no sockets,
no backend, no sleeps. Each test feeds events and reads the effects."""

from __future__ import annotations

import itertools
import logging
import random

import pytest

from playcast import protocol as t
from playcast.worker.backoff import Backoff
from playcast.worker.link import Link
from playcast.worker.link_events import (
    BackendFailed,
    BackendReset,
    BackendStarted,
    CheckHealth,
    CloseSession,
    CloseSocket,
    Connect,
    Connected,
    ConnectFailed,
    DrainRequested,
    Effect,
    Event,
    Exit,
    FeedSession,
    HealthChecked,
    MediaConnected,
    MediaFailed,
    OfferReady,
    Received,
    ResetBackend,
    Send,
    SessionClosed,
    SocketClosed,
    StartBackend,
    StartSession,
    StopRequested,
    TimerFired,
)
from playcast.worker.link_state import LinkSettings, Phase

SEED = 7
SETTINGS = LinkSettings(
    game="g",
    backoff_base=0.5,
    backoff_cap=4.0,
    restart_delay=1.0,
    register_timeout=10.0,
    health_interval=5.0,
    stable_after=60.0,
)
HEARTBEAT_TIMEOUT = 15.0
SID = "s-1"


class Rig:
    """A Link and a fake clock."""

    def __init__(self, settings: LinkSettings = SETTINGS) -> None:
        self.now = 100.0
        self.link = Link(settings, random.Random(SEED))
        self.link.start(self.now)
        self.started = self.link.effects()

    def feed(self, event: Event) -> list[Effect]:
        self.link.handle(event, self.now)
        return self.link.effects()

    def msg(self, msg: t.Message) -> list[Effect]:
        return self.feed(Received(msg))

    def at(self, when: float) -> list[Effect]:
        """Move the clock to ``when`` and fire the timer."""
        assert when >= self.now
        self.now = when
        return self.feed(TimerFired())

    def wake(self) -> list[Effect]:
        deadline = self.link.deadline
        assert deadline is not None
        return self.at(deadline)

    def wait(self) -> float:
        """How long the link is waiting from now."""
        assert self.link.phase is Phase.WAITING
        deadline = self.link.deadline
        assert deadline is not None
        return deadline - self.now

    def register(self, worker_id: str = "w-1", grace: float | None = None) -> None:
        """From checking the game (or waiting to) to available."""
        if self.link.phase is Phase.WAITING:
            assert self.wake() == [CheckHealth()]
        assert self.feed(HealthChecked(True)) == [Connect()]
        assert self.feed(Connected()) == [Send(t.Register(game="g"))]
        assert (
            self.msg(
                t.Registered(
                    worker_id=worker_id,
                    heartbeat_interval=1.0,
                    heartbeat_timeout=HEARTBEAT_TIMEOUT,
                    resume_grace=grace,
                )
            )
            == []
        )
        assert self.link.available and self.link.worker_id == worker_id

    def start_session(self, token: str | None = None) -> None:
        start = t.SessionStart(session_id=SID, client_id="c-1", ice_servers=[], resume_token=token)
        assert self.msg(start) == [StartSession(start)]
        assert not self.link.available

    def connect_media(self) -> None:
        assert self.feed(OfferReady(SID, "v=0")) == [
            Send(t.Offer(session_id=SID, sdp="v=0")),
            Send(t.IceCandidate(session_id=SID, candidate=None)),
        ]
        assert self.feed(MediaConnected(SID)) == [Send(t.WebrtcConnected(session_id=SID))]


@pytest.fixture
def rig() -> Rig:
    r = Rig()
    assert r.started == [StartBackend()]
    assert r.feed(BackendStarted(True)) == [CheckHealth()]
    r.register()
    return r


def test_backoff_is_full_jitter_capped_and_resets() -> None:
    backoff = Backoff(base=0.5, cap=4.0, rng=random.Random(SEED))
    same = random.Random(SEED)
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert [backoff.next_delay() for _ in ceilings] == [same.uniform(0, c) for c in ceilings]
    many = [backoff.next_delay() for _ in range(2000)]
    assert max(many) <= 4.0 and min(many) < 0.2 and max(many) > 3.8  # the whole range
    backoff.reset()
    assert backoff.ceiling() == 0.5 and backoff.next_delay() <= 0.5


def test_registers_and_answers_pings(rig: Rig) -> None:
    assert rig.link.registrations == 1
    assert rig.msg(t.Ping(ts=1.5)) == [Send(t.Pong(ts=1.5))]
    # The server's heartbeat timeout now bounds the silence.
    assert rig.link.deadline == rig.now + SETTINGS.health_interval  # the idle poll comes first
    assert rig.wake() == [CheckHealth()]
    assert rig.feed(HealthChecked(True)) == []
    assert rig.link.deadline == rig.now + SETTINGS.health_interval


def test_session_then_shutdown_ack_then_a_fresh_registration(rig: Rig) -> None:
    rig.start_session()
    answer = t.Answer(session_id=SID, sdp="v=0")
    rig.connect_media()
    assert rig.msg(answer) == [FeedSession(answer)]
    assert rig.msg(t.Answer(session_id="s-other", sdp="v=0")) == []
    # A second session_start while busy is ignored.
    assert rig.msg(t.SessionStart(session_id="s-2", client_id="c-2", ice_servers=[])) == []
    assert rig.msg(t.Shutdown(reason="client_left", message="bye")) == [CloseSession(SID)]
    # Pings are still answered while the session closes.
    assert rig.msg(t.Ping(ts=2.0)) == [Send(t.Pong(ts=2.0))]
    assert rig.feed(SessionClosed(SID, True, "closed (3 inputs)")) == [
        Send(t.ShutdownAck(ok=True, detail="closed (3 inputs)")),
        CloseSocket(),
        ResetBackend(),
    ]
    assert rig.feed(BackendReset(True)) == []
    assert rig.wait() == SETTINGS.restart_delay
    rig.register("w-2")  # a new worker, state fresh
    assert rig.link.registrations == 2 and rig.link.sessions == 1


def test_shutdown_while_idle_is_acknowledged_at_once(rig: Rig) -> None:
    assert rig.msg(t.Shutdown(reason="server_shutdown", message="")) == [
        Send(t.ShutdownAck(ok=True, detail="idle, no session to close")),
        CloseSocket(),
    ]
    assert rig.wait() == SETTINGS.restart_delay  # no session: no reset


def test_silent_server_is_lost_after_a_short_grace(rig: Rig) -> None:
    rig.at(rig.now + SETTINGS.health_interval)  # the poll
    rig.feed(HealthChecked(True))
    last_ping = rig.now - SETTINGS.health_interval
    # Past the heartbeat timeout: one more look before calling it dead...
    while rig.now < last_ping + HEARTBEAT_TIMEOUT:
        effects = rig.wake()
        if effects == [CheckHealth()]:
            rig.feed(HealthChecked(True))
    assert rig.link.phase is Phase.LINKED
    # ...and a ping in the grace saves it.
    assert rig.msg(t.Ping(ts=3.0)) == [Send(t.Pong(ts=3.0))]
    deadline = rig.link.deadline
    assert deadline is not None and deadline > rig.now
    silence_from = rig.now
    while rig.link.phase is Phase.LINKED:
        effects = rig.wake()
        if effects == [CheckHealth()]:
            rig.feed(HealthChecked(True))
    assert effects == [CloseSocket()]
    assert rig.now == pytest.approx(silence_from + HEARTBEAT_TIMEOUT + 0.25)
    assert 0 <= rig.wait() <= 0.5  # server backoff, first step


def test_no_registered_within_the_register_timeout_is_lost() -> None:
    r = Rig()
    r.feed(BackendStarted(True))
    r.feed(HealthChecked(True))
    r.feed(Connected())
    connected_at = r.now
    r.wake()
    assert r.link.phase is Phase.LINKED  # the grace
    assert r.wake() == [CloseSocket()]
    assert r.now == pytest.approx(connected_at + SETTINGS.register_timeout + 0.25)


def test_socket_closed_backs_off_more_each_time_until_registered(rig: Rig) -> None:
    assert rig.feed(SocketClosed("reset by peer")) == [CloseSocket()]
    same = random.Random(SEED)
    assert rig.wait() == pytest.approx(same.uniform(0, 0.5))
    rig.wake()
    rig.feed(HealthChecked(True))
    assert rig.feed(ConnectFailed("refused")) == []
    assert rig.wait() == pytest.approx(same.uniform(0, 1.0))
    rig.register("w-2")
    assert rig.link.server_backoff.attempt == 0


def test_socket_closed_mid_session_closes_it_and_resets_the_game(rig: Rig) -> None:
    rig.start_session()
    rig.connect_media()
    assert rig.feed(SocketClosed("gone")) == [CloseSocket(), CloseSession(SID)]
    assert rig.feed(SessionClosed(SID, True, "closed")) == [ResetBackend()]
    assert rig.feed(BackendReset(True)) == []
    assert 0 <= rig.wait() <= 0.5


def test_player_gone_after_connect_says_webrtc_failed_at_once(rig: Rig) -> None:
    rig.start_session()
    rig.connect_media()
    reason = "the player's peer connection failed"
    assert rig.feed(MediaFailed(SID, reason, backend=False)) == [
        Send(t.WebrtcFailed(session_id=SID, reason=reason)),
        CloseSession(SID),
    ]
    # Said once, however many ways the media dies.
    assert rig.feed(MediaFailed(SID, "the player's input channel closed", backend=False)) == []
    assert rig.feed(SessionClosed(SID, True, "closed (5 inputs)")) == []
    # The server answers with shutdown client_failed; the ack tells how it went.
    assert rig.msg(t.Shutdown(reason="client_failed", message="")) == [
        Send(t.ShutdownAck(ok=True, detail="closed (5 inputs)")),
        CloseSocket(),
        ResetBackend(),
    ]


def test_player_gone_unconfirmed_leaves_after_a_heartbeat_timeout(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.start_session()
    rig.connect_media()
    gone_at = rig.now
    rig.feed(MediaFailed(SID, "the player's input channel closed", backend=False))
    rig.feed(SessionClosed(SID, True, "closed"))
    effects: list[Effect] = []
    while rig.link.phase is Phase.LINKED:
        rig.msg(t.Ping(ts=rig.now))  # the server is alive, it just never says
        effects = rig.at(min(rig.link.deadline or 0, rig.now + 1.0))
    assert effects == [CloseSocket(), ResetBackend()]
    assert rig.now == pytest.approx(gone_at + HEARTBEAT_TIMEOUT)
    assert "no shutdown from the server" in caplog.text


def test_handshake_failure_is_reported_once_and_the_shutdown_acknowledged(rig: Rig) -> None:
    rig.start_session()
    rig.feed(OfferReady(SID, "v=0"))
    failed = Send(t.WebrtcFailed(session_id=SID, reason="handshake failed: bad sdp"))
    assert rig.feed(MediaFailed(SID, "handshake failed: bad sdp", backend=False)) == [failed]
    assert rig.feed(MediaFailed(SID, "peer connection failed", backend=False)) == []
    assert rig.msg(t.Shutdown(reason="handshake_failed", message="")) == [CloseSession(SID)]
    # The server closes right after the shutdown: the ack is still tried, and
    # this is a normal restart, not a lost server.
    assert rig.feed(SocketClosed("closed by the server")) == []
    effects = rig.feed(SessionClosed(SID, True, "closed"))
    assert effects[0] == Send(t.ShutdownAck(ok=True, detail="closed"))
    assert effects[1:] == [CloseSocket(), ResetBackend()]


def test_backend_failure_mid_session_leaves_at_once_and_backs_off(rig: Rig) -> None:
    rig.start_session()
    rig.connect_media()
    assert rig.feed(MediaFailed(SID, "backend failed: unplugged", backend=True)) == [
        Send(t.WebrtcFailed(session_id=SID, reason="backend failed: unplugged")),
        CloseSocket(),
        CloseSession(SID),
    ]
    assert rig.feed(SessionClosed(SID, True, "closed")) == []
    assert rig.link.failures["session"] == 1
    assert 0 <= rig.wait() <= 0.5
    assert rig.wake() == [ResetBackend()]


def test_backend_failure_before_connect_is_counted_after_the_ack(rig: Rig) -> None:
    rig.start_session()
    rig.feed(OfferReady(SID, "v=0"))
    assert rig.feed(MediaFailed(SID, "backend failed: x", backend=True)) == [
        Send(t.WebrtcFailed(session_id=SID, reason="backend failed: x"))
    ]
    rig.msg(t.Shutdown(reason="handshake_failed", message=""))
    effects = rig.feed(SessionClosed(SID, True, "closed"))
    assert effects == [Send(t.ShutdownAck(ok=True, detail="closed")), CloseSocket()]
    assert rig.link.failures["session"] == 1 and rig.wake() == [ResetBackend()]


def test_a_pushed_failure_while_idle_leaves_the_pool_at_once(rig: Rig) -> None:
    assert rig.feed(BackendFailed("video stalled")) == [CloseSocket()]
    assert not rig.link.available and rig.link.failures["idle"] == 1
    # Everything the old socket still says is ignored.
    assert rig.msg(t.SessionStart(session_id=SID, client_id="c", ice_servers=[])) == []
    assert rig.feed(SocketClosed("closed")) == []
    assert rig.wake() == [ResetBackend()]
    assert rig.feed(BackendReset(True)) == []
    rig.register("w-2")  # only once the game checks healthy


def test_the_idle_health_poll_catches_what_is_not_pushed(rig: Rig) -> None:
    assert rig.at(rig.now + SETTINGS.health_interval) == [CheckHealth()]
    assert rig.feed(HealthChecked(False, "device is offline")) == [CloseSocket()]
    assert rig.link.failures["idle"] == 1


def test_a_failure_pushed_while_connecting_never_registers() -> None:
    r = Rig()
    r.feed(BackendStarted(True))
    assert r.feed(HealthChecked(True)) == [Connect()]
    assert r.feed(BackendFailed("scrcpy server exited")) == []
    assert r.feed(Connected()) == [CloseSocket()]
    assert r.link.phase is Phase.WAITING


def test_a_phone_failing_five_times_is_retried_on_the_backoff_schedule(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="playcast.worker")
    r = Rig()
    r.feed(BackendStarted(True))
    r.register()
    same = random.Random(SEED)
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0]  # base 0.5, doubling, cap 4
    expected = [same.uniform(0, c) for c in ceilings]
    delays = []
    # The game fails while idle, then its resets fail again and again.
    r.feed(BackendFailed("the device closed the video socket"))
    delays.append(r.wait())
    for _ in range(4):
        assert r.wake() == [ResetBackend()]
        r.feed(BackendReset(False, "device emulator-5554 is offline"))
        delays.append(r.wait())
    assert delays == pytest.approx(expected)
    assert r.link.failure_streak == 5
    failures = [rec for rec in caplog.records if "backend failure" in rec.getMessage()]
    assert [rec.levelno for rec in failures] == [logging.ERROR] * 5  # one line each
    assert "backend failure 5 in a row (reset)" in failures[-1].getMessage()
    # Healthy again: it registers as a new worker...
    assert r.wake() == [ResetBackend()]
    r.feed(BackendReset(True))
    r.register("w-2")
    # ...but a relapse soon after keeps climbing the schedule, capped.
    r.feed(BackendFailed("video stalled"))
    assert r.link.failure_streak == 6 and r.wait() == pytest.approx(same.uniform(0, 4.0))
    r.wake()
    r.feed(BackendReset(True))
    r.register("w-3")
    # Healthy for stable_after: the next failure starts a new streak.
    r.now += SETTINGS.stable_after
    r.feed(BackendFailed("video stalled"))
    assert r.link.failure_streak == 1 and r.wait() == pytest.approx(same.uniform(0, 0.5))


def test_a_game_that_cannot_start_is_retried_with_backoff() -> None:
    r = Rig()
    assert r.feed(BackendStarted(False, "no device yet")) == []
    assert r.link.failures["start"] == 1
    assert r.wake() == [StartBackend()]
    assert r.feed(BackendStarted(True)) == [CheckHealth()]


@pytest.mark.parametrize("where", ["idle", "session", "waiting", "starting"])
def test_stop_exits_from_anywhere(rig: Rig, where: str) -> None:
    if where == "session":
        rig.start_session()
    elif where == "waiting":
        rig.feed(SocketClosed("x"))
    elif where == "starting":
        rig = Rig()
    assert rig.feed(StopRequested()) == [Exit()]
    assert rig.link.done and rig.link.deadline is None
    assert rig.msg(t.Ping(ts=1.0)) == []


# --- drain (SIGUSR1) -------------------------------------------------------------


def events(caplog: pytest.LogCaptureFixture) -> list[tuple[str, dict[str, object]]]:
    """The lifecycle events logged so far, with their fields."""
    return [(r.event, r.fields) for r in caplog.records if hasattr(r, "event")]


def test_drain_while_idle_leaves_the_pool_and_exits(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="playcast.worker")
    assert rig.feed(DrainRequested()) == [CloseSocket(), Exit()]
    assert rig.link.done and rig.link.deadline is None
    # Whatever the closed socket still delivers starts nothing.
    start = t.SessionStart(session_id=SID, client_id="c-1", ice_servers=[])
    assert rig.msg(start) == [] and rig.feed(SocketClosed("closed")) == []
    assert events(caplog) == [
        ("worker_unregistered", {"why": "drained"}),
        ("worker_drained", {}),
    ]


def test_drain_in_a_session_waits_for_its_end_then_exits_instead_of_registering(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="playcast.worker")
    rig.start_session()
    rig.connect_media()
    assert rig.feed(DrainRequested()) == []
    assert rig.feed(DrainRequested()) == []  # said twice, the same drain
    # The session goes on untouched: pings, answers, the heartbeat.
    assert rig.msg(t.Ping(ts=5.0)) == [Send(t.Pong(ts=5.0))]
    answer = t.Answer(session_id=SID, sdp="v=0")
    assert rig.msg(answer) == [FeedSession(answer)]
    assert rig.link.phase is Phase.LINKED and not rig.link.done
    assert rig.msg(t.Shutdown(reason="client_left", message="")) == [CloseSession(SID)]
    # Acknowledged as usual, then the end: no ResetBackend, no Connect.
    assert rig.feed(SessionClosed(SID, True, "closed (9 inputs)")) == [
        Send(t.ShutdownAck(ok=True, detail="closed (9 inputs)")),
        CloseSocket(),
        Exit(),
    ]
    assert rig.link.done and rig.link.deadline is None
    assert rig.link.registrations == 1
    names = [name for name, _ in events(caplog)]
    assert names[-3:] == ["session_ended", "worker_unregistered", "worker_drained"]


def test_drain_while_connecting_exits_and_never_registers() -> None:
    r = Rig()
    r.feed(BackendStarted(True))
    assert r.feed(HealthChecked(True)) == [Connect()]
    assert r.feed(DrainRequested()) == [Exit()]
    assert r.feed(Connected()) == []  # no register on the socket that opened late
    assert r.link.done and r.link.registrations == 0


@pytest.mark.parametrize("where", ["starting", "waiting", "resetting"])
def test_drain_between_links_exits_at_once(rig: Rig, where: str) -> None:
    if where == "starting":
        rig = Rig()
    elif where == "waiting":
        rig.feed(SocketClosed("x"))
    else:
        rig.start_session()
        rig.msg(t.Shutdown(reason="client_left", message=""))
        rig.feed(SessionClosed(SID, True, "closed"))  # the ack, and ResetBackend
        assert rig.link.phase is Phase.RESETTING
    assert rig.feed(DrainRequested()) == [Exit()]
    assert rig.link.done


def test_a_drained_session_that_resumes_still_ends_in_an_exit(playing: Rig) -> None:
    r = playing
    assert r.feed(SocketClosed("gone")) == [CloseSocket(), Connect()]
    assert r.feed(DrainRequested()) == []  # away: the session is still on
    assert r.feed(Connected()) == [resume_msg()]
    assert r.msg(t.Resumed(session_id=SID, resume_token="tok-2")) == []
    # The game fails: the session ends, and with it the worker (no game backoff).
    assert r.feed(MediaFailed(SID, "video stalled", backend=True)) == [
        Send(t.WebrtcFailed(session_id=SID, reason="video stalled")),
        CloseSocket(),
        CloseSession(SID),
    ]
    assert r.feed(SessionClosed(SID, True, "closed")) == [Exit()]
    assert r.link.done


def test_the_lifecycle_is_logged_as_events_with_their_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="playcast.worker")
    r = Rig()
    r.feed(BackendStarted(True))
    r.register("w-1")
    r.start_session()
    r.msg(t.Shutdown(reason="client_left", message=""))
    r.feed(SessionClosed(SID, False, "close failed"))
    r.feed(BackendReset(False, "device gone"))
    assert events(caplog) == [
        ("worker_registered", {"worker_id": "w-1", "game": "g"}),
        ("session_started", {"session_id": SID, "client_id": "c-1"}),
        ("session_ended", {"session_id": SID, "ok": False}),
        ("worker_unregistered", {"why": "restart"}),
        (
            "backend_failure",
            {
                "streak": 1,
                "kind": "reset",
                "detail": "device gone",
                "delay": round(random.Random(SEED).uniform(0, 0.5), 3),  # the first step
            },
        ),
    ]
    # The text stays the same for people.
    texts = [r.getMessage() for r in caplog.records if hasattr(r, "event")]
    assert texts[0] == "registered worker_id=w-1 game=g heartbeat_timeout=15.0"
    assert texts[1] == f"session_start session={SID} client=c-1"
    assert texts[2] == f"session {SID} ended ok=False: close failed"
    assert texts[4].startswith("backend failure 1 in a row (reset): device gone; reset in ")


# --- resume (the server's --resume-grace) ------------------------------------

GRACE = 5.0
TOKEN = "tok-1"


@pytest.fixture
def playing() -> Rig:
    """A session whose server offers resume: a grace and a token."""
    r = Rig()
    r.feed(BackendStarted(True))
    r.register(grace=GRACE)
    r.start_session(token=TOKEN)
    r.connect_media()
    return r


def resume_msg(token: str = TOKEN) -> Send:
    return Send(t.Resume(session_id=SID, token=token))


def test_a_dropped_socket_keeps_the_game_and_resumes(playing: Rig) -> None:
    r = playing
    # No CloseSession: the peer connection and the game run on; a new socket at once.
    assert r.feed(SocketClosed("reset by peer")) == [CloseSocket(), Connect()]
    assert r.link.phase is Phase.AWAY and r.link.away
    assert r.feed(Connected()) == [resume_msg()]
    assert r.msg(t.Ping(ts=4.0)) == [Send(t.Pong(ts=4.0))]  # answered meanwhile
    r.now += 0.05
    assert r.msg(t.Resumed(session_id=SID, resume_token="tok-2")) == []
    assert not r.link.away and r.link.resumes == 1
    assert r.link.last_resume_s == pytest.approx(0.05)
    # What the server held for us is fed to the session as usual.
    answer = t.Answer(session_id=SID, sdp="v=0")
    assert r.msg(answer) == [FeedSession(answer)]
    # The next drop resumes with the new token: the old one is spent.
    assert r.feed(SocketClosed("again")) == [CloseSocket(), Connect()]
    assert r.feed(Connected()) == [resume_msg("tok-2")]
    assert r.msg(t.Resumed(session_id=SID, resume_token="tok-3")) == []
    assert r.link.resumes == 2 and r.link.sessions == 1 and r.link.registrations == 1
    # And the session still ends the usual way.
    assert r.msg(t.Shutdown(reason="client_left", message="")) == [CloseSession(SID)]


def test_resume_retries_quickly_then_backs_off_until_the_grace_is_over(playing: Rig) -> None:
    r = playing
    dropped_at = r.now
    r.feed(SocketClosed("gone"))
    attempts = [r.now]
    # Quick first: 0.1, 0.25, 0.5 s after each failure.
    for quick in (0.1, 0.25, 0.5):
        assert r.feed(ConnectFailed("refused")) == []
        assert r.link.deadline == pytest.approx(r.now + quick)
        assert r.wake() == [Connect()]
        attempts.append(r.now)
    # Then the server backoff (full jitter), never past the grace.
    same = random.Random(SEED)
    assert r.feed(ConnectFailed("refused")) == []
    assert r.link.deadline == pytest.approx(r.now + same.uniform(0, 0.5))
    effects: list[Effect] = []
    while r.link.phase is Phase.AWAY:
        if r.link.deadline is not None:
            assert r.wake() == [Connect()]
            attempts.append(r.now)
        effects = r.feed(ConnectFailed("refused"))
    assert max(attempts) == pytest.approx(dropped_at + GRACE)  # a last try at the end
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert max(gaps) <= SETTINGS.backoff_cap  # the backoff's cap holds while away too
    # No server reached within the grace: the session ends, as without resume.
    assert effects == [CloseSocket(), CloseSession(SID)]
    assert r.link.resume_failures["grace_over"] == 1 and not r.link.away
    assert r.feed(SessionClosed(SID, True, "closed")) == [ResetBackend()]
    assert r.feed(BackendReset(True)) == []
    assert r.link.phase is Phase.WAITING  # then the server backoff, and a fresh registration
    r.register("w-2", grace=GRACE)


def test_a_connect_that_outlasts_the_grace_ends_the_session(playing: Rig) -> None:
    r = playing
    r.feed(SocketClosed("gone"))
    r.now += 10.0  # a frozen server: the connect times out after the grace
    assert r.feed(ConnectFailed("timeout")) == [CloseSocket(), CloseSession(SID)]


def test_resume_refused_ends_the_session_and_restarts(playing: Rig) -> None:
    r = playing
    r.feed(SocketClosed("gone"))
    r.feed(Connected())
    refused = t.Error(code="resume_failed", message="no such session waiting here")
    assert r.msg(refused) == [CloseSocket(), CloseSession(SID)]
    assert r.link.resume_failures["refused"] == 1
    assert r.feed(SocketClosed("1008")) == []  # the server's close is expected
    assert r.feed(SessionClosed(SID, True, "closed")) == [ResetBackend()]
    assert r.feed(BackendReset(True)) == []
    assert r.wait() == SETTINGS.restart_delay  # the server is up: a normal restart


def test_a_failed_resume_socket_is_retried_within_the_same_grace(playing: Rig) -> None:
    r = playing
    dropped_at = r.now
    r.feed(SocketClosed("gone"))
    assert r.feed(Connected()) == [resume_msg()]
    # The new socket closes before resumed: the next quick try.
    assert r.feed(SocketClosed("closed")) == [CloseSocket()]
    assert r.link.deadline == pytest.approx(r.now + 0.1)
    assert r.wake() == [Connect()]
    assert r.feed(Connected()) == [resume_msg()]
    # A node that is stopping greets a new socket with server_shutdown: elsewhere.
    assert r.msg(t.Shutdown(reason="server_shutdown", message="")) == [CloseSocket()]
    assert r.link.deadline == pytest.approx(r.now + 0.25)
    r.wake()
    r.feed(Connected())
    assert r.msg(t.Resumed(session_id=SID, resume_token="tok-2")) == []
    # The grace was counted from the first drop, and is over now that it resumed.
    assert r.link.last_resume_s == pytest.approx(r.now - dropped_at)
    assert not r.link.away


def test_a_resume_socket_that_never_answers_is_given_up_on() -> None:
    r = Rig()
    r.feed(BackendStarted(True))
    r.register(grace=60.0)
    r.start_session(token=TOKEN)
    r.connect_media()
    r.feed(SocketClosed("gone"))
    r.feed(Connected())
    connected_at = r.now
    while r.link.phase is Phase.LINKED:
        effects = r.wake()
    assert effects == [CloseSocket()]  # another attempt, not the session's end
    assert r.now == pytest.approx(connected_at + HEARTBEAT_TIMEOUT + 0.25)
    assert r.link.phase is Phase.AWAY and r.link.deadline == pytest.approx(r.now + 0.1)


def test_what_the_session_says_while_away_goes_out_once_resumed() -> None:
    r = Rig()
    r.feed(BackendStarted(True))
    r.register(grace=GRACE)
    r.start_session(token=TOKEN)
    assert r.feed(SocketClosed("gone")) == [CloseSocket(), Connect()]  # mid-handshake
    assert r.feed(OfferReady(SID, "v=0")) == []
    assert r.feed(MediaConnected(SID)) == []
    assert r.feed(Connected()) == [resume_msg()]
    assert r.msg(t.Resumed(session_id=SID, resume_token="tok-2")) == [
        Send(t.Offer(session_id=SID, sdp="v=0")),
        Send(t.IceCandidate(session_id=SID, candidate=None)),
        Send(t.WebrtcConnected(session_id=SID)),
    ]


def test_reconnect_in_a_session_resumes_at_once(playing: Rig) -> None:
    assert playing.msg(t.Reconnect()) == [CloseSocket(), Connect()]
    assert playing.feed(SocketClosed("1012")) == []  # the old socket's close is old news
    assert playing.feed(Connected()) == [resume_msg()]
    assert playing.msg(t.Resumed(session_id=SID, resume_token="tok-2")) == []
    assert playing.link.resumes == 1


def test_reconnect_while_idle_registers_anew_at_once(rig: Rig) -> None:
    assert rig.msg(t.Reconnect()) == [CloseSocket()]
    assert rig.wait() == 0.0  # no backoff, no reset: there was no session
    assert rig.link.server_backoff.attempt == 0
    rig.register("w-2")


def test_heartbeat_silence_still_ends_a_resumable_session(playing: Rig) -> None:
    r = playing
    effects: list[Effect] = []
    while r.link.phase is Phase.LINKED:
        effects = r.wake()
    # The server counts a silent socket as dead: the session is over there.
    assert effects == [CloseSocket(), CloseSession(SID)] and not r.link.away


@pytest.mark.parametrize(("grace", "token"), [(None, TOKEN), (GRACE, None), (0.0, TOKEN)])
def test_no_resume_without_both_a_grace_and_a_token(grace: float | None, token: str | None) -> None:
    r = Rig()
    r.feed(BackendStarted(True))
    r.register(grace=grace)
    r.start_session(token=token)
    r.connect_media()
    assert r.feed(SocketClosed("gone")) == [CloseSocket(), CloseSession(SID)]


def test_media_dying_while_away_ends_the_session(playing: Rig) -> None:
    r = playing
    r.feed(SocketClosed("gone"))
    reason = "the player's peer connection failed"
    assert r.feed(MediaFailed(SID, reason, backend=False)) == [CloseSocket(), CloseSession(SID)]
    assert not r.link.away
    assert r.feed(Connected()) == [CloseSocket()]  # the attempt under way is dropped
    assert r.feed(SessionClosed(SID, True, "closed")) == [ResetBackend()]


def test_the_game_failing_while_away_ends_the_session_on_the_game_backoff(playing: Rig) -> None:
    r = playing
    r.feed(SocketClosed("gone"))
    assert r.feed(BackendFailed("video stalled")) == [CloseSocket(), CloseSession(SID)]
    assert r.feed(SessionClosed(SID, True, "closed")) == []
    assert r.link.failures["session"] == 1 and r.wake() == [ResetBackend()]
