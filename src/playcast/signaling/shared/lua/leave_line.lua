-- LeaveLine: a waiting client is gone.
if redis.call('EXISTS', 'pc:c:' .. ARGV[1]) == 0 then return cjson.encode({'done'}) end
local game = drop_client(ARGV[1])
return cjson.encode({'done', game, line_of(game)})
