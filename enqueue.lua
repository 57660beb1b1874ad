#!lua flags=allow-key-locking
-- Enqueue: KEYS[1] = {p}:op:{opID}, KEYS[2] = {p}:queue:{id}; ARGV[1] = the
-- record's TTL in ms, ARGV[2] = the entry's JSON, ARGV[3] = maxSize,
-- ARGV[4] = the queue's TTL in ms.
-- Same steps as @chat-adapter/state-redis: RPUSH, trim to the newest
-- maxSize entries when maxSize is not '0', always PEXPIRE (the client
-- computes max(expiresAt - now, 60 s)), and return the new length, as a
-- string. Numbers stay strings, so Lua never formats them.
-- A repeat of the same operation id applies nothing and returns the
-- recorded length, so a resent Enqueue never queues the entry twice.
local done = redis.call('GET', KEYS[1])
if done then
  return done
end
redis.call('RPUSH', KEYS[2], ARGV[2])
if ARGV[3] ~= '0' then
  redis.call('LTRIM', KEYS[2], '-' .. ARGV[3], -1)
end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
local result = tostring(redis.call('LLEN', KEYS[2]))
redis.call('SET', KEYS[1], result, 'PX', ARGV[1])
return result
