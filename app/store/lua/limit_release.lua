-- A step's end gives its slot back (ARGV[1] its holder, '' for none), or a timer looks at
-- the limit (ARGV[3] its due time, '' for none): free slots and due starts go to the
-- waiting messages. Idempotent: a holder not holding gives nothing back.
-- ARGV: holder, lease ms, timer due, '1' when the holder is a ticket handed a slot (its
--       message may not have started), '1' to withdraw the holder from the line too (its
--       run ended while it waited), idle ms (limit_lib keep_while_used)
-- Replies {timer ms (0: none), messages to send...}.
if ARGV[1] ~= '' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  if ARGV[4] == '1' or ARGV[5] == '1' then redis.call('HDEL', KEYS[3], ARGV[1]) end
  if ARGV[5] == '1' then
    redis.call('ZREM', KEYS[4], ARGV[1])
    redis.call('HDEL', KEYS[5], ARGV[1])
  end
end
if ARGV[3] ~= '' and redis.call('HGET', KEYS[1], 'timer') == ARGV[3] then
  redis.call('HDEL', KEYS[1], 'timer')
end
local idle_ms = tonumber(ARGV[6])
if redis.call('ZCARD', KEYS[4]) == 0 then
  keep_while_used(now_ms(), idle_ms)
  return {0}
end
local now = now_ms()
local meta = load_meta()
local out = {}
local r = {settle(meta, now, tonumber(ARGV[2]), out)}
keep_while_used(now, idle_ms)
for _, message in ipairs(out) do r[#r + 1] = message end
return r
