//! The friend system: requests, answers, removal, blocks and the friends list.

use super::{Actor, ChatService, Outcome};
use crate::error::EngineError;
use crate::events::EngineEvent;
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
        // Friendship changes of a pair order with the pair's sends (see `send`).
        let _order = match actor.user != target {
            true => Some(
                self.engine
                    .lock_conversation(&ConversationId::direct(actor.user, target))
                    .await,
            ),
            false => None,
        };
        let change = FriendGraph::new(store)
            .apply(actor.user, target, op, Timestamp::now())
            .await?;
        Ok(self.friend_changed(actor, change).await)
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
        Ok(self
            .engine
            .store()
            .relations(user)
            .await?
            .into_iter()
            .filter(|r| r.relation == Relation::Friends)
            .map(|r| r.peer)
            .collect())
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
