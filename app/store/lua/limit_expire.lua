-- The steps of a run that ended hold their slots a short while more (ARGV[1] ms): their
-- processes are being killed, and a step that runs on (a threads pool) renews its lease
-- before then. ARGV: grace ms, holders...
-- Replies {timer ms (0: none)}: a timer is due when the first of those leases ends.
local now = now_ms()
local until_ms = now + tonumber(ARGV[1])
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', KEYS[2], ARGV[i])
  if score and tonumber(score) > until_ms then
    redis.call('ZADD', KEYS[2], 'XX', until_ms, ARGV[i])
  end
end
local meta = load_meta()
meta.timer = 0 -- the pending one may be due later than these leases
return {next_timer(meta, now)}
