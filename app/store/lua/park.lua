-- Hold back the message of a step that found its run paused or ended, for resume or retry.
-- KEYS: run ; ARGV: retention, message json
-- Replies 1 when held back, 2 when the run is RUNNING again (resumed or retried since the
-- claim saw it stopped), 0 when it is gone, COMPLETED or over for good (nothing kept).
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'RUNNING' then return 2 end
if not status or status == 'COMPLETED' or OVER[status] then return 0 end
local parked = part(KEYS[1], 'parked')
redis.call('RPUSH', parked, ARGV[2])
keep(KEYS[1], parked, ARGV[1])
return 1
