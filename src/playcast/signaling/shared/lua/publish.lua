-- Publish: a worker is available (records.Publish).
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
-- NX: a worker offered again while available keeps its place (as in memory)
redis.call('ZADD', 'pc:pool:' .. game, 'NX', redis.call('INCR', 'pc:seq'), wid)
return cjson.encode({'listed'})
