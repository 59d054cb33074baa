"""The shared state in Redis: each operation of ``shared.py`` is one Lua
script, so it is atomic: no two nodes can ever hand out one worker.

The scripts follow ``MemoryShared`` rule for rule (``tests/test_shared_contract.py``
runs both through the same cases). Keys, all under ``pc:``:

| key | type | holds |
| --- | --- | --- |
| ``pc:w:{worker}`` | hash | a registered worker: node, game, codecs, addr, port, busy, |
| | | session (its last) |
| ``pc:pool:{game}`` | sorted set | available workers, scored by when they became available |
| ``pc:line:{game}`` | sorted set | waiting clients, scored by when they joined the line |
| ``pc:c:{client}`` | hash | a waiting client: node, game, codecs |
| ``pc:codecs:{game}`` | hash | codec -> registered workers of the game that send it |
| ``pc:s:{session}`` | hash | a session: members, their nodes, game, codec, start, phase |
| ``pc:nw:{node}``, ``pc:ns:{node}``, ``pc:nc:{node}`` | sets | a node's workers, its players' |
| | | sessions and its waiting clients, for its cleanup (its workers' |
| | | sessions: on their records) |
| ``pc:node:{node}`` | string, expires | the node is alive (renewed well within its TTL) |
| ``pc:nodes`` | set | the nodes announced and not yet cleaned up |
| ``pc:bus:{node}`` | channel | what other nodes tell it (``bus.py``, ``busorder.py``): |
| | | pub/sub, nothing stored |
| ``pc:seq`` | counter | the order of arrival, cluster-wide |
"""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from playcast.signaling.shared import (
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
    SessionEntry,
    SetTokens,
    Withdraw,
    WorkerEntry,
)

# The pool and the line are read a few entries at a time, from the head:
# the first candidate nearly always matches, so a pairing costs O(1), not
# O(pool). What is passed over stays; what is removed (a dead node's) shifts
# the rest, hence "kept" as the next start.
_LIB = r"""
local CHUNK = 8
local function split(s)
  local out = {}
  for part in string.gmatch(s or '', '[^,]+') do out[#out + 1] = part end
  return out
end
local function first_shared(worker_codecs, client_codecs)
  local wanted = {}
  for _, c in ipairs(split(client_codecs)) do wanted[c] = true end
  for _, c in ipairs(split(worker_codecs)) do if wanted[c] then return c end end
  return nil
end
local function alive(node)
  return redis.call('EXISTS', 'pc:node:' .. node) == 1
end
local function line_of(game)
  local out = {}
  for _, cid in ipairs(redis.call('ZRANGE', 'pc:line:' .. game, 0, -1)) do
    local c = redis.call('HMGET', 'pc:c:' .. cid, 'node', 'codecs')
    out[#out + 1] = {cid, c[1] or '', c[2] or ''}
  end
  return out
end
local function start(sid, wid, wnode, cid, cnode, game, codec, now)
  redis.call('HSET', 'pc:s:' .. sid, 'worker', wid, 'worker_node', wnode, 'client', cid,
    'client_node', cnode, 'game', game, 'codec', codec, 'started_at', now,
    'phase', 'awaiting_offer')
  redis.call('SADD', 'pc:ns:' .. cnode, sid)
  redis.call('HSET', 'pc:w:' .. wid, 'busy', '1', 'session', sid)
end
local function drop_client(cid)
  local c = redis.call('HMGET', 'pc:c:' .. cid, 'node', 'game')
  if c[2] then redis.call('ZREM', 'pc:line:' .. c[2], cid) end
  if c[1] then redis.call('SREM', 'pc:nc:' .. c[1], cid) end
  redis.call('DEL', 'pc:c:' .. cid)
  return c[2]
end
local function count(game, codecs, by)
  for _, c in ipairs(split(codecs)) do
    if redis.call('HINCRBY', 'pc:codecs:' .. game, c, by) <= 0 then
      redis.call('HDEL', 'pc:codecs:' .. game, c)
    end
  end
end
local function withdraw(wid)
  local w = redis.call('HMGET', 'pc:w:' .. wid, 'node', 'game', 'codecs')
  if not w[2] then return end
  redis.call('DEL', 'pc:w:' .. wid)
  redis.call('ZREM', 'pc:pool:' .. w[2], wid)
  redis.call('SREM', 'pc:nw:' .. w[1], wid)
  count(w[2], w[3], -1)
end
local function end_session(sid)
  local cnode = redis.call('HGET', 'pc:s:' .. sid, 'client_node')
  redis.call('DEL', 'pc:s:' .. sid)
  if cnode then redis.call('SREM', 'pc:ns:' .. cnode, sid) end
end
"""

_PUBLISH = (
    _LIB
    + r"""
local wid, node, game, codecs, addr, port, sid, now =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
-- HSET answers how many fields were new: all six is a new record (any
-- record holds its node or busy), whose codecs count from now.
if redis.call('HSET', 'pc:w:' .. wid, 'node', node, 'game', game, 'codecs', codecs,
    'addr', addr, 'port', port, 'busy', '0') == 6 then
  count(game, codecs, 1)
end
redis.call('SADD', 'pc:nw:' .. node, wid)
local kept = 0
while true do
  local chunk = redis.call('ZRANGE', 'pc:line:' .. game, kept, kept + CHUNK - 1)
  if #chunk == 0 then break end
  for _, cid in ipairs(chunk) do
    local c = redis.call('HMGET', 'pc:c:' .. cid, 'node', 'codecs')
    if not c[1] or not alive(c[1]) then
      drop_client(cid)
    else
      local codec = first_shared(codecs, c[2])
      if codec then
        drop_client(cid)
        start(sid, wid, node, cid, c[1], game, codec, now)
        return cjson.encode({'paired', cid, c[1], c[2], codec, line_of(game)})
      end
      kept = kept + 1
    end
  end
end
redis.call('ZADD', 'pc:pool:' .. game, redis.call('INCR', 'pc:seq'), wid)
return cjson.encode({'listed'})
"""
)

_PAIR = (
    _LIB
    + r"""
local cid, node, game, codecs, sid, limit, now =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7]
-- ARGV[8..10], optional: the Start for a worker on another node, cut where
-- its worker id and codec go; published to that node at once (``early_start``)
local kept = 0
while true do
  local chunk = redis.call('ZRANGE', 'pc:pool:' .. game, kept, kept + CHUNK - 1)
  if #chunk == 0 then break end
  for _, wid in ipairs(chunk) do
    local w = redis.call('HMGET', 'pc:w:' .. wid, 'node', 'codecs', 'addr', 'port')
    if not w[1] or not alive(w[1]) then
      redis.call('ZREM', 'pc:pool:' .. game, wid)
    else
      local codec = first_shared(w[2], codecs)
      if codec then
        redis.call('ZREM', 'pc:pool:' .. game, wid)
        start(sid, wid, w[1], cid, node, game, codec, now)
        if ARGV[8] and w[1] ~= node then
          redis.call('PUBLISH', 'pc:bus:' .. w[1], ARGV[8] .. wid .. ARGV[9] .. codec .. ARGV[10])
        end
        return cjson.encode({'paired', wid, w[1], w[2], codec, w[3], w[4]})
      end
      kept = kept + 1
    end
  end
end
local counts = redis.call('HKEYS', 'pc:codecs:' .. game)
if #counts > 0 then
  local served = false
  local have = {}
  for _, c in ipairs(counts) do have[c] = true end
  for _, c in ipairs(split(codecs)) do if have[c] then served = true end end
  if not served then return cjson.encode({'refused', 'unsupported_browser'}) end
end
if limit > 0 and redis.call('ZCARD', 'pc:line:' .. game) < limit then
  redis.call('ZADD', 'pc:line:' .. game, redis.call('INCR', 'pc:seq'), cid)
  redis.call('HSET', 'pc:c:' .. cid, 'node', node, 'game', game, 'codecs', codecs)
  redis.call('SADD', 'pc:nc:' .. node, cid)
  return cjson.encode({'queued', line_of(game)})
end
return cjson.encode({'refused', 'no_worker_available'})
"""
)

_WITHDRAW = (
    _LIB
    + r"""
withdraw(ARGV[1])
return cjson.encode({'done'})
"""
)

_LEAVE_LINE = (
    _LIB
    + r"""
if redis.call('EXISTS', 'pc:c:' .. ARGV[1]) == 0 then return cjson.encode({'done'}) end
local game = drop_client(ARGV[1])
return cjson.encode({'done', game, line_of(game)})
"""
)

_END = (
    _LIB
    + r"""
end_session(ARGV[1])
if ARGV[2] ~= '' then withdraw(ARGV[2]) end
return cjson.encode({'done'})
"""
)

_MARK = r"""
if redis.call('EXISTS', 'pc:s:' .. ARGV[1]) == 1 then
  redis.call('HSET', 'pc:s:' .. ARGV[1], 'phase', 'connected')
end
return cjson.encode({'done'})
"""

_SET_TOKENS = r"""
if redis.call('EXISTS', 'pc:s:' .. ARGV[1]) == 1 then
  redis.call('HSET', 'pc:s:' .. ARGV[1], 'wt', ARGV[2], 'ct', ARGV[3])
end
return cjson.encode({'done'})
"""

# Compares SHA-256 digests, never tokens: a timing difference tells nothing
# of a token.
_REATTACH = (
    _LIB
    + r"""
local sid, role, token, fresh, node = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local key = 'pc:s:' .. sid
local field = role == 'worker' and 'wt' or 'ct'
local kept = redis.call('HGET', key, field)
if not kept or kept ~= token then return cjson.encode({'denied'}) end
local where = role == 'worker' and 'worker_node' or 'client_node'
local old = redis.call('HGET', key, where)
redis.call('HSET', key, field, fresh, where, node)
redis.call('PERSIST', key)
local s = redis.call('HMGET', key, 'worker', 'worker_node', 'client', 'client_node', 'game',
  'codec', 'started_at', 'phase')
if role == 'worker' then
  redis.call('HSET', 'pc:w:' .. s[1], 'node', node, 'game', s[5], 'busy', '1', 'session', sid)
  redis.call('PERSIST', 'pc:w:' .. s[1])
  redis.call('SREM', 'pc:nw:' .. old, s[1])
  redis.call('SADD', 'pc:nw:' .. node, s[1])
else
  redis.call('SREM', 'pc:ns:' .. old, sid)
  redis.call('SADD', 'pc:ns:' .. node, sid)
end
local partner = role == 'worker' and s[4] or s[2]
return cjson.encode({'reattached', s, old, alive(old), alive(partner)})
"""
)

# A dead node's cleanup: claimed by the first node to find it (SREM), so it
# runs once; returns the lines it changed. With a resume grace (ARGV[3], ms)
# its sessions (and their busy workers) stay that long, to be resumed elsewhere.
_FORGET_NODE = (
    _LIB
    + r"""
local node, grace = ARGV[1], tonumber(ARGV[3])
if redis.call('SREM', 'pc:nodes', node) == 0 and ARGV[2] ~= 'force' then
  return cjson.encode({'not_mine'})
end
-- Each session's member on a live node: its node may never have been told.
local partners = {}
local function gone(sid, role, where)
  local p = redis.call('HMGET', 'pc:s:' .. sid, role, where)
  if p[2] and p[2] ~= node and alive(p[2]) then partners[#partners + 1] = {p[2], p[1], sid} end
  if grace > 0 then redis.call('PEXPIRE', 'pc:s:' .. sid, grace) else end_session(sid) end
end
for _, wid in ipairs(redis.call('SMEMBERS', 'pc:nw:' .. node)) do
  local w = redis.call('HMGET', 'pc:w:' .. wid, 'busy', 'session', 'game', 'codecs')
  local busy = w[1] == '1'
  if busy and w[2] then gone(w[2], 'client', 'client_node') end  -- (if not ended already)
  if grace > 0 and busy then
    -- Kept for its resume, but no longer registered: its codecs stop
    -- counting now, as a record left to expire is never withdrawn.
    count(w[3], w[4], -1)
    redis.call('HDEL', 'pc:w:' .. wid, 'codecs')
    redis.call('PEXPIRE', 'pc:w:' .. wid, grace)
  else
    withdraw(wid)
  end
end
for _, sid in ipairs(redis.call('SMEMBERS', 'pc:ns:' .. node)) do
  gone(sid, 'worker', 'worker_node')
end
local games = {}
for _, cid in ipairs(redis.call('SMEMBERS', 'pc:nc:' .. node)) do
  local game = drop_client(cid)
  if game then games[game] = true end
end
redis.call('DEL', 'pc:nw:' .. node, 'pc:ns:' .. node, 'pc:nc:' .. node, 'pc:node:' .. node)
local lines = {}
for game, _ in pairs(games) do lines[#lines + 1] = {game, line_of(game)} end
return cjson.encode({'forgot', lines, partners})
"""
)

# Renew this node's liveness; 1 if it had been dropped from the set (found
# dead by the others, or new).
_BEAT = r"""
redis.call('SET', 'pc:node:' .. ARGV[1], ARGV[3], 'PX', ARGV[2])
return redis.call('SADD', 'pc:nodes', ARGV[1])
"""


class RedisShared:
    """``shared.Op`` -> ``shared.Outcome`` against Redis, one script each."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        r = redis.register_script
        self._publish: AsyncScript = r(_PUBLISH)
        self._pair: AsyncScript = r(_PAIR)
        self._withdraw: AsyncScript = r(_WITHDRAW)
        self._leave: AsyncScript = r(_LEAVE_LINE)
        self._end: AsyncScript = r(_END)
        self._mark: AsyncScript = r(_MARK)
        self._forget: AsyncScript = r(_FORGET_NODE)
        self._set_tokens: AsyncScript = r(_SET_TOKENS)
        self._reattach: AsyncScript = r(_REATTACH)
        self._beat: AsyncScript = r(_BEAT)
        self._scripts = (
            self._publish, self._pair, self._withdraw, self._leave, self._end, self._mark,
            self._forget, self._set_tokens, self._reattach, self._beat,
        )  # fmt: skip

    def script_of(self, op: Op) -> tuple[AsyncScript, list[str | int | float]]:
        """The script that carries out ``op``, and its arguments."""
        if isinstance(op, Publish):
            w = op.worker
            args: list[str | int | float] = [
                w.id, w.node, w.game, ",".join(w.codecs), w.addr, w.port, op.session_id, op.now
            ]  # fmt: skip
            return self._publish, args
        if isinstance(op, Pair):
            cl = op.client
            args = [
                cl.id, cl.node, cl.game, ",".join(cl.codecs), op.session_id, op.queue_limit, op.now
            ]  # fmt: skip
            return self._pair, args
        if isinstance(op, Withdraw):
            return self._withdraw, [op.worker_id]
        if isinstance(op, LeaveLine):
            return self._leave, [op.client_id]
        if isinstance(op, EndSession):
            return self._end, [op.session_id, op.worker_id]
        if isinstance(op, SetTokens):
            return self._set_tokens, [op.session_id, op.worker, op.client]
        if isinstance(op, Reattach):
            return self._reattach, [op.session_id, op.role, op.token, op.fresh, op.node]
        assert isinstance(op, MarkConnected)
        return self._mark, [op.session_id]

    def call(self, op: Op, client: Any = None) -> Any:
        """The script call for ``op`` (an awaitable; on a pipeline, queued).
        On a pipeline redis-py adds a ``SCRIPT EXISTS`` round trip to every
        execute: hot paths use ``evalsha`` instead."""
        script, args = self.script_of(op)
        return script(args=args, client=client or self.redis)

    def evalsha(
        self, op: Op, early_start: tuple[bytes, bytes, bytes] | None = None
    ) -> tuple[str | int | float | bytes, ...]:
        """``op`` as a bare EVALSHA command: the scripts must be loaded
        (``load``); a NOSCRIPT answer (Redis restarted or failed over, its
        script cache empty) means load and send again. ``early_start``, for
        a ``Pair``: the bus entry telling the worker's node, cut where the
        worker id and the codec go; the script publishes it as it pairs with
        a worker on another node (one crossing of the cluster less)."""
        script, args = self.script_of(op)
        if early_start is not None and isinstance(op, Pair):
            return ("EVALSHA", script.sha, 0, *args, *early_start)
        return ("EVALSHA", script.sha, 0, *args)

    def load_commands(self) -> list[tuple[str, str, str | bytes]]:
        """The commands that put every script in Redis's script cache
        (idempotent), for a link to send ahead of a batch."""
        sources = [s.script for s in self._scripts]
        return [("SCRIPT", "LOAD", s if isinstance(s, str) else bytes(s)) for s in sources]

    async def execute(self, op: Op) -> Outcome:
        return outcome_of(op, await self.call(op))

    async def beat(self, node: str, ttl: float, info: str) -> bool:
        """Renew liveness; True if this node had been dropped (or is new)."""
        return bool(await self._beat(args=[node, int(ttl * 1000), info]))

    async def forget_node(
        self, node: str, *, force: bool = False, grace: float = 0.0
    ) -> Forgotten | None:
        """Clean a dead node up; None if another node already claimed it.
        ``grace``: its sessions stay that long (seconds), to be resumed."""
        raw = await self._forget(args=[node, "force" if force else "", int(grace * 1000)])
        kind, *rest = json.loads(raw)
        if kind != "forgot":
            return None
        # (cjson writes an empty table as an object)
        lines, partners = (r if isinstance(r, list) else [] for r in rest)
        return Forgotten(
            {game: _line(game, entries) for game, entries in lines},
            tuple((where, member, sid) for where, member, sid in partners),
        )


def outcome_of(op: Op, raw: Any) -> Outcome:
    """Decode a script's JSON answer into the outcome MemoryShared gives."""
    kind, *rest = json.loads(raw)
    if isinstance(op, Publish):
        if kind == "listed":
            return Listed()
        cid, cnode, ccodecs, codec, line = rest
        w = op.worker
        client = ClientEntry(cid, cnode, w.game, tuple(_split(ccodecs)))
        session = SessionEntry(
            op.session_id, w.id, w.node, cid, cnode, w.game, codec, float(op.now)
        )
        return Paired(session, w, client, _line(w.game, line))
    if isinstance(op, Pair):
        c = op.client
        if kind == "paired":
            wid, wnode, wcodecs, codec, addr, port = rest
            worker = WorkerEntry(wid, wnode, c.game, tuple(_split(wcodecs)), addr, int(port))
            session = SessionEntry(op.session_id, wid, wnode, c.id, c.node, c.game, codec, op.now)
            return Paired(session, worker, c)
        if kind == "queued":
            return Queued(_line(c.game, rest[0]))
        return Refused(rest[0])
    if isinstance(op, Reattach):
        if kind != "reattached":
            return Denied()
        s, old, old_alive, partner_alive = rest
        wid, wnode, cid, cnode, game, codec, started, phase = s
        entry = SessionEntry(
            op.session_id, wid, wnode, cid, cnode, game, codec, float(started or 0), phase
        )
        return Reattached(entry, old, bool(old_alive), bool(partner_alive))
    if isinstance(op, LeaveLine) and len(rest) == 2:
        game, line = rest
        return Done(_line(game, line), game)
    return Done()


def _split(text: str) -> list[str]:
    return [part for part in text.split(",") if part]


def _line(game: str, entries: Any) -> tuple[ClientEntry, ...]:
    # cjson encodes an empty table as {}: no entries.
    if not isinstance(entries, list):
        return ()
    return tuple(
        ClientEntry(cid, node, game, tuple(_split(codecs))) for cid, node, codecs in entries
    )
