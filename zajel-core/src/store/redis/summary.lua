-- Reads one conversation's list row consistently (read-only).
-- KEYS[1] conversation meta hash, KEYS[2] conversation stream
-- ARGV[1] the user's read-mark field, ARGV[2] the peer's read-mark field
-- Returns {last seq, my mark, peer mark, newest entry {id, fields} or nil}.
local m = redis.call('HMGET', KEYS[1], 'seq', ARGV[1], ARGV[2])
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
return {m[1] or '0', m[2] or '0', m[3] or '0', last[1] or false}
