-- Appends messages: one or many, possibly to several conversations (one script call per
-- batch on a single node; per conversation on a Cluster). Each message is its own atomic step.
-- Key layout 3 (docs/storage-redis.md): everything a message is checked against is one hash,
-- the conversation's meta hash, so one HMGET answers the friends check, the sequence, and
-- "is this idempotency key a repeat" for this window and the previous one (a redis.call costs
-- Redis more than the data-structure work behind it). Keys are derived here from the prefix
-- and the conversation id; on a Cluster the caller declares the meta hash so the call is
-- routed to the conversation's slot (Redis 7 lets a script touch undeclared keys of that slot).
-- ARGV[1] = key prefix; ARGV[2] = '1' when the members' conversation lists are updated here
-- too (one node; on a Cluster they live in other slots and the store updates them after this
-- script, for the accepted messages only).
-- 7 ARGV per message from ARGV[3 + 7i]: conversation id ('dm.<lo>.<hi>', two 36-character
-- ids), the dedupe window of its sent_at, its idempotency field in this window
-- ('<window>:<sender>:<key>'), the same in the previous window, the sender's read-mark field
-- ('r:<sender>'; '' for a system message, which has no read mark and needs no friendship: the
-- embedding app decides), the packed stream entry (the store's `pack_entry`), the activity
-- score for the lists.
-- Meta hash fields: 'seq' = last sequence, 'f' = '1' while the members may message each other
-- (written by swap_edge.lua with the pair hash), 'r:<user>' = read marks, '<window>:<sender>:
-- <key>' = seq of an idempotency record, 'ib' = the window of the newest sweep of old records
-- (below).
-- Returns one flat array, per message: seq (> 0) for a new message, 0 when the members are not
-- friends (nothing written), or -seq followed by the fields of the stored entry (false if
-- missing) for a repeat. Flat because each nested reply table costs Redis a table, a
-- type probe of seven special fields ('err', 'ok', 'map'...) and a deferred length per
-- message, and the client an array (issue 13, session 8).
local prefix, lists = ARGV[1], ARGV[2] == '1'
local sub, find, call = string.sub, string.find, redis.call

-- Idempotency records of windows before `window - 2` are deleted by a sweep over the meta
-- hash, a bounded HSCAN step per message (COUNT 128 = about 64 fields with their values; a
-- hash small enough to be a listpack, up to 512 fields by default, comes back whole): started
-- by a conversation's first message of a new window, continued by its next messages until the
-- cursor is back at 0, so no call walks a big hash at once. A record lives 3 windows: its own
-- and the next are what a repeat checks, the third absorbs clock skew between the nodes that
-- stamp sent_at. 'ib' records the sweep: '<window>' when done, '<window>:<cursor>' meanwhile.
local function sweep(meta, window, cursor)
  local keep = tonumber(window) - 2
  local r = call('HSCAN', meta, cursor, 'COUNT', 128)
  local items, old = r[2], {}
  for i = 1, #items, 2 do
    local f = items[i]
    local colon = find(f, ':', 1, true)
    local w = colon and tonumber(sub(f, 1, colon - 1))
    if w and w < keep then
      old[#old + 1] = f
      if #old == 1000 then
        call('HDEL', meta, unpack(old))
        old = {}
      end
    end
  end
  if #old > 0 then call('HDEL', meta, unpack(old)) end
  call('HSET', meta, 'ib', r[1] == '0' and window or window .. ':' .. r[1])
end

local out, n = {}, 0
for a = 3, #ARGV, 7 do
  local c, window, mark = ARGV[a], ARGV[a + 1], ARGV[a + 4]
  local meta = prefix .. ':{c:' .. c .. '}:meta'
  local m = call('HMGET', meta, 'seq', 'f', 'ib', ARGV[a + 2], ARGV[a + 3])
  -- The friends-only rule, in the same atomic step as the write: a block or removal that
  -- swapped the edge before this script ran is seen; one after it orders after the message.
  if mark ~= '' and m[2] ~= '1' then
    n = n + 1
    out[n] = 0
  else
    local dup = m[4] or m[5]
    if dup then
      local e = call('XRANGE', prefix .. ':{c:' .. c .. '}:log', dup .. '-0', dup .. '-0')
      out[n + 1], out[n + 2] = -tonumber(dup), e[1] and e[1][2] or false
      n = n + 2
    else
      local seq = string.format('%d', (tonumber(m[1]) or 0) + 1)
      call('XADD', prefix .. ':{c:' .. c .. '}:log', seq .. '-0', 'm', ARGV[a + 5])
      -- One HSET: the sequence, the idempotency record and the sender's read mark (the new
      -- message is the newest, so the mark moves to it, never backwards).
      if mark ~= '' then
        call('HSET', meta, 'seq', seq, ARGV[a + 2], seq, mark, seq)
      else
        call('HSET', meta, 'seq', seq, ARGV[a + 2], seq)
      end
      local ib = m[3]
      if ib ~= window then
        local colon = ib and find(ib, ':', 1, true)
        if colon and sub(ib, 1, colon - 1) == window then
          sweep(meta, window, sub(ib, colon + 1))
        else
          sweep(meta, window, '0')
        end
      end
      n = n + 1
      out[n] = tonumber(seq)
    end
    -- A repeat re-issues the list update too: that repairs a list a crash left behind.
    if lists then
      local score = ARGV[a + 6]
      call('ZADD', prefix .. ':{u:' .. sub(c, 4, 39) .. '}:convs', 'GT', score, c)
      call('ZADD', prefix .. ':{u:' .. sub(c, 41, 76) .. '}:convs', 'GT', score, c)
    end
  end
end
return out
