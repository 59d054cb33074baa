-- LeaveLine: a waiting client is gone, from its game's line (ARGV[2]) only,
-- as in memory.
if redis.call('HGET', 'pc:c:' .. ARGV[1], 'game') ~= ARGV[2] then
  return cjson.encode({'done'})
end
drop_client(ARGV[1])
return cjson.encode({'done', ARGV[2], line_of(ARGV[2])})
