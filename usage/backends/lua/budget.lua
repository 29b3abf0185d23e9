-- A budget day's figures and the pause, after counting dead processes'
-- reservations as spent.
-- KEYS: 1 live marker, 2 pause, 3 budget of the day, 4 due reservations
-- ARGV: 1 now, 2 budget key prefix, 3 budget ttl, 4 liveness seconds,
--       5 process key prefix, 6 in-flight key prefix
if redis.call('EXISTS', KEYS[1]) == 0 then return {'not_live'} end
local now = tonumber(ARGV[1])
purge_dead(KEYS[4], ARGV[2], ARGV[5], ARGV[6], now, tonumber(ARGV[4]), ARGV[3])
local money = redis.call('HMGET', KEYS[3], 'spent', 'reserved')
local pause = redis.call('HMGET', KEYS[2], 'reason', 'automatic', 'since', 'until')
local has_pause = 0
if pause[1] and (pause[4] == '' or now < tonumber(pause[4])) then has_pause = 1 end
return {'ok', money[1] or '0', money[2] or '0', has_pause, pause[1] or '', pause[2] or '',
  pause[3] or '', pause[4] or ''}
