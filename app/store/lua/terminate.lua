-- End an open run from outside (TERMINATED, TIMED_OUT) and cancel its open steps.
-- KEYS: run ; ARGV: now, reason, status, retention
-- Replies false when the run is not open, else {<ended reply>, task ids of cancelled steps}.
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'RUNNING' and status ~= 'PAUSED' then return false end
local revoked = {}
for _, ref in ipairs(redis.call('SMEMBERS', part(KEYS[1], 'refs'))) do
  local key = step_of(KEYS[1], ref)
  local step = redis.call('HGET', key, 'status')
  if step == 'IN_PROGRESS' or step == 'SCHEDULED' then
    redis.call('HSET', key, 'status', 'CANCELED', 'endTime', ARGV[1])
    redis.call('HDEL', key, 'parked')
    note_cancelled(KEYS[1], ref)
    revoked[#revoked + 1] = redis.call('HGET', key, 'taskId') or ''
  end
end
-- what a paused run held back will never be sent again: the run is over for good
redis.call('UNLINK', part(KEYS[1], 'parked'))
return {close(KEYS[1], ARGV[3], '', ARGV[2], '', ARGV[1], ARGV[4]), revoked}
