#!lua flags=allow-key-locking
-- Finish: the end of a turn in one script. KEYS[1] = {p}:op:{opID}, KEYS[2]
-- = {p}:lock:{id}, KEYS[3] = {p}:fence:{id}, KEYS[4] = {p}:queue:{id},
-- KEYS[5] = {p}:queue-corrupt:{id}; KEYS[6] = the record of an earlier
-- Finish whose entry the client could not decode, when ARGV[6] is '1';
-- then the ARGV[7] cache keys to write and the ARGV[8] list keys to append
-- to.
-- ARGV[1] = the record's TTL in ms, ARGV[2] = the lock token, ARGV[3] =
-- the lock's TTL in ms when it is kept, ARGV[4] = the client's clock in
-- Unix ms, ARGV[5] = the dead-letter TTL in ms, ARGV[6] = '1' to move the
-- entry recorded in KEYS[6] to the dead-letter list, ARGV[7] = the number
-- of cache writes, ARGV[8] = the number of list appends; then for each
-- cache write the JSON text and its TTL in ms ('0' for none), and for each
-- append the JSON text, maxLength and the list's TTL in ms ('0' for none).
-- Numbers stay strings, so Lua never formats them.
--
-- When the lock does not hold the token, nothing is written: the reply is
-- 'h'. Otherwise the writes are applied exactly as set.lua and append.lua
-- apply them, and then release-or-next: expired entries (expiresAt < now)
-- are popped and discarded and unreadable ones moved to the dead-letter
-- list, as dequeue.lua does, until a live entry is found: it is popped and
-- returned, and the lock and its fencing counter get ARGV[3] from now.
-- When the queue holds no live entry, the lock is deleted. The decision and
-- the release happen in this one atomic script, so an entry queued by
-- another client is either seen here or queued after the release (and then
-- that client finds the lock free).
--
-- Reply and record: kind .. ':' .. expired .. ':' .. deadLettered .. ':'
-- .. entry, kind being 'n' (next entry, lock kept), 'r' (released) or 'h'
-- (not held; nothing written). A repeat of the same operation id applies
-- nothing and returns the record, so a popped entry whose reply was lost is
-- handed over by the retry.
local done = redis.call('GET', KEYS[1])
if done then
  return done
end
local k = 6
local dead = 0
if ARGV[6] == '1' then
  local prev = redis.call('GET', KEYS[6])
  k = 7
  if prev and string.sub(prev, 1, 2) == 'n:' then
    local _, stop = string.find(prev, '^n:%d+:%d+:')
    if stop then
      redis.call('RPUSH', KEYS[5], string.sub(prev, stop + 1))
      redis.call('PEXPIRE', KEYS[5], ARGV[5])
      dead = 1
    end
  end
end
if redis.call('GET', KEYS[2]) ~= ARGV[2] then
  local result = 'h:0:' .. dead .. ':'
  redis.call('SET', KEYS[1], result, 'PX', ARGV[1])
  return result
end

local a = 9
for _ = 1, tonumber(ARGV[7]) do
  if ARGV[a + 1] ~= '0' then
    redis.call('SET', KEYS[k], ARGV[a], 'PX', ARGV[a + 1])
  else
    redis.call('SET', KEYS[k], ARGV[a])
  end
  k = k + 1
  a = a + 2
end
for _ = 1, tonumber(ARGV[8]) do
  redis.call('RPUSH', KEYS[k], ARGV[a])
  if ARGV[a + 1] ~= '0' then
    redis.call('LTRIM', KEYS[k], '-' .. ARGV[a + 1], -1)
  end
  if ARGV[a + 2] ~= '0' then
    redis.call('PEXPIRE', KEYS[k], ARGV[a + 2])
  end
  k = k + 1
  a = a + 3
end

-- expiresAt as dequeue.lua reads it: from the end of the entry, else with
-- cjson; nil when it cannot be read.
local function expiresAt(raw)
  local tail = string.match(string.sub(raw, -64), '[,{]"expiresAt":(-?[%d.eE+-]+)}%s*$')
  if tail then
    local n = tonumber(tail)
    if n then
      return n
    end
  end
  local ok, entry = pcall(cjson.decode, raw)
  if ok and type(entry) == 'table' and type(entry['expiresAt']) == 'number' then
    return entry['expiresAt']
  end
  return nil
end
local now = tonumber(ARGV[4])
local expired = 0
local result
while true do
  local raw = redis.call('LPOP', KEYS[4])
  if not raw then
    break
  end
  local exp = expiresAt(raw)
  if not exp then
    redis.call('RPUSH', KEYS[5], raw)
    redis.call('PEXPIRE', KEYS[5], ARGV[5])
    dead = dead + 1
  elseif exp >= now then
    redis.call('PEXPIRE', KEYS[2], ARGV[3])
    redis.call('PEXPIRE', KEYS[3], ARGV[3])
    result = 'n:' .. expired .. ':' .. dead .. ':' .. raw
    break
  else
    expired = expired + 1
  end
end
if not result then
  redis.call('DEL', KEYS[2])
  result = 'r:' .. expired .. ':' .. dead .. ':'
end
redis.call('SET', KEYS[1], result, 'PX', ARGV[1])
return result
