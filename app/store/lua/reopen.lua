-- Start an ended run again (rerun from a step, restart): a new epoch and route root; the
-- records of the steps that run again are deleted, the others kept.
-- KEYS: run
-- ARGV: now, '1' to start from the beginning (start time, variables and dynamic steps
--       anew), new input json ('' keeps it), n, n refs to reset, variable name/value pairs
-- Replies {'open', status} when the run is not ended, else {'ok', root of the new route}.
local status = redis.call('HGET', KEYS[1], 'status')
if not is_ended(KEYS[1]) then return {'open', status or ''} end
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
local root = redis.call('HGET', KEYS[1], 'workflowId') .. ':' .. epoch
local n = tonumber(ARGV[4])
local refs = part(KEYS[1], 'refs')
for i = 5, 4 + n do
  local step = step_of(KEYS[1], ARGV[i])
  redis.call('DEL', step, part(step, 'attempts'))
  redis.call('SREM', refs, ARGV[i])
end
redis.call('DEL', part(KEYS[1], 'parked'))
reopen_run(KEYS[1])
redis.call('HSET', KEYS[1], 'root', root)
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'input', stash(KEYS[1], ARGV[3], 0)) end
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], 'startTime', ARGV[1])
  redis.call('DEL', part(KEYS[1], 'vars'), part(KEYS[1], 'dynamic'))
  hset_from(part(KEYS[1], 'vars'), 5 + n)
end
recount(KEYS[1])
return {'ok', root}
