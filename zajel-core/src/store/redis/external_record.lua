-- A new password-less user for a first external sign-in: the record and its first identity,
-- both in the user's slot, written before anything points to the user (identity.rs,
-- `create_external_user`). `xp` names the identity being claimed for it, so a later sign-in
-- of that identity can finish a creation a crash interrupted.
-- KEYS[1] user hash, KEYS[2] the user's identities hash (identity json -> linked_at)
-- ARGV[1] user id, ARGV[2] display name, ARGV[3] created_at, ARGV[4] identity json
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'username', ARGV[2], 'created_at', ARGV[3],
  'xp', ARGV[4])
redis.call('HSET', KEYS[2], ARGV[4], ARGV[3])
return 1
