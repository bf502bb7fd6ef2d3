-- Compare-and-swap of a pair's edge, plus both users' derived relation entries.
-- KEYS[1] edge (JSON string), KEYS[2] lo's relation hash, KEYS[3] hi's relation hash
-- ARGV[1] expected edge JSON, ARGV[2] JSON of the default edge (what a missing key means),
-- ARGV[3] new edge JSON, ARGV[4] hi's id (field in lo's hash), ARGV[5] lo's entry JSON or ''
-- (no relation: delete), ARGV[6] lo's id (field in hi's hash), ARGV[7] hi's entry JSON or ''
-- Returns {1} when swapped, {0, current edge JSON} when the edge was not the expected one.
local cur = redis.call('GET', KEYS[1]) or ARGV[2]
if cur ~= ARGV[1] then return {0, cur} end
redis.call('SET', KEYS[1], ARGV[3])
local function index(key, field, value)
  if value == '' then
    redis.call('HDEL', key, field)
  else
    redis.call('HSET', key, field, value)
  end
end
index(KEYS[2], ARGV[4], ARGV[5])
index(KEYS[3], ARGV[6], ARGV[7])
return {1}
