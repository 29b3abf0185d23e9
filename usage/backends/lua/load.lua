-- Load counters rebuilt from the ledger and mark them live, unless another
-- process already did (then only release our lock). Only the holder of the
-- rebuild lock may load.
--
-- KEYS: 1 live marker, 2 rebuild lock, 3 pause
-- ARGV: 1 lock token, 2 generation, 3 snapshot (JSON), 4 window ttl,
--       5 burst ttl, 6 budget ttl, 7 live ttl, 8 pause ttl
-- Returns 1 loaded, 0 already live, -1 lock lost.
-- The snapshot names its keys itself (all under the same {hz} hash tag).

if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
  return 0
end
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end

local snapshot = cjson.decode(ARGV[3])
for key, counts in pairs(snapshot.windows) do
  redis.call('DEL', key)
  local n, o = 0, nil
  for b, c in pairs(counts) do
    redis.call('HSET', key, b, c)
    n = n + c
    local index = tonumber(b)
    if o == nil or index < o then o = index end
  end
  if n > 0 then
    redis.call('HSET', key, 'n', n, 'o', o)
    redis.call('PEXPIRE', key, ARGV[4])
  end
end
for key, entries in pairs(snapshot.logs) do
  redis.call('DEL', key)
  for _, entry in ipairs(entries) do redis.call('ZADD', key, entry[1], entry[2]) end
  redis.call('PEXPIRE', key, ARGV[5])
end
redis.call('HSET', snapshot.budget_key, 'spent', snapshot.spent)
redis.call('PEXPIRE', snapshot.budget_key, ARGV[6])
for key, spent in pairs(snapshot.devices) do
  redis.call('HSET', key, 'spent', spent)
  redis.call('PEXPIRE', key, ARGV[6])
end
if snapshot.pause then
  local pause = snapshot.pause
  redis.call('DEL', KEYS[3])
  redis.call('HSET', KEYS[3], 'reason', pause[1], 'automatic', pause[2], 'since', pause[3],
    'until', pause[4])
  redis.call('PEXPIRE', KEYS[3], ARGV[8])
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[7])
redis.call('DEL', KEYS[2])
return 1
