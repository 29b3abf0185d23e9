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

-- Counts one event, or `amount` of them.
local function window_add(key, bucket, n, o, ttl, amount)
  amount = amount or 1
  if n <= 0 or bucket < o then o = bucket end
  redis.call('HINCRBY', key, bucket, amount)
  redis.call('HSET', key, 'n', n + amount, 'o', o)
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

-- A signed whole number as HINCRBY wants it (never in exponent notation).
local function whole(x)
  return string.format('%d', x)
end

-- Is the process alive? Its heartbeat key lives `liveness` seconds of real
-- time (PX) after its last beat: a process's life is not the gateway clock's
-- business (tests move that clock; a process does not die of it).
local function is_alive(process_prefix, process)
  return redis.call('EXISTS', process_prefix .. process) == 1
end

-- Reservations whose process has died expire: their full amount leaves
-- `reserved` and counts as spent (the provider may have billed all of it),
-- and they are remembered so a late settle replaces that by the real cost.
-- A due reservation whose process is alive is checked again a liveness
-- period later. The due set holds "<day> <request id>" for every open
-- reservation of every day; bounded work per call, the rest on the next one.
-- Returns true when any spent figure moved.
local function purge_dead(due, budget_prefix, process_prefix, inflight_prefix, now, liveness, ttl)
  local members = redis.call('ZRANGEBYSCORE', due, '-inf', fmt(now), 'LIMIT', 0, 100)
  local moved = false
  for _, member in ipairs(members) do
    local day, id = string.match(member, '^(%S+) (.+)$')
    local open = budget_prefix .. day .. ':resv'
    local entry = redis.call('HGET', open, id)
    if not entry then
      redis.call('ZREM', due, member)
    else
      local amount, owner, process = string.match(entry, '^(%d+) (%S+) (%S+)$')
      if is_alive(process_prefix, process) then
        redis.call('ZADD', due, fmt(now + liveness), member)
      else
        local total = budget_prefix .. day
        local device = budget_prefix .. day .. ':device:' .. owner
        local expired = budget_prefix .. day .. ':resv:expired'
        decrement(total, 'reserved', amount)
        decrement(device, 'reserved', amount)
        redis.call('HINCRBY', total, 'spent', amount)
        redis.call('HINCRBY', device, 'spent', amount)
        redis.call('PEXPIRE', total, ttl)
        redis.call('PEXPIRE', device, ttl)
        redis.call('HDEL', open, id)
        redis.call('HSET', expired, id, amount .. ' ' .. owner)
        redis.call('PEXPIRE', expired, ttl)
        redis.call('HDEL', inflight_prefix .. owner, id)
        redis.call('ZREM', due, member)
        moved = true
      end
    end
  end
  return moved
end

-- The automatic pause: settled spend left less than `floor` of the day's
-- budget. It fires once per budget day (a flag in the day's budget hash), so
-- an operator's resume is not undone by the next settlement. Sets it until
-- the next budget day unless a pause is in force; true when it did.
local function pause_if_spent(pause_key, budget_key, budget, floor, now_text, next_day_text, ttl)
  local money = redis.call('HMGET', budget_key, 'spent', 'floor_paused')
  if budget - (tonumber(money[1]) or 0) >= floor or money[2] then return false end
  redis.call('HSET', budget_key, 'floor_paused', '1')
  local until_text = redis.call('HGET', pause_key, 'until')
  if until_text and (until_text == '' or tonumber(now_text) < tonumber(until_text)) then
    return false
  end
  redis.call('DEL', pause_key)
  redis.call('HSET', pause_key, 'reason', 'daily budget exhausted', 'automatic', '1',
    'since', now_text, 'until', next_day_text)
  redis.call('PEXPIRE', pause_key, ttl)
  return true
end
