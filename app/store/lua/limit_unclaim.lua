-- Put a step that its limit holds back as it was before its claim: SCHEDULED, with the
-- claim's delivery and attempt uncounted (waiting is neither), noting what it waits on.
-- KEYS: step; ARGV: the claiming task id, what it waits on.
-- Only the claim of this task is undone: once the step was handed on and claimed again
-- by another delivery, that claim stands.
local step = redis.call('HMGET', KEYS[1], 'status', 'taskId', 'deliveries', 'attempts')
if step[1] ~= 'IN_PROGRESS' or step[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', 'SCHEDULED', 'waitingOn', ARGV[2],
  'deliveries', tostring(math.max((tonumber(step[3]) or 1) - 1, 0)),
  'attempts', tostring(math.max((tonumber(step[4]) or 1) - 1, 0)))
redis.call('HDEL', KEYS[1], 'startTime', 'workerId')
return 1
