-- MarkConnected: the session's media is up (read by a resume elsewhere).
if redis.call('EXISTS', 'pc:s:' .. ARGV[1]) == 1 then
  redis.call('HSET', 'pc:s:' .. ARGV[1], 'phase', 'connected')
end
return cjson.encode({'done'})
