-- Keep the steps a dynamic fork defines at run time (ref -> {name, input, fork}), unless
-- one of their refs is taken: defined by another fork, or recorded by a step of the plan.
-- KEYS: run ; ARGV: fork ref, retention, then ref / definition json pairs
-- Replies {'taken', ref, by whom} and writes nothing, or {'ok'}.
local dynamic = part(KEYS[1], 'dynamic')
local refs = part(KEYS[1], 'refs')
for i = 3, #ARGV, 2 do
  local known = redis.call('HGET', dynamic, ARGV[i])
  if known then
    local owner = cjson.decode(known)['fork']
    if owner ~= ARGV[1] then return {'taken', ARGV[i], 'fork ' .. tostring(owner)} end
  elseif redis.call('SISMEMBER', refs, ARGV[i]) == 1 then
    return {'taken', ARGV[i], 'a step of the run'}
  end
end
hset_from(dynamic, 3)
keep(KEYS[1], dynamic, ARGV[2])
return {'ok'}
