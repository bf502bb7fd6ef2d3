-- Deletes all of a user's sessions. KEYS[1] the sessions hash. Returns how many there were.
local n = redis.call('HLEN', KEYS[1])
redis.call('DEL', KEYS[1])
return n
