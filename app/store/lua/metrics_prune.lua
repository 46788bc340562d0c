-- Take off the set of waiting steps the keys of steps that no longer wait (app/store/metrics.py).
-- KEYS: the set, then the step keys to look at again
local removed = 0
for i = 2, #KEYS do
  local step = redis.call('HMGET', KEYS[i], 'status', 'taskType')
  if not (step[1] == 'IN_PROGRESS' and (step[2] == 'WAIT' or step[2] == 'HUMAN')) then
    removed = removed + redis.call('SREM', KEYS[1], KEYS[i])
  end
end
return removed
