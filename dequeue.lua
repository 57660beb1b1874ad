-- Dequeue: KEYS[1] = {p}:queue:{id}; ARGV[1] = the client's clock, Unix ms.
-- Pops and discards expired entries (expiresAt <= now) until it finds a live
-- one, which it pops and returns as {1, entry}. Returns nil when the queue
-- is empty. An entry that cannot be decoded, or has no numeric expiresAt,
-- is left at the head and returned as {0, entry}, so nothing is lost.
local now = tonumber(ARGV[1])
while true do
  local raw = redis.call('LINDEX', KEYS[1], 0)
  if not raw then
    return false
  end
  local ok, entry = pcall(cjson.decode, raw)
  if not ok or type(entry) ~= 'table' or type(entry['expiresAt']) ~= 'number' then
    return {0, raw}
  end
  redis.call('LPOP', KEYS[1])
  if entry['expiresAt'] > now then
    return {1, raw}
  end
end
