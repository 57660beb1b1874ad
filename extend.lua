#!lua flags=allow-key-locking
-- ExtendLock and Refresh: KEYS[1] = {p}:op:{opID}, KEYS[2] = {p}:lock:{id},
-- KEYS[3] = {p}:fence:{id}; ARGV[1] = the record's TTL in ms, ARGV[2] = the
-- token, ARGV[3] = the new TTL in ms.
-- Sets the TTL to ARGV[3] from now only if the lock still holds the token
-- (as state-redis), together with the fencing counter's, and returns '1';
-- returns '0' when the lock does not hold the token. Only '1' is recorded,
-- as in release.lua.
local done = redis.call('GET', KEYS[1])
if done then
  return done
end
if redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return '0'
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return '1'
