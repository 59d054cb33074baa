"""Random and malformed message sequences against the protocol core.

Whatever peers send, in any order, the hub must meet no internal error (the
hub contains them, so "must not raise" is not enough: a 1011 close, an ERROR
log line or ``playcast_internal_errors`` fails the test), must keep its
records consistent (its own check, and the model's rules checked again
independently, invariants.py), and must never hand one session's message to
another.
"""

from __future__ import annotations

import json
from typing import Any

from hubkit import FakeConn, Rig, examples
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from invariants import Deliveries, internal_errors, model_problems

from playcast.protocol import Answer, Assigned, IceCandidate, Offer, SessionStart
from playcast.signaling.types import Client, Worker

GAMES = ["com.supercell.clashroyale", "com.example.other"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
types = st.sampled_from(
    [
        "register", "join", "offer", "answer", "ice_candidate", "webrtc_connected",
        "webrtc_failed", "input", "leave", "pong", "shutdown_ack", "ping", "error",
        "assigned", "bogus",
    ]
)  # fmt: skip


WELL_FORMED: dict[str, dict[str, Any]] = {
    "register": {"game": GAMES[0]},
    "join": {},
    "join ": {"game": GAMES[1]},
    "offer": {"session_id": "SID", "sdp": "v=0"},
    "answer": {"session_id": "SID", "sdp": "v=0"},
    "ice_candidate": {"session_id": "SID", "candidate": {"candidate": "c", "sdpMid": "0"}},
    "webrtc_connected": {"session_id": "SID"},
    "webrtc_failed": {"session_id": "SID", "reason": "x"},
    "input": {"event": {"type": "touch"}},
    "leave": {},
    "pong": {"ts": 1000.0},
    "shutdown_ack": {"ok": True, "detail": ""},
}


@st.composite
def frames(draw: st.DrawFn) -> str:
    """Mostly well-formed messages (so sessions do happen), sometimes junk."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.text(max_size=20))
    if kind == 1:
        return json.dumps(draw(json_values))
    if kind >= 4:
        name = draw(st.sampled_from(sorted(WELL_FORMED)))
        return json.dumps({"type": name.strip(), **WELL_FORMED[name]})
    msg: dict[str, Any] = {"type": draw(types)}
    fields = {
        "game": st.sampled_from(GAMES),
        "session_id": st.sampled_from(["SID", "s1", "s2", "", "nope"]),
        "sdp": st.just("v=0"),
        "candidate": st.none() | st.fixed_dictionaries({"candidate": st.just("c")}),
        "reason": st.just("x"),
        "event": st.just({}),
        "ts": st.floats(0, 2000),
        "ok": st.booleans(),
        "detail": st.just(""),
    }
    for name, strategy in fields.items():
        if draw(st.booleans()):
            msg[name] = draw(strategy)
    return json.dumps(msg)


_args: dict[str, st.SearchStrategy[Any]] = {
    # The flag: also send a well-formed register/join at once, so that
    # sessions actually form and the handshake rules get exercised.
    "open_worker": st.booleans(),
    "open_client": st.booleans(),
    # The flag: name another live session's id instead of one's own.
    "send": st.tuples(st.integers(0, 6), frames(), st.booleans()),
    "close": st.integers(0, 6),
    "tick": st.floats(0.01, 3.0),
    "tick_live": st.floats(0.01, 3.0),
    # An operator (issue 26): drain (True) or undrain a name; restart a peer.
    "hold": st.tuples(st.integers(0, 2), st.booleans()),
    "restart": st.integers(0, 6),
}
# Mostly sends: sessions only happen after a register and a join have landed.
ops = st.sampled_from(
    ["open_worker", "open_client"] * 2
    + ["close", "tick", "tick_live", "hold", "restart"]
    + ["send"] * 8
).flatmap(lambda op: st.tuples(st.just(op), _args[op]))


@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, min_size=10, max_size=80))
def test_any_sequence_keeps_the_hub_consistent(steps: list[tuple[str, Any]]) -> None:
    with internal_errors() as errors:
        _play(steps, errors)


def _play(steps: list[tuple[str, Any]], errors: Any) -> None:
    rig = Rig(
        heartbeat_timeout=4.0,
        inactivity_timeout=6.0,
        handshake_timeout=3.0,
        shutdown_ack_timeout=1.0,
        max_message_burst=30.0,
        max_error_burst=20.0,
    )
    hub = rig.hub
    peers: list[tuple[Worker | Client, FakeConn]] = []
    # Every session id each connection was given (to name it in what it sends).
    own: dict[int, set[str]] = {}
    deliveries = Deliveries()
    for op, arg in steps:
        if op == "open_worker":
            conn = FakeConn()
            peers.append((rig.open_worker(conn), conn))
            if arg:  # a name of three, shared by several workers: a drain holds them all
                register = {"type": "register", "game": GAMES[0], "name": f"n{len(peers) % 3}"}
                rig.send(peers[-1][0], json.dumps(register))
        elif op == "open_client":
            conn = FakeConn()
            peers.append((rig.open_client(conn), conn))
            if arg:
                rig.send(peers[-1][0], '{"type": "join"}')
        elif op == "send" and peers:
            index, frame, stranger = arg
            peer, conn = peers[index % len(peers)]
            # Closed sockets too: frames in flight still arrive after a close,
            # and FakeConn fails the test if the hub answers one.
            sid = next(iter(own.get(id(conn), {"SID"})), "SID")
            others = sorted(set(rig.hub.sessions) - own.get(id(conn), set()))
            if stranger and others:
                sid = others[index % len(others)]
                event("named a stranger's session")
            rig.send(peer, frame.replace('"SID"', json.dumps(sid)))
        elif op == "close" and peers:
            peer, conn = peers[arg % len(peers)]
            conn.closed = conn.closed or (1006, "")
            rig.on_close(peer)
        elif op == "hold":
            hub.hold(f"n{arg[0]}", arg[1])
            rig.flush()
        elif op == "restart" and peers:
            hub.restart_worker(peers[arg % len(peers)][0].id, hub.node)
            rig.flush()
        elif op == "tick":
            rig.advance(arg)
        elif op == "tick_live":  # everyone still open answers its pings
            rig.advance(arg, pong=[(p, c) for p, c in peers if c.closed is None])
        deliveries.note([hub])
        for peer, conn in peers:
            for msg in conn.sent:
                if isinstance(msg, SessionStart | Assigned):
                    own.setdefault(id(conn), set()).add(msg.session_id)
                elif isinstance(msg, Offer | Answer | IceCandidate):
                    event(f"relayed {type(msg).__name__}")
            deliveries.check(peer.id, conn.sent)
        errors.check(conns=[c for _, c in peers])
        assert model_problems([hub]) == []
        rig.assert_consistent()
    event(f"sessions started: {min(3, len(set().union(*own.values())) if own else 0)}")
    rig.shutdown_all()
    rig.advance(2.0)
    assert not hub.workers and not hub.clients and not hub.sessions and not hub.closing
    errors.check([hub], [c for _, c in peers])
