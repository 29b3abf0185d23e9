-- Give back a probe that was claimed but not used: another caller may claim
-- it at once. Only that claim is lifted (a lapsed claim may have been taken
-- again meanwhile: that one stays).
-- KEYS: 1 the breaker's state; ARGV: 1 the claim's probe until
-- Returns {open until ('' = closed), probe until ('' = none)}
local fields = redis.call('HMGET', KEYS[1], 'until', 'probe')
if not fields[1] then return {'', ''} end
if fields[2] and tonumber(fields[2]) == tonumber(ARGV[1]) then
  redis.call('HDEL', KEYS[1], 'probe')
  return {fields[1], ''}
end
return {fields[1], fields[2] or ''}
