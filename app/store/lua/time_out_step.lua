-- Time out a step that waits (a SUB_WORKFLOW, JOIN or DO_WHILE step) and end its run
-- TIMED_OUT, unless the step ended first: its completion and its timeout race here, and
-- exactly one of them wins. The run's other open steps are
-- cancelled, as when the run times out; a paused run keeps the end until it is resumed.
-- KEYS: run, step, alias step (or the step again)
-- ARGV: now, retention, ref, reason, error json, route root, task type, task name,
--       start time ('' to keep the record's), alias ref ('' for none)
-- Replies false when nothing was timed out, else {<ended reply or 0>, task ids cancelled}.
if fenced(KEYS[1], ARGV[6]) then return false end
local run_status = redis.call('HGET', KEYS[1], 'status')
if run_status ~= 'RUNNING' and run_status ~= 'PAUSED' then return false end
local current = redis.call('HGET', KEYS[2], 'status')
if current and STEP_ENDED[current] then return false end
redis.call('HSET', KEYS[2], 'status', 'TIMED_OUT', 'endTime', ARGV[1],
  'reasonForIncompletion', ARGV[4], 'error', ARGV[5], 'referenceTaskName', ARGV[3],
  'taskType', ARGV[7], 'taskDefName', ARGV[8])
if ARGV[9] ~= '' then redis.call('HSETNX', KEYS[2], 'startTime', ARGV[9]) end
redis.call('SADD', part(KEYS[1], 'refs'), ARGV[3])
push_attempt(KEYS[1], KEYS[2], ARGV[5], ARGV[1], ARGV[2])
if KEYS[3] ~= KEYS[2] then
  -- a step of a loop iteration: its unsuffixed ref always holds the latest iteration
  local record = redis.call('HGETALL', KEYS[2])
  redis.call('DEL', KEYS[3])
  redis.call('HSET', KEYS[3], unpack(record))
  redis.call('HDEL', KEYS[3], 'bytes')
  redis.call('SADD', part(KEYS[1], 'aliases'), ARGV[10])
end
if run_status == 'PAUSED' then
  return {finish(KEYS[1], 'TIMED_OUT', '', ARGV[4], ARGV[3], ARGV[1], ARGV[2]), {}}
end
local revoked = cancel_open_steps(KEYS[1], ARGV[1])
return {close(KEYS[1], 'TIMED_OUT', '', ARGV[4], ARGV[3], ARGV[1], ARGV[2]), revoked}
