-- Adds ARGV[2] (+1 or -1) to this node's connection count of one user and returns the whole
-- hash (node id -> count) after the change. A count that drops to 0 (or below, after a data
-- loss) removes the field.
-- KEYS[1] = P:{u:<uid>}:presence   ARGV[1] = node id   ARGV[2] = delta
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
if n <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return redis.call('HGETALL', KEYS[1])
