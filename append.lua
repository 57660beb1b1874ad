-- AppendToList: KEYS[1] = {p}:list:{key}; ARGV = json, maxLength, ttlMs.
-- Same steps as @chat-adapter/state-redis: RPUSH, trim to the newest
-- maxLength items when maxLength > 0, PEXPIRE when ttlMs > 0.
redis.call('RPUSH', KEYS[1], ARGV[1])
local maxLength = tonumber(ARGV[2])
if maxLength > 0 then
  redis.call('LTRIM', KEYS[1], -maxLength, -1)
end
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
