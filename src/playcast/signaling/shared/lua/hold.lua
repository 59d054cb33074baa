-- Hold: ARGV[1], a worker name, held ('1' in ARGV[2]) or released; ARGV[3..],
-- the games whose pools to look in. A held name is in pc:holds, and has a
-- set pc:hold:{name}: the marker '' (read by publish.lua) and the ids of its
-- workers held now, each with held=1 on its record (withdraw lets go of it).
-- Answers the workers moved, {id, node} each: out of a pool, or let go.
local name, on = ARGV[1], ARGV[2] == '1'
local key = 'pc:hold:' .. name
local moved = {}
if on then
  redis.call('SADD', 'pc:holds', name)
  redis.call('SADD', key, HELD)
  for i = 3, #ARGV do
    local pool = 'pc:pool:' .. ARGV[i]
    for _, wid in ipairs(redis.call('ZRANGE', pool, 0, -1)) do
      local w = redis.call('HMGET', 'pc:w:' .. wid, 'name', 'node')
      if w[1] == name then
        redis.call('ZREM', pool, wid)
        redis.call('HSET', 'pc:w:' .. wid, 'held', '1')
        redis.call('SADD', key, wid)
        moved[#moved + 1] = {wid, w[2]}
      end
    end
  end
else
  for _, wid in ipairs(redis.call('SMEMBERS', key)) do
    if wid ~= HELD then
      moved[#moved + 1] = {wid, redis.call('HGET', 'pc:w:' .. wid, 'node')}
      redis.call('HDEL', 'pc:w:' .. wid, 'held')
    end
  end
  redis.call('DEL', key)
  redis.call('SREM', 'pc:holds', name)
end
return cjson.encode({'hold', moved})
