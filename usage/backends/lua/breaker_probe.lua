-- A probe's outcome. Success closes the breaker (only the first caller is
-- told it did); failure opens it for another cool-down, with no probe claimed.
-- KEYS: 1 the breaker's state, 2 its failure window, 3 index of breakers not closed
-- ARGV: 1 now, 2 '1' success / '0' failure, 3 cool-down seconds, 4 state ttl, 5 target
-- Returns {closed by this call (1/0), open until ('' = closed)}
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, ''} end
if ARGV[2] == '1' then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('ZREM', KEYS[3], ARGV[5])
  return {1, ''}
end
local open_until = fmt(tonumber(ARGV[1]) + tonumber(ARGV[3]))
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'until', open_until)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[3], open_until, ARGV[5])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return {0, open_until}
