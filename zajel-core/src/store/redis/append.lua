-- Appends messages: one or many, possibly to several conversations (one script call per
-- batch on a single node; per conversation on a Cluster). Each message is its own atomic step.
-- ARGV[1] = idempotency bucket lifetime in ms; ARGV[2] = keys per message, n: 5, or 7 when
-- the members' conversation lists are updated here too (one node; on a Cluster they live in
-- other slots and the store updates them after this script, for the appended messages only).
-- Message i (0-based) uses KEYS[n*i+1..n*i+n]: the pair hash ('friends' = '1' while the
-- members may message each other, see swap_edge.lua), conversation meta hash ('seq' = last
-- sequence, 'r:<user>' = read marks), conversation stream (entry id '<seq>-0'), the
-- idempotency bucket of the message's time window and the one before it
-- ('<sender>:<key>' -> seq), [both members' conversation lists (sorted sets)].
-- 9 ARGV per message from ARGV[3+9i]: idempotency field, message id, sender, body, sent_at,
-- idempotency key, sender's read-mark field (empty for a system message: the system has no
-- mark, and needs no friendship: the embedding app decides), activity score for the lists,
-- conversation id (the lists' member; passed rather than cut out of the meta key with
-- string.match, which cost ~5% of Redis's instructions per message).
-- Returns, per message, {0, seq} for a new message, {1, seq, fields of the stored entry}
-- for a repeat, {2} when the members are not friends (nothing written).
local ttl = ARGV[1]
local n = tonumber(ARGV[2])
local out = {}
for i = 0, #KEYS / n - 1 do
  local k = n * i
  local pair, meta, log, cur, prev = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5]
  local a = 3 + 9 * i
  local field = ARGV[a]
  -- The friends-only rule, in the same atomic step as the write: a block or removal that
  -- swapped the edge before this script ran is seen; one after it orders after the message.
  if ARGV[a + 6] ~= '' and redis.call('HGET', pair, 'friends') ~= '1' then
    out[i + 1] = {2}
  else
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
    -- A repeat re-issues the list update too: that repairs a list a crash left behind.
    if n == 7 then
      redis.call('ZADD', KEYS[k + 6], 'GT', ARGV[a + 7], ARGV[a + 8])
      redis.call('ZADD', KEYS[k + 7], 'GT', ARGV[a + 7], ARGV[a + 8])
    end
  end
end
return out
