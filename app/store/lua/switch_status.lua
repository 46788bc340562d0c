-- Pause or resume a run: move it from one status to the other.
-- KEYS: run ; ARGV: from status, to status, now, retention
-- Replies false when the run is not in the `from` status; {'ended', <ended reply>} when a
-- resumed run ends with what was asked while it was paused (its last step completed, or a
-- step failed); else {'ok', {held-back messages}}, which the caller sends on.
if redis.call('HGET', KEYS[1], 'status') ~= ARGV[1] then return false end
if ARGV[2] == 'RUNNING' then
  local status = redis.call('HGET', KEYS[1], 'deferredStatus')
  if status then
    local get = function(name) return redis.call('HGET', KEYS[1], name) or '' end
    return {'ended', close(KEYS[1], status, get('deferredOutput'), get('deferredReason'),
                           get('deferredFailed'), ARGV[3], ARGV[4])}
  end
end
redis.call('HSET', KEYS[1], 'status', ARGV[2])
index_switched(KEYS[1], ARGV[1], ARGV[2]) -- run_index.lua
local parked = part(KEYS[1], 'parked')
local messages = redis.call('LRANGE', parked, 0, -1)
redis.call('DEL', parked)
return {'ok', messages}
