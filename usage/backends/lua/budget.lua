-- A budget day's figures and the pause, after releasing expired reservations.
-- KEYS: 1 live marker, 2 pause, 3 budget of the day, 4 open reservations,
--       5 their expiry times, 6 expired reservations
-- ARGV: 1 now, 2 device budget key prefix, 3 budget ttl
if redis.call('EXISTS', KEYS[1]) == 0 then return {'not_live'} end
purge_expired(KEYS[4], KEYS[5], KEYS[6], KEYS[3], ARGV[2], tonumber(ARGV[1]), ARGV[3])
local money = redis.call('HMGET', KEYS[3], 'spent', 'reserved')
local pause = redis.call('HMGET', KEYS[2], 'reason', 'automatic', 'since', 'until')
local has_pause = 0
if pause[1] and (pause[4] == '' or tonumber(ARGV[1]) < tonumber(pause[4])) then has_pause = 1 end
return {'ok', money[1] or '0', money[2] or '0', has_pause, pause[1] or '', pause[2] or '',
  pause[3] or '', pause[4] or ''}
