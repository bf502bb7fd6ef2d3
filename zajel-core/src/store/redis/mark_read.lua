-- Moves a read mark forward, never back, never past the last message.
-- KEYS[1] conversation meta hash; ARGV[1] read-mark field, ARGV[2] requested seq
-- Returns {-1, last seq} when past the end (nothing changed), {1, seq} when moved,
-- {0, current mark} when already at or past it.
local last = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local want = tonumber(ARGV[2])
if want > last then return {-1, last} end
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if want > cur then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return {1, want}
end
return {0, cur}
