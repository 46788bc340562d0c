-- Record a step's input and output; for the run's last step, end the run in the same call.
-- KEYS: run, step, alias step (or the step again)
-- ARGV: now, retention, input, output, run output ('' unless the run ends here), status,
--       error ('' for none), the status the step must have ('' for any), alias ref, route root,
--       the most bytes the run may record (0 for no limit), ref, the reason the run output
--       is refused ('' for none: the run completes; else it ends FAILED with it), '1' when the output
--       was taken from the output cache (recorded as `cached`), a waiting step's parked route
--       ('' for none: recorded with the output, so it is never completed from outside before)
-- Replies -1 when a status is required and the step is not in it (another caller completed
-- it, or its run was cancelled) or the write is fenced off. An output that takes the run's
-- recorded bytes over the limit is not recorded: the step and its run fail instead.
-- Each record is read once (HMGET): a field is deleted only when it is there.
-- ARGV 16, 17: the key and holder of a flow-limit slot the step took in its claim (none
-- when it took none), given back here whatever the record's fate: when others wait for
-- it (the caller hands it on) the reply is {'slot', reply}.
local function record()
  local refused = 0
  if ARGV[8] ~= '' then refused = -1 end
  local run = fields_of(KEYS[1], 'root', 'bytes', 'status')
  if fenced_by(run.root, ARGV[10]) then return refused end
  local status = run.status or false -- the run's, passed on so no helper reads it again
  local step = fields_of(KEYS[2], 'status', 'bytes', 'error', 'reasonForIncompletion', 'cached',
    'startTime', 'scheduledTime', 'taskDefName', 'taskType') -- the last four: metrics
  local current = step.status
  if ARGV[8] ~= '' and current ~= ARGV[8] then return -1 end
  if current == 'CANCELED' then return 0 end
  local size = #ARGV[4]
  local grown = size - tonumber(step.bytes or '0')
  local total = tonumber(run.bytes or '0') + grown
  local limit = tonumber(ARGV[11])
  if limit > 0 and grown > 0 and total > limit then
    local message = 'run: ' .. total .. ' bytes of input, outputs and variables, over the '
      .. 'limit of ' .. limit .. ' bytes (BATON_MAX_RUN_BYTES)'
    local error = cjson.encode({type = 'PayloadTooLarge', message = message})
    local reason = 'PayloadTooLarge: ' .. message
    redis.call('HSET', KEYS[2], 'status', 'FAILED', 'error', error, 'endTime', ARGV[1],
      'reasonForIncompletion', reason, 'input', stash(KEYS[1], ARGV[3], ARGV[2], status))
    redis.call('SADD', part(KEYS[1], 'refs'), ARGV[12])
    keep(KEYS[1], KEYS[2], ARGV[2], status)
    push_attempt(KEYS[1], KEYS[2], error, ARGV[1], ARGV[2])
    metrics_step_ended(KEYS[2], step, 'FAILED', ARGV[1])
    return finish(KEYS[1], 'FAILED', '', reason, ARGV[12], ARGV[1], ARGV[2], status)
  end
  redis.call('HINCRBY', KEYS[1], 'bytes', grown)
  -- one HSET, the fields in the order separate writes would have added them
  local fields = {'status', ARGV[6], 'input', stash(KEYS[1], ARGV[3], ARGV[2], status),
    'output', stash(KEYS[1], ARGV[4], ARGV[2], status), 'endTime', ARGV[1], 'bytes', size}
  local gone = {}
  if ARGV[7] == '' then
    if step.error then gone[#gone + 1] = 'error' end
    if step.reasonForIncompletion then gone[#gone + 1] = 'reasonForIncompletion' end
  else
    fields[#fields + 1] = 'error'
    fields[#fields + 1] = ARGV[7]
  end
  if ARGV[14] == '1' then
    fields[#fields + 1] = 'cached'
    fields[#fields + 1] = 'true'
  elseif step.cached then
    gone[#gone + 1] = 'cached'
  end
  if ARGV[15] ~= '' then
    fields[#fields + 1] = 'parked'
    fields[#fields + 1] = ARGV[15]
  end
  redis.call('HSET', KEYS[2], unpack(fields))
  if #gone > 0 then redis.call('HDEL', KEYS[2], unpack(gone)) end
  keep(KEYS[1], KEYS[2], ARGV[2], status)
  if KEYS[3] ~= KEYS[2] then
    -- a step of a loop iteration: its unsuffixed ref always holds the latest iteration
    local record = redis.call('HGETALL', KEYS[2])
    redis.call('DEL', KEYS[3])
    redis.call('HSET', KEYS[3], unpack(record))
    redis.call('HDEL', KEYS[3], 'bytes') -- a copy: counted once, on the iteration's record
    redis.call('SADD', part(KEYS[1], 'aliases'), ARGV[9])
    keep(KEYS[1], KEYS[3], ARGV[2], status)
  end
  -- metrics ----------------------------------------------------------------------------
  metrics_step_ended(KEYS[2], step, ARGV[6], ARGV[1])
  -- -------------------------------------------------------------------------------------
  if ARGV[5] == '' then return 0 end
  local ending = 'COMPLETED'
  if ARGV[13] ~= '' then ending = 'FAILED' end
  return finish(KEYS[1], ending, stash(KEYS[1], ARGV[5], ARGV[2], status), ARGV[13], '',
    ARGV[1], ARGV[2], status)
end

local result = record()
if ARGV[16] and free_slot(ARGV[16], ARGV[17]) == 1 then return {'slot', result} end
return result
