-- Unlinks an external identity, unless it is the user's last way to sign in.
-- KEYS[1] identity claim, KEYS[2] user hash, KEYS[3] the user's identities hash
-- ARGV[1] user id, ARGV[2] identity json
-- Returns 1 removed, 0 not linked to this user, 2 refused (last sign-in method).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('HEXISTS', KEYS[2], 'pw') == 0 and redis.call('HLEN', KEYS[3]) <= 1 then
  return 2
end
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[3], ARGV[2])
return 1
