#!lua flags=allow-key-locking
-- Dequeue: KEYS[1] = {p}:op:{opID}, KEYS[2] = {p}:queue:{id}, KEYS[3] =
-- {p}:queue-corrupt:{id}; ARGV[1] = the record's TTL in ms, ARGV[2] = the
-- client's clock in Unix ms, ARGV[3] = the dead-letter TTL in ms.
-- Pops and discards expired entries (expiresAt < now; an entry expiring
-- exactly now is kept, as the Chat SDK core's now <= expiresAt) until it
-- finds a live one, and returns it as 'e' .. entry; returns 'n' when the
-- queue has no live entry. An entry whose expiresAt cannot be read is
-- moved to the dead-letter list KEYS[3] (kept for ARGV[3] ms) and returned
-- as 'c' .. entry: it is not lost, and it no longer blocks the queue.
-- The outcome is recorded under KEYS[1]: a repeat of the same operation
-- id pops nothing and returns the same entry, so an entry whose reply was
-- lost is handed over by the retry instead of being lost.
--
-- expiresAt is read from the end of the entry first: both JSON.stringify
-- and Go write {"message":…,"enqueuedAt":N,"expiresAt":N}, so no full
-- decode is needed (cjson refuses messages nested 1000 levels deep, which
-- state-redis's LPOP hands over). Other layouts fall back to cjson.decode.
local done = redis.call('GET', KEYS[1])
if done then
  return done
end
local now = tonumber(ARGV[2])
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
local result = 'n'
while true do
  local raw = redis.call('LPOP', KEYS[2])
  if not raw then
    break
  end
  local exp = expiresAt(raw)
  if not exp then
    redis.call('RPUSH', KEYS[3], raw)
    redis.call('PEXPIRE', KEYS[3], ARGV[3])
    result = 'c' .. raw
    break
  end
  if exp >= now then
    result = 'e' .. raw
    break
  end
end
redis.call('SET', KEYS[1], result, 'PX', ARGV[1])
return result
