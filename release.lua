#!lua flags=allow-key-locking
-- ReleaseLock and Unlock: KEYS[1] = {p}:op:{opID}, KEYS[2] = {p}:lock:{id};
-- ARGV[1] = the record's TTL in ms, ARGV[2] = the token.
-- Deletes the lock only if it still holds the token (as state-redis) and
-- returns '1'; returns '0' when it does not (expired, released, force-
-- released or taken over). Only '1' is recorded: a repeat of a release
-- that deleted the lock returns '1' again rather than "not held", and a
-- '0' cannot turn into a '1' later (tokens are never reused).
local done = redis.call('GET', KEYS[1])
if done then
  return done
end
if redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return '0'
end
redis.call('DEL', KEYS[2])
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return '1'
