-- Set fields of one of a run's hashes (variables, dynamic steps) to JSON values.
-- KEYS: run, hash ; ARGV: retention, field/value pairs
if not redis.call('HGET', KEYS[1], 'status') then return 0 end
hset_from(KEYS[2], 2)
keep(KEYS[1], KEYS[2], ARGV[1])
return 1
