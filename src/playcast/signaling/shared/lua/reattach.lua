-- Reattach: resume on node ARGV[5] with the member's token, spent and
-- replaced. Compares SHA-256 digests, never tokens: a timing difference tells
-- nothing of a token.
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
  redis.call('SREM', 'pc:nw:' .. old, s[1])
  redis.call('SADD', 'pc:nw:' .. node, s[1])
else
  redis.call('SREM', 'pc:ns:' .. old, sid)
  redis.call('SADD', 'pc:ns:' .. node, sid)
end
local partner = role == 'worker' and s[4] or s[2]
return cjson.encode({'reattached', s, old, alive(old), alive(partner)})
