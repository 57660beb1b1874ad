#!lua flags=allow-key-locking
-- AppendToList (and Dequeue's dead-letter move): KEYS[1] = {p}:op:{opID},
-- KEYS[2] = the list; ARGV[1] = the record's TTL in ms, ARGV[2] = the JSON
-- text, ARGV[3] = maxLength, ARGV[4] = the list's TTL in ms.
-- Same steps as @chat-adapter/state-redis: RPUSH, trim to the newest
-- maxLength items when maxLength is not '0', PEXPIRE when the TTL is not
-- '0'. Numbers stay strings, so Lua never formats them.
-- A repeat of the same operation id applies nothing and returns the
-- recorded outcome.
local done = redis.call('GET', KEYS[1])
if done then
  return done
end
redis.call('RPUSH', KEYS[2], ARGV[2])
if ARGV[3] ~= '0' then
  redis.call('LTRIM', KEYS[2], '-' .. ARGV[3], -1)
end
if ARGV[4] ~= '0' then
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return '1'
