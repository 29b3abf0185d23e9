-- Add a member to a bounded set of distinct values (a device's client IPs of a day).
-- KEYS: 1 the set; ARGV: 1 member, 2 cap, 3 ttl (ms)
-- Returns the set's size after adding, or 0 when nothing was added: already
-- a member, or the set already holds more than the cap (it stops growing
-- there, so whoever crossed the cap is told exactly once).
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 0 end
local count = redis.call('SCARD', KEYS[1])
if count > tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return count + 1
