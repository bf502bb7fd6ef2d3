-- Claims a username and creates the user in one step.
-- KEYS[1] username claim (string -> user id), KEYS[2] user hash
-- ARGV[1] user id, ARGV[2] display name, ARGV[3] created_at, ARGV[4] '1' if a password hash
-- follows, ARGV[5] password hash
-- Returns 1 when created (or when this very call already created it: a retry after a lost
-- reply), 0 when the name belongs to another account.
local owner = redis.call('GET', KEYS[1])
if owner then
  if owner == ARGV[1] then return 1 end
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], 'id', ARGV[1], 'username', ARGV[2], 'created_at', ARGV[3])
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[2], 'pw', ARGV[5])
end
return 1
