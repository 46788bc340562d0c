"""The run store's Lua scripts: each state change of a run is one atomic script.

A script that ends a run returns {1, status, parent run id, parent step ref, reason, root},
so that the store can carry a child run's failure to the step that started it.
"""

from __future__ import annotations

from typing import Final

# Ends a script that ended its run: {1, status, parent run id, parent step ref, reason,
# root of the route the run was started on}.
_ENDED: Final = """return {1, redis.call('HGET', KEYS[1], 'status'),
  redis.call('HGET', KEYS[1], 'parentWorkflowId') or '',
  redis.call('HGET', KEYS[1], 'parentWorkflowTaskRef') or '',
  redis.call('HGET', KEYS[1], 'reasonForIncompletion') or '',
  redis.call('HGET', KEYS[1], 'root') or ''}"""


def _fence(run: str) -> str:
    """Lua that does nothing (returns 0) for a write from an earlier route of the run.

    The script's last ARGV is the writing task's route root ('' outside a task). Each rerun
    and restart gives the run a new root: a task of an earlier attempt, still running when
    the run was started again, must not write over the new attempt's records.
    """
    return f"""local fence = redis.call('HGET', {run}, 'root')
if fence and ARGV[#ARGV] ~= '' and fence ~= ARGV[#ARGV] then return 0 end
"""


def _push_attempt(step: str, attempts: str, error: str) -> str:
    """Lua that appends the step's current attempt, ended now with `error`, to its list."""
    return f"""redis.call('RPUSH', {attempts}, '{{"attempt":' ..
  (redis.call('HGET', {step}, 'attempts') or '0')
  .. ',"startTime":' .. (redis.call('HGET', {step}, 'startTime') or 'null')
  .. ',"endTime":' .. ARGV[1] .. ',"error":' .. {error} .. '}}')
redis.call('EXPIRE', {attempts}, ARGV[2])"""


# KEYS: run, idempotency-or-run (placeholder), definition, runs index, vars
# ARGV: run id, retention, definition json, idempotency key ('' for none), now,
#       number of run field args n, n run field args, then variable name/value pairs
CREATE_RUN: Final = """
if ARGV[4] ~= '' then
  local existing = redis.call('GET', KEYS[2])
  if existing then return existing end
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
end
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HGET', KEYS[1], 'workflowId') end
redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[2])
local n = tonumber(ARGV[6])
redis.call('HSET', KEYS[1], unpack(ARGV, 7, 6 + n))
redis.call('EXPIRE', KEYS[1], ARGV[2])
if #ARGV > 6 + n then
  redis.call('HSET', KEYS[5], unpack(ARGV, 7 + n))
  redis.call('EXPIRE', KEYS[5], ARGV[2])
end
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ARGV[5] - ARGV[2] * 1000)
return ARGV[1]
"""

# KEYS: run, step, refs, vars, dependency steps...
# ARGV: ref, now, worker, task id, retention, max deliveries, task type, name,
#       '1' when the step reads the run's own record and variables (`${workflow...}`),
#       the message's route root ('' when it has none)
# A message whose root is not the run's current one was sent before a rerun or restart:
# it is 'stale' and does nothing, whatever its step's record says.
CLAIM_STEP: Final = """
local run_status = redis.call('HGET', KEYS[1], 'status')
if not run_status then return {'missing'} end
local fence = redis.call('HGET', KEYS[1], 'root')
if fence and ARGV[10] ~= '' and fence ~= ARGV[10] then return {'stale', fence} end
local step_status = redis.call('HGET', KEYS[2], 'status')
if step_status == 'COMPLETED' or step_status == 'COMPLETED_WITH_ERRORS'
   or step_status == 'SKIPPED' then
  return {'done', step_status, redis.call('HGET', KEYS[2], 'output') or ''}
end
if run_status ~= 'RUNNING' then return {'stopped', run_status} end
local deliveries = redis.call('HINCRBY', KEYS[2], 'deliveries', 1)
redis.call('HSET', KEYS[2], 'status', 'IN_PROGRESS', 'referenceTaskName', ARGV[1],
  'startTime', ARGV[2], 'workerId', ARGV[3], 'taskId', ARGV[4], 'taskType', ARGV[7],
  'taskDefName', ARGV[8])
redis.call('HDEL', KEYS[2], 'endTime')
local attempts = redis.call('HINCRBY', KEYS[2], 'attempts', 1)
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[3], ARGV[5])
if deliveries > tonumber(ARGV[6]) then return {'exhausted', tostring(deliveries)} end
local out = {'run', attempts, {}, {}}
if ARGV[9] == '1' then
  out[3] = redis.call('HGETALL', KEYS[1])
  out[4] = redis.call('HGETALL', KEYS[4])
end
for i = 5, #KEYS do out[#out + 1] = redis.call('HGETALL', KEYS[i]) end
return out
"""

# KEYS: run, step, attempts ; ARGV: now, retention, step status, error json, reason, ref,
#       run status ('' keeps the run going: a permissive step), input json ('' for none),
#       the step's message ('' for none), kept so that the run can be retried, route root
FAIL_STEP: Final = _fence("KEYS[1]") + """
if redis.call('HGET', KEYS[2], 'status') == 'CANCELED' then return 0 end
redis.call('HSET', KEYS[2], 'status', ARGV[3], 'error', ARGV[4], 'endTime', ARGV[1],
  'reasonForIncompletion', ARGV[5])
if ARGV[8] ~= '' then redis.call('HSET', KEYS[2], 'input', ARGV[8]) end
if ARGV[9] ~= '' then redis.call('HSET', KEYS[2], 'message', ARGV[9]) end
redis.call('EXPIRE', KEYS[2], ARGV[2])
""" + _push_attempt(step="KEYS[2]", attempts="KEYS[3]", error="ARGV[4]") + """
if redis.call('HGET', KEYS[1], 'status') ~= 'RUNNING' then return 0 end
if ARGV[7] == '' then
  redis.call('HSETNX', KEYS[1], 'permissiveFailure', ARGV[6])
  return 0
end
redis.call('HSET', KEYS[1], 'status', ARGV[7], 'reasonForIncompletion', ARGV[5],
  'failedReferenceTaskName', ARGV[6], 'endTime', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
""" + _ENDED + """
"""

# KEYS: step, attempts, run ; ARGV: now, retention, error json, input json, reason, root
RETRY_STEP: Final = _fence("KEYS[3]") + _push_attempt(
    step="KEYS[1]", attempts="KEYS[2]", error="ARGV[3]") + """
redis.call('HSET', KEYS[1], 'status', 'SCHEDULED', 'error', ARGV[3], 'input', ARGV[4],
  'endTime', ARGV[1], 'deliveries', '0', 'reasonForIncompletion', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: run, refs ; ARGV: now, retention, status, output json, reason, failed ref, root
END_RUN: Final = _fence("KEYS[1]") + """
if redis.call('HGET', KEYS[1], 'status') ~= 'RUNNING' then return 0 end
local failed = redis.call('HGET', KEYS[1], 'permissiveFailure')
if ARGV[3] == 'COMPLETED' and failed then
  redis.call('HSET', KEYS[1], 'status', 'FAILED', 'failedReferenceTaskName', failed,
    'reasonForIncompletion', 'permissive step ' .. failed .. ' failed', 'endTime', ARGV[1])
else
  redis.call('HSET', KEYS[1], 'status', ARGV[3], 'output', ARGV[4], 'endTime', ARGV[1])
  if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'reasonForIncompletion', ARGV[5]) end
  if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'failedReferenceTaskName', ARGV[6]) end
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
""" + _ENDED + """
"""

# KEYS: run, step, refs, alias step (or the step again) ;
# ARGV: now, retention, input, output, run output ('' unless final), status, error ('' none),
#       route root
COMPLETE_STEP: Final = _fence("KEYS[1]") + """
if redis.call('HGET', KEYS[2], 'status') == 'CANCELED' then return 0 end
redis.call('HSET', KEYS[2], 'status', ARGV[6], 'input', ARGV[3], 'output', ARGV[4],
  'endTime', ARGV[1])
if ARGV[7] == '' then
  redis.call('HDEL', KEYS[2], 'error', 'reasonForIncompletion')
else
  redis.call('HSET', KEYS[2], 'error', ARGV[7])
end
redis.call('EXPIRE', KEYS[2], ARGV[2])
if KEYS[4] ~= KEYS[2] then
  -- a step of a loop iteration: its unsuffixed ref always holds the latest iteration
  local record = redis.call('HGETALL', KEYS[2])
  redis.call('DEL', KEYS[4])
  redis.call('HSET', KEYS[4], unpack(record))
  redis.call('EXPIRE', KEYS[4], ARGV[2])
end
if ARGV[5] == '' or redis.call('HGET', KEYS[1], 'status') ~= 'RUNNING' then return 0 end
local failed = redis.call('HGET', KEYS[1], 'permissiveFailure')
if failed then
  redis.call('HSET', KEYS[1], 'status', 'FAILED', 'failedReferenceTaskName', failed,
    'reasonForIncompletion', 'permissive step ' .. failed .. ' failed', 'endTime', ARGV[1])
else
  redis.call('HSET', KEYS[1], 'status', 'COMPLETED', 'output', ARGV[5], 'endTime', ARGV[1])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[2])
""" + _ENDED + """
"""
