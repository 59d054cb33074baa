-- SetTokens: what is kept of each member's resume token (hex SHA-256).
if redis.call('EXISTS', 'pc:s:' .. ARGV[1]) == 1 then
  redis.call('HSET', 'pc:s:' .. ARGV[1], 'wt', ARGV[2], 'ct', ARGV[3])
end
return cjson.encode({'done'})
