-- Shared by every script of the run store: the loader puts it before each script.
-- A run's other keys are named from its run key (`<prefix>:run:{id}`), as keys.py names
-- them: `<run>:refs|vars|dynamic|parked|aliases`, `<prefix>:step:{id}:<ref>[:attempts]`.
-- Retention counts from a run's end: while a run is open its keys have no expiry; ending
-- the run sets one on every key it has, and reopening it (retry, rerun) takes them off.

local PREFIX = '__PREFIX__'
local RUN_PREFIX = PREFIX .. ':run:'

local function part(run, name) return run .. ':' .. name end

local function step_of(run, ref)
  return PREFIX .. ':step:' .. string.sub(run, #RUN_PREFIX + 1) .. ':' .. ref
end

local function definition_of(digest) return PREFIX .. ':definition:' .. digest end

local ENDED = {COMPLETED = true, FAILED = true, TIMED_OUT = true, TERMINATED = true}

-- Ended for good: `retry` reopens a run only at a failed step that kept its message, which
-- a cancelled, timed-out or TERMINATE-ended run has not; its messages are dropped, not held
-- back (status.py's OVER_RUN_STATUSES).
local OVER = {TIMED_OUT = true, TERMINATED = true}

local function is_ended(run)
  return ENDED[redis.call('HGET', run, 'status') or ''] == true
end

-- A write from an earlier route of the run (`root` is the writer's route root, '' outside
-- a task): each rerun and restart gives the run a new root, and a task of an earlier
-- attempt must not write over the new attempt's records.
local function fenced(run, root)
  local fence = redis.call('HGET', run, 'root')
  return fence and root ~= '' and fence ~= root
end

-- Give a key written after its run ended the run's retention.
local function keep(run, key, retention)
  if is_ended(run) then redis.call('EXPIRE', key, retention) end
end

-- Payloads (a run's input and output, a step's input and output) of STASH_MIN bytes or
-- more are kept once per run, by content, in `<run>:blob:<sha1>`; the record holds '@' and
-- the digest instead (JSON text never starts with '@'). A step that passes its input on, a
-- step input that is the run's input, a run output that is the last step's: one copy each.
local STASH_MIN = 1024
local STASH_MARK = 64 -- '@'

local function blob_of(run, digest) return part(run, 'blob:' .. digest) end

-- The text to record for a payload: itself when small, else its digest, with the text
-- kept under the run's blobs (expired and persisted with the run).
local function stash(run, text, retention)
  if #text < STASH_MIN then return text end
  local digest = redis.sha1hex(text)
  local blob = blob_of(run, digest)
  if redis.call('SADD', part(run, 'blobs'), digest) == 1 then
    redis.call('SET', blob, text)
  end
  keep(run, blob, retention)
  keep(run, part(run, 'blobs'), retention)
  return '@' .. digest
end

-- The payload a recorded value stands for.
local function unstash(run, value)
  if not value or string.byte(value, 1) ~= STASH_MARK then return value end
  return redis.call('GET', blob_of(run, string.sub(value, 2))) or ''
end

-- A record's flat HGETALL reply with its input and output as recorded payloads.
local function unstash_record(run, flat)
  for i = 1, #flat - 1, 2 do
    if flat[i] == 'input' or flat[i] == 'output' then flat[i + 1] = unstash(run, flat[i + 1]) end
  end
  return flat
end

-- Every key of the run, for expiring or persisting them together.
local function run_keys(run)
  local keys = {run, part(run, 'refs'), part(run, 'vars'), part(run, 'dynamic'),
                part(run, 'parked'), part(run, 'aliases'), part(run, 'blobs')}
  for _, digest in ipairs(redis.call('SMEMBERS', part(run, 'blobs'))) do
    keys[#keys + 1] = blob_of(run, digest)
  end
  for _, ref in ipairs(redis.call('SMEMBERS', part(run, 'aliases'))) do
    keys[#keys + 1] = step_of(run, ref)
  end
  for _, ref in ipairs(redis.call('SMEMBERS', part(run, 'refs'))) do
    local step = step_of(run, ref)
    keys[#keys + 1] = step
    keys[#keys + 1] = part(step, 'attempts')
  end
  return keys
end

-- A run's definition lives while any open run uses it, then for the retention.
local function release_definition(run, retention)
  local digest = redis.call('HGET', run, 'plan')
  if not digest then return end
  local users = part(definition_of(digest), 'runs')
  redis.call('SREM', users, redis.call('HGET', run, 'workflowId') or '')
  if redis.call('SCARD', users) == 0 then
    redis.call('EXPIRE', definition_of(digest), retention)
  end
end

local function hold_definition(run)
  local digest = redis.call('HGET', run, 'plan')
  if not digest then return end
  redis.call('SADD', part(definition_of(digest), 'runs'), redis.call('HGET', run, 'workflowId'))
  redis.call('PERSIST', definition_of(digest))
end

local function expire_run(run, retention)
  for _, key in ipairs(run_keys(run)) do redis.call('EXPIRE', key, retention) end
  release_definition(run, retention)
end

local function persist_run(run)
  for _, key in ipairs(run_keys(run)) do redis.call('PERSIST', key) end
  hold_definition(run)
end

-- The reply of a script that ended its run:
-- {1, status, parent run id, parent step ref, reason, root the run was started on}.
local function ended(run)
  return {1, redis.call('HGET', run, 'status'),
    redis.call('HGET', run, 'parentWorkflowId') or '',
    redis.call('HGET', run, 'parentWorkflowTaskRef') or '',
    redis.call('HGET', run, 'reasonForIncompletion') or '',
    redis.call('HGET', run, 'root') or ''}
end

local DEFERRED = {'deferredStatus', 'deferredOutput', 'deferredReason', 'deferredFailed'}

-- Make an ended run RUNNING again: its keys lose their expiry, and what its end wrote goes.
local function reopen_run(run)
  persist_run(run)
  redis.call('HSET', run, 'status', 'RUNNING')
  redis.call('HDEL', run, 'reasonForIncompletion', 'failedReferenceTaskName', 'endTime',
    'permissiveFailure', 'output', unpack(DEFERRED))
end

-- End an open run now. A run asked to COMPLETE after a permissive step failed ends FAILED.
-- `output`, `reason` and `failed` ('' for none) are written when given.
local function close(run, status, output, reason, failed, now, retention)
  local permissive = redis.call('HGET', run, 'permissiveFailure')
  if status == 'COMPLETED' and permissive then
    redis.call('HSET', run, 'status', 'FAILED', 'failedReferenceTaskName', permissive,
      'reasonForIncompletion', 'permissive step ' .. permissive .. ' failed', 'endTime', now)
  else
    redis.call('HSET', run, 'status', status, 'endTime', now)
    if output ~= '' then redis.call('HSET', run, 'output', output) end
    if reason ~= '' then redis.call('HSET', run, 'reasonForIncompletion', reason) end
    if failed ~= '' then redis.call('HSET', run, 'failedReferenceTaskName', failed) end
  end
  redis.call('HDEL', run, unpack(DEFERRED))
  expire_run(run, retention)
  return ended(run)
end

-- End a RUNNING run; a PAUSED one keeps the end (the first asked for) until it is resumed,
-- as Conductor decides nothing for a paused workflow. Returns the ended reply, or 0.
local function finish(run, status, output, reason, failed, now, retention)
  local current = redis.call('HGET', run, 'status')
  if current == 'PAUSED' then
    if not redis.call('HGET', run, 'deferredStatus') then
      redis.call('HSET', run, 'deferredStatus', status, 'deferredOutput', output,
        'deferredReason', reason, 'deferredFailed', failed)
    end
    return 0
  end
  if current ~= 'RUNNING' then return 0 end
  return close(run, status, output, reason, failed, now, retention)
end

-- Append the step's current attempt, ended now with `error` (JSON), to its attempts list.
local function push_attempt(run, step, error, now, retention)
  local attempts = part(step, 'attempts')
  redis.call('RPUSH', attempts, '{"attempt":' .. (redis.call('HGET', step, 'attempts') or '0')
    .. ',"startTime":' .. (redis.call('HGET', step, 'startTime') or 'null')
    .. ',"endTime":' .. now .. ',"error":' .. error .. '}')
  keep(run, attempts, retention)
end

-- HSET field/value pairs from ARGV[first] on, in chunks: unpack has a limit of its own.
local function hset_from(key, first)
  for i = first, #ARGV, 1000 do
    redis.call('HSET', key, unpack(ARGV, i, math.min(i + 999, #ARGV)))
  end
end

-- The bytes a run has recorded (its input, step outputs and variables), counted anew; the
-- running total (`bytes` on the run) is updated by each write, this after a rerun.
local function recount(run)
  local total = #(unstash(run, redis.call('HGET', run, 'input')) or '')
  for _, value in ipairs(redis.call('HVALS', part(run, 'vars'))) do total = total + #value end
  for _, ref in ipairs(redis.call('SMEMBERS', part(run, 'refs'))) do
    total = total + tonumber(redis.call('HGET', step_of(run, ref), 'bytes') or '0')
  end
  redis.call('HSET', run, 'bytes', total)
end
