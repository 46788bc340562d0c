-- Record a failed attempt that will be tried again; the delivery count starts anew.
-- KEYS: run, step ; ARGV: now, retention, error json, input json, reason, route root,
--       the status the step must have ('' for any: a waiting step's retry races its end)
if fenced(KEYS[1], ARGV[6]) then return 0 end
-- one HMGET: the status, and what the metrics read (lib.lua metrics_step_retried)
local metric_step = fields_of(KEYS[2], unpack(METRIC_STEP_FIELDS))
local current = metric_step.status
if current == 'CANCELED' then return 0 end
if ARGV[7] and ARGV[7] ~= '' and current ~= ARGV[7] then return 0 end
push_attempt(KEYS[1], KEYS[2], ARGV[3], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], 'status', 'SCHEDULED', 'error', ARGV[3], 'input', stash(KEYS[1], ARGV[4], ARGV[2]),
  'endTime', ARGV[1], 'deliveries', '0', 'reasonForIncompletion', ARGV[5])
-- a waiting step retried waits no more until its next attempt parks its route again
redis.call('HDEL', KEYS[2], 'parked')
keep(KEYS[1], KEYS[2], ARGV[2])
-- metrics ----------------------------------------------------------------------------
metrics_step_retried(KEYS[2], metric_step, ARGV[1])
-- -------------------------------------------------------------------------------------
return 1
