-- Compare-and-swap of a pair's edge, the authoritative relation. The pair hash carries the
-- conversation's hash tag (one Cluster slot with the conversation), and the swap copies the
-- 'friends' flag into the conversation's meta hash ('f'), where append.lua and mark_read.lua
-- read it in the same HMGET as the sequence (key layout 3): both written here, atomically.
-- KEYS[1] the pair hash: 'edge' = edge JSON (absent: the default edge), 'ver' = the edge's
-- version (+1 per swap), 'friends' = '1' while the two may message each other, else '0'
-- KEYS[2] the conversation's meta hash
-- ARGV[1] expected edge JSON, ARGV[2] JSON of the default edge (what a missing field means),
-- ARGV[3] new edge JSON, ARGV[4] the new edge's 'friends' flag
-- Returns {1, version} when swapped (the caller then writes both users' derived relation
-- entries with that version, see set_relation.lua), {0, current edge JSON, version} when the
-- edge was not the expected one.
local cur = redis.call('HGET', KEYS[1], 'edge') or ARGV[2]
if cur ~= ARGV[1] then
  return {0, cur, tonumber(redis.call('HGET', KEYS[1], 'ver') or '0')}
end
redis.call('HSET', KEYS[1], 'edge', ARGV[3], 'friends', ARGV[4])
redis.call('HSET', KEYS[2], 'f', ARGV[4])
return {1, redis.call('HINCRBY', KEYS[1], 'ver', 1)}
