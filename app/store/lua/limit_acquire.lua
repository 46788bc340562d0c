-- A step asks its limit for a slot (and a start under a rate), or parks its message.
-- ARGV: holder, message (JSON, carrying the holder as its ticket; '' on a first ask),
--       lease ms, concurrency, interval ms, name, key ('' when none), '1' when the holder
--       is the message's ticket (a slot was handed to it), limit id, hold ms (how long
--       a holder that starts keeps its slot without renewing it; '' for the lease: a run's
--       slot is held until its run ends, a step's is renewed while it runs), idle ms
--       (limit_lib keep_while_used), and for a step: its claiming task id and what it
--       waits on
-- KEYS: the limit's (see limit_lib.lua), and the step's record when a step asks: a step
-- whose message is parked is put back as before its claim (unclaim) in the same call.
-- Replies {verdict, timer ms (0: none), messages to send...}: 'run' (do the work, holding
-- the slot), 'full' (over the limit: ask again with the message, to park it), 'parked'
-- (wait: the message is kept), 'duplicate' (the holder is held by a delivery that
-- started: ask again with a holder of its own).
local now = now_ms()
local holder, lease = ARGV[1], tonumber(ARGV[3])
local hold = tonumber(ARGV[10]) or lease
local meta = load_meta()
local concurrency, interval = tonumber(ARGV[4]), tonumber(ARGV[5])
if not meta.named or meta.concurrency ~= concurrency or meta.interval ~= interval then
  redis.call('HSET', KEYS[1], 'name', ARGV[6], 'key', ARGV[7],
    'concurrency', ARGV[4], 'interval', ARGV[5])
  if not meta.named then sweep_index(now) end
  redis.call('ZADD', KEYS[6], now, ARGV[9])
  meta.concurrency, meta.interval = concurrency, interval
end
local out = {}
local function reply(verdict, timer)
  keep_while_used(now, tonumber(ARGV[11]))
  local r = {verdict, timer}
  for _, message in ipairs(out) do r[#r + 1] = message end
  return r
end
local function run()
  take_token(meta, now)
  if meta.concurrency > 0 then redis.call('ZADD', KEYS[2], now + hold, holder) end
  return reply('run', 0)
end
if ARGV[8] == '1' then
  if redis.call('HDEL', KEYS[3], holder) == 1 then
    -- a slot was handed to this message: it is the step's now
    if meta.concurrency > 0 then
      redis.call('ZADD', KEYS[2], now + hold, holder)
    else
      redis.call('ZREM', KEYS[2], holder) -- a start under a rate alone: taken
    end
    return reply('run', 0)
  end
  if redis.call('ZSCORE', KEYS[2], holder) then return reply('duplicate', 0) end
  -- parked again meanwhile (its lease ran out before it started): this delivery takes
  -- its place, and the parked copy is never sent
  redis.call('ZREM', KEYS[4], holder)
  redis.call('HDEL', KEYS[5], holder)
elseif meta.concurrency > 0 and redis.call('ZSCORE', KEYS[2], holder) then
  return reply('duplicate', 0)
end
local waiting = redis.call('ZCARD', KEYS[4])
if waiting == 0 and token_wait(meta, now) == 0 and slot_free(meta) then return run() end
-- over the limit, or others wait first: dead holders give their slots back, and the
-- first in line take what is free
redis.call('ZADD', KEYS[6], now, ARGV[9])
reap(now)
hand_out(meta, now, lease, out)
if redis.call('ZCARD', KEYS[4]) == 0 and token_wait(meta, now) == 0 and slot_free(meta) then
  return run()
end
if ARGV[2] == '' then return reply('full', 0) end
park(holder, ARGV[2], false)
if KEYS[7] then unclaim(KEYS[7], ARGV[12], ARGV[13]) end
return reply('parked', next_timer(meta, now))
