#!lua flags=allow-key-locking
-- Set and SetIfNotExists: KEYS[1] = {p}:op:{opID}, KEYS[2] = {p}:cache:{key};
-- ARGV[1] = the record's TTL in ms, ARGV[2] = the value's JSON text,
-- ARGV[3] = 'NX' for SetIfNotExists or '' for Set, ARGV[4] = the value's
-- TTL in ms, '0' for none (a plain SET then clears any TTL, as state-redis).
-- Returns '1' if this operation wrote the value, '0' if NX found the key.
-- A repeat of the same operation id applies nothing and returns the
-- recorded outcome, so a resent Set cannot overwrite a later write.
local done = redis.call('GET', KEYS[1])
if done then
  return done
end
local args = {'SET', KEYS[2], ARGV[2]}
if ARGV[3] == 'NX' then
  args[#args + 1] = 'NX'
end
if ARGV[4] ~= '0' then
  args[#args + 1] = 'PX'
  args[#args + 1] = ARGV[4]
end
local result = '0'
if redis.call(unpack(args)) then
  result = '1'
end
redis.call('SET', KEYS[1], result, 'PX', ARGV[1])
return result
