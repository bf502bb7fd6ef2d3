-- Appends one message to a conversation.
-- KEYS[1] conversation meta hash ('seq' = last sequence, 'r:<user>' = read marks)
-- KEYS[2] conversation stream (entry id '<seq>-0')
-- KEYS[3] idempotency hash ('<sender>:<key>' -> seq)
-- KEYS[4], KEYS[5] both members' conversation sorted sets (score = activity)
-- ARGV[1] idempotency field, ARGV[2] message id, ARGV[3] sender, ARGV[4] body,
-- ARGV[5] sent_at, ARGV[6] idempotency key, ARGV[7] sender's read-mark field,
-- ARGV[8] conversation id (member of the sorted sets)
-- Returns {0, seq} for a new message, {1, seq, fields of the stored entry} for a repeat.
local dup = redis.call('HGET', KEYS[3], ARGV[1])
if dup then
  local e = redis.call('XRANGE', KEYS[2], dup .. '-0', dup .. '-0')
  return {1, tonumber(dup), e[1] and e[1][2] or false}
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local sseq = string.format('%d', seq)
redis.call('XADD', KEYS[2], sseq .. '-0', 'id', ARGV[2], 'sender', ARGV[3], 'body', ARGV[4],
  'sent_at', ARGV[5], 'key', ARGV[6])
redis.call('HSET', KEYS[3], ARGV[1], sseq)
-- The new message is the newest, so the sender's mark moves to it (never backwards).
redis.call('HSET', KEYS[1], ARGV[7], sseq)
-- Activity score: Redis time in microseconds, forced strictly above the set's current top so
-- each member's list orders by append order even within one microsecond or if the clock steps.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i = 4, 5 do
  local score = now
  local top = redis.call('ZREVRANGE', KEYS[i], 0, 0, 'WITHSCORES')
  if top[2] and tonumber(top[2]) >= score then score = tonumber(top[2]) + 1 end
  redis.call('ZADD', KEYS[i], string.format('%.0f', score), ARGV[8])
end
return {0, seq}
