"""The shared state in Redis: each operation (``records.py``) is one Lua
script (``lua/``, each with ``lib.lua`` in front if it uses it), so it is
atomic: no two nodes can ever hand out one worker.

The scripts follow ``MemoryShared`` rule for rule (``api.py`` says how that
is checked). Keys, all under ``pc:``:

| key | type | holds |
| --- | --- | --- |
| ``pc:w:{worker}`` | hash | a registered worker: node, game, codecs, addr, port, busy, |
| | | session (its last), name, held (1: its name's hold keeps it) |
| ``pc:pool:{game}`` | sorted set | available workers, scored by when they became available |
| ``pc:line:{game}`` | sorted set | waiting clients, scored by when they joined the line |
| ``pc:c:{client}`` | hash | a waiting client: node, game, codecs |
| ``pc:codecs:{game}`` | hash | codec -> registered workers of the game that send it |
| ``pc:s:{session}`` | hash | a session: members, their nodes, game, codec, start, phase, |
| | | the kept resume tokens (wt, ct) |
| ``pc:nw:{node}``, ``pc:ns:{node}``, ``pc:nc:{node}`` | sets | a node's workers, its players' |
| | | sessions and its waiting clients, for its cleanup (its workers' |
| | | sessions: on their records) |
| ``pc:node:{node}`` | string, expires | the node is alive (renewed well within its TTL) |
| ``pc:nodes`` | set | the nodes announced and not yet cleaned up |
| ``pc:jti:{jti}`` | string, expires | a join ticket spent (``Pair``), until it expires (and the |
| | | leeway) |
| ``pc:bus:{node}`` | channel | what other nodes tell it (``bus.py``, ``busorder.py``): |
| | | pub/sub, nothing stored |
| ``pc:seq`` | counter | the order of arrival, cluster-wide |
| ``pc:holds`` | set | worker names held out of the pool (``records.Hold``) |
| ``pc:hold:{name}`` | set | a held name: the marker ``''`` and its workers held now |
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from playcast.signaling.shared import dump
from playcast.signaling.shared import records as rec
from playcast.signaling.shared.api import SharedState
from playcast.signaling.shared.dump import Dump
from playcast.signaling.shared.records import Held, Hold, HoldChanged


def _source(name: str) -> str:
    lua = files("playcast.signaling.shared").joinpath("lua")
    return lua.joinpath(f"{name}.lua").read_text(encoding="utf-8")


_LIB = _source("lib")


def _script(name: str, *, lib: bool = True) -> str:
    """A script's source, with the library in front if it uses it (the
    small ones without it, as two of them run on every session's setup)."""
    return _LIB + _source(name) if lib else _source(name)


class RedisShared:
    """``Op`` -> ``Outcome`` against Redis, one script each."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        r = redis.register_script
        self._publish: AsyncScript = r(_script("publish"))
        self._pair: AsyncScript = r(_script("pair"))
        self._withdraw: AsyncScript = r(_script("withdraw"))
        self._leave: AsyncScript = r(_script("leave_line"))
        self._end: AsyncScript = r(_script("end_session"))
        self._mark: AsyncScript = r(_script("mark_connected", lib=False))
        self._forget: AsyncScript = r(_script("forget_node"))
        self._set_tokens: AsyncScript = r(_script("set_tokens", lib=False))
        self._reattach: AsyncScript = r(_script("reattach"))
        self._beat: AsyncScript = r(_script("beat", lib=False))
        self._dump: AsyncScript = r(_script("dump", lib=False))
        self._hold: AsyncScript = r(_script("hold"))
        self._scripts = (
            self._publish, self._pair, self._withdraw, self._leave, self._end, self._mark,
            self._forget, self._set_tokens, self._reattach, self._beat, self._hold,
        )  # fmt: skip

    def script_of(self, op: rec.Op) -> tuple[AsyncScript, list[str | int | float]]:
        """The script that carries out ``op``, and its arguments."""
        if isinstance(op, rec.Publish):
            w = op.worker
            args: list[str | int | float] = [
                w.id, w.node, w.game, ",".join(w.codecs), w.addr, w.port, op.session_id, op.now,
                w.name,
            ]  # fmt: skip
            return self._publish, args
        if isinstance(op, rec.Pair):
            cl = op.client
            args = [
                cl.id, cl.node, cl.game, ",".join(cl.codecs), op.session_id, op.queue_limit, op.now,
                op.jti, rec.pxat(op.jti_until) if op.jti else 0,
            ]  # fmt: skip
            return self._pair, args
        if isinstance(op, rec.Withdraw):
            return self._withdraw, [op.worker_id]
        if isinstance(op, rec.LeaveLine):
            return self._leave, [op.client_id, op.game]
        if isinstance(op, rec.EndSession):
            return self._end, [op.session_id, op.worker_id, op.client_node]
        if isinstance(op, rec.SetTokens):
            return self._set_tokens, [op.session_id, op.worker, op.client]
        if isinstance(op, rec.Reattach):
            return self._reattach, [op.session_id, op.role, op.token, op.fresh, op.node]
        if isinstance(op, rec.MarkConnected):
            return self._mark, [op.session_id]
        if isinstance(op, Hold):
            return self._hold, [op.name, "1" if op.on else "", *op.games]
        raise TypeError(f"not a shared-state operation: {op!r}")

    def call(self, op: rec.Op, client: Any = None) -> Any:
        """The script call for ``op`` (an awaitable; on a pipeline, queued).
        On a pipeline redis-py adds a ``SCRIPT EXISTS`` round trip to every
        execute: hot paths use ``evalsha`` instead."""
        script, args = self.script_of(op)
        return script(args=args, client=client or self.redis)

    def evalsha(
        self, op: rec.Op, early_start: tuple[bytes, bytes, bytes] | None = None
    ) -> tuple[str | int | float | bytes, ...]:
        """``op`` as a bare EVALSHA command: the scripts must be loaded
        (``load``); a NOSCRIPT answer (Redis restarted or failed over, its
        script cache empty) means load and send again. ``early_start``, for
        a ``Pair``: the bus entry telling the worker's node, cut where the
        worker id and the codec go; the script publishes it as it pairs with
        a worker on another node (one crossing of the cluster less)."""
        script, args = self.script_of(op)
        if early_start is not None and isinstance(op, rec.Pair):
            return ("EVALSHA", script.sha, 0, *args, *early_start)
        return ("EVALSHA", script.sha, 0, *args)

    def load_commands(self) -> list[tuple[str, str, str | bytes]]:
        """The commands that put every script in Redis's script cache
        (idempotent), for a link to send ahead of a batch."""
        sources = [s.script for s in self._scripts]
        return [("SCRIPT", "LOAD", s if isinstance(s, str) else bytes(s)) for s in sources]

    async def execute(self, op: rec.Op) -> rec.Outcome:
        return outcome_of(op, await self.call(op))

    async def dump(self) -> Dump:
        """Every key read back in one atomic script (it holds Redis while it
        reads: for tests and inspection, never on a live path)."""
        out = dump.empty()
        held: set[str] = set()  # pc:holds
        for key, values in json.loads(await self._dump()):
            _, kind, name = (*key.split(":", 2), "")[:3]
            values = values if isinstance(values, list) else []  # (cjson: {} for [])
            if kind == "holds":
                held.update(values)
            elif kind == "hold" and "" in values:  # (without its marker: a leak)
                out["holds"][name] = [wid for wid in values if wid]
            elif kind == "hold":
                out["other"].append(key)
            elif kind in _HASHES:
                _read_hash(out, kind, name, dict(zip(values[::2], values[1::2], strict=True)))
            elif kind in ("pool", "line"):
                out[f"{kind}s"][name] = values
            elif kind in _NODE_SETS:
                out[_NODE_SETS[kind]][name] = values
            elif kind == "jti":
                out["spent"][name] = values[0]  # (dump.lua: its PEXPIRETIME)
            elif kind not in _NOT_SHARED:
                out["other"].append(key)
        # A name in one of the two places a hold is kept but not the other.
        out["other"] += [f"pc:holds~{name}" for name in held ^ set(out["holds"])]
        return dump.finish(out)

    async def beat(self, node: str, ttl: float, info: str) -> bool:
        """Renew liveness; True if this node had been dropped (or is new)."""
        return bool(await self._beat(args=[node, int(ttl * 1000), info]))

    async def forget_node(
        self, node: str, *, force: bool = False, grace: float = 0.0
    ) -> rec.Forgotten | None:
        """Clean a dead node up; None if another node already claimed it.
        ``grace``: its sessions stay that long (seconds), to be resumed."""
        raw = await self._forget(args=[node, "force" if force else "", int(grace * 1000)])
        kind, *rest = json.loads(raw)
        if kind != "forgot":
            return None
        # (cjson writes an empty table as an object)
        lines, partners = (r if isinstance(r, list) else [] for r in rest)
        return rec.Forgotten(
            {game: _line(game, entries) for game, entries in lines},
            tuple((where, member, sid) for where, member, sid in partners),
        )


_KEEPS_THE_INTERFACE: type[SharedState] = RedisShared  # (checked by mypy)


def outcome_of(op: rec.Op, raw: Any) -> rec.Outcome:
    """Decode a script's JSON answer into the outcome MemoryShared gives."""
    kind, *rest = json.loads(raw)
    if isinstance(op, rec.Publish):
        if kind == "listed":
            return rec.Listed()
        if kind == "held":
            return Held()
        cid, cnode, ccodecs, codec, line = rest
        w = op.worker
        client = rec.ClientEntry(cid, cnode, w.game, tuple(_split(ccodecs)))
        session = rec.SessionEntry(
            op.session_id, w.id, w.node, cid, cnode, w.game, codec, float(op.now)
        )
        return rec.Paired(session, w, client, _line(w.game, line))
    if isinstance(op, rec.Pair):
        c = op.client
        if kind == "paired":
            wid, wnode, wcodecs, codec, addr, port, name = rest
            worker = rec.WorkerEntry(
                wid, wnode, c.game, tuple(_split(wcodecs)), addr, int(port), name or ""
            )  # (a record without a name: HMGET's nil, false in Lua)
            session = rec.SessionEntry(
                op.session_id, wid, wnode, c.id, c.node, c.game, codec, op.now
            )
            return rec.Paired(session, worker, c)
        if kind == "queued":
            return rec.Queued(_line(c.game, rest[0]))
        return rec.Refused(*rest)
    if isinstance(op, rec.Reattach):
        if kind != "reattached":
            return rec.Denied()
        s, old, old_alive, partner_alive = rest
        wid, wnode, cid, cnode, game, codec, started, phase = s
        entry = rec.SessionEntry(
            op.session_id, wid, wnode, cid, cnode, game, codec, float(started or 0), phase
        )
        return rec.Reattached(entry, old, bool(old_alive), bool(partner_alive))
    if isinstance(op, Hold):
        moved = rest[0] if isinstance(rest[0], list) else []  # (cjson: {} for [])
        return HoldChanged(tuple(sorted((wid, node) for wid, node in moved)))
    if isinstance(op, rec.LeaveLine) and len(rest) == 2:
        game, line = rest
        return rec.Done(_line(game, line), game)
    return rec.Done()


# For ``dump``: the keys by kind (``pc:{kind}:{name}``).
_HASHES = ("w", "c", "s", "codecs")
_NODE_SETS = {"nw": "node_workers", "ns": "node_sessions", "nc": "node_clients"}
# Liveness, the order of arrival, status replies: not the state both hold.
_NOT_SHARED = ("node", "nodes", "seq", "reply")


def _read_hash(out: Dump, kind: str, name: str, h: dict[str, str]) -> None:
    if kind == "w":
        codecs = _split(h.get("codecs", ""))
        out["directory"][name] = dump.worker(
            h.get("node", ""), h.get("game", ""), codecs, h.get("addr", ""),
            int(h.get("port", 0)), h.get("busy") == "1", h.get("name", ""), h.get("held") == "1",
        )  # fmt: skip
    elif kind == "c":
        out["waiting"][name] = dump.client(h["node"], h["game"], _split(h["codecs"]))
    elif kind == "codecs":
        out["codecs"][name] = {codec: int(n) for codec, n in sorted(h.items())}
    else:
        entry = rec.SessionEntry(
            name, h["worker"], h["worker_node"], h["client"], h["client_node"], h["game"],
            h["codec"], float(h["started_at"]), h["phase"],
        )  # fmt: skip
        tokens = {role: h[f] for role, f in (("worker", "wt"), ("client", "ct")) if f in h}
        out["sessions"][name] = dump.session(entry, tokens or None)


def _split(text: str) -> list[str]:
    return [part for part in text.split(",") if part]


def _line(game: str, entries: Any) -> tuple[rec.ClientEntry, ...]:
    # cjson encodes an empty table as {}: no entries.
    if not isinstance(entries, list):
        return ()
    return tuple(
        rec.ClientEntry(cid, node, game, tuple(_split(codecs))) for cid, node, codecs in entries
    )
