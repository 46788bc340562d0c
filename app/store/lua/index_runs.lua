-- Index runs written before the run index existed (run_index.lua); indexing one twice
-- changes nothing. ARGV: now (ms), run ids ; replies how many runs were found.
local found = 0
for i = 2, #ARGV do
  local run = INDEX_RUN_PREFIX .. '{' .. ARGV[i] .. '}'
  if redis.call('EXISTS', run) == 1 then
    found = found + 1
    local facts = index_facts(run)
    index_add(facts)
    if ENDED[facts[2]] then
      local left = redis.call('PTTL', run)
      if left > 0 then
        redis.call('ZADD', INDEX_EXPIRING, tonumber(ARGV[1]) + left, index_member(facts))
      end
    end
  end
end
return found
