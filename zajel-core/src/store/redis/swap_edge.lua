-- Compare-and-swap of a pair's edge (the authoritative record; one Cluster slot).
-- KEYS[1] edge (JSON string), KEYS[2] the edge's version counter
-- ARGV[1] expected edge JSON, ARGV[2] JSON of the default edge (what a missing key means),
-- ARGV[3] new edge JSON
-- Returns {1, version} when swapped (the caller then writes both users' derived relation
-- entries with that version, see set_relation.lua), {0, current edge JSON, version} when the
-- edge was not the expected one.
local cur = redis.call('GET', KEYS[1]) or ARGV[2]
if cur ~= ARGV[1] then
  return {0, cur, tonumber(redis.call('GET', KEYS[2]) or '0')}
end
redis.call('SET', KEYS[1], ARGV[3])
return {1, redis.call('INCR', KEYS[2])}
