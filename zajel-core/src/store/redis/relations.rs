//! Relation changes and the per-user relation lists, with repair after a crash.
//!
//! A change swaps the pair hash (the authoritative edge, one slot, with the friends flag
//! copied into the conversation's meta hash) and then writes each
//! user's derived list entry (`{u:}:rel`, the user's slot). A process dying between the two
//! used to leave a list behind until the pair's next change. Now each change first records a
//! pending token on both sides (`{u:}:pend`, field `<peer>:<operation id>`, value the start
//! time in ms), one per operation so one operation's clear cannot hide another's crash;
//! `set_relation.lua` deletes the token with the entry it writes (a failed compare deletes
//! them too). A `relations` read that finds a token older than [`PENDING_GRACE_MS`] (that
//! operation is dead) re-derives the entry from the pair hash and deletes the token. The
//! version stamps (`{u:}:relv`) keep a repair from moving a list back past a newer write.
//!
//! Cost: one more command per side per relation change (the tokens, one extra round trip
//! before the swap) and one per `relations` read (`HGETALL` of the pending hash, in the same
//! round trip as the list); nothing per message.

use super::{
    Call, Cmd, ConversationId, Edge, RedisStore, Relation, RelationEntry, Retry, SCRIPTS,
    StoreResult, UserId, UserPair, Value, array, corrupt, fields, friends_flag,
    friends_from_relations, int, json, opt_int, opt_string, redis_err, string, to_json,
};

/// How old a pending token must be before a read treats its operation as dead and repairs.
/// An operation is three round trips, each under the command timeout (2 s by default) with at
/// most one retry; a repair of a live operation would only be harmless-but-early (it writes
/// the current edge's entry, and the operation's own later write is still applied if newer),
/// except that deleting its token would hide a crash that came after.
pub(super) const PENDING_GRACE_MS: i64 = 30_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A user's derived entry for `peer` from `edge`, as JSON (`''` = no relation). Entries are
/// derived here, with `Edge::relation`, so every backend computes relations the same way; the
/// script only writes them.
fn entry(edge: &Edge, peer: UserId, me_is_lo: bool) -> StoreResult<String> {
    match edge.relation(me_is_lo) {
        Relation::None => Ok(String::new()),
        relation => to_json(&RelationEntry {
            peer,
            relation,
            since: edge.since_for(me_is_lo),
        }),
    }
}

impl RedisStore {
    /// `set_relation.lua` for `me`'s entry about `peer`, clearing `pending` (a field of
    /// `me`'s pending hash, `""` for none).
    fn set_relation(
        &self,
        me: UserId,
        peer: UserId,
        entry: String,
        version: u64,
        pending: &str,
    ) -> Call {
        Call::new(&SCRIPTS.set_relation)
            .key(self.keys.relations(me))
            .key(self.keys.relation_versions(me))
            .key(self.keys.relations_pending(me))
            .arg(peer)
            .arg(entry)
            .arg(version)
            .arg(pending)
    }

    /// [`crate::FriendStore::swap_edge`]: tokens, the swap, both entries.
    pub(super) async fn swap_edge_tracked(
        &self,
        pair: UserPair,
        expected: Edge,
        new: Edge,
    ) -> StoreResult<bool> {
        let op = ::uuid::Uuid::new_v4().simple().to_string();
        let sides = [(pair.lo, pair.hi, true), (pair.hi, pair.lo, false)];
        let field = |peer: UserId| format!("{peer}:{op}");
        // 1: the tokens, before the commit point (their own round trip: on a Cluster the
        // commands of one call run concurrently, and a token must never come after the swap).
        let tokens: Vec<Cmd> = sides
            .iter()
            .map(|&(me, peer, _)| {
                let mut c = ::redis::cmd("HSET");
                c.arg(self.keys.relations_pending(me))
                    .arg(field(peer))
                    .arg(now_ms());
                c
            })
            .collect();
        for r in self.send_all(tokens, 2, Retry::Once).await? {
            r.map_err(redis_err)?;
        }
        // 2: the edge (one slot) is authoritative and swapped atomically.
        let call = Call::new(&SCRIPTS.swap_edge)
            .key(self.keys.pair(pair))
            .key(self.keys.meta(&ConversationId::direct(pair.lo, pair.hi)))
            .arg(to_json(&expected)?)
            .arg(to_json(&Edge::default())?)
            .arg(to_json(&new)?)
            .arg(friends_flag(&new));
        let mut reply = array(self.eval(call, Retry::Never).await?)?.into_iter();
        let swapped = reply
            .next()
            .map(|v| int::<u8>(v, "swap_edge reply"))
            .transpose()?;
        let version: u64 = match swapped {
            Some(1) => int(reply.next().unwrap_or_default(), "edge version")?,
            Some(0) => {
                // Not swapped: nothing to derive; the tokens go (a crash before this only
                // leaves them for a read to clear, re-deriving what is already there).
                let clear: Vec<Cmd> = sides
                    .iter()
                    .map(|&(me, peer, _)| {
                        let mut c = ::redis::cmd("HDEL");
                        c.arg(self.keys.relations_pending(me)).arg(field(peer));
                        c
                    })
                    .collect();
                self.send_all(clear, 2, Retry::Once).await?;
                // Make sure what is there is a readable edge, not garbage.
                let current = string(reply.next().unwrap_or_default())?;
                json::<Edge>(&current, "edge")?;
                return Ok(false);
            }
            other => {
                return Err(corrupt(format_args!(
                    "unexpected swap_edge reply {other:?}"
                )));
            }
        };
        // 3: each user's list entry (another slot each), stamped with the edge's version so a
        // late or repeated write never moves a list backwards; each clears its token.
        let mut calls = Vec::with_capacity(2);
        for (me, peer, me_is_lo) in sides {
            calls.push(self.set_relation(
                me,
                peer,
                entry(&new, peer, me_is_lo)?,
                version,
                &field(peer),
            ));
        }
        for r in self.eval_many(&calls, &[], Retry::Once).await? {
            r.map_err(redis_err)?;
        }
        Ok(true)
    }

    /// [`crate::FriendStore::relations`]: the list and the pending tokens in one round trip;
    /// tokens past [`PENDING_GRACE_MS`] are repaired first.
    pub(super) async fn relations_repaired(&self, user: UserId) -> StoreResult<Vec<RelationEntry>> {
        let (list, stale) = self.read_relations(user).await?;
        if stale.is_empty() {
            return Ok(list);
        }
        self.repair(user, stale).await?;
        Ok(self.read_relations(user).await?.0)
    }

    /// The list, sorted by peer, and the stale pending fields.
    async fn read_relations(
        &self,
        user: UserId,
    ) -> StoreResult<(Vec<RelationEntry>, Vec<(UserId, String)>)> {
        let mut list_cmd = ::redis::cmd("HGETALL");
        list_cmd.arg(self.keys.relations(user));
        let mut replies = self
            .send_all(vec![list_cmd, self.pending_cmd(user)], 2, Retry::Once)
            .await?
            .into_iter();
        let (Some(list), Some(pending)) = (replies.next(), replies.next()) else {
            return Err(corrupt("expected 2 replies to a relations read"));
        };
        let mut list = fields(list.map_err(redis_err)?)?
            .into_values()
            .map(|v| json::<RelationEntry>(&string(v)?, "relation entry"))
            .collect::<StoreResult<Vec<_>>>()?;
        list.sort_by_key(|e| e.peer);
        Ok((list, stale_tokens(pending.map_err(redis_err)?)?))
    }

    /// `HGETALL` of `user`'s pending tokens (read with the list, one slot).
    pub(super) fn pending_cmd(&self, user: UserId) -> Cmd {
        let mut c = ::redis::cmd("HGETALL");
        c.arg(self.keys.relations_pending(user));
        c
    }

    /// The friends in a list reply, after repairing the list if `pending` has stale tokens
    /// (then the list is read again).
    pub(super) async fn friends_repaired(
        &self,
        user: UserId,
        list: Result<Value, ::redis::RedisError>,
        pending: Result<Value, ::redis::RedisError>,
    ) -> StoreResult<Vec<UserId>> {
        let stale = stale_tokens(pending.map_err(redis_err)?)?;
        if stale.is_empty() {
            return friends_from_relations(list.map_err(redis_err)?);
        }
        self.repair(user, stale).await?;
        let reply = self
            .query(::redis::cmd("HGETALL").arg(self.keys.relations(user)))
            .await?;
        friends_from_relations(reply)
    }

    /// Re-derives `user`'s entries for the stale tokens' peers from their pair hashes (one
    /// round trip for the reads, one for the writes) and clears the tokens.
    async fn repair(&self, user: UserId, stale: Vec<(UserId, String)>) -> StoreResult<()> {
        let pairs = stale
            .iter()
            .map(|&(peer, _)| {
                UserPair::new(user, peer)
                    .ok_or_else(|| corrupt(format_args!("pending change with oneself {peer}")))
            })
            .collect::<StoreResult<Vec<UserPair>>>()?;
        let reads = pairs
            .iter()
            .map(|&pair| {
                let mut c = ::redis::cmd("HMGET");
                c.arg(self.keys.pair(pair)).arg("edge").arg("ver");
                c
            })
            .collect::<Vec<Cmd>>();
        let n = reads.len();
        let edges = self.send_all(reads, n, Retry::Once).await?;
        let mut calls = Vec::with_capacity(n);
        for (((peer, field), reply), pair) in stale.into_iter().zip(edges).zip(pairs) {
            let mut parts = array(reply.map_err(redis_err)?)?.into_iter();
            let edge = match opt_string(parts.next().unwrap_or_default())? {
                None => Edge::default(),
                Some(text) => json(&text, "edge")?,
            };
            let version = opt_int::<u64>(parts.next().unwrap_or(Value::Nil), "edge version")?;
            let me_is_lo = pair.lo == user;
            calls.push(self.set_relation(
                user,
                peer,
                entry(&edge, peer, me_is_lo)?,
                version.unwrap_or(0),
                &field,
            ));
        }
        for r in self.eval_many(&calls, &[], Retry::Once).await? {
            r.map_err(redis_err)?;
        }
        Ok(())
    }
}

/// The pending fields of an `HGETALL` reply older than [`PENDING_GRACE_MS`], with their peers.
fn stale_tokens(pending: Value) -> StoreResult<Vec<(UserId, String)>> {
    let cutoff = now_ms() - PENDING_GRACE_MS;
    let mut stale = Vec::new();
    for (field, began) in fields(pending)? {
        let began: i64 = int(began, "pending relation change")?;
        if began > cutoff {
            continue;
        }
        let peer = field
            .split_once(':')
            .map(|(peer, _)| peer)
            .ok_or_else(|| corrupt(format_args!("bad pending field {field:?}")))?;
        stale.push((super::parse(peer, "pending peer id")?, field));
    }
    Ok(stale)
}
