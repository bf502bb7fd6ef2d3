-- Sets this node's connection count of one user to ARGV[2], the count its hub holds: an
-- absolute write, so retrying or repeating it (the repair of a failed update) cannot count a
-- connection twice. 0 removes the field (HDEL, which Redis takes even when full).
-- Returns {previous count, the hash (node id -> count) after the change}.
-- KEYS[1] = P:{u:<uid>}:presence   ARGV[1] = node id   ARGV[2] = count (>= 0)
local prev = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local n = tonumber(ARGV[2])
if n ~= prev then
  if n > 0 then
    redis.call('HSET', KEYS[1], ARGV[1], n)
  else
    redis.call('HDEL', KEYS[1], ARGV[1])
  end
end
return {prev, redis.call('HGETALL', KEYS[1])}
