-- Take off the set of waiting steps the keys of steps that no longer wait (app/store/metrics.py).
-- KEYS: the set, then the step keys to look at again
local WAIT_TYPES = {__METRIC_WAIT_TYPES__}
local removed = 0
for i = 2, #KEYS do
  local step = redis.call('HMGET', KEYS[i], 'status', 'taskType')
  if not (step[1] == 'IN_PROGRESS' and WAIT_TYPES[step[2] or '']) then
    removed = removed + redis.call('SREM', KEYS[1], KEYS[i])
  end
end
return removed
