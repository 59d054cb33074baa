-- EndSession: a session is over; its worker, if named, leaves the directory.
end_session(ARGV[1])
if ARGV[2] ~= '' then withdraw(ARGV[2]) end
return cjson.encode({'done'})
