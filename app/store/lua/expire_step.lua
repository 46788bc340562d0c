-- Time out a step whose message waited past its expiry (pollTimeoutSeconds) unstarted:
-- retry it (SCHEDULED again, its message to be sent again by the caller) or fail it
-- TIMED_OUT and end its run. The worker that takes the expired message and the timer sent
-- with it both come here; exactly one of them acts on one message.
-- KEYS: run, step
-- ARGV: now, retention, ref, error json, reason, route root, the message's identity (task
--       id and retries), the step's failed attempts when it was sent ('' when unknown),
--       '1' to retry, the run's status when not retried, the message json ('' for none)
-- Replies 0 when it did not act, else {1, <ended reply or 0>}.
if fenced(KEYS[1], ARGV[6]) then return 0 end
local run_status = redis.call('HGET', KEYS[1], 'status')
if run_status ~= 'RUNNING' and run_status ~= 'PAUSED' then return 0 end
local current = redis.call('HGET', KEYS[2], 'status')
if current and current ~= 'SCHEDULED' then return 0 end -- started since, or ended
local attempts = part(KEYS[2], 'attempts')
if ARGV[8] ~= '' and redis.call('LLEN', attempts) ~= tonumber(ARGV[8]) then
  return 0 -- an attempt of it ended since the message was sent: a later message is its own
end
local seen = redis.call('HGET', KEYS[2], 'expired') or ''
if string.find(' ' .. seen .. ' ', ' ' .. ARGV[7] .. ' ', 1, true) then return 0 end
redis.call('HSET', KEYS[2], 'expired', seen == '' and ARGV[7] or seen .. ' ' .. ARGV[7],
  'referenceTaskName', ARGV[3])
redis.call('SADD', part(KEYS[1], 'refs'), ARGV[3])
push_attempt(KEYS[1], KEYS[2], ARGV[4], ARGV[1], ARGV[2])
if ARGV[9] == '1' then
  redis.call('HSET', KEYS[2], 'status', 'SCHEDULED', 'error', ARGV[4], 'endTime', ARGV[1],
    'deliveries', '0', 'reasonForIncompletion', ARGV[5])
  keep(KEYS[1], KEYS[2], ARGV[2])
  return {1, 0}
end
redis.call('HSET', KEYS[2], 'status', 'TIMED_OUT', 'error', ARGV[4], 'endTime', ARGV[1],
  'reasonForIncompletion', ARGV[5])
if ARGV[11] ~= '' then redis.call('HSET', KEYS[2], 'message', ARGV[11]) end
keep(KEYS[1], KEYS[2], ARGV[2])
return {1, finish(KEYS[1], ARGV[10], '', ARGV[5], ARGV[3], ARGV[1], ARGV[2])}
