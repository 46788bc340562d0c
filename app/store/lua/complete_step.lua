-- Record a step's input and output; for the run's last step, end the run in the same call.
-- KEYS: run, step, alias step (or the step again)
-- ARGV: now, retention, input, output, run output ('' unless the run ends here), status,
--       error ('' for none), the status the step must have ('' for any), alias ref, route root,
--       the most bytes the run may record (0 for no limit), ref, the reason the run output
--       is refused ('' for none: the run completes; else it ends FAILED with it), '1' when the output
--       was taken from the output cache (recorded as `cached`)
-- Replies -1 when a status is required and the step is not in it (another caller completed
-- it, or its run was cancelled) or the write is fenced off. An output that takes the run's
-- recorded bytes over the limit is not recorded: the step and its run fail instead.
local refused = 0
if ARGV[8] ~= '' then refused = -1 end
if fenced(KEYS[1], ARGV[10]) then return refused end
local current = redis.call('HGET', KEYS[2], 'status')
if ARGV[8] ~= '' and current ~= ARGV[8] then return -1 end
if current == 'CANCELED' then return 0 end
local size = #ARGV[4]
local grown = size - tonumber(redis.call('HGET', KEYS[2], 'bytes') or '0')
local total = tonumber(redis.call('HGET', KEYS[1], 'bytes') or '0') + grown
local limit = tonumber(ARGV[11])
if limit > 0 and grown > 0 and total > limit then
  local message = 'run: ' .. total .. ' bytes of input, outputs and variables, over the '
    .. 'limit of ' .. limit .. ' bytes (BATON_MAX_RUN_BYTES)'
  local error = cjson.encode({type = 'PayloadTooLarge', message = message})
  local reason = 'PayloadTooLarge: ' .. message
  redis.call('HSET', KEYS[2], 'status', 'FAILED', 'error', error, 'endTime', ARGV[1],
    'reasonForIncompletion', reason, 'input', stash(KEYS[1], ARGV[3], ARGV[2]))
  redis.call('SADD', part(KEYS[1], 'refs'), ARGV[12])
  keep(KEYS[1], KEYS[2], ARGV[2])
  push_attempt(KEYS[1], KEYS[2], error, ARGV[1], ARGV[2])
  return finish(KEYS[1], 'FAILED', '', reason, ARGV[12], ARGV[1], ARGV[2])
end
redis.call('HINCRBY', KEYS[1], 'bytes', grown)
redis.call('HSET', KEYS[2], 'status', ARGV[6], 'input', stash(KEYS[1], ARGV[3], ARGV[2]),
  'output', stash(KEYS[1], ARGV[4], ARGV[2]), 'endTime', ARGV[1], 'bytes', size)
if ARGV[7] == '' then
  redis.call('HDEL', KEYS[2], 'error', 'reasonForIncompletion')
else
  redis.call('HSET', KEYS[2], 'error', ARGV[7])
end
if ARGV[14] == '1' then
  redis.call('HSET', KEYS[2], 'cached', 'true')
else
  redis.call('HDEL', KEYS[2], 'cached')
end
keep(KEYS[1], KEYS[2], ARGV[2])
if KEYS[3] ~= KEYS[2] then
  -- a step of a loop iteration: its unsuffixed ref always holds the latest iteration
  local record = redis.call('HGETALL', KEYS[2])
  redis.call('DEL', KEYS[3])
  redis.call('HSET', KEYS[3], unpack(record))
  redis.call('HDEL', KEYS[3], 'bytes') -- a copy: counted once, on the iteration's record
  redis.call('SADD', part(KEYS[1], 'aliases'), ARGV[9])
  keep(KEYS[1], KEYS[3], ARGV[2])
end
if ARGV[5] == '' then return 0 end
local ending = 'COMPLETED'
if ARGV[13] ~= '' then ending = 'FAILED' end
return finish(KEYS[1], ending, stash(KEYS[1], ARGV[5], ARGV[2]), ARGV[13], '', ARGV[1],
  ARGV[2])
