-- Takes an external identity off a user's list, unless it is the user's last way to sign in.
-- The caller has seen the identity's claim point to this user, so the identity counts even
-- if a crash kept it off the list. The claim itself is released afterwards (identity.rs).
-- KEYS[1] user hash, KEYS[2] the user's identities hash
-- ARGV[1] identity json
-- Returns 1 off the list (or was not on it), 2 refused (last sign-in method).
local count = redis.call('HLEN', KEYS[2])
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then count = count + 1 end
if redis.call('HEXISTS', KEYS[1], 'pw') == 0 and count <= 1 then return 2 end
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
