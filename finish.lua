#!lua flags=allow-key-locking
-- Finish: the end of a turn in one script. KEYS[1] = {p}:op:{opID}, KEYS[2]
-- = {p}:lock:{id}, KEYS[3] = {p}:fence:{id}, KEYS[4] = {p}:queue:{id},
-- KEYS[5] = {p}:queue-corrupt:{id}; KEYS[6] = the record of an earlier
-- Finish some of whose entries the client could not decode, when ARGV[7]
-- is not '0'; then the ARGV[9] cache keys to write and the ARGV[10] list
-- keys to append to.
-- ARGV[1] = the record's TTL in ms, ARGV[2] = the lock token, ARGV[3] =
-- the lock's TTL in ms when it is kept, ARGV[4] = the client's clock in
-- Unix ms, ARGV[5] = the dead-letter TTL in ms, ARGV[6] = the most live
-- entries to pop ('0': a release, popping nothing), ARGV[7] = the
-- follow-up: '0' none, '1' move the entries of KEYS[6]'s record listed in
-- ARGV[8] to the dead-letter list and go on with release-or-next (no
-- writes), '2' only move them;
-- ARGV[8] = those entries' positions in the record (from 1, separated by
-- commas; '' when ARGV[7] is '0'), ARGV[9] = the number of cache writes,
-- ARGV[10] = the number of list appends; then for each cache write the
-- JSON text and its TTL in ms ('0' for none), and for each append the JSON
-- text, maxLength and the list's TTL in ms ('0' for none). Numbers stay
-- strings, so Lua never formats them.
--
-- When the lock does not hold the token, nothing is written: the reply is
-- 'h'. Otherwise the writes are applied exactly as set.lua and append.lua
-- apply them, and then release-or-next: expired entries (expiresAt < now)
-- are popped and discarded and unreadable ones moved to the dead-letter
-- list, as dequeue.lua does, and live entries popped until ARGV[6] of them
-- are popped or the queue is empty. When at least one was popped, they are
-- returned, and the lock and its fencing counter get ARGV[3] from now;
-- when none was, the lock is deleted. With ARGV[6] = '0' (a release), the
-- queue is not touched at all: no entry is popped, expired or moved, and
-- the lock is deleted (reply 'r'). The decision and the release happen
-- in this one atomic script, so an entry queued by another client is
-- either seen here or queued after the release (and then that client finds
-- the lock free).
--
-- Reply and record: kind .. ':' .. expired .. ':' .. deadLettered .. ':'
-- .. count .. ':' followed, for each of the count popped entries, oldest
-- first, by its length in bytes .. ':' .. entry (length-prefixed, so any
-- bytes can follow). kind is 'n' (entries popped, lock kept; count >= 1),
-- 'r' (released), 'h' (not held; nothing written) or 'd' (the follow-up
-- '2': entries moved, nothing else done); count is 0 unless kind is 'n'.
-- A repeat of the same operation id applies nothing and replies {record,
-- the lock's PTTL in ms ('-2' when it no longer holds ARGV[2])}, so popped
-- entries whose reply was lost are handed over by the retry, entries are
-- moved once, and the client learns how long the kept lock has left.
local done = redis.call('GET', KEYS[1])
if done then
  local left = -2
  if redis.call('GET', KEYS[2]) == ARGV[2] then
    left = redis.call('PTTL', KEYS[2])
  end
  return {done, tostring(left)}
end

-- The entries of a record, in order; none unless kind is 'n'.
local function recorded(rec)
  local list = {}
  local _, stop, n = string.find(rec, '^n:%d+:%d+:(%d+):')
  if not stop then
    return list
  end
  local pos = stop + 1
  for i = 1, tonumber(n) do
    local colon = string.find(rec, ':', pos, true)
    if not colon then
      break
    end
    local len = tonumber(string.sub(rec, pos, colon - 1))
    if not len then
      break
    end
    list[i] = string.sub(rec, colon + 1, colon + len)
    pos = colon + len + 1
  end
  return list
end

local k = 6
local dead = 0
if ARGV[7] ~= '0' then
  k = 7
  local prev = redis.call('GET', KEYS[6])
  if prev then
    local entries = recorded(prev)
    for pos in string.gmatch(ARGV[8], '%d+') do
      local raw = entries[tonumber(pos)]
      if raw then
        redis.call('RPUSH', KEYS[5], raw)
        dead = dead + 1
      end
    end
    if dead > 0 then
      redis.call('PEXPIRE', KEYS[5], ARGV[5])
    end
  end
  if ARGV[7] == '2' then
    local result = 'd:0:' .. dead .. ':0:'
    redis.call('SET', KEYS[1], result, 'PX', ARGV[1])
    return result
  end
end
if redis.call('GET', KEYS[2]) ~= ARGV[2] then
  local result = 'h:0:' .. dead .. ':0:'
  redis.call('SET', KEYS[1], result, 'PX', ARGV[1])
  return result
end

local a = 11
for _ = 1, tonumber(ARGV[9]) do
  if ARGV[a + 1] ~= '0' then
    redis.call('SET', KEYS[k], ARGV[a], 'PX', ARGV[a + 1])
  else
    redis.call('SET', KEYS[k], ARGV[a])
  end
  k = k + 1
  a = a + 2
end
for _ = 1, tonumber(ARGV[10]) do
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
local take = tonumber(ARGV[6])
local expired = 0
local popped = {}
-- take is 0 for a release: the loop does not run and the lock is deleted.
while #popped < take do
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
    popped[#popped + 1] = raw
  else
    expired = expired + 1
  end
end
local result
if #popped > 0 then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
  local parts = { 'n:' .. expired .. ':' .. dead .. ':' .. #popped .. ':' }
  for _, raw in ipairs(popped) do
    parts[#parts + 1] = #raw .. ':' .. raw
  end
  result = table.concat(parts)
else
  redis.call('DEL', KEYS[2])
  result = 'r:' .. expired .. ':' .. dead .. ':0:'
end
redis.call('SET', KEYS[1], result, 'PX', ARGV[1])
return result
