-- Settle: the actual cost replaces the reservation, exactly once.
--
-- KEYS: 1 live marker, 2 open reservations, 3 due reservations, 4 expired
--       reservations, 5 orphans, 6 budget of the day, 7 device's budget,
--       8 the device's requests in flight, 9 pause
-- ARGV: 1 request id, 2 actual cost, 3 generation that admitted it, 4 ttl,
--       5 budget day, 6 the numbers "now budget floor next-day pause-ttl"
--       (next-day is '-' when the reservation's day is not today: a late
--       settle of yesterday pauses nothing)
-- Returns 1 the first time, 2 the first time when it paused the service,
--         0 afterwards, -1 when the counters are not live.

local generation = redis.call('GET', KEYS[1])
if not generation then return -1 end
local request_id, actual = ARGV[1], ARGV[2]
redis.call('HDEL', KEYS[8], request_id)
local entry = redis.call('HGET', KEYS[2], request_id)
local charged = actual
if entry then
  local amount = string.match(entry, '^(%d+) ')
  redis.call('HDEL', KEYS[2], request_id)
  redis.call('ZREM', KEYS[3], ARGV[5] .. ' ' .. request_id)
  decrement(KEYS[6], 'reserved', amount)
  decrement(KEYS[7], 'reserved', amount)
else
  local expired = redis.call('HGET', KEYS[4], request_id)
  if expired then
    -- Its process was declared dead and its worst case counted as spent:
    -- replace that by the real cost.
    redis.call('HDEL', KEYS[4], request_id)
    charged = whole(tonumber(actual) - tonumber(string.match(expired, '^(%d+) ')))
  elseif generation == ARGV[3] or redis.call('SADD', KEYS[5], request_id) == 0 then
    -- Settled already, unless the store lost its data since this request was
    -- admitted (another generation); then count it once, as the rebuilt
    -- counters cannot know about it.
    return 0
  else
    redis.call('PEXPIRE', KEYS[5], ARGV[4])
  end
end
if charged ~= '0' then
  redis.call('HINCRBY', KEYS[6], 'spent', charged)
  redis.call('HINCRBY', KEYS[7], 'spent', charged)
end
redis.call('PEXPIRE', KEYS[6], ARGV[4])
redis.call('PEXPIRE', KEYS[7], ARGV[4])
local n = {}
for token in string.gmatch(ARGV[6], '%S+') do n[#n + 1] = token end
if n[4] ~= '-' and pause_if_spent(KEYS[9], KEYS[6], tonumber(n[2]), tonumber(n[3]), n[1], n[4],
    n[5]) then
  return 2
end
return 1
