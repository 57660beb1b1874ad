#!lua flags=allow-key-locking
-- Subscribe and Unsubscribe: KEYS[1] = {p}:op:{opID}, KEYS[2] =
-- {p}:subscriptions; ARGV[1] = the record's TTL in ms, ARGV[2] = 'SADD' or
-- 'SREM', ARGV[3] = the thread id.
-- A repeat of the same operation id applies nothing and returns the
-- recorded outcome, so a resent Subscribe cannot undo a later Unsubscribe.
local done = redis.call('GET', KEYS[1])
if done then
  return done
end
redis.call(ARGV[2], KEYS[2], ARGV[3])
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return '1'
