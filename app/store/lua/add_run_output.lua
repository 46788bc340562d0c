-- Add to the output of an ended run (the failure run its end started), unless the run
-- moved on meanwhile: a retry, rerun or restart reopens it (another status or endTime) and
-- a writer of the output changes the output; the caller reads again and tries once more.
-- KEYS: run ; ARGV: retention, status, endTime and output (as recorded) it was read with,
--       the new output json
local now = redis.call('HMGET', KEYS[1], 'status', 'endTime', 'output')
if (now[1] or '') ~= ARGV[2] or (now[2] or '') ~= ARGV[3] or (now[3] or '') ~= ARGV[4] then
  return 0
end
redis.call('HSET', KEYS[1], 'output', stash(KEYS[1], ARGV[5], ARGV[1]))
return 1
