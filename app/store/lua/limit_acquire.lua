-- A step asks its limit for a slot (and a start under a rate), or parks its message.
-- ARGV: holder, message (JSON, carrying the holder as its ticket), lease ms, concurrency,
--       interval ms, name, key ('' when none), '1' when the holder is the message's ticket
--       (a slot was handed to it), limit id
-- Replies {verdict, timer ms (0: none), waited ('1'/'0'), messages to send...}: 'run' (do
-- the work, holding the slot), 'parked' (wait: the message is kept), 'duplicate' (the
-- holder is held by a delivery that started: ask again with a holder of its own).
local now = now_ms()
local holder, lease = ARGV[1], tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'name', ARGV[6], 'key', ARGV[7], 'concurrency', ARGV[4],
  'interval', ARGV[5])
redis.call('SADD', KEYS[6], ARGV[9])
reap(now)
local out = {}
hand_out(now, lease, out)
local function reply(verdict, timer, waited)
  local r = {verdict, timer, waited}
  for _, message in ipairs(out) do r[#r + 1] = message end
  return r
end
if ARGV[8] == '1' then
  if redis.call('HDEL', KEYS[3], holder) == 1 then
    -- a slot was handed to this message: it is the step's now
    if number('concurrency') > 0 then
      redis.call('ZADD', KEYS[2], now + lease, holder)
    else
      redis.call('ZREM', KEYS[2], holder) -- a start under a rate alone: taken
    end
    return reply('run', 0, '1')
  end
  if redis.call('ZSCORE', KEYS[2], holder) then return reply('duplicate', 0, '0') end
  -- parked again meanwhile (its lease ran out before it started): this delivery takes
  -- its place, and the parked copy is never sent
  redis.call('ZREM', KEYS[4], holder)
  redis.call('HDEL', KEYS[5], holder)
elseif redis.call('ZSCORE', KEYS[2], holder) then
  return reply('duplicate', 0, '0')
end
if redis.call('ZCARD', KEYS[4]) == 0 and slot_free() and token_wait(now) == 0 then
  take_token(now)
  if number('concurrency') > 0 then redis.call('ZADD', KEYS[2], now + lease, holder) end
  return reply('run', 0, ARGV[8])
end
park(holder, ARGV[2], false)
return reply('parked', next_timer(now), '0')
