"""Codecs are part of pairing (issue 15): the longest-available worker that
sends something the browser decodes, in the worker's order of preference."""

from __future__ import annotations

from hubkit import FakeConn, Rig

from playcast.protocol import (
    Assigned,
    Join,
    Offer,
    Register,
    Rejected,
    SessionStart,
    Shutdown,
    WebrtcFailed,
)
from playcast.signaling.types import Client, Worker

GAME = "com.supercell.clashroyale"


def worker(rig: Rig, codecs: list[str] | None) -> tuple[Worker, FakeConn]:
    conn = FakeConn()
    w = rig.open_worker(conn)
    rig.send(w, Register(game=GAME, codecs=codecs))
    return w, conn


def client(rig: Rig, codecs: list[str] | None) -> tuple[Client, FakeConn]:
    conn = FakeConn()
    c = rig.open_client(conn)
    rig.send(c, Join(codecs=codecs))
    return c, conn


def test_names_are_normalised_and_default_to_h264() -> None:
    rig = Rig()
    w1, _ = worker(rig, ["vp8", "H264", "VP8"])
    w2, _ = worker(rig, None)
    assert w1.codecs == ("VP8", "H264")
    assert w2.codecs == ("H264",)
    assert rig.hub.snapshot()["workers"][0]["codecs"] == ["VP8", "H264"]


def test_a_vp8_browser_skips_the_h264_only_worker_ahead_of_it() -> None:
    rig = Rig()
    h264, h264conn = worker(rig, ["H264"])
    vp8, vp8conn = worker(rig, ["VP8"])
    c, cconn = client(rig, ["VP8", "VP9", "AV1"])
    assigned = cconn.sent[0]
    assert isinstance(assigned, Assigned) and assigned.worker_id == vp8.id
    assert assigned.codec == "VP8"
    start = vp8conn.sent[-1]
    assert isinstance(start, SessionStart) and start.codec == "VP8"
    assert list(rig.available[GAME]) == [h264.id]  # still first in line
    assert rig.hub.sessions[assigned.session_id].codec == "VP8"
    rig.assert_consistent()
    del c, h264conn


def test_the_workers_preference_decides_the_codec() -> None:
    rig = Rig()
    worker(rig, ["H264", "VP8"])
    _, cconn = client(rig, ["VP8", "H264"])
    assigned = cconn.sent[0]
    assert isinstance(assigned, Assigned) and assigned.codec == "H264"


def test_no_shared_codec_is_unsupported_browser_and_takes_no_worker() -> None:
    rig = Rig()
    old, _ = worker(rig, None)  # a v1 worker: H.264 assumed
    _, cconn = client(rig, ["VP8", "VP9", "AV1"])  # Firefox without OpenH264
    (rejected,) = cconn.sent
    assert isinstance(rejected, Rejected) and rejected.reason == "unsupported_browser"
    assert cconn.closed is not None and cconn.closed[0] == 1000
    assert list(rig.available[GAME]) == [old.id]
    assert old.status == "available"
    rig.assert_consistent()


def test_a_busy_worker_that_could_serve_means_wait_not_unsupported() -> None:
    rig = Rig()
    worker(rig, ["VP8"])
    client(rig, ["VP8"])  # takes it
    worker(rig, ["H264"])
    _, cconn = client(rig, ["VP8"])
    (rejected,) = cconn.sent
    assert isinstance(rejected, Rejected) and rejected.reason == "no_worker_available"


def test_no_workers_at_all_is_no_worker_available() -> None:
    rig = Rig()
    _, cconn = client(rig, ["VP8"])
    (rejected,) = cconn.sent
    assert isinstance(rejected, Rejected) and rejected.reason == "no_worker_available"


def test_a_leaving_worker_takes_its_codecs_with_it() -> None:
    rig = Rig()
    vp8, _ = worker(rig, ["VP8"])
    worker(rig, ["H264"])
    rig.on_close(vp8)
    assert rig.cluster.shared.games[GAME].codecs == {"H264": 1}
    _, cconn = client(rig, ["VP8"])
    rejected = cconn.sent[0]
    assert isinstance(rejected, Rejected) and rejected.reason == "unsupported_browser"


def test_a_negotiation_failure_is_told_as_such_and_counted() -> None:
    rig = Rig()
    w, wconn = worker(rig, ["H264"])
    c, cconn = client(rig, ["H264"])
    sid = c.session_id
    assert sid is not None
    rig.send(w, Offer(session_id=sid, sdp="v=0"))
    rig.send(w, WebrtcFailed(session_id=sid, reason="video line rejected", kind="negotiation"))
    for conn in (wconn, cconn):
        shutdown = conn.sent[-1]
        assert isinstance(shutdown, Shutdown)
        assert (shutdown.reason, shutdown.detail) == ("handshake_failed", "negotiation")
    value = rig.metrics.sample(
        "playcast_webrtc_failures_total", {"role": "worker", "kind": "negotiation"}
    )
    assert value == 1.0


def test_what_a_worker_says_of_its_sound_is_in_the_status() -> None:
    from playcast.protocol import AudioInfo

    rig = Rig()
    conn = FakeConn()
    w = rig.open_worker(conn)
    rig.send(w, Register(game=GAME, audio=AudioInfo(codec=None, detail="Android 10: no capture")))
    (entry,) = rig.hub.snapshot()["workers"]
    assert entry["audio"] == {"codec": None, "detail": "Android 10: no capture"}
