-- Record a step's failure and end its run with it (a paused run ends when resumed).
-- KEYS: run, step
-- ARGV: now, retention, step status, error json, reason, ref,
--       run status ('' keeps the run going: a permissive step), input json ('' for none),
--       the step's message ('' for none; kept so that the run can be retried), route root,
--       the status the step must have ('' for any but CANCELED)
if fenced(KEYS[1], ARGV[10]) then return 0 end
-- one HMGET: the status, and what the metrics read (lib.lua metrics_step_ended)
local metric_step = fields_of(KEYS[2], unpack(METRIC_STEP_FIELDS))
local current = metric_step.status
if current == 'CANCELED' then return 0 end
if (ARGV[11] or '') ~= '' and current ~= ARGV[11] then return 0 end
redis.call('HSET', KEYS[2], 'status', ARGV[3], 'error', ARGV[4], 'endTime', ARGV[1],
  'reasonForIncompletion', ARGV[5])
if ARGV[8] ~= '' then
  redis.call('HSET', KEYS[2], 'input', stash(KEYS[1], ARGV[8], ARGV[2]))
end
if ARGV[9] ~= '' then redis.call('HSET', KEYS[2], 'message', ARGV[9]) end
redis.call('SADD', part(KEYS[1], 'refs'), ARGV[6])
keep(KEYS[1], KEYS[2], ARGV[2])
push_attempt(KEYS[1], KEYS[2], ARGV[4], ARGV[1], ARGV[2])
-- metrics ----------------------------------------------------------------------------
metrics_step_ended(KEYS[2], metric_step, ARGV[3], ARGV[1])
-- -------------------------------------------------------------------------------------
if ARGV[7] == '' then
  local status = redis.call('HGET', KEYS[1], 'status')
  if status == 'RUNNING' or status == 'PAUSED' then
    redis.call('HSETNX', KEYS[1], 'permissiveFailure', ARGV[6])
  end
  return 0
end
return finish(KEYS[1], ARGV[7], '', ARGV[5], ARGV[6], ARGV[1], ARGV[2])
