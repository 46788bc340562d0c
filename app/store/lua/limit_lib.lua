-- Helpers of the flow-limit scripts (sent before each of them; see app/store/limits.py).
-- KEYS of every limit script: meta (hash: name, key, concurrency, interval, tat, timer,
-- seq), holders (zset: holder -> lease expiry ms), handed (hash: holder -> the message a
-- slot was handed to, until its step starts), waiting (zset: holder -> place in line),
-- parked (hash: holder -> message), the index of limits (set).
-- Time is Redis's own (TIME), so workers whose clocks differ agree on leases and tokens.
if redis.replicate_commands then redis.replicate_commands() end

local GRACE_MS = 5000 -- a timer this late was lost (its sender died): schedule another

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function number(field)
  return tonumber(redis.call('HGET', KEYS[1], field) or '0') or 0
end

-- GCRA with a burst of one: a start is due at the theoretical arrival time `tat`; each
-- start moves it on by the interval, so starts are evenly spaced. Returns ms to wait.
local function token_wait(now)
  local interval = number('interval')
  if interval <= 0 then return 0 end
  local tat = number('tat')
  if tat <= now then return 0 end
  return tat - now
end

local function take_token(now)
  local interval = number('interval')
  if interval <= 0 then return end
  redis.call('HSET', KEYS[1], 'tat', tostring(math.max(number('tat'), now) + interval))
end

local function slot_free()
  local capacity = number('concurrency')
  return capacity <= 0 or redis.call('ZCARD', KEYS[2]) < capacity
end

local function park(holder, message, first)
  local score
  if first then -- back to the head of the line (a handed message never started)
    local head = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
    score = head[2] and (tonumber(head[2]) - 1) or 0
  else
    score = redis.call('HINCRBY', KEYS[1], 'seq', 1)
    -- the same message parked again (delivered twice) keeps its place: one copy waits
    if redis.call('ZSCORE', KEYS[4], holder) then score = nil end
  end
  if score then redis.call('ZADD', KEYS[4], score, holder) end
  redis.call('HSET', KEYS[5], holder, message)
end

-- Holders past their lease give their slot back (their worker died); a slot handed to a
-- message that never started (its sender died before sending it) parks the message again.
local function reap(now)
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
  for _, holder in ipairs(expired) do
    redis.call('ZREM', KEYS[2], holder)
    local message = redis.call('HGET', KEYS[3], holder)
    if message then
      redis.call('HDEL', KEYS[3], holder)
      park(holder, message, true)
    end
  end
end

-- Hand free slots and due starts to the waiting messages, first come first served; the
-- caller sends the messages returned. A slot is held for its message's step from now on
-- (and a start under a rate limit alone until the step starts), with a lease.
local function hand_out(now, lease_ms, out)
  while slot_free() and token_wait(now) == 0 do
    local holder = redis.call('ZRANGE', KEYS[4], 0, 0)[1]
    if not holder then break end
    local message = redis.call('HGET', KEYS[5], holder)
    redis.call('ZREM', KEYS[4], holder)
    redis.call('HDEL', KEYS[5], holder)
    if message then
      take_token(now)
      redis.call('ZADD', KEYS[2], now + lease_ms, holder)
      redis.call('HSET', KEYS[3], holder, message)
      out[#out + 1] = message
    end
  end
end

-- When a timer should look again at this limit: when its next start is due, or when the
-- first lease ends (a dead holder's slot comes back). 0 when none is needed, or one that
-- is already set will do.
local function next_timer(now)
  if redis.call('ZCARD', KEYS[4]) == 0 then return 0 end
  local want = nil
  local wait = token_wait(now)
  if wait > 0 then want = now + wait end
  if not slot_free() then
    local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    local expiry = tonumber(first[2]) + 1
    if not want or expiry < want then want = expiry end
  end
  if not want then want = now end
  local timer = number('timer')
  if timer > 0 and timer <= want and timer > now - GRACE_MS then return 0 end
  redis.call('HSET', KEYS[1], 'timer', tostring(want))
  return want
end
