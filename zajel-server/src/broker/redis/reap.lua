-- Removes a dead node's entry from one user's presence hash and returns what is left.
-- KEYS[1] = P:{u:<uid>}:presence   ARGV[1] = dead node id
redis.call('HDEL', KEYS[1], ARGV[1])
return redis.call('HGETALL', KEYS[1])
