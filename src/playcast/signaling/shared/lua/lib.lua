-- Shared by the scripts that follow it (redis_state.py puts it in front of
-- each one): the records' layout is in redis_state.py's docstring.
--
-- The pool and the line are read a few entries at a time, from the head:
-- the first candidate nearly always matches, so a pairing costs O(1), not
-- O(pool). What is passed over stays; what is removed (a dead node's) shifts
-- the rest, hence "kept" as the next start.
local CHUNK = 8
-- A held name's set holds this marker (hold.lua): '' sorts before any id.
local HELD = ''
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
  local w = redis.call('HMGET', 'pc:w:' .. wid, 'node', 'game', 'codecs', 'name', 'held')
  if not w[2] then return end
  redis.call('DEL', 'pc:w:' .. wid)
  redis.call('ZREM', 'pc:pool:' .. w[2], wid)
  redis.call('SREM', 'pc:nw:' .. w[1], wid)
  if w[5] == '1' then redis.call('SREM', 'pc:hold:' .. w[4], wid) end
  count(w[2], w[3], -1)
end
-- ``cnode``: the player's node as the caller knows it, for a record that
-- has expired already (a grace run out on Redis's clock first).
local function end_session(sid, cnode)
  cnode = redis.call('HGET', 'pc:s:' .. sid, 'client_node') or cnode
  redis.call('DEL', 'pc:s:' .. sid)
  if cnode and cnode ~= '' then redis.call('SREM', 'pc:ns:' .. cnode, sid) end
end
