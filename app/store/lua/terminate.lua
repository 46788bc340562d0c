-- End an open run from outside (TERMINATED, TIMED_OUT) and cancel its open steps.
-- KEYS: run ; ARGV: now, reason, status, retention
-- Replies false when the run is not open, else {<ended reply>, task ids of cancelled steps}.
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'RUNNING' and status ~= 'PAUSED' then return false end
local revoked = cancel_open_steps(KEYS[1], ARGV[1])
return {close(KEYS[1], ARGV[3], '', ARGV[2], '', ARGV[1], ARGV[4]), revoked}
