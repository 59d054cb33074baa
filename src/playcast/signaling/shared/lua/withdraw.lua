-- Withdraw: a worker is gone.
withdraw(ARGV[1])
return cjson.encode({'done'})
