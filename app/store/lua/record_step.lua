-- Write fields of a step record that no claim of its own writes (a fork before its join,
-- a loop's progress, a waiting step's parked route).
-- KEYS: run, step ; ARGV: retention, ref, '1' to write only if the step's output is still
--       the next arg (else '0', ''), field/value pairs
if not redis.call('HGET', KEYS[1], 'status') then return 0 end
if ARGV[3] == '1' and (unstash(KEYS[1], redis.call('HGET', KEYS[2], 'output')) or '') ~= ARGV[4] then
  return 0
end
hset_from(KEYS[2], 5)
redis.call('SADD', part(KEYS[1], 'refs'), ARGV[2])
keep(KEYS[1], KEYS[2], ARGV[1])
return 1
