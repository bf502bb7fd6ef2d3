-- Sets this node's connection count of one user to ARGV[2], the count its hub holds: an
-- absolute write, so retrying or repeating it (the repair of a failed update) cannot count a
-- connection twice. 0 removes the field (HDEL, which Redis takes even when full).
-- With KEYS[2] (one Redis, not a Cluster: the set is in another slot) it also keeps the node's
-- user set in step, in the same round trip: SADD when the count leaves 0, SREM when it reaches
-- 0, either way when ARGV[3] is '1' (a repair). The set is added to before the count and
-- removed from after it, so a write refused halfway (OOM) leaves at most a member without a
-- count (harmless for the reaper), never a count the reaper cannot find.
-- Returns {previous count, the hash (node id -> count) after the change}.
-- KEYS[1] = P:{u:<uid>}:presence   KEYS[2] = P:node:{<node>}:users (optional)
-- ARGV[1] = node id   ARGV[2] = count (>= 0)   ARGV[3] = '1' to write the set regardless
-- ARGV[4] = user id (the set's member)
local prev = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local n = tonumber(ARGV[2])
local set = KEYS[2] ~= nil
local always = ARGV[3] == '1'
if n > 0 then
  if set and (always or prev <= 0) then
    redis.call('SADD', KEYS[2], ARGV[4])
  end
  if n ~= prev then
    redis.call('HSET', KEYS[1], ARGV[1], n)
  end
else
  if n ~= prev then
    redis.call('HDEL', KEYS[1], ARGV[1])
  end
  if set and (always or prev > 0) then
    redis.call('SREM', KEYS[2], ARGV[4])
  end
end
return {prev, redis.call('HGETALL', KEYS[1])}
