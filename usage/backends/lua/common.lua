-- Helpers prepended to every script. usage/windows.py states the rules they
-- implement (and is the in-process implementation of the same rules).

-- Exact text of a double: '%.14g' (Lua's tostring) would round timestamps.
local function fmt(x)
  return string.format('%.17g', x)
end

-- A sub-bucket window is a hash: 'n' = requests counted, 'o' = oldest bucket
-- that may be non-empty, and one field per bucket index with its count.
-- Loading it forgets the buckets that left the window; each bucket is walked
-- past once, so the work per call is O(1) amortised and never above the
-- number of buckets.
local function window_load(key, bucket, buckets)
  local meta = redis.call('HMGET', key, 'n', 'o')
  local n = tonumber(meta[1]) or 0
  local o = tonumber(meta[2]) or bucket
  if n <= 0 then
    if meta[1] then redis.call('DEL', key) end
    return 0, bucket
  end
  local lowest = bucket - buckets + 1
  local moved = false
  if o < lowest then
    if lowest - o >= buckets then
      redis.call('DEL', key)
      return 0, bucket
    end
    for b = o, lowest - 1 do
      local c = redis.call('HGET', key, b)
      if c then
        n = n - tonumber(c)
        redis.call('HDEL', key, b)
      end
    end
    o = lowest
    moved = true
  end
  if n <= 0 then
    redis.call('DEL', key)
    return 0, bucket
  end
  while o < bucket and redis.call('HEXISTS', key, o) == 0 do
    o = o + 1
    moved = true
  end
  if moved then redis.call('HSET', key, 'n', n, 'o', o) end
  return n, o
end

-- When `need` of the counted requests will have left the window.
local function window_reset_at(key, n, o, need, bucket, buckets, bucket_seconds, now)
  if n <= 0 or need <= 0 then return now end
  local freed = 0
  for b = o, bucket do
    local c = redis.call('HGET', key, b)
    if c then
      freed = freed + tonumber(c)
      if freed >= need then return (b + buckets) * bucket_seconds end
    end
  end
  return (bucket + buckets) * bucket_seconds
end

local function window_add(key, bucket, n, o, ttl)
  if n <= 0 or bucket < o then o = bucket end
  redis.call('HINCRBY', key, bucket, 1)
  redis.call('HSET', key, 'n', n + 1, 'o', o)
  redis.call('PEXPIRE', key, ttl)
  return o
end

-- A sliding log is a sorted set of request ids scored by their time; a
-- request stops counting exactly `seconds` after it was admitted.
local function log_load(key, now, seconds)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now - seconds))
  return redis.call('ZCARD', key)
end

local function log_reset_at(key, n, need, seconds, now)
  if n <= 0 or need <= 0 then return now end
  local index = math.min(need, n) - 1
  local entry = redis.call('ZRANGE', key, index, index, 'WITHSCORES')
  return tonumber(entry[2]) + seconds
end

-- HINCRBY by minus a decimal string (amounts stay strings: a Lua number
-- would be formatted with 14 digits; Redis refuses "-0").
local function decrement(key, field, amount)
  if amount ~= '0' then redis.call('HINCRBY', key, field, '-' .. amount) end
end

-- Release reservations whose holder never settled (a crashed process): their
-- amount leaves `reserved`, and they are remembered so a late settle still
-- counts its cost. Bounded work per call; the rest goes on the next call.
local function purge_expired(open, expiry, expired, budget, device_prefix, now, ttl)
  local ids = redis.call('ZRANGEBYSCORE', expiry, '-inf', fmt(now), 'LIMIT', 0, 100)
  for _, id in ipairs(ids) do
    local entry = redis.call('HGET', open, id)
    if entry then
      local amount, owner = string.match(entry, '^(%d+) (.*)$')
      decrement(budget, 'reserved', amount)
      decrement(device_prefix .. owner, 'reserved', amount)
      redis.call('PEXPIRE', device_prefix .. owner, ttl)
      redis.call('HDEL', open, id)
      redis.call('HSET', expired, id, owner)
      redis.call('PEXPIRE', expired, ttl)
    end
    redis.call('ZREM', expiry, id)
  end
end
