-- Appends messages: one or many, possibly to several conversations (one script call per
-- batch on a single node; per conversation on a Cluster). Each message is its own atomic step.
-- Message i (0-based) uses KEYS[4i+1..4i+4]: conversation meta hash ('seq' = last sequence,
-- 'r:<user>' = read marks), conversation stream (entry id '<seq>-0'), the idempotency bucket
-- of the message's time window and the one before it ('<sender>:<key>' -> seq).
-- ARGV[1] = bucket lifetime in ms; then 7 per message from ARGV[2+7i]: idempotency field,
-- message id, sender, body, sent_at, idempotency key, sender's read-mark field (empty for a
-- system message: the system has no mark).
-- Returns, per message, {0, seq} for a new message or {1, seq, fields of the stored entry}
-- for a repeat.
local ttl = ARGV[1]
local out = {}
for i = 0, #KEYS / 4 - 1 do
  local meta, log, cur, prev = KEYS[4 * i + 1], KEYS[4 * i + 2], KEYS[4 * i + 3], KEYS[4 * i + 4]
  local a = 2 + 7 * i
  local field = ARGV[a]
  local dup = redis.call('HGET', cur, field) or redis.call('HGET', prev, field)
  if dup then
    local e = redis.call('XRANGE', log, dup .. '-0', dup .. '-0')
    out[i + 1] = {1, tonumber(dup), e[1] and e[1][2] or false}
  else
    local seq = string.format('%d', redis.call('HINCRBY', meta, 'seq', 1))
    redis.call('XADD', log, seq .. '-0', 'id', ARGV[a + 1], 'sender', ARGV[a + 2],
      'body', ARGV[a + 3], 'sent_at', ARGV[a + 4], 'key', ARGV[a + 5])
    redis.call('HSET', cur, field, seq)
    redis.call('PEXPIRE', cur, ttl)
    -- The new message is the newest, so the sender's mark moves to it (never backwards).
    if ARGV[a + 6] ~= '' then
      redis.call('HSET', meta, ARGV[a + 6], seq)
    end
    out[i + 1] = {0, tonumber(seq)}
  end
end
return out
