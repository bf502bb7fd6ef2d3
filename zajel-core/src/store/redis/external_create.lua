-- Finds the user of an external identity or creates a password-less one linked to it.
-- KEYS[1] identity claim, KEYS[2] username claim, KEYS[3] new user's hash, KEYS[4] new user's
-- identities hash
-- ARGV[1] new user id, ARGV[2] display name, ARGV[3] created_at, ARGV[4] identity json
-- Returns {1, id} created (also for a retry of this very call), {0, owner} already linked,
-- {2} username taken (nothing written).
local owner = redis.call('GET', KEYS[1])
if owner then
  if owner == ARGV[1] then return {1, owner} end
  return {0, owner}
end
if redis.call('EXISTS', KEYS[2]) == 1 then return {2} end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], 'id', ARGV[1], 'username', ARGV[2], 'created_at', ARGV[3])
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[4], ARGV[3])
return {1, ARGV[1]}
