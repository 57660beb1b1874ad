#!lua flags=allow-key-locking
-- Admit: one incoming message in one script. KEYS[1] = {p}:op:{opID}; then,
-- in this order and only when asked for: the dedupe key {p}:cache:{key}
-- (ARGV[2] ~= ''), {p}:subscriptions (ARGV[4] ~= ''), {p}:lock:{id},
-- {p}:fence:{id} and {p}:queue:{id} (ARGV[5] ~= ''), the ARGV[13] list
-- keys to append to, and the ARGV[12] cache keys to read.
-- ARGV[1] = the record's TTL in ms; ARGV[2] = the dedupe value's JSON text
-- ('' for no dedupe), ARGV[3] = its TTL in ms ('0' for none); ARGV[4] =
-- the thread id to look up in the subscriptions ('' for none); ARGV[5] =
-- the lock token ('' for no lock), ARGV[6] = the lock's TTL in ms, ARGV[7]
-- = '1' to take the lock over when another holder has it; ARGV[8] = the
-- queue entry's JSON ('' for none), ARGV[9] = maxSize, ARGV[10] = the
-- queue's TTL in ms, ARGV[11] = '1' to drop the entry rather than the
-- oldest one when the queue holds maxSize entries; ARGV[12] = the number of
-- cache keys to read; ARGV[13] = the number of list appends, followed by
-- the JSON text, maxLength and the list's TTL in ms ('0' for none) of each.
-- Numbers stay strings, so Lua never formats them.
--
-- Steps, each the same as the single operation: SET NX (PX) on the dedupe
-- key (SetIfNotExists), and stop there when it was present; the list
-- appends (append.lua: RPUSH, LTRIM, PEXPIRE); SISMEMBER;
-- take the lock (acquire.lua: token, PX, fencing token) or, when another
-- token is in it, enqueue the entry (enqueue.lua: RPUSH, LTRIM, PEXPIRE);
-- LLEN; GET each cache key, only when the lock was taken or none was asked
-- for.
--
-- The outcome is recorded under KEYS[1] as one string: 'd' (duplicate),
-- 'n' (no lock asked for), 'a' .. fence .. ':' .. token (lock taken), 'f'
-- .. fence .. ':' .. token (lock taken over from another holder), 'q' ..
-- depth (busy, entry queued), 'b' .. depth (busy, nothing queued). A
-- repeat of the same operation id applies nothing: it returns the recorded
-- outcome (with the token the first attempt took, whatever ARGV[5] says
-- now), and reads the subscription, the queue's length, the lock's PTTL
-- and the values again.
-- Reply: {outcome, subscribed ('1', '0' or ''), queue length ('' without a
-- lock), the lock's PTTL in ms on a repeat that took it ('-2' when it no
-- longer holds the recorded token; '' otherwise), value or false for each
-- key read}.
local outcome = redis.call('GET', KEYS[1])
local replay = outcome ~= false
local k = 2
local dedupeKey, subKey, lockKey, fenceKey, queueKey
if ARGV[2] ~= '' then
  dedupeKey = KEYS[k]
  k = k + 1
end
if ARGV[4] ~= '' then
  subKey = KEYS[k]
  k = k + 1
end
if ARGV[5] ~= '' then
  lockKey, fenceKey, queueKey = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  k = k + 3
end
local appends = tonumber(ARGV[13])
local appendKey = k
k = k + appends

if not replay then
  if dedupeKey then
    local args = {'SET', dedupeKey, ARGV[2], 'NX'}
    if ARGV[3] ~= '0' then
      args[#args + 1] = 'PX'
      args[#args + 1] = ARGV[3]
    end
    if not redis.call(unpack(args)) then
      outcome = 'd'
    end
  end
  if not outcome then
    local a = 14
    for i = 0, appends - 1 do
      local key = KEYS[appendKey + i]
      redis.call('RPUSH', key, ARGV[a])
      if ARGV[a + 1] ~= '0' then
        redis.call('LTRIM', key, '-' .. ARGV[a + 1], -1)
      end
      if ARGV[a + 2] ~= '0' then
        redis.call('PEXPIRE', key, ARGV[a + 2])
      end
      a = a + 3
    end
  end
  if not outcome and not lockKey then
    outcome = 'n'
  end
  if not outcome then
    local cur = redis.call('GET', lockKey)
    local forced = false
    if cur and ARGV[7] == '1' then
      forced = true
      cur = false
    end
    if cur then
      local depth = redis.call('LLEN', queueKey)
      local queued = false
      if ARGV[8] ~= '' and not (ARGV[11] == '1' and ARGV[9] ~= '0' and depth >= tonumber(ARGV[9])) then
        redis.call('RPUSH', queueKey, ARGV[8])
        if ARGV[9] ~= '0' then
          redis.call('LTRIM', queueKey, '-' .. ARGV[9], -1)
        end
        redis.call('PEXPIRE', queueKey, ARGV[10])
        depth = redis.call('LLEN', queueKey)
        queued = true
      end
      if queued then
        outcome = 'q' .. tostring(depth)
      else
        outcome = 'b' .. tostring(depth)
      end
    else
      -- The fencing token, as acquire.lua computes it.
      local t = redis.call('TIME')
      local fence = tonumber(t[1]) * 1000000 + tonumber(t[2])
      local last = tonumber(redis.call('GET', fenceKey) or '0') or 0
      if last >= fence then
        fence = last + 1
      end
      fence = string.format('%.0f', fence)
      redis.call('SET', lockKey, ARGV[5], 'PX', ARGV[6])
      redis.call('SET', fenceKey, fence, 'PX', ARGV[6])
      if forced then
        outcome = 'f' .. fence .. ':' .. ARGV[5]
      else
        outcome = 'a' .. fence .. ':' .. ARGV[5]
      end
    end
  end
  redis.call('SET', KEYS[1], outcome, 'PX', ARGV[1])
end

local reply = {outcome, '', '', ''}
local kind = string.sub(outcome, 1, 1)
if kind == 'd' then
  return reply
end
if subKey then
  reply[2] = tostring(redis.call('SISMEMBER', subKey, ARGV[4]))
end
if lockKey then
  reply[3] = tostring(redis.call('LLEN', queueKey))
end
if replay and lockKey and (kind == 'a' or kind == 'f') then
  local token = string.match(outcome, ':(.*)$')
  if token and redis.call('GET', lockKey) == token then
    reply[4] = tostring(redis.call('PTTL', lockKey))
  else
    reply[4] = '-2'
  end
end
if kind == 'n' or kind == 'a' or kind == 'f' then
  for i = 1, tonumber(ARGV[12]) do
    reply[4 + i] = redis.call('GET', KEYS[k + i - 1])
  end
end
return reply
