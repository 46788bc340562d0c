-- Take off the run index the entries of runs whose keys expired (run_index.lua).
-- ARGV: now (ms), most entries to look at ; replies how many were due.
return index_trim(tonumber(ARGV[1]), tonumber(ARGV[2]))
