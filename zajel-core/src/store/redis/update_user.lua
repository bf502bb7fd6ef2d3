-- Sets one field of an existing user; never creates a user.
-- KEYS[1] user hash
-- ARGV[1] field, ARGV[2] value, ARGV[3] 'set' (overwrite) or 'max' (numeric, only forward)
-- Returns 0 when the user does not exist, 1 otherwise.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[3] == 'max' then
  local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '')
  if cur and cur >= tonumber(ARGV[2]) then return 1 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
