-- Links an external identity to an existing user.
-- KEYS[1] identity claim (string -> user id), KEYS[2] user hash, KEYS[3] the user's identities
-- (hash: identity json -> linked_at)
-- ARGV[1] user id, ARGV[2] identity json, ARGV[3] linked_at
-- Returns 1 linked (or already linked to this user), 0 linked to another user, 2 no such user.
if redis.call('EXISTS', KEYS[2]) == 0 then return 2 end
local owner = redis.call('GET', KEYS[1])
if owner then
  if owner == ARGV[1] then return 1 end
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
return 1
