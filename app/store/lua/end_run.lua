-- End a run with a status (a paused run ends when resumed).
-- KEYS: run ; ARGV: now, retention, status, output json, reason, failed ref, route root
if fenced(KEYS[1], ARGV[7]) then return 0 end
return finish(KEYS[1], ARGV[3], stash(KEYS[1], ARGV[4], ARGV[2]), ARGV[5], ARGV[6], ARGV[1], ARGV[2])
