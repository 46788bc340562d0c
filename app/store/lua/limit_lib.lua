-- Helpers of the flow-limit scripts (sent before each of them; see app/store/limits.py).
-- KEYS of every limit script: meta (hash: name, key, concurrency, interval, tat, timer,
-- seq), holders (zset: holder -> lease expiry ms), handed (hash: holder -> the message a
-- slot was handed to, until its step starts), waiting (zset: holder -> place in line),
-- parked (hash: holder -> message), the index of limits (zset: id -> last asked, ms).
-- Time is Redis's own (TIME), so workers whose clocks differ agree on leases and tokens.
-- A step under a limit that is not reached costs a few commands: the line, the leases and
-- the timers are looked at only when something waits.
if redis.replicate_commands then redis.replicate_commands() end

local GRACE_MS = 5000 -- a timer this late was lost (its sender died): schedule another

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function load_meta()
  local m = redis.call('HMGET', KEYS[1], 'concurrency', 'interval', 'tat', 'timer', 'name')
  return {concurrency = tonumber(m[1] or '0') or 0, interval = tonumber(m[2] or '0') or 0,
          tat = tonumber(m[3] or '0') or 0, timer = tonumber(m[4] or '0') or 0,
          named = m[5] ~= false}
end

-- GCRA: a start is due at the theoretical arrival time `tat`; each start moves it on by
-- the interval, so starts are evenly spaced (in any window of the limit's length, at most
-- its count and one more: a late start's successor may follow it closer than an
-- interval). Returns ms to wait.
local function token_wait(meta, now)
  if meta.interval <= 0 or meta.tat <= now then return 0 end
  return meta.tat - now
end

local function take_token(meta, now)
  if meta.interval <= 0 then return end
  -- a start taken late by less than an interval (its timer fired late, or its message
  -- came a little after it was due) keeps the schedule: late starts do not add up into
  -- a lower rate. One idle for longer starts a new schedule from now.
  if meta.tat + meta.interval >= now then
    meta.tat = meta.tat + meta.interval
  else
    meta.tat = now + meta.interval
  end
  redis.call('HSET', KEYS[1], 'tat', tostring(meta.tat))
end

local function slot_free(meta)
  return meta.concurrency <= 0 or redis.call('ZCARD', KEYS[2]) < meta.concurrency
end

local function park(holder, message, first)
  local score
  if first then -- back to the head of the line (a handed message never started)
    local head = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
    score = head[2] and (tonumber(head[2]) - 1) or 0
  elseif not redis.call('ZSCORE', KEYS[4], holder) then
    -- (the same message parked again, delivered twice, keeps its place: one copy waits)
    score = redis.call('HINCRBY', KEYS[1], 'seq', 1)
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
local function hand_out(meta, now, lease_ms, out)
  while token_wait(meta, now) == 0 and slot_free(meta) do
    local holder = redis.call('ZRANGE', KEYS[4], 0, 0)[1]
    if not holder then break end
    local message = redis.call('HGET', KEYS[5], holder)
    redis.call('ZREM', KEYS[4], holder)
    redis.call('HDEL', KEYS[5], holder)
    if message then
      take_token(meta, now)
      redis.call('ZADD', KEYS[2], now + lease_ms, holder)
      redis.call('HSET', KEYS[3], holder, message)
      out[#out + 1] = message
    end
  end
end

-- When a timer should look again at this limit: when its next start is due, or when the
-- first lease ends (a dead holder's slot comes back). 0 when none is needed, or one that
-- is already set will do.
local function next_timer(meta, now)
  if redis.call('ZCARD', KEYS[4]) == 0 then return 0 end
  local want = nil
  local wait = token_wait(meta, now)
  if wait > 0 then want = now + wait end
  if not slot_free(meta) then
    local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    local expiry = tonumber(first[2]) + 1
    if not want or expiry < want then want = expiry end
  end
  if not want then want = now end
  if meta.timer > 0 and meta.timer <= want and meta.timer > now - GRACE_MS then return 0 end
  meta.timer = want
  redis.call('HSET', KEYS[1], 'timer', tostring(want))
  return want
end

-- Free slots and due starts go to the waiting messages (appended to `out`); returns when a
-- timer should look again (0: none).
local function settle(meta, now, lease_ms, out)
  reap(now)
  hand_out(meta, now, lease_ms, out)
  return next_timer(meta, now)
end

-- A keyed limit (one value of its key, and a key may have no end of them: a customer, a
-- host) that nothing holds, waits for or was handed expires when left so, after `idle_ms`
-- or its rate's interval if that is longer (its next start is due by then anyway); one in
-- use is kept. Holders whose lease ran out hold nothing. A limit with no key is left be.
local function keep_while_used(now, idle_ms)
  local meta = redis.call('HMGET', KEYS[1], 'key', 'interval')
  if not meta[1] or meta[1] == '' then return end
  if redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf') == 0 and redis.call('ZCARD', KEYS[4]) == 0
     and redis.call('EXISTS', KEYS[3]) == 0 then
    local ttl = math.max(idle_ms, tonumber(meta[2] or '0') or 0)
    redis.call('PEXPIRE', KEYS[1], ttl)
    redis.call('PEXPIRE', KEYS[2], ttl)
  else
    redis.call('PERSIST', KEYS[1])
    redis.call('PERSIST', KEYS[2])
  end
end

-- The index of limits forgets those that expired (keep_while_used): each new limit looks
-- at the few listed longest ago, drops those gone and lists the others as seen now, so
-- the index goes round and holds no more than the limits there are and a few gone since.
local SWEEP = 3
local function sweep_index(now)
  local prefix = string.match(KEYS[1], '^(.*){')
  for _, id in ipairs(redis.call('ZRANGE', KEYS[6], 0, SWEEP - 1)) do
    local base = prefix .. '{' .. string.gsub(string.gsub(id, '{', '('), '}', ')') .. '}'
    if redis.call('EXISTS', base, base .. ':holders', base .. ':waiting') == 0 then
      redis.call('ZREM', KEYS[6], id)
    else
      redis.call('ZADD', KEYS[6], now, id)
    end
  end
end

-- Put a step its limit holds back as it was before its claim: SCHEDULED, with the claim's
-- delivery and attempt uncounted (waiting is neither), noting what it waits on. Only the
-- claim of this task is undone: once the step was handed on and claimed again by another
-- delivery, that claim stands.
local function unclaim(step_key, task_id, waiting_on)
  local step = redis.call('HMGET', step_key, 'status', 'taskId', 'deliveries', 'attempts')
  if step[1] ~= 'IN_PROGRESS' or step[2] ~= task_id then return 0 end
  redis.call('HSET', step_key, 'status', 'SCHEDULED', 'waitingOn', waiting_on,
    'deliveries', tostring(math.max((tonumber(step[3]) or 1) - 1, 0)),
    'attempts', tostring(math.max((tonumber(step[4]) or 1) - 1, 0)))
  redis.call('HDEL', step_key, 'startTime', 'workerId')
  return 1
end
