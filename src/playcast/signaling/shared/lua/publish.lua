-- Publish: a worker is available (records.Publish).
local wid, node, game, codecs, addr, port, sid, now, name =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]
-- HSET answers how many fields were new: all seven is a new record (any
-- record holds its node or busy), whose codecs count from now.
if redis.call('HSET', 'pc:w:' .. wid, 'node', node, 'game', game, 'codecs', codecs,
    'addr', addr, 'port', port, 'busy', '0', 'name', name) == 7 then
  count(game, codecs, 1)
end
redis.call('SADD', 'pc:nw:' .. node, wid)
-- The whole line in one read, and in front of it, if the worker's name is
-- held, its hold (hold.lua: a set whose members sort first, the marker ''
-- first of all): no command more than reading the line costs.
local line = redis.call('ZUNION', 2, 'pc:line:' .. game, 'pc:hold:' .. name, 'WEIGHTS', 1, 0)
if line[1] == HELD then
  redis.call('HSET', 'pc:w:' .. wid, 'held', '1')
  redis.call('SADD', 'pc:hold:' .. name, wid)
  redis.call('ZREM', 'pc:pool:' .. game, wid)
  return cjson.encode({'held'})
end
for _, cid in ipairs(line) do
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
  end
end
-- NX: a worker offered again while available keeps its place (as in memory)
redis.call('ZADD', 'pc:pool:' .. game, 'NX', redis.call('INCR', 'pc:seq'), wid)
return cjson.encode({'listed'})
