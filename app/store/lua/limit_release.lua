-- A step's end gives its slot back (ARGV[1] its holder, '' for none), or a timer looks at
-- the limit (ARGV[3] its due time, '' for none): free slots and due starts go to the
-- waiting messages. Idempotent: a holder not holding gives nothing back.
-- ARGV: holder, lease ms, timer due
-- Replies {timer ms (0: none), messages to send...}.
local now = now_ms()
if ARGV[1] ~= '' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
end
if ARGV[3] ~= '' and redis.call('HGET', KEYS[1], 'timer') == ARGV[3] then
  redis.call('HDEL', KEYS[1], 'timer')
end
reap(now)
local out = {}
hand_out(now, tonumber(ARGV[2]), out)
local r = {next_timer(now)}
for _, message in ipairs(out) do r[#r + 1] = message end
return r
