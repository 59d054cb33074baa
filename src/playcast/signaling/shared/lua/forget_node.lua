-- A dead node's cleanup: claimed by the first node to find it (SREM), so it
-- runs once; returns the lines it changed. With a resume grace (ARGV[3], ms)
-- its sessions stay that long, to be resumed elsewhere.
local node, grace = ARGV[1], tonumber(ARGV[3])
if redis.call('SREM', 'pc:nodes', node) == 0 and ARGV[2] ~= 'force' then
  return cjson.encode({'not_mine'})
end
-- Each session's member on a live node: its node may never have been told.
local partners = {}
local function gone(sid, role, where)
  local p = redis.call('HMGET', 'pc:s:' .. sid, role, where)
  if p[2] and p[2] ~= node and alive(p[2]) then partners[#partners + 1] = {p[2], p[1], sid} end
  if grace > 0 then redis.call('PEXPIRE', 'pc:s:' .. sid, grace) else end_session(sid) end
end
for _, wid in ipairs(redis.call('SMEMBERS', 'pc:nw:' .. node)) do
  local w = redis.call('HMGET', 'pc:w:' .. wid, 'busy', 'session')
  if w[1] == '1' and w[2] then gone(w[2], 'client', 'client_node') end  -- (if not ended already)
  -- Registered nowhere now, busy or not: a resume writes its record anew,
  -- on the node that holds it then.
  withdraw(wid)
end
for _, sid in ipairs(redis.call('SMEMBERS', 'pc:ns:' .. node)) do
  gone(sid, 'worker', 'worker_node')
end
local games = {}
for _, cid in ipairs(redis.call('SMEMBERS', 'pc:nc:' .. node)) do
  local game = drop_client(cid)
  if game then games[game] = true end
end
redis.call('DEL', 'pc:nw:' .. node, 'pc:ns:' .. node, 'pc:nc:' .. node, 'pc:node:' .. node)
local lines = {}
for game, _ in pairs(games) do lines[#lines + 1] = {game, line_of(game)} end
return cjson.encode({'forgot', lines, partners})
