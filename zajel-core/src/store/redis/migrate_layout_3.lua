-- Layout 2 -> 3 (layout.rs), one key per call, in the conversation's slot. Idempotent: a rerun
-- (after a crash, or by another node starting at the same time) writes the same values.
-- KEYS[1] the conversation's meta hash; KEYS[2] a layout-2 key of the conversation:
--   ARGV[1] = 'pair': the pair hash; its 'friends' flag is copied into the meta hash ('f'),
--   read and written in this one step, so it is the current value even while a layout-3 node
--   swaps the edge (which writes both);
--   ARGV[1] = 'idem': an idempotency bucket of window ARGV[2] ('<sender>:<key>' -> seq); its
--   records become meta fields '<window>:<sender>:<key>' and the bucket is deleted.
-- Returns the number of fields written.
if ARGV[1] == 'pair' then
  local f = redis.call('HGET', KEYS[2], 'friends')
  if not f then return 0 end
  redis.call('HSET', KEYS[1], 'f', f)
  return 1
end
local all = redis.call('HGETALL', KEYS[2])
local n = 0
for i = 1, #all, 2 do
  redis.call('HSET', KEYS[1], ARGV[2] .. ':' .. all[i], all[i + 1])
  n = n + 1
end
redis.call('DEL', KEYS[2])
return n
