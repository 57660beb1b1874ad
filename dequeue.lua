-- Dequeue: KEYS[1] = {p}:queue:{id}; KEYS[2] = {p}:queue-corrupt:{id};
-- ARGV[1] = the client's clock, Unix ms; ARGV[2] = the dead-letter TTL, ms.
-- Pops and discards expired entries (expiresAt <= now) until it finds a live
-- one, which it returns as {1, entry}. Returns nil when the queue is empty.
-- An entry whose expiresAt cannot be read is moved to the dead-letter list
-- KEYS[2] (kept for ARGV[2] ms) and returned as {0, entry}: it is not lost,
-- and it no longer blocks the queue.
--
-- expiresAt is read from the end of the entry first: both JSON.stringify
-- and Go write {"message":…,"enqueuedAt":N,"expiresAt":N}, so no full
-- decode is needed (cjson refuses messages nested 1000 levels deep, which
-- state-redis's LPOP hands over). Other layouts fall back to cjson.decode.
local now = tonumber(ARGV[1])
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
while true do
  local raw = redis.call('LPOP', KEYS[1])
  if not raw then
    return false
  end
  local exp = expiresAt(raw)
  if not exp then
    redis.call('RPUSH', KEYS[2], raw)
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
    return {0, raw}
  end
  if exp > now then
    return {1, raw}
  end
end
