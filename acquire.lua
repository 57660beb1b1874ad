#!lua flags=allow-key-locking
-- AcquireLock: KEYS[1] = {p}:lock:{id}, KEYS[2] = {p}:fence:{id}; ARGV[1] =
-- the token, ARGV[2] = the lock's TTL in ms.
-- The token is the operation id: a repeat that finds its own token in the
-- lock reports it held, with the fencing token it was given. Returns the
-- fencing token (a string of digits) when the caller holds the lock, and
-- nil when another token is in the key.
--
-- Fencing token: max(last + 1, the server's TIME in microseconds), where
-- last is the one kept in KEYS[2] for as long as the lock lives. So each
-- acquire of a lock key gets a larger number than every earlier one, also
-- after the lock and the counter have expired, as long as the server's
-- clock does not go back. A TypeScript acquire does not move it.
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  local fence = redis.call('GET', KEYS[2])
  if fence then
    return fence
  end
elseif cur then
  return false
end
local t = redis.call('TIME')
local fence = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
if last >= fence then
  fence = last + 1
end
fence = string.format('%.0f', fence)
if cur then
  -- Our own lock whose counter is gone: keep its expiry.
  local left = redis.call('PTTL', KEYS[1])
  if left > 0 then
    redis.call('SET', KEYS[2], fence, 'PX', left)
  end
  return fence
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], fence, 'PX', ARGV[2])
return fence
