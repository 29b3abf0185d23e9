-- Count one event in a sub-bucket window if it has room (registrations).
-- KEYS: 1 window; ARGV: 1 now, 2 bucket seconds, 3 buckets, 4 limit, 5 ttl
-- Returns {admitted (1/0), count, reset}
local now = tonumber(ARGV[1])
local bucket_seconds, buckets = tonumber(ARGV[2]), tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
local bucket = math.floor(now / bucket_seconds)
local n, o = window_load(KEYS[1], bucket, buckets)
if n >= limit then
  return {0, n, fmt(window_reset_at(KEYS[1], n, o, n - limit + 1, bucket, buckets,
    bucket_seconds, now))}
end
o = window_add(KEYS[1], bucket, n, o, ARGV[5])
return {1, n + 1, fmt(window_reset_at(KEYS[1], n + 1, o, 1, bucket, buckets, bucket_seconds, now))}
