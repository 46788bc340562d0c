-- Renew the leases of the holders of one limit a worker still runs (KEYS[1]: its holders
-- zset; ARGV: lease ms, holders...); one reaped meanwhile is not put back.
local now = now_ms()
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i])
end
return #ARGV - 1
