-- Breakers for the dashboard: each target's state, its failures within the
-- window and its attempts by outcome over the last minutes.
-- KEYS: 1 index of counted targets
-- ARGV: 1 now, 2 buckets of the window, 3 minutes, 4 seconds a counted
--       target stays indexed, 5 state key prefix, 6 window key prefix,
--       7 attempts key prefix, then targets to show even if never counted
-- Returns {target, open until ('' = closed), probe until, failures in window,
--          "<outcome> <count> ...", ...}
local now = tonumber(ARGV[1])
local buckets, minutes = tonumber(ARGV[2]), tonumber(ARGV[3])
local targets, seen = {}, {}
local function add(target)
  if not seen[target] then
    seen[target] = true
    targets[#targets + 1] = target
  end
end
for _, target in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], fmt(now - tonumber(ARGV[4])), '+inf')) do
  add(target)
end
for i = 8, #ARGV do add(ARGV[i]) end
local minute = math.floor(now / 60)
local result = {}
for _, target in ipairs(targets) do
  local fields = redis.call('HMGET', ARGV[5] .. target, 'until', 'probe')
  local failures = 0
  if not fields[1] then
    failures = window_load(ARGV[6] .. target, math.floor(now), buckets)
  end
  local sums, order = {}, {}
  for m = minute - minutes + 1, minute do
    local pairs_ = redis.call('HGETALL', ARGV[7] .. m .. ':' .. target)
    for j = 1, #pairs_, 2 do
      local outcome = pairs_[j]
      if not sums[outcome] then
        sums[outcome] = 0
        order[#order + 1] = outcome
      end
      sums[outcome] = sums[outcome] + tonumber(pairs_[j + 1])
    end
  end
  local counts = {}
  for _, outcome in ipairs(order) do counts[#counts + 1] = outcome .. ' ' .. sums[outcome] end
  result[#result + 1] = target
  result[#result + 1] = fields[1] or ''
  result[#result + 1] = fields[2] or ''
  result[#result + 1] = failures
  result[#result + 1] = table.concat(counts, ' ')
end
return result
