-- Enqueue: KEYS[1] = {p}:queue:{id}; ARGV = entry json, maxSize, ttlMs.
-- Same steps as @chat-adapter/state-redis: RPUSH, trim to the newest
-- maxSize entries when maxSize > 0, always PEXPIRE (the client computes
-- max(expiresAt - now, 60 s)), return the new length.
redis.call('RPUSH', KEYS[1], ARGV[1])
local maxSize = tonumber(ARGV[2])
if maxSize > 0 then
  redis.call('LTRIM', KEYS[1], -maxSize, -1)
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return redis.call('LLEN', KEYS[1])
