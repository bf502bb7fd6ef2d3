-- Writes one user's derived relation entry for a peer, if it comes from a newer edge version
-- than the one already applied (so late or repeated writes never move the list backwards),
-- and clears the pending token of the operation that wrote it (see relations.rs).
-- KEYS[1] the user's relation hash (peer id -> entry JSON), KEYS[2] the user's applied
-- versions hash (peer id -> edge version), KEYS[3] the user's pending hash
-- ('<peer id>:<operation id>' -> ms when the operation began)
-- ARGV[1] peer id, ARGV[2] entry JSON or '' (no relation: delete), ARGV[3] edge version,
-- ARGV[4] the pending field to clear ('' none)
-- Returns 1 when applied, 0 when a newer version was already there.
if ARGV[4] ~= '' then redis.call('HDEL', KEYS[3], ARGV[4]) end
local v = tonumber(ARGV[3])
if v <= tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0') then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 1
