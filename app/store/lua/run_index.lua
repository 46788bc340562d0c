-- The run index: sorted sets of run ids scored by creation time (ms), kept by the scripts
-- that create runs and change their status, so that listings page without scanning runs.
--   <prefix>:runs                                   every run (RUNS_INDEX in keys.py)
--   <prefix>:runs:by-status:<STATUS>                runs now in that status
--   <prefix>:runs:by-workflow:<name>                runs of a workflow
--   <prefix>:runs:by-workflow-status:<STATUS>:<name>  both at once
--   <prefix>:runs:by-correlation:<correlationId>    runs of a correlation id
--   <prefix>:runs:expiring                          ended runs by when their keys expire
-- An ended run's keys expire with the retention (lib.lua expire_run); its entries go when
-- the run's key has gone: `index_trim` takes off a bounded number of due entries at each
-- run's creation and end (and when a reader asks). keys.py names the same keys: change both.
-- Sent before lib.lua, so lib's expire_run and persist_run can call it.

local INDEX_PREFIX = '__PREFIX__:runs'
local INDEX_EXPIRING = INDEX_PREFIX .. ':expiring'
local INDEX_RUN_PREFIX = '__PREFIX__:run:'
-- Due entries taken off per call: more than one a run's end adds, so the set keeps up.
local INDEX_TRIM_BATCH = 8

local function index_status_keys(status, name)
  return INDEX_PREFIX .. ':by-status:' .. status,
    INDEX_PREFIX .. ':by-workflow-status:' .. status .. ':' .. name
end

-- The facts a run is indexed under: {id, status, workflow name, correlation id, created}.
local function index_facts(run)
  local found = redis.call('HMGET', run, 'workflowId', 'status', 'workflowType',
    'correlationId', 'createTime', 'endTime')
  return {found[1] or '', found[2] or '', found[3] or '', found[4] or '',
    tonumber(found[5]) or 0, tonumber(found[6])}
end

-- An `expiring` member names every index the ended run is in, so that it can be taken off
-- them all once its record has gone.
local function index_member(facts)
  return cjson.encode({facts[1], facts[2], facts[3], facts[4]})
end

local function index_add(facts)
  local id, score = facts[1], facts[5]
  local by_status, by_both = index_status_keys(facts[2], facts[3])
  redis.call('ZADD', INDEX_PREFIX, score, id)
  redis.call('ZADD', by_status, score, id)
  redis.call('ZADD', INDEX_PREFIX .. ':by-workflow:' .. facts[3], score, id)
  redis.call('ZADD', by_both, score, id)
  if facts[4] ~= '' then
    redis.call('ZADD', INDEX_PREFIX .. ':by-correlation:' .. facts[4], score, id)
  end
end

local function index_remove_status(id, status, name)
  local by_status, by_both = index_status_keys(status, name)
  redis.call('ZREM', by_status, id)
  redis.call('ZREM', by_both, id)
end

-- Take off up to INDEX_TRIM_BATCH entries of runs whose keys expired by `now` (ms); a run
-- whose key is still there (its expiry was set again) is looked at again when it is due.
local function index_trim(now, batch)
  local due = redis.call('ZRANGEBYSCORE', INDEX_EXPIRING, '-inf', now, 'LIMIT', 0,
    batch or INDEX_TRIM_BATCH)
  for _, member in ipairs(due) do
    local facts = cjson.decode(member)
    local id = facts[1]
    local left = redis.call('PTTL', INDEX_RUN_PREFIX .. '{' .. id .. '}')
    if left > 0 then
      redis.call('ZADD', INDEX_EXPIRING, now + left, member)
    else
      if left == -2 then -- gone: every entry of it goes (-1: kept for good, listed still)
        redis.call('ZREM', INDEX_PREFIX, id)
        redis.call('ZREM', INDEX_PREFIX .. ':by-workflow:' .. facts[3], id)
        if facts[4] ~= '' then
          redis.call('ZREM', INDEX_PREFIX .. ':by-correlation:' .. facts[4], id)
        end
        index_remove_status(id, facts[2], facts[3])
      end
      redis.call('ZREM', INDEX_EXPIRING, member)
    end
  end
  return #due
end

-- A run was written: list it (an ended one is noted to expire by lib's expire_run).
local function index_created(run, now)
  index_add(index_facts(run))
  index_trim(now)
end

-- A run moved between open statuses (pause, resume).
local function index_switched(run, from, to)
  local facts = index_facts(run)
  index_remove_status(facts[1], from, facts[3])
  facts[2] = to
  index_add(facts)
end

-- A run ended (its status written, its keys given the retention): list it under its end
-- status, off the open ones, and note when its keys expire.
local function index_ended(run, retention)
  local facts = index_facts(run)
  index_remove_status(facts[1], 'RUNNING', facts[3])
  index_remove_status(facts[1], 'PAUSED', facts[3])
  index_add(facts)
  local ended = facts[6] or facts[5]
  redis.call('ZADD', INDEX_EXPIRING, ended + retention * 1000, index_member(facts))
  index_trim(ended)
end

-- An ended run runs again (retry, rerun, restart): before its status becomes RUNNING.
local function index_reopened(run)
  local facts = index_facts(run)
  redis.call('ZREM', INDEX_EXPIRING, index_member(facts))
  index_remove_status(facts[1], facts[2], facts[3])
  facts[2] = 'RUNNING'
  index_add(facts)
end
