-- Write a new run: its record, variables, definition and index entry, or nothing when an
-- idempotency key names a run that exists. A run written ended (its output taken from the
-- output cache) gets the retention of an ended run at once.
-- KEYS: run, idempotency (the run key again when there is none), definition, runs index,
--       vars
-- ARGV: run id, retention, definition json, idempotency key ('' for none), now,
--       n (count of run field args), n run field args, then variable name/value pairs
if ARGV[4] ~= '' then
  local existing = redis.call('GET', KEYS[2])
  if existing then return existing end
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
end
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HGET', KEYS[1], 'workflowId') end
redis.call('SET', KEYS[3], ARGV[3])
local n = tonumber(ARGV[6])
local fields = {unpack(ARGV, 7, 6 + n)}
local bytes = 0
for i = 1, #fields - 1, 2 do
  if fields[i] == 'input' or fields[i] == 'output' then
    bytes = bytes + #fields[i + 1]
    fields[i + 1] = stash(KEYS[1], fields[i + 1], ARGV[2])
  end
end
for i = 8 + n, #ARGV, 2 do bytes = bytes + #ARGV[i] end
redis.call('HSET', KEYS[1], 'bytes', bytes, unpack(fields))
hset_from(KEYS[5], 7 + n)
hold_definition(KEYS[1])
index_created(KEYS[1], ARGV[5]) -- run_index.lua: KEYS[4] and the other indexes
if is_ended(KEYS[1]) then expire_run(KEYS[1], ARGV[2]) end
-- metrics ----------------------------------------------------------------------------
metrics_run_created(fields, ARGV[5]) -- the run's fields as written
-- -------------------------------------------------------------------------------------
return ARGV[1]
