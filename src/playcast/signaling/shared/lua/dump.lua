-- Every key under pc: with its contents, in one atomic read: for tests and
-- inspection (KEYS holds Redis while it reads: never on a live path).
local out = {}
for _, key in ipairs(redis.call('KEYS', 'pc:*')) do
  local kind = redis.call('TYPE', key)['ok']
  local values = {}
  if kind == 'hash' then
    values = redis.call('HGETALL', key)
  elseif kind == 'zset' then
    values = redis.call('ZRANGE', key, 0, -1)
  elseif kind == 'set' then
    values = redis.call('SMEMBERS', key)
  elseif string.sub(key, 1, 7) == 'pc:jti:' then
    values = {redis.call('PEXPIRETIME', key)}
  end
  out[#out + 1] = {key, values}
end
return cjson.encode(out)
