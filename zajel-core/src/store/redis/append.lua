-- Appends messages: one or many, possibly to several conversations (one script call per
-- batch on a single node; per conversation on a Cluster). Each message is its own atomic step.
-- Every key is derived here from the key prefix and the conversation id (key names as in
-- docs/storage-redis.md): receiving a key costs Redis as much as running a command, and one
-- message used to send 7 keys of ~70 bytes. On a Cluster the caller declares one key of the
-- conversation's slot (its meta hash) so the call is routed there; Redis 7 lets a script
-- touch undeclared keys of the slot it was routed to (and refuses any other slot).
-- ARGV[1] = idempotency bucket lifetime in ms, counted from the bucket's first write (the
-- store passes 3 windows: a bucket's first write is at or after its window's start, and a
-- repeat checks its own window's bucket and the previous one, so the bucket must live until
-- 2 windows after that start; the third absorbs clock skew); ARGV[2] = key prefix;
-- ARGV[3] = '1' when the members' conversation lists are updated here too (one node; on a
-- Cluster they live in other slots and the store updates them after this script, for the
-- appended messages only).
-- 9 ARGV per message from ARGV[4 + 9i]: conversation id ('dm.<lo>.<hi>', two 36-character
-- ids), this window's idempotency bucket number, the previous window's, message id, sender
-- (the nil id for a system message: the system has no read mark and needs no friendship, the
-- embedding app decides), body, sent_at, idempotency key, activity score for the lists.
-- Keys per message: the pair hash ('friends' = '1' while the members may message each other,
-- see swap_edge.lua), the conversation meta hash ('seq' = last sequence, 'r:<user>' = read
-- marks, 'ib' below), the conversation stream (entry id '<seq>-0'), the idempotency buckets
-- of the two windows ('<sender>:<key>' -> seq), [both members' conversation lists].
-- Returns, per message, {0, seq} for a new message, {1, seq, fields of the stored entry}
-- for a repeat, {2} when the members are not friends (nothing written).
local ttl, prefix, lists = ARGV[1], ARGV[2], ARGV[3] == '1'
local system = '00000000-0000-0000-0000-000000000000'
local sub = string.sub
local out = {}
for a = 4, #ARGV, 9 do
  local c, sender = ARGV[a], ARGV[a + 4]
  local base = prefix .. ':{c:' .. c .. '}:'
  local user = sender ~= system
  -- The friends-only rule, in the same atomic step as the write: a block or removal that
  -- swapped the edge before this script ran is seen; one after it orders after the message.
  if user and redis.call('HGET', base .. 'pair', 'friends') ~= '1' then
    out[#out + 1] = {2}
  else
    local field = sender .. ':' .. ARGV[a + 7]
    local cur = base .. 'idem:' .. ARGV[a + 1]
    local dup = redis.call('HGET', cur, field)
      or redis.call('HGET', base .. 'idem:' .. ARGV[a + 2], field)
    if dup then
      local e = redis.call('XRANGE', base .. 'log', dup .. '-0', dup .. '-0')
      out[#out + 1] = {1, tonumber(dup), e[1] and e[1][2] or false}
    else
      local meta, bucket = base .. 'meta', ARGV[a + 1]
      -- 'ib' = the bucket this conversation last gave its lifetime: a bucket's expiry is set
      -- by its first write only (not a PEXPIRE per message), and the meta hash is written
      -- once below anyway.
      local m = redis.call('HMGET', meta, 'seq', 'ib')
      local seq = string.format('%d', (tonumber(m[1]) or 0) + 1)
      redis.call('XADD', base .. 'log', seq .. '-0', 'id', ARGV[a + 3], 'sender', sender,
        'body', ARGV[a + 5], 'sent_at', ARGV[a + 6], 'key', ARGV[a + 7])
      redis.call('HSET', cur, field, seq)
      local ib = nil
      if m[2] ~= bucket then
        redis.call('PEXPIRE', cur, ttl)
        ib = bucket
      end
      -- The new message is the newest, so the sender's mark moves to it (never backwards).
      if user and ib then
        redis.call('HSET', meta, 'seq', seq, 'r:' .. sender, seq, 'ib', ib)
      elseif user then
        redis.call('HSET', meta, 'seq', seq, 'r:' .. sender, seq)
      elseif ib then
        redis.call('HSET', meta, 'seq', seq, 'ib', ib)
      else
        redis.call('HSET', meta, 'seq', seq)
      end
      out[#out + 1] = {0, tonumber(seq)}
    end
    -- A repeat re-issues the list update too: that repairs a list a crash left behind.
    if lists then
      local score = ARGV[a + 8]
      redis.call('ZADD', prefix .. ':{u:' .. sub(c, 4, 39) .. '}:convs', 'GT', score, c)
      redis.call('ZADD', prefix .. ':{u:' .. sub(c, 41, 76) .. '}:convs', 'GT', score, c)
    end
  end
end
return out
