-- Claim a breaker's probe: once its cool-down is over and no probe is
-- claimed, the first caller across every process gets it, until `now +
-- probe seconds` (then another may: a lost probe does not wedge the breaker).
-- KEYS: 1 the breaker's state; ARGV: 1 now, 2 probe seconds, 3 state ttl
-- Returns {won (1/0), open until ('' = closed), probe until ('' = none)}
local fields = redis.call('HMGET', KEYS[1], 'until', 'probe')
if not fields[1] then return {0, '', ''} end
local now = tonumber(ARGV[1])
if now < tonumber(fields[1]) or now < (tonumber(fields[2] or '0') or 0) then
  return {0, fields[1], fields[2] or ''}
end
local probe_until = fmt(now + tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'probe', probe_until)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, fields[1], probe_until}
