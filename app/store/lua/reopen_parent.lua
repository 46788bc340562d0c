-- Reopen a run that ended because one of its SUB_WORKFLOW children failed, now that the
-- child runs again: the parent's step waits on the child once more, as Conductor's retry.
-- KEYS: parent run ; ARGV: the parent's step ref, child run id
-- Replies {'ok', {held-back messages}, grandparent id, grandparent step ref}, or
-- {'no', why} when the parent did not end at that step for that child.
if not is_ended(KEYS[1]) or redis.call('HGET', KEYS[1], 'status') == 'COMPLETED' then
  return {'no', 'the parent is ' .. (redis.call('HGET', KEYS[1], 'status') or 'gone')}
end
if redis.call('HGET', KEYS[1], 'failedReferenceTaskName') ~= ARGV[1] then
  return {'no', 'the parent did not fail at its step ' .. ARGV[1]}
end
local step = step_of(KEYS[1], ARGV[1])
local output = unstash(KEYS[1], redis.call('HGET', step, 'output'))
if not output or cjson.decode(output)['subWorkflowId'] ~= ARGV[2] then
  return {'no', 'the step ' .. ARGV[1] .. ' started another run'}
end
reopen_run(KEYS[1])
redis.call('HSET', step, 'status', 'IN_PROGRESS')
redis.call('HDEL', step, 'endTime', 'error', 'reasonForIncompletion')
local parked = part(KEYS[1], 'parked')
local messages = redis.call('LRANGE', parked, 0, -1)
redis.call('DEL', parked)
return {'ok', messages, redis.call('HGET', KEYS[1], 'parentWorkflowId') or '',
        redis.call('HGET', KEYS[1], 'parentWorkflowTaskRef') or ''}
