-- Stores a session of an existing user and prunes that user's expired sessions.
-- KEYS[1] user hash, KEYS[2] the user's sessions hash (token hash -> session JSON)
-- ARGV[1] token hash, ARGV[2] session JSON, ARGV[3] now (ms; sessions expiring by then go),
-- ARGV[4] how long the hash must live for this session: its lifetime (expires_at - now) plus a
-- grace period. The hash expires (PEXPIRE) that long after its longest-lived session was
-- created, so a user who never signs in again leaves nothing behind.
-- Returns 0 when the user does not exist, 1 otherwise.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local now = tonumber(ARGV[3])
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local ok, s = pcall(cjson.decode, all[i + 1])
  -- Undecodable entries are left alone: reading them reports corruption instead of hiding it.
  if ok and type(s) == 'table' and type(s.expires_at) == 'number' and s.expires_at <= now then
    redis.call('HDEL', KEYS[2], all[i])
  end
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local life = tonumber(ARGV[4])
local left = redis.call('PTTL', KEYS[2])
-- left is -1 for a hash written before sessions expired (keep it alive as long as this one).
if left < life then redis.call('PEXPIRE', KEYS[2], math.max(life, 1)) end
return 1
