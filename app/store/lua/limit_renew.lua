-- Renew the leases of the holders of one limit a worker still runs; one reaped meanwhile
-- is not put back. KEYS: its holders zset, the index of limits; ARGV: lease ms, limit id,
-- holders...
local now = now_ms()
for i = 3, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i])
end
redis.call('ZADD', KEYS[2], now, ARGV[2]) -- in use: listed
return #ARGV - 2
