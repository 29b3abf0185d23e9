-- Set or lift the pause in one step (a script, not MULTI: the async client
-- pipelines every caller's commands on one connection).
-- KEYS: 1 the pause hash; ARGV: 1 its TTL in ms, then (to pause) reason,
-- automatic ('1'/'0'), since, until ('' = until resumed).
redis.call('DEL', KEYS[1])
if #ARGV > 1 then
  redis.call('HSET', KEYS[1], 'reason', ARGV[2], 'automatic', ARGV[3], 'since', ARGV[4], 'until', ARGV[5])
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 1
