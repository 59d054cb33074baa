-- EndSession: a session is over; its worker, if named, leaves the directory;
-- ARGV[3], the player's node as the ending node knows it.
end_session(ARGV[1], ARGV[3])
if ARGV[2] ~= '' then withdraw(ARGV[2]) end
return cjson.encode({'done'})
