-- Count a failed authentication; at the limit, block the IP.
-- KEYS: 1 failure window, 2 block, 3 index of blocks
-- ARGV: 1 now, 2 bucket seconds, 3 buckets, 4 limit, 5 window ttl,
--       6 block seconds, 7 ip, 8 block ttl
-- Returns the end of the block as text when this failure blocked, else ''.
local now = tonumber(ARGV[1])
local bucket_seconds, buckets = tonumber(ARGV[2]), tonumber(ARGV[3])
local bucket = math.floor(now / bucket_seconds)
local n, o = window_load(KEYS[1], bucket, buckets)
window_add(KEYS[1], bucket, n, o, ARGV[5])
if n + 1 < tonumber(ARGV[4]) then return '' end
local block_end = fmt(now + tonumber(ARGV[6]))
redis.call('SET', KEYS[2], block_end, 'PX', ARGV[8])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[1])
redis.call('ZADD', KEYS[3], block_end, ARGV[7])
redis.call('PEXPIRE', KEYS[3], ARGV[8])
return block_end
