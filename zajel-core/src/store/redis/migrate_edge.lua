-- Layout 1 -> 2 (layout.rs): writes one pair's edge into its pair hash, unless the hash is
-- already there (then it is at least as new: written by a swap or an earlier run), and its
-- 'friends' flag into the conversation's meta hash as layout 3 keeps it.
-- KEYS[1] the pair hash, KEYS[2] the conversation's meta hash; ARGV[1] edge JSON, ARGV[2] its
-- version, ARGV[3] 'friends' flag
-- Returns 1 when written, 0 when the pair hash already existed.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'edge', ARGV[1], 'ver', ARGV[2], 'friends', ARGV[3])
redis.call('HSET', KEYS[2], 'f', ARGV[3])
return 1
