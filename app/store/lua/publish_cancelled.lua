-- Publish the onCancelled events of one step its run's end cancelled, and take the step
-- off the run's `cancel_events`, in one call: published once, whoever drains the set.
-- KEYS: run, stream of each entry ; ARGV: ref, then per entry: field count, field/value pairs
if redis.call('SREM', part(KEYS[1], 'cancel_events'), ARGV[1]) == 0 then return 0 end
local at = 2
for i = 2, #KEYS do
  local count = tonumber(ARGV[at])
  redis.call('XADD', KEYS[i], 'MAXLEN', '~', EVENT_STREAM_LENGTH, '*',
    unpack(ARGV, at + 1, at + count))
  at = at + count + 1
end
return 1
