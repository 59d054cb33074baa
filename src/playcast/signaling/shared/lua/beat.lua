-- Renew this node's liveness; 1 if it had been dropped from the set (found
-- dead by the others, or new).
redis.call('SET', 'pc:node:' .. ARGV[1], ARGV[3], 'PX', ARGV[2])
return redis.call('SADD', 'pc:nodes', ARGV[1])
