-- Claim a step for one delivery of its message, and read what its input resolves from.
-- KEYS: run, step, vars, dependency steps...
-- ARGV: ref, now, worker, task id, max deliveries, task type, name,
--       '1' when the step reads the run's own record and variables (`${workflow...}`),
--       the message's route root ('' when it has none),
--       when the message was sent or due, ms ('' when unknown: the start, as for the later
--       steps of a fused message, which start as the one before ends),
--       for a step of a flow limit that may take its slot here: the limit's terms
--       (lib.lua take_slot; none when it has no such limit)
-- Replies {verdict, ...} with a ClaimVerdict ({'run', attempts, run, variables, dependency
-- records...}; 'slot' in place of 'run' when the step took its limit's slot here, held as
-- `<run>|<ref>|<attempt>`): a message whose root is not the run's
-- current one was sent before a rerun or restart and is 'stale', whatever its step says;
-- one of a run over for good is 'dropped' (a few reads, no write: a cancelled run may
-- have thousands of messages queued).
-- Each record is read once (HMGET) and written once: the counters are computed here, as
-- HINCRBY would, in the one HSET that claims the step.
local run = fields_of(KEYS[1], 'status', 'root')
local run_status = run.status
if not run_status then return {'missing'} end
if fenced_by(run.root, ARGV[9]) then return {'stale', run.root} end
if OVER[run_status] then return {'dropped', run_status} end
local step = fields_of(KEYS[2], 'status', 'deliveries', 'attempts', 'endTime')
local step_status = step.status
if step_status == 'COMPLETED' or step_status == 'COMPLETED_WITH_ERRORS'
   or step_status == 'SKIPPED' then
  return {'done', step_status, unstash(KEYS[1], redis.call('HGET', KEYS[2], 'output')) or ''}
end
if run_status ~= 'RUNNING' then return {'stopped', run_status} end
local deliveries = (tonumber(step.deliveries) or 0) + 1
local attempts = (tonumber(step.attempts) or 0) + 1
-- the fields in the order the record has always had them: deliveries first, attempts last
redis.call('HSET', KEYS[2], 'deliveries', tostring(deliveries), 'status', 'IN_PROGRESS',
  'referenceTaskName', ARGV[1], 'startTime', ARGV[2], 'workerId', ARGV[3], 'taskId', ARGV[4],
  'taskType', ARGV[6], 'taskDefName', ARGV[7], 'attempts', tostring(attempts),
  -- metrics: the step's queue wait is its startTime less this (lib.lua metrics_step_ended)
  'scheduledTime', (ARGV[10] or '') ~= '' and ARGV[10] or ARGV[2])
if step.endTime then redis.call('HDEL', KEYS[2], 'endTime') end
redis.call('SADD', part(KEYS[1], 'refs'), ARGV[1])
if deliveries > tonumber(ARGV[5]) then return {'exhausted', tostring(deliveries)} end
local verdict = 'run'
if ARGV[11] and take_slot(ARGV[11], run_id_of(KEYS[1]) .. '|' .. ARGV[1] .. '|' .. attempts) then
  verdict = 'slot'
end
local out = {verdict, attempts, {}, {}}
if ARGV[8] == '1' then
  out[3] = unstash_record(KEYS[1], redis.call('HGETALL', KEYS[1]))
  out[4] = redis.call('HGETALL', KEYS[3])
end
for i = 4, #KEYS do out[#out + 1] = unstash_record(KEYS[1], redis.call('HGETALL', KEYS[i])) end
return out
