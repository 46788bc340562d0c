-- Reopen an ended run at its failed step: the step's kept message is sent again.
-- KEYS: run
-- Replies {'status', status} or {'nostep', ''} or {'nomessage', ref} when it cannot, else
-- {'ok', ref, message, {held-back messages}} to send.
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'FAILED' and status ~= 'TIMED_OUT' and status ~= 'TERMINATED' then
  return {'status', status or ''}
end
local ref = redis.call('HGET', KEYS[1], 'failedReferenceTaskName')
if not ref then return {'nostep', ''} end
local key = step_of(KEYS[1], ref)
local message = redis.call('HGET', key, 'message')
if not message then return {'nomessage', ref} end
reopen_run(KEYS[1])
redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', key, 'status', 'SCHEDULED', 'deliveries', '0')
redis.call('HDEL', key, 'message')
local parked = part(KEYS[1], 'parked')
local messages = redis.call('LRANGE', parked, 0, -1)
redis.call('DEL', parked)
return {'ok', ref, message, messages}
