-- Record a step's input and output; for the run's last step, end the run in the same call.
-- KEYS: run, step, alias step (or the step again)
-- ARGV: now, retention, input, output, run output ('' unless the run ends here), status,
--       error ('' for none), the status the step must have ('' for any), alias ref, route root
-- Replies -1 when a status is required and the step is not in it (another caller completed
-- it, or its run was cancelled) or the write is fenced off.
local refused = 0
if ARGV[8] ~= '' then refused = -1 end
if fenced(KEYS[1], ARGV[10]) then return refused end
local current = redis.call('HGET', KEYS[2], 'status')
if ARGV[8] ~= '' and current ~= ARGV[8] then return -1 end
if current == 'CANCELED' then return 0 end
redis.call('HSET', KEYS[2], 'status', ARGV[6], 'input', ARGV[3], 'output', ARGV[4],
  'endTime', ARGV[1])
if ARGV[7] == '' then
  redis.call('HDEL', KEYS[2], 'error', 'reasonForIncompletion')
else
  redis.call('HSET', KEYS[2], 'error', ARGV[7])
end
keep(KEYS[1], KEYS[2], ARGV[2])
if KEYS[3] ~= KEYS[2] then
  -- a step of a loop iteration: its unsuffixed ref always holds the latest iteration
  local record = redis.call('HGETALL', KEYS[2])
  redis.call('DEL', KEYS[3])
  redis.call('HSET', KEYS[3], unpack(record))
  redis.call('SADD', part(KEYS[1], 'aliases'), ARGV[9])
  keep(KEYS[1], KEYS[3], ARGV[2])
end
if ARGV[5] == '' then return 0 end
return finish(KEYS[1], 'COMPLETED', ARGV[5], '', '', ARGV[1], ARGV[2])
