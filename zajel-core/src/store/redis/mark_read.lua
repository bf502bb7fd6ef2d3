-- Moves a read mark forward, never back, never past the last message; friends only.
-- KEYS[1] conversation meta hash ('f' = '1' while the members may message each other, copied
-- there by swap_edge.lua; 'seq' = last sequence; 'r:<user>' = read marks)
-- ARGV[1] read-mark field, ARGV[2] requested seq
-- Returns {-2, 0} when the members are not friends, {-1, last seq} when past the end (nothing
-- changed in either case), {1, seq} when moved, {0, current mark} when already at or past it.
local m = redis.call('HMGET', KEYS[1], 'f', 'seq', ARGV[1])
if m[1] ~= '1' then return {-2, 0} end
local last = tonumber(m[2] or '0')
local want = tonumber(ARGV[2])
if want > last then return {-1, last} end
local cur = tonumber(m[3] or '0')
if want > cur then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return {1, want}
end
return {0, cur}
