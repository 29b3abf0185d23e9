-- Admission: the pause, every rate layer, the device's requests in flight
-- and both budget reservations are checked, in SPEC's order, and taken all
-- together or not at all.
--
-- KEYS: 1 live marker, 2 pause, 3 budget of the day, 4 device's budget of
--       the day, 5 open reservations of the day, 6 due reservations (all
--       days), 7 the device's requests in flight, 8 this process's heartbeat,
--       9.. one window per layer named in ARGV[6]
-- ARGV: 1 the numbers, space separated (fewer arguments to encode on the hot
--         path): now, day bucket seconds, day buckets, burst seconds, budget,
--         device cap (0: none), reserve, pause floor, concurrency limit,
--         liveness seconds, next budget day, window ttl, burst ttl, budget
--         ttl, live ttl, pause ttl, heartbeat ttl (the liveness in ms), then
--         the limit of each layer
--       2 request id, 3 device id, 4 peek ('1': read only),
--       5 budget key prefix, 6 layer names (comma separated),
--       7 n, the number of keys a cached view expects (Expectation,
--         base.py): they follow the windows in KEYS, their values follow
--         ARGV[11] ('' = absent)
--       8 budget day, 9 process id, 10 process key prefix, 11 in-flight key
--         prefix
-- Returns {'not_live'}, {'stale'} (the cached view moved: nothing taken), or
--         {status, refused_by, hard, auto_paused, generation, has_pause,
--          reason, automatic, since, until, "count reset" of each layer}
-- Money is integer micro-USD, kept as decimal strings for HINCRBY.

local generation = redis.call('GET', KEYS[1])
if not generation then return {'not_live'} end

local v = {}
for token in string.gmatch(ARGV[1], '%S+') do v[#v + 1] = token end
local now_text, now = v[1], tonumber(v[1])
local bucket_seconds, buckets, burst_seconds = tonumber(v[2]), tonumber(v[3]), tonumber(v[4])
local budget, cap, reserve_text = tonumber(v[5]), tonumber(v[6]), v[7]
local floor, concurrency, liveness = tonumber(v[8]), tonumber(v[9]), tonumber(v[10])
local next_day_text = v[11]
local window_ttl, burst_ttl, budget_ttl, live_ttl, pause_ttl = v[12], v[13], v[14], v[15], v[16]
local process_ttl = v[17]
local request_id, device_id, budget_prefix = ARGV[2], ARGV[3], ARGV[5]
local day, process, process_prefix, inflight_prefix = ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local bucket = math.floor(now / bucket_seconds)
local first_window = 9
local limit_base = 17

-- A view built from caches: take nothing unless the store still agrees.
local expected = tonumber(ARGV[7])
if expected > 0 then
  local seen = redis.call('MGET', unpack(KEYS, #KEYS - expected + 1, #KEYS))
  for i = 1, expected do
    if (seen[i] or '') ~= ARGV[11 + i] then return {'stale'} end
  end
end

local names, counts, oldest, limits = {}, {}, {}, {}
for name in string.gmatch(ARGV[6], '[^,]+') do names[#names + 1] = name end
for i, name in ipairs(names) do
  limits[i] = tonumber(v[limit_base + i])
  local key = KEYS[first_window - 1 + i]
  if name == 'burst' then
    counts[i] = log_load(key, now, burst_seconds)
  else
    counts[i], oldest[i] = window_load(key, bucket, buckets)
  end
end

local function reply(status, refused_by, hard, auto_paused, pause, refused_index)
  local result = {status, refused_by, hard, auto_paused, generation}
  if pause then
    for _, value in ipairs({1, pause[1], pause[2], pause[3], pause[4]}) do
      result[#result + 1] = value
    end
  else
    for _, value in ipairs({0, '', '', '', ''}) do result[#result + 1] = value end
  end
  -- One string for all layers ("count reset count reset ..."): one reply
  -- element to parse instead of two per layer.
  local layers = {}
  for i, name in ipairs(names) do
    local need = 1
    if i == refused_index then need = counts[i] - limits[i] + 1 end
    local key = KEYS[first_window - 1 + i]
    local reset
    if name == 'burst' then
      reset = log_reset_at(key, counts[i], need, burst_seconds, now)
    else
      reset = window_reset_at(key, counts[i], oldest[i], need, bucket, buckets,
        bucket_seconds, now)
    end
    layers[#layers + 1] = counts[i]
    layers[#layers + 1] = fmt(reset)
  end
  result[#result + 1] = table.concat(layers, ' ')
  return result
end

if ARGV[4] == '1' then return reply('peek', '', 0, 0, nil, 0) end
if redis.call('HEXISTS', KEYS[5], request_id) == 1 then
  return redis.error_reply('DUPLICATE request id already holds a reservation')
end

-- This process is alive (it is admitting), then dead processes' reservations
-- count as spent, which may leave less than the floor: the automatic pause.
redis.call('SET', KEYS[8], '1', 'PX', process_ttl)
local auto_paused = 0
if purge_dead(KEYS[6], budget_prefix, process_prefix, inflight_prefix, now, liveness, budget_ttl)
    and pause_if_spent(KEYS[2], KEYS[3], budget, floor, now_text, next_day_text, pause_ttl) then
  auto_paused = 1
end

-- 1. The pause (an automatic one ends at the next budget day by itself).
local pause = redis.call('HMGET', KEYS[2], 'reason', 'automatic', 'since', 'until')
if pause[1] then
  if pause[4] ~= '' and now >= tonumber(pause[4]) then
    redis.call('DEL', KEYS[2])
  else
    redis.call('PEXPIRE', KEYS[2], pause_ttl)
    return reply('refused', 'paused', 0, auto_paused, pause, 0)
  end
end

-- 2. Rate layers, in order.
for i, name in ipairs(names) do
  if counts[i] >= limits[i] then return reply('refused', name, 0, 0, nil, i) end
end

-- 3. The device's requests in flight; entries of dead processes are dropped
-- (their reservations are purged above or on a later call).
local in_flight = redis.call('HLEN', KEYS[7])
if in_flight >= concurrency then
  local entries = redis.call('HGETALL', KEYS[7])
  for k = 1, #entries, 2 do
    if not is_alive(process_prefix, entries[k + 1]) then
      redis.call('HDEL', KEYS[7], entries[k])
      in_flight = in_flight - 1
    end
  end
  if in_flight >= concurrency then return reply('refused', 'concurrency', 0, 0, nil, 0) end
end

-- 4. The device's daily dollar cap, 5. the global budget. A request whose
-- worst case does not fit is refused and pauses nothing (SPEC section 2).
-- Returns nil when the reservation fits the limit under ``key``, else
-- whether the refusal is hard (settled spend alone leaves no room: waiting
-- for requests in flight will not help).
local reserve = tonumber(reserve_text)
local function over(key, limit)
  local money = redis.call('HMGET', key, 'spent', 'reserved')
  local spent, reserved = tonumber(money[1]) or 0, tonumber(money[2]) or 0
  if spent + reserved + reserve <= limit then return nil end
  if spent + reserve > limit then return 1 end
  return 0
end
local hard = cap > 0 and over(KEYS[4], cap)
if hard then return reply('refused', 'device_budget', hard, 0, nil, 0) end
hard = over(KEYS[3], budget)
if hard then return reply('refused', 'budget', hard, 0, nil, 0) end

-- Everything fits: take it all.
for i, name in ipairs(names) do
  local key = KEYS[first_window - 1 + i]
  if name == 'burst' then
    redis.call('ZADD', key, now_text, request_id)
    redis.call('PEXPIRE', key, burst_ttl)
  else
    oldest[i] = window_add(key, bucket, counts[i], oldest[i], window_ttl)
  end
  counts[i] = counts[i] + 1
end
redis.call('HINCRBY', KEYS[3], 'reserved', reserve_text)
redis.call('HINCRBY', KEYS[4], 'reserved', reserve_text)
redis.call('HSET', KEYS[5], request_id, reserve_text .. ' ' .. device_id .. ' ' .. process)
redis.call('ZADD', KEYS[6], fmt(now + liveness), day .. ' ' .. request_id)
redis.call('HSET', KEYS[7], request_id, process)
for k = 3, 7 do redis.call('PEXPIRE', KEYS[k], budget_ttl) end
redis.call('PEXPIRE', KEYS[1], live_ttl)
return reply('admitted', '', 0, 0, nil, 0)
