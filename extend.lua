-- ExtendLock: KEYS[1] = {p}:lock:{id}; ARGV = token, ttlMs.
-- Sets the TTL to ttlMs from now only if the lock still holds our token
-- (as state-redis). Returns 1 if it did, 0 otherwise.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
