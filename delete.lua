#!lua flags=allow-key-locking
-- Delete and ForceReleaseLock: KEYS[1] = {p}:op:{opID}, KEYS[2] = the key
-- to delete ({p}:cache:{key} or {p}:lock:{id}); ARGV[1] = the record's TTL
-- in ms. Returns '1'.
-- A repeat of the same operation id applies nothing, so a resent Delete
-- cannot delete a later write, nor a resent ForceReleaseLock the lock of a
-- later holder.
local done = redis.call('GET', KEYS[1])
if done then
  return done
end
redis.call('DEL', KEYS[2])
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return '1'
