-- Shared by every script of the run store: the loader puts it before each script.
-- A run's other keys are named from its run key (`<prefix>:run:{id}`), as keys.py names
-- them: `<run>:refs|vars|dynamic|parked|aliases`, `<prefix>:step:{id}:<ref>[:attempts]`.
-- Retention counts from a run's end: while a run is open its keys have no expiry; ending
-- the run sets one on every key it has, and reopening it (retry, rerun) takes them off.

local PREFIX = '__PREFIX__'
local RUN_PREFIX = PREFIX .. ':run:'
-- Event streams (`<prefix>:events:<sink>`, keys.py event_stream) are trimmed to about this.
local EVENT_STREAM_LENGTH = __EVENT_STREAM_LENGTH__

local function part(run, name) return run .. ':' .. name end
-- The run id in a run's key (app/store/keys.py run_key: the hash tag).
local function run_id_of(run) return string.match(run, '{(.*)}$') end

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

-- The named fields of a hash in one HMGET, by name; a missing one is nil. Every command a
-- script runs counts against the store's cost per step: a script reads what it needs of a
-- record at once rather than field by field.
local function fields_of(key, ...)
  local names = {...}
  local values = redis.call('HMGET', key, unpack(names))
  local found = {}
  for i, name in ipairs(names) do
    if values[i] then found[name] = values[i] end
  end
  return found
end

-- Whether a write of route `root` is fenced off by the run's `fence` (its `root` field).
local function fenced_by(fence, root)
  return fence ~= nil and fence ~= false and root ~= '' and fence ~= root
end

-- A write from an earlier route of the run (`root` is the writer's route root, '' outside
-- a task): each rerun and restart gives the run a new root, and a task of an earlier
-- attempt must not write over the new attempt's records.
local function fenced(run, root)
  return fenced_by(redis.call('HGET', run, 'root'), root)
end

-- Give a key written after its run ended the run's retention; `status` is the run's, when
-- the caller has read it already.
local function keep(run, key, retention, status)
  if status == nil then status = redis.call('HGET', run, 'status') end
  if ENDED[status or ''] then redis.call('EXPIRE', key, retention) end
end

-- Payloads (a run's input and output, a step's input and output) of STASH_MIN bytes or
-- more are kept once per run, by content, in `<run>:blob:<sha1>`; the record holds '@' and
-- the digest instead (JSON text never starts with '@'). A step that passes its input on, a
-- step input that is the run's input, a run output that is the last step's: one copy each.
local STASH_MIN = 1024
local STASH_MARK = 64 -- '@'

local function blob_of(run, digest) return part(run, 'blob:' .. digest) end

-- The text to record for a payload: itself when small, else its digest, with the text
-- kept under the run's blobs (expired and persisted with the run); `status` is the run's,
-- when the caller has read it already.
local function stash(run, text, retention, status)
  if #text < STASH_MIN then return text end
  local digest = redis.sha1hex(text)
  local blob = blob_of(run, digest)
  if redis.call('SADD', part(run, 'blobs'), digest) == 1 then
    redis.call('SET', blob, text)
  end
  if status == nil then status = redis.call('HGET', run, 'status') end
  keep(run, blob, retention, status)
  keep(run, part(run, 'blobs'), retention, status)
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

-- Every key of the run, for expiring or persisting them together (a set found empty is
-- left out: Redis keeps no empty set, so there is no key to expire).
local function run_keys(run)
  local keys = {run, part(run, 'refs'), part(run, 'vars'), part(run, 'dynamic'),
                part(run, 'parked'), part(run, 'canceled'), part(run, 'cancel_events')}
  local blobs = redis.call('SMEMBERS', part(run, 'blobs'))
  if #blobs > 0 then keys[#keys + 1] = part(run, 'blobs') end
  for _, digest in ipairs(blobs) do
    keys[#keys + 1] = blob_of(run, digest)
  end
  local aliases = redis.call('SMEMBERS', part(run, 'aliases'))
  if #aliases > 0 then keys[#keys + 1] = part(run, 'aliases') end
  for _, ref in ipairs(aliases) do
    keys[#keys + 1] = step_of(run, ref)
  end
  for _, ref in ipairs(redis.call('SMEMBERS', part(run, 'refs'))) do
    local step = step_of(run, ref)
    keys[#keys + 1] = step
    keys[#keys + 1] = part(step, 'attempts')
  end
  return keys
end

-- A run's definition lives while any open run uses it, then for the retention. `known`
-- holds the run's `plan` and `workflowId` when the caller has read them already.
local function release_definition(run, retention, known)
  known = known or fields_of(run, 'plan', 'workflowId')
  local digest = known.plan
  if not digest then return end
  local users = part(definition_of(digest), 'runs')
  redis.call('SREM', users, known.workflowId or '')
  if redis.call('SCARD', users) == 0 then
    redis.call('EXPIRE', definition_of(digest), retention)
  end
end

local function hold_definition(run)
  local known = redis.call('HMGET', run, 'plan', 'workflowId')
  local digest = known[1]
  if not digest then return end
  redis.call('SADD', part(definition_of(digest), 'runs'), known[2])
  redis.call('PERSIST', definition_of(digest))
end

local function expire_run(run, retention, known)
  for _, key in ipairs(run_keys(run)) do redis.call('EXPIRE', key, retention) end
  release_definition(run, retention, known)
  index_ended(run, retention) -- run_index.lua
end

local function persist_run(run)
  index_reopened(run) -- run_index.lua
  for _, key in ipairs(run_keys(run)) do redis.call('PERSIST', key) end
  hold_definition(run)
end

-- The reply of a script that ended its run:
-- {1, status, parent run id, parent step ref, reason, root the run was started on}.
local function ended(run)
  local found = redis.call('HMGET', run, 'status', 'parentWorkflowId', 'parentWorkflowTaskRef',
    'reasonForIncompletion', 'root')
  return {1, found[1], found[2] or '', found[3] or '', found[4] or '', found[5] or ''}
end

-- A step its run's end cancelled: noted in `<run>:cancel_events`, which the end's hook
-- drains (state_events.py `cancelled`) to publish each step's onCancelled exactly once.
local function note_cancelled(run, ref)
  redis.call('SADD', part(run, 'cancel_events'), ref)
end

local DEFERRED = {'deferredStatus', 'deferredOutput', 'deferredReason', 'deferredFailed'}

local STEP_ENDED = {COMPLETED = true, COMPLETED_WITH_ERRORS = true, FAILED = true,
  FAILED_WITH_TERMINAL_ERROR = true, TIMED_OUT = true, CANCELED = true, SKIPPED = true}

local function list_of(value) if type(value) == 'table' then return value end return {} end

-- Every task ref nested in a definition's task list, into the set `into`.
local function nested_refs(tasks, into)
  for _, task in ipairs(list_of(tasks)) do
    if type(task) == 'table' and type(task.taskReferenceName) == 'string' then
      into[task.taskReferenceName] = true
      for _, branch in ipairs(list_of(task.forkTasks)) do nested_refs(branch, into) end
      for _, case in pairs(list_of(task.decisionCases)) do nested_refs(case, into) end
      nested_refs(task.defaultCase, into)
      nested_refs(task.loopOver, into)
    end
  end
end

-- Each JOIN of the definition as {ref, fork ref, set of refs in the fork's branches}.
local function joins_of(tasks, found)
  tasks = list_of(tasks)
  for i, task in ipairs(tasks) do
    if type(task) == 'table' then
      local join = tasks[i + 1]
      if (task.type == 'FORK_JOIN' or task.type == 'FORK_JOIN_DYNAMIC') and type(join) == 'table'
         and join.type == 'JOIN' then
        local inner = {}
        for _, branch in ipairs(list_of(task.forkTasks)) do nested_refs(branch, inner) end
        found[#found + 1] = {join.taskReferenceName, task.taskReferenceName, inner}
      end
      for _, branch in ipairs(list_of(task.forkTasks)) do joins_of(branch, found) end
      for _, case in pairs(list_of(task.decisionCases)) do joins_of(case, found) end
      joins_of(task.defaultCase, found)
      joins_of(task.loopOver, found)
    end
  end
  return found
end

-- As Conductor cancels the tasks a workflow has not finished when it ends, a JOIN that
-- waits (its fork started: a step of its branches, or a dynamic fork, has a record) is
-- recorded CANCELED when its run ends without completing. The refs go in `<run>:canceled`,
-- so that a run that runs again (retry) waits on them anew (reopen_run).
local function cancel_waiting_joins(run, now)
  local digest = redis.call('HGET', run, 'plan')
  local text = digest and redis.call('GET', definition_of(digest))
  if not text then return end
  local ok, definition = pcall(cjson.decode, text)
  if not ok or type(definition) ~= 'table' then return end
  local joins = joins_of(definition.tasks, {})
  if #joins == 0 then return end
  -- recorded refs by name, each with the loop iterations it ran in ('' outside a loop)
  local runs_in = {}
  for _, ref in ipairs(redis.call('SMEMBERS', part(run, 'refs'))) do
    local base, n = string.match(ref, '^(.*)__(%d+)$')
    if not base then base, n = ref, '' end
    runs_in[base] = runs_in[base] or {}
    runs_in[base][n] = true
  end
  for _, join in ipairs(joins) do
    local started = {}
    for n in pairs(runs_in[join[2]] or {}) do
      local fork = step_of(run, n == '' and join[2] or join[2] .. '__' .. n)
      if redis.call('HGET', fork, 'status') == 'COMPLETED' then started[n] = true end
    end
    for inner in pairs(join[3]) do
      for n in pairs(runs_in[inner] or {}) do started[n] = true end
    end
    for n in pairs(started) do
      local ref = join[1]
      if n ~= '' then ref = ref .. '__' .. n end
      local key = step_of(run, ref)
      if not STEP_ENDED[redis.call('HGET', key, 'status') or ''] then
        local fields = {'status', 'CANCELED', 'endTime', now, 'referenceTaskName', ref,
          'taskType', 'JOIN', 'taskDefName', 'JOIN'}
        redis.call('HSET', key, unpack(fields))
        redis.call('SADD', part(run, 'refs'), ref)
        redis.call('SADD', part(run, 'canceled'), ref)
        note_cancelled(run, ref)
        if n ~= '' then
          -- a step of a loop iteration: its unsuffixed ref holds the latest iteration
          redis.call('DEL', step_of(run, join[1]))
          redis.call('HSET', step_of(run, join[1]), unpack(fields))
          redis.call('SADD', part(run, 'aliases'), join[1])
        end
      end
    end
  end
end

-- Make an ended run RUNNING again: its keys lose their expiry, and what its end wrote goes.
local function reopen_run(run)
  persist_run(run)
  -- the JOINs its end cancelled wait again
  local canceled = part(run, 'canceled')
  for _, ref in ipairs(redis.call('SMEMBERS', canceled)) do
    redis.call('DEL', step_of(run, ref))
    redis.call('SREM', part(run, 'refs'), ref)
    local base = string.match(ref, '^(.*)__%d+$')
    if base then redis.call('DEL', step_of(run, base)) end
  end
  redis.call('DEL', canceled)
  redis.call('HSET', run, 'status', 'RUNNING')
  redis.call('HDEL', run, 'reasonForIncompletion', 'failedReferenceTaskName', 'endTime',
    'permissiveFailure', 'output', unpack(DEFERRED))
end

-- A time in ms as Conductor's summaries write it: `2024-05-01T12:00:00.000Z` (UTC).
local function iso_time(value)
  local ms = tonumber(value)
  if not ms then return nil end
  local seconds = math.floor(ms / 1000)
  local days = math.floor(seconds / 86400)
  local left = seconds - days * 86400
  -- the civil date of a day count since 1970-01-01 (proleptic Gregorian calendar)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local day = doy - math.floor((153 * mp + 2) / 5) + 1
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400
  if month <= 2 then year = year + 1 end
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', year, month, day,
    math.floor(left / 3600), math.floor(left % 3600 / 60), left % 60, ms % 1000)
end

-- The run's maskedFields (kept on the run as `maskedFields`, app/runtime/masking.py) as
-- {json = function(text), text = function(text)} that show JSON text and plain text
-- masked, or nil when it masks nothing. As RunMask, the texts to hide are those of the
-- values found under the masked names anywhere in the run: its input, output, variables,
-- and each step's input and output.
local function run_mask(run)
  local listed = redis.call('HGET', run, 'maskedFields')
  if not listed then return nil end
  local names = {}
  for _, name in ipairs(cjson.decode(listed)) do names[name] = true end
  local found = {}
  local function learn(text) if text and text ~= '' then walk_json(text, names, found) end end
  learn(unstash(run, redis.call('HGET', run, 'input')))
  learn(unstash(run, redis.call('HGET', run, 'output')))
  local variables = redis.call('HGETALL', part(run, 'vars'))
  for i = 1, #variables - 1, 2 do -- a variable's name is a key of `workflow.variables`
    learn('{' .. cjson.encode(variables[i]) .. ':' .. variables[i + 1] .. '}')
  end
  for _, ref in ipairs(redis.call('SMEMBERS', part(run, 'refs'))) do
    learn(unstash(run, redis.call('HGET', step_of(run, ref), 'input')))
    learn(unstash(run, redis.call('HGET', step_of(run, ref), 'output')))
  end
  local secrets = secrets_of(found)
  return {
    json = function(text) return walk_json(text, names, nil, secrets, found) end,
    text = function(text) return mask_text(text, secrets) end,
  }
end

-- Publish a run's end to the stream of its workflow status listener (the definition's
-- workflowStatusListenerSink, kept on the run as `statusSink` when the listener is on), in
-- the call that ends the run: once per end, whichever path ends it. The entry carries
-- Conductor's WorkflowSummary of the run as `payload`, masked by the run's maskedFields; `eventType` is Conductor's
-- listener event, `completed` or `terminated` (FAILED, TIMED_OUT and TERMINATED runs).
local function publish_status(run, sink)
  if sink == nil then sink = redis.call('HGET', run, 'statusSink') end
  if not sink then return end
  local get = function(name) return redis.call('HGET', run, name) or nil end
  local status = get('status')
  local failed = get('failedReferenceTaskName') or ''
  local start, ended = tonumber(get('startTime')), tonumber(get('endTime'))
  local summary = {
    workflowType = get('workflowType'), version = tonumber(get('version')) or 1,
    workflowId = get('workflowId'), correlationId = get('correlationId') or '',
    startTime = iso_time(get('createTime')), updateTime = iso_time(get('endTime')),
    endTime = iso_time(get('endTime')), status = status,
    input = unstash(run, get('input')) or '{}', output = unstash(run, get('output')),
    reasonForIncompletion = get('reasonForIncompletion'),
    executionTime = (start and ended) and ended - start or 0,
    failedReferenceTaskNames = failed, priority = 0,
    parentWorkflowId = get('parentWorkflowId') or '',
  }
  local mask = run_mask(run)
  if mask then
    summary.input = mask.json(summary.input)
    if summary.output then summary.output = mask.json(summary.output) end
    if summary.reasonForIncompletion then
      summary.reasonForIncompletion = mask.text(summary.reasonForIncompletion)
    end
  end
  local names = '[]'
  if failed ~= '' then
    local name = redis.call('HGET', step_of(run, failed), 'taskDefName')
    if name then names = cjson.encode({name}) end
  end
  -- a Lua table that is empty encodes as an object: the one list is written here
  local text = cjson.encode(summary)
  text = string.sub(text, 1, -2) .. ',"failedTaskNames":' .. names .. '}'
  local kind = 'terminated'
  if status == 'COMPLETED' then kind = 'completed' end
  redis.call('XADD', PREFIX .. ':events:' .. sink, 'MAXLEN', '~', EVENT_STREAM_LENGTH, '*',
    'workflowId', summary.workflowId, 'workflowType', summary.workflowType,
    'eventType', kind, 'status', status, 'payload', text)
end

-- Metrics ------------------------------------------------------------------------------
-- Counters and histogram buckets of app/store/metric_fields.py (which names the fields and
-- gives the bounds and the cap): the transitions add to them in the call that makes them, so
-- they hold across every worker and machine and cost no round trip. Hash fields:
-- `<metric>|<status>|<bucket>|<name>` counts the observations of bucket i alone (those
-- <= METRIC_BOUNDS_MS[i] and above the bound before it; the last is +Inf),
-- `<metric>_ms|<status>|<name>` their sum in ms, `<counter>|<name>` a counter. A name (a
-- workflow's or a transformation's) is one of at most METRIC_LABEL_CAP per kind, kept in a
-- set; others are counted as 'other'.
local METRIC_RUNS = '__METRIC_RUNS__'
local METRIC_STEPS = '__METRIC_STEPS__'
local METRIC_WAITING = '__METRIC_WAITING__'
local METRIC_LABELS = '__METRIC_LABELS__' -- .. kind: a set of label values
local METRIC_BOUNDS_MS = {__METRIC_BOUNDS__}
local METRIC_LABEL_CAP = __METRIC_LABEL_CAP__
local METRIC_OTHER = '__METRIC_OTHER__'
local METRIC_WAIT_TYPES = {__METRIC_WAIT_TYPES__}

local function metric_bucket(ms)
  for i, bound in ipairs(METRIC_BOUNDS_MS) do
    if ms <= bound then return i end
  end
  return #METRIC_BOUNDS_MS + 1
end

-- Whether `name` may label metrics of its `kind`: it does already, or the set has room.
local function metric_label_allowed(kind, name)
  local set = METRIC_LABELS .. kind
  if redis.call('SADD', set, name) == 0 then return true end
  if redis.call('SCARD', set) <= METRIC_LABEL_CAP then return true end
  redis.call('SREM', set, name)
  return false
end

-- Add `by` to field `head .. name` of `hash`; returns the name it was counted under. The
-- label set is looked at only when the field is new, so a count is one command.
local function metric_count(hash, kind, head, name, by)
  if not name or name == '' then name = METRIC_OTHER end
  if redis.call('HINCRBY', hash, head .. name, by) == by and name ~= METRIC_OTHER
     and not metric_label_allowed(kind, name) then
    redis.call('HDEL', hash, head .. name)
    name = METRIC_OTHER
    redis.call('HINCRBY', hash, head .. name, by)
  end
  return name
end

-- One observation of `ms` in histogram `metric` (two commands); returns the name used.
local function metric_observe(hash, kind, metric, status, name, ms)
  ms = math.max(0, math.floor(ms))
  name = metric_count(hash, kind, metric .. '|' .. status .. '|' .. metric_bucket(ms) .. '|',
    name, 1)
  redis.call('HINCRBY', hash, metric .. '_ms|' .. status .. '|' .. name, ms)
  return name
end

-- A run was written (create_run) with `fields` (a flat list of names and values): counted
-- as started, and as ended when written ended.
local function metrics_run_created(fields, now)
  local known = {}
  for i = 1, #fields - 1, 2 do known[fields[i]] = fields[i + 1] end
  metric_count(METRIC_RUNS, 'workflow', 'started|', known.workflowType, 1)
  if ENDED[known.status or ''] then
    local started = tonumber(known.startTime) or tonumber(now)
    metric_observe(METRIC_RUNS, 'workflow', 'run', known.status, known.workflowType,
      (tonumber(known.endTime) or tonumber(now)) - started)
  end
end

-- A run ended with `status` at `now` (close): its duration since its (re)start. `known`
-- holds the run's workflowType and startTime, read by the caller.
local function metrics_run_ended(known, status, now)
  local started = tonumber(known.startTime) or tonumber(now)
  metric_observe(METRIC_RUNS, 'workflow', 'run', status, known.workflowType,
    tonumber(now) - started)
end

-- The fields of a step record the step metrics read; a caller that reads the record anyway
-- asks for them in its own HMGET.
local METRIC_STEP_FIELDS = {'status', 'startTime', 'scheduledTime', 'taskDefName', 'taskType'}

-- A step's attempt ended with `status` at `now` (complete, fail, retry). `step` is its
-- record as read before the end was written: only an attempt that was claimed
-- (IN_PROGRESS) ran, and it is observed once: its duration and its queue wait (from the
-- send of the message its claim took to its start). A step recorded waiting (WAIT, HUMAN
-- left IN_PROGRESS) is noted in the set of waiting steps instead.
local function metrics_step_ended(key, step, status, now)
  if step.status ~= 'IN_PROGRESS' or not step.startTime then return end
  local waits = METRIC_WAIT_TYPES[step.taskType or ''] == true
  if status == 'IN_PROGRESS' then
    if waits then redis.call('SADD', METRIC_WAITING, key) end
    return
  end
  local started = tonumber(step.startTime)
  local name = metric_observe(METRIC_STEPS, 'transformation', 'duration', status,
    step.taskDefName, tonumber(now) - started)
  if step.scheduledTime then
    metric_observe(METRIC_STEPS, 'transformation', 'wait', status, name,
      started - tonumber(step.scheduledTime))
  end
  if waits then redis.call('SREM', METRIC_WAITING, key) end
end

-- A step's failed attempt is to be tried again (retry_step); `step` as metrics_step_ended's.
-- The attempt is observed as FAILED, as Conductor records a task it retries.
local function metrics_step_retried(key, step, now)
  metrics_step_ended(key, step, 'FAILED', now)
  metric_count(METRIC_STEPS, 'transformation', 'retries|', step.taskDefName, 1)
end
-- End of metrics -------------------------------------------------------------------------

-- Cancel a run that ends from outside's open steps (IN_PROGRESS, SCHEDULED) and drop what
-- it held back; returns the Celery task ids of the steps, to stop their tasks.
local function cancel_open_steps(run, now)
  local revoked = {}
  for _, ref in ipairs(redis.call('SMEMBERS', part(run, 'refs'))) do
    local key = step_of(run, ref)
    local step = redis.call('HGET', key, 'status')
    if step == 'IN_PROGRESS' or step == 'SCHEDULED' then
      redis.call('HSET', key, 'status', 'CANCELED', 'endTime', now)
      redis.call('HDEL', key, 'parked')
      note_cancelled(run, ref)
      revoked[#revoked + 1] = redis.call('HGET', key, 'taskId') or ''
    end
  end
  -- what a paused run held back will never be sent again: the run is over for good
  redis.call('UNLINK', part(run, 'parked'))
  return revoked
end

-- End an open run now. A run asked to COMPLETE after a permissive step failed ends FAILED.
-- `output`, `reason` and `failed` ('' for none) are written when given.
local function close(run, status, output, reason, failed, now, retention)
  local known = fields_of(run, 'permissiveFailure', 'statusSink', 'plan', 'workflowId',
    'workflowType', 'startTime', unpack(DEFERRED)) -- workflowType, startTime: metrics
  local permissive = known.permissiveFailure
  if status == 'COMPLETED' and permissive then
    status = 'FAILED'
    redis.call('HSET', run, 'status', status, 'failedReferenceTaskName', permissive,
      'reasonForIncompletion', 'permissive step ' .. permissive .. ' failed', 'endTime', now)
  else
    -- one HSET, the fields in the order separate writes would have added them
    local fields = {'status', status, 'endTime', now}
    if output ~= '' then fields[#fields + 1] = 'output'; fields[#fields + 1] = output end
    if reason ~= '' then
      fields[#fields + 1] = 'reasonForIncompletion'; fields[#fields + 1] = reason
    end
    if failed ~= '' then
      fields[#fields + 1] = 'failedReferenceTaskName'; fields[#fields + 1] = failed
    end
    redis.call('HSET', run, unpack(fields))
  end
  if status ~= 'COMPLETED' then cancel_waiting_joins(run, now) end
  local deferred = {}
  for _, name in ipairs(DEFERRED) do
    if known[name] then deferred[#deferred + 1] = name end
  end
  if #deferred > 0 then redis.call('HDEL', run, unpack(deferred)) end
  publish_status(run, known.statusSink or false)
  metrics_run_ended(known, status, now)
  expire_run(run, retention, known)
  return ended(run)
end

-- End a RUNNING run; a PAUSED one keeps the end (the first asked for) until it is resumed,
-- as Conductor decides nothing for a paused workflow. Returns the ended reply, or 0.
-- `current` is the run's status when the caller has read it already.
local function finish(run, status, output, reason, failed, now, retention, current)
  if current == nil then current = redis.call('HGET', run, 'status') end
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

-- Flow limits' short way (app/store/limits.py, lua/limit_lib.lua): a step of a limit with
-- no key, none waiting, a free slot and a start due takes its slot in its claim, and
-- gives it back with its output; anything else is left to the limit's own scripts.
-- `term`: '<lease ms> <concurrency> <interval ms> <base>' (app.store.records.SlotAsk),
-- where `base` is the limit's key (its holders, waiting line and meta are named from it).
-- True when `holder` took its slot.
local function take_slot(term, holder)
  local lease_ms, concurrency, interval, base = string.match(term, '^(%d+) (%d+) (%d+) (.+)$')
  lease_ms, concurrency, interval = tonumber(lease_ms), tonumber(concurrency), tonumber(interval)
  local meta = redis.call('HMGET', base, 'concurrency', 'interval', 'tat', 'name')
  if not meta[4] or tonumber(meta[1]) ~= concurrency or tonumber(meta[2]) ~= interval
     or redis.call('EXISTS', base .. ':waiting') == 1 then
    return false
  end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local tat = tonumber(meta[3] or '0') or 0
  if interval > 0 and tat > now then return false end
  if concurrency > 0 then
    local holders = base .. ':holders'
    -- (NX: a holder of that name holds already, another delivery's: the long way)
    if redis.call('ZCARD', holders) >= concurrency
       or redis.call('ZADD', holders, 'NX', now + lease_ms, holder) == 0 then
      return false
    end
  end
  if interval > 0 then -- as limit_lib's take_token: a start a little late keeps the schedule
    if tat + interval >= now then tat = tat + interval else tat = now + interval end
    redis.call('HSET', base, 'tat', tostring(tat))
  end
  return true
end

-- A step's slot taken in its claim given back with its output: 1 when others wait for it
-- (the caller then hands it on through the limit's own script), else 0.
local function free_slot(base, holder)
  redis.call('ZREM', base .. ':holders', holder)
  return redis.call('EXISTS', base .. ':waiting')
end
