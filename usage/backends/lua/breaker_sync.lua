-- A process's circuit-breaker sync: count what it saw since its last sync,
-- open each closed breaker whose failures within the window reach the limit
-- (only this caller is told: the script is atomic), and read back every
-- breaker that is not closed. usage/backends/memory_breakers.py is the twin.
-- KEYS: 1 index of breakers not closed, 2 index of counted targets, then per
--       target: its state, its failure window, its attempts of this minute
-- ARGV: 1 now, 2 failures that open, 3 buckets of the window (one second
--       each), 4 cool-down seconds, 5 state ttl, 6 window ttl, 7 attempts
--       ttl, 8 seconds a counted target stays indexed, 9 state key prefix,
--       then per target: target, failures, attempts ("<outcome> <count> ...")
-- Returns {{opened targets}, {target, open until, probe until ('' = none), ...}}
local now = tonumber(ARGV[1])
local limit, buckets = tonumber(ARGV[2]), tonumber(ARGV[3])
local bucket = math.floor(now) -- one-second buckets
local opened = {}
for i = 0, (#KEYS - 2) / 3 - 1 do
  local state, window, attempts = KEYS[3 + 3 * i], KEYS[4 + 3 * i], KEYS[5 + 3 * i]
  local target, failures, counts = ARGV[10 + 3 * i], tonumber(ARGV[11 + 3 * i]), ARGV[12 + 3 * i]
  if counts ~= '' then
    for outcome, count in string.gmatch(counts, '(%S+) (%d+)') do
      redis.call('HINCRBY', attempts, outcome, count)
    end
    redis.call('PEXPIRE', attempts, ARGV[7])
    redis.call('ZADD', KEYS[2], fmt(now), target)
    redis.call('PEXPIRE', KEYS[2], ARGV[7])
  end
  -- An open breaker counts nothing: its probe decides.
  if failures > 0 and redis.call('EXISTS', state) == 0 then
    local n, o = window_load(window, bucket, buckets)
    if n + failures >= limit then
      local open_until = fmt(now + tonumber(ARGV[4]))
      redis.call('DEL', window)
      redis.call('HSET', state, 'until', open_until)
      redis.call('PEXPIRE', state, ARGV[5])
      redis.call('ZADD', KEYS[1], open_until, target)
      redis.call('PEXPIRE', KEYS[1], ARGV[5])
      opened[#opened + 1] = target
    else
      window_add(window, bucket, n, o, ARGV[6], failures)
    end
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', fmt(now - tonumber(ARGV[8])))
-- The few breakers not closed; one whose state expired (a garbage collector
-- only: decisions compare with `now`) is closed.
local views = {}
for _, target in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local fields = redis.call('HMGET', ARGV[9] .. target, 'until', 'probe')
  if fields[1] then
    views[#views + 1] = target
    views[#views + 1] = fields[1]
    views[#views + 1] = fields[2] or ''
  else
    redis.call('ZREM', KEYS[1], target)
  end
end
return {opened, views}
