-- Pair: a client wants a worker (records.Pair).
local cid, node, game, codecs, sid, limit, now, jti, jti_until =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7], ARGV[8], ARGV[9]
-- ARGV[10..12], optional: the Start for a worker on another node, cut where
-- its worker id and codec go; published to that node at once (``early_start``)
-- A join ticket's id (jti, '' without one): refused if spent, spent only
-- when the join gets a worker or a place in line, until its expiry (PXAT).
if jti ~= '' and redis.call('EXISTS', 'pc:jti:' .. jti) == 1 then
  return cjson.encode({'refused', 'unauthorized', 'spent'})
end
local function spend()
  if jti ~= '' then redis.call('SET', 'pc:jti:' .. jti, '1', 'PXAT', jti_until) end
end
local kept = 0
while true do
  local chunk = redis.call('ZRANGE', 'pc:pool:' .. game, kept, kept + CHUNK - 1)
  if #chunk == 0 then break end
  for _, wid in ipairs(chunk) do
    local w = redis.call('HMGET', 'pc:w:' .. wid, 'node', 'codecs', 'addr', 'port', 'name')
    if not w[1] or not alive(w[1]) then
      redis.call('ZREM', 'pc:pool:' .. game, wid)
    else
      local codec = first_shared(w[2], codecs)
      if codec then
        redis.call('ZREM', 'pc:pool:' .. game, wid)
        start(sid, wid, w[1], cid, node, game, codec, now)
        spend()
        if ARGV[10] and w[1] ~= node then
          redis.call('PUBLISH', 'pc:bus:' .. w[1], ARGV[10] .. wid .. ARGV[11] .. codec .. ARGV[12])
        end
        return cjson.encode({'paired', wid, w[1], w[2], codec, w[3], w[4], w[5]})
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
  -- NX: a client asking again keeps its place (as in memory)
  redis.call('ZADD', 'pc:line:' .. game, 'NX', redis.call('INCR', 'pc:seq'), cid)
  redis.call('HSET', 'pc:c:' .. cid, 'node', node, 'game', game, 'codecs', codecs)
  redis.call('SADD', 'pc:nc:' .. node, cid)
  spend()
  return cjson.encode({'queued', line_of(game)})
end
return cjson.encode({'refused', 'no_worker_available'})
