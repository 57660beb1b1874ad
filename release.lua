-- ReleaseLock: KEYS[1] = {p}:lock:{id}; ARGV[1] = token.
-- Deletes the lock only if it still holds our token (as state-redis).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
