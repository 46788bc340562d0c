-- Set fields of one of a run's hashes (variables, dynamic steps) to JSON values.
-- KEYS: run, hash ; ARGV: retention, field/value pairs
if not redis.call('HGET', KEYS[1], 'status') then return 0 end
if KEYS[2] == part(KEYS[1], 'vars') then
  -- variables count towards the bytes the run has recorded
  local grown = 0
  for i = 2, #ARGV - 1, 2 do
    grown = grown + #ARGV[i + 1] - redis.call('HSTRLEN', KEYS[2], ARGV[i])
  end
  redis.call('HINCRBY', KEYS[1], 'bytes', grown)
end
hset_from(KEYS[2], 2)
keep(KEYS[1], KEYS[2], ARGV[1])
return 1
