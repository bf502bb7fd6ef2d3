//! The friend system: requests, answers, removal, blocks and the friends list.

use super::pending::Notice;
use super::{Actor, ChatService, Outcome};
use crate::error::EngineError;
use crate::events::EngineEvent;
use std::time::Duration;
use tokio::sync::OwnedMutexGuard;
use zajel_core::protocol::{FriendEntry, Push, ServerFrame};
use zajel_core::{
    ConversationId, ErrorCode, FriendChange, FriendGraph, FriendOp, FriendUpdate, Relation,
    Timestamp, UserId, Username,
};

fn friend_frame(u: &FriendUpdate) -> ServerFrame {
    ServerFrame::Push(Push::Friend {
        user: u.user.clone(),
        relation: u.relation,
        reason: u.reason,
        at: u.at,
    })
}

impl ChatService {
    /// A friend request from `actor` to the user called `username`.
    pub async fn friend_request(
        &self,
        actor: Actor,
        username: &str,
    ) -> Result<Outcome<FriendUpdate>, EngineError> {
        // A name that cannot exist does not exist.
        let name = Username::parse(username)
            .map_err(|_| EngineError::new(ErrorCode::UserNotFound, "no such user"))?;
        let target = self
            .engine
            .store()
            .user_by_username(&name)
            .await?
            .ok_or_else(|| EngineError::new(ErrorCode::UserNotFound, "no such user"))?;
        self.friend(actor, target.id, FriendOp::Request).await
    }

    /// Applies a friend operation by `actor` on `target`; returns the actor's new view of
    /// the target, and tells everyone concerned.
    pub async fn friend(
        &self,
        actor: Actor,
        target: UserId,
        op: FriendOp,
    ) -> Result<Outcome<FriendUpdate>, EngineError> {
        let store = self.engine.store();
        // Friendship changes of a pair order with the pair's sends (see `send`), after a
        // notice of theirs still waiting.
        let order = match actor.user != target {
            true => {
                let conversation = ConversationId::direct(actor.user, target);
                let order = self.engine.lock_conversation(&conversation).await;
                Some(self.post_waiting_notice(&conversation, order).await?)
            }
            false => None,
        };
        let change = FriendGraph::new(store)
            .apply(actor.user, target, op, Timestamp::now())
            .await;
        // Counted after the write (even a failed call may have written) and before the
        // presence check below: a connection registering meanwhile re-reads its friends.
        self.engine.inner.hub.relation_changed();
        let change = change?;
        // A new friendship gets the configured notice, if any.
        let notice = self
            .engine
            .config()
            .friends_notice
            .as_ref()
            .filter(|_| change.for_actor.relation == Relation::Friends)
            .map(|template| {
                template
                    .replace("{requester}", &change.target.username)
                    .replace("{accepter}", &change.actor.username)
            });
        let since = change.for_actor.at;
        let out = self.friend_changed(actor, change).await;
        Ok(match (notice, order) {
            (Some(body), Some(order)) => {
                let conversation = ConversationId::direct(actor.user, target);
                self.friends_notice(out, conversation, body, since, order)
                    .await
            }
            _ => out,
        })
    }

    /// Posts the configured `friends_notice` as a system message into the new friends'
    /// conversation, still under the pair's `order` lock: stored before the friend operation
    /// is answered, its event published after the friend events. Its key names the
    /// friendship's start (see [`notice_key`]), so only a new friendship posts a new notice.
    ///
    /// If the store does not take it (away, or refusing writes), the friendship stands and the
    /// notice waits ([`PendingNotices`](super::PendingNotices)): it is retried in the background
    /// with the same key, and everything else of the pair on this node (a send, a friendship
    /// change) posts it first, so it still precedes every later message. A notice that can
    /// never be stored (a template that makes no valid body) is logged and dropped.
    async fn friends_notice(
        &self,
        out: Outcome<FriendUpdate>,
        conversation: ConversationId,
        body: String,
        since: Timestamp,
        order: OwnedMutexGuard<()>,
    ) -> Outcome<FriendUpdate> {
        let key = notice_key(since);
        match self.post_system(&conversation, &body, &key, order).await {
            Ok(notice) => out.absorb(notice),
            Err(e) if is_transient(&e) => {
                tracing::warn!(%conversation, code = ?e.code, error = %e.message,
                    "friends notice not posted; retrying");
                let notices = &self.engine.inner.notices;
                notices.wait(conversation.clone(), Notice { body, key });
                self.retry_notice(conversation);
                out
            }
            Err(e) => {
                tracing::warn!(%conversation, code = ?e.code, error = %e.message,
                    "friends notice cannot be posted");
                out
            }
        }
    }

    /// Posts the notice waiting in `conversation`, if any, ahead of what the caller does next
    /// under the same `order` lock, which it hands back. A store failure is the caller's
    /// failure (nothing of the pair may be stored before the notice); a notice the store
    /// refuses for good is dropped.
    pub(super) async fn post_waiting_notice(
        &self,
        conversation: &ConversationId,
        order: OwnedMutexGuard<()>,
    ) -> Result<OwnedMutexGuard<()>, EngineError> {
        let notices = &self.engine.inner.notices;
        let Some(notice) = notices.get(conversation) else {
            return Ok(order);
        };
        match self
            .post_system(conversation, &notice.body, &notice.key, order)
            .await
        {
            Ok(mut posted) => {
                notices.done(conversation, &notice.key);
                let order = posted.order.take();
                self.commit(posted);
                match order {
                    Some(order) => Ok(order),
                    None => Ok(self.engine.lock_conversation(conversation).await),
                }
            }
            Err(e) if is_transient(&e) => Err(e),
            Err(e) => {
                tracing::warn!(%conversation, code = ?e.code, error = %e.message,
                    "friends notice cannot be posted");
                notices.done(conversation, &notice.key);
                Ok(self.engine.lock_conversation(conversation).await)
            }
        }
    }

    /// Retries the notice waiting in `conversation` in the background (0.2 s doubling to
    /// 5 s) until it is posted (here or by the pair's next operation) or the engine is dropped.
    fn retry_notice(&self, conversation: ConversationId) {
        let (first, max) = (Duration::from_millis(200), Duration::from_secs(5));
        self.retry_in_background(first, max, move |chat| {
            let conversation = conversation.clone();
            async move {
                let order = chat.engine.lock_conversation(&conversation).await;
                chat.post_waiting_notice(&conversation, order).await.is_ok()
            }
        });
    }

    /// The events of a friend-graph change and the actor's reply.
    async fn friend_changed(&self, actor: Actor, change: FriendChange) -> Outcome<FriendUpdate> {
        let a = &change.for_actor;
        let (who, whom, relation, reason) = (
            change.actor.clone(),
            change.target.clone(),
            a.relation,
            a.reason,
        );
        let mut out = Outcome::new(actor, a.clone())
            .event(vec![change.actor.id], friend_frame(a), true)
            .notice(move || EngineEvent::FriendChanged {
                actor: who,
                target: whom,
                relation,
                reason,
            });
        if let Some(t) = &change.for_target {
            out = out.event(vec![change.target.id], friend_frame(t), false);
        }
        // New friends learn each other's presence right away.
        if a.relation == Relation::Friends {
            let (me, them) = (change.actor.id, change.target.id);
            let online = self.engine.inner.presence.online(&[them]).await;
            if online.first().copied().unwrap_or(false) {
                let p = ServerFrame::Push(Push::Presence {
                    user: them,
                    online: true,
                    last_seen: None,
                });
                out = out.event(vec![me], p, false);
            }
            let p = ServerFrame::Push(Push::Presence {
                user: me,
                online: true,
                last_seen: None,
            });
            out = out.event(vec![them], p, false);
        }
        out
    }

    /// Ids of `user`'s friends.
    pub async fn friend_ids(&self, user: UserId) -> Result<Vec<UserId>, EngineError> {
        Ok(self.engine.store().friend_ids(user).await?)
    }

    /// `user`'s relations with presence, for `friends_list` and `synced`.
    pub async fn friends(&self, user: UserId) -> Result<Vec<FriendEntry>, EngineError> {
        let store = self.engine.store();
        let relations = store.relations(user).await?;
        let friends: Vec<UserId> = relations
            .iter()
            .filter(|r| r.relation == Relation::Friends)
            .map(|r| r.peer)
            .collect();
        let online: std::collections::HashSet<UserId> = friends
            .iter()
            .zip(self.engine.inner.presence.online(&friends).await)
            .filter_map(|(&u, on)| on.then_some(u))
            .collect();
        let mut out = Vec::with_capacity(relations.len());
        for r in relations {
            let Some(peer) = store.user(r.peer).await? else {
                continue;
            };
            let friends = r.relation == Relation::Friends;
            out.push(FriendEntry {
                online: friends && online.contains(&r.peer),
                last_seen: if friends {
                    store.last_seen(r.peer).await?
                } else {
                    None
                },
                user: peer,
                relation: r.relation,
                since: r.since,
            });
        }
        Ok(out)
    }
}

/// Whether a failed post may succeed later: the store was away or failed the write (not a
/// body the template made invalid, or a member without an account).
fn is_transient(e: &EngineError) -> bool {
    matches!(e.code, ErrorCode::Unavailable | ErrorCode::Internal)
}

/// The idempotency key of the notice of a friendship that began at `since`: its start, made
/// unique. A notice is posted once per new friendship (a retried or repeated answer changes
/// nothing and posts nothing), so the key only has to differ between friendships, and the
/// start alone does not: a pair that unfriends and befriends again within one millisecond
/// would have had its second notice taken for a retry of the first (and the first published
/// again instead).
fn notice_key(since: Timestamp) -> String {
    format!(
        "friends-{}-{}",
        since.0,
        zajel_core::MessageId::new_v7().0.simple()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two friendships that begin in the same millisecond get distinct notice keys, each a
    /// valid idempotency key.
    #[test]
    fn friendships_in_one_millisecond_have_distinct_notice_keys() {
        let since = Timestamp(i64::MAX);
        let (a, b) = (notice_key(since), notice_key(since));
        assert_ne!(a, b);
        for key in [a, b] {
            assert!(key.starts_with(&format!("friends-{}-", i64::MAX)));
            assert!(zajel_core::IdempotencyKey::parse(&key).is_ok(), "{key}");
        }
    }
}
