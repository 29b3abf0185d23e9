-- Settle: the actual cost replaces the reservation, exactly once.
--
-- KEYS: 1 live marker, 2 open reservations, 3 their expiry times, 4 expired
--       reservations, 5 orphans, 6 budget of the day, 7 device's budget
-- ARGV: 1 request id, 2 actual cost, 3 generation that admitted it, 4 ttl
-- Returns 1 the first time, 0 afterwards, -1 when the counters are not live.

local generation = redis.call('GET', KEYS[1])
if not generation then return -1 end
local request_id = ARGV[1]
local entry = redis.call('HGET', KEYS[2], request_id)
if entry then
  local amount = string.match(entry, '^(%d+) ')
  redis.call('HDEL', KEYS[2], request_id)
  redis.call('ZREM', KEYS[3], request_id)
  decrement(KEYS[6], 'reserved', amount)
  decrement(KEYS[7], 'reserved', amount)
elseif redis.call('HDEL', KEYS[4], request_id) == 0 then
  -- Neither open nor expired: settled already, unless the store lost its
  -- data since this request was admitted (another generation); then count
  -- it once, as the rebuilt counters cannot know about it.
  if generation == ARGV[3] or redis.call('SADD', KEYS[5], request_id) == 0 then
    return 0
  end
  redis.call('PEXPIRE', KEYS[5], ARGV[4])
end
redis.call('HINCRBY', KEYS[6], 'spent', ARGV[2])
redis.call('HINCRBY', KEYS[7], 'spent', ARGV[2])
redis.call('PEXPIRE', KEYS[6], ARGV[4])
redis.call('PEXPIRE', KEYS[7], ARGV[4])
return 1
