-- Push back the expiry of an open reservation (a long stream is alive).
-- KEYS: 1 open reservations, 2 their expiry times; ARGV: 1 request id, 2 expiry
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
