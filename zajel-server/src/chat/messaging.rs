//! Messaging: send, history, conversation list, read marks, typing.

use super::{Actor, ChatService, Outcome};
use crate::error::EngineError;
use crate::events::EngineEvent;
use tokio::sync::OwnedMutexGuard;
use zajel_core::friends::UserPair;
use zajel_core::messaging::{prepare_send, prepare_system};
use zajel_core::protocol::{EncodedMessage, Push, ServerFrame};
use zajel_core::{
    Appended, ConversationId, ConversationSummary, ErrorCode, HistoryPage, HistoryQuery,
    NewMessage, ReadMark, Relation, Timestamp, UserId,
};

fn not_member() -> EngineError {
    EngineError::new(ErrorCode::ConversationNotFound, "conversation not found")
}

fn not_friends() -> EngineError {
    EngineError::new(ErrorCode::NotFriends, "you can only message friends")
}

/// The summary of a conversation without messages.
fn empty_summary(conversation: ConversationId, peer: UserId) -> ConversationSummary {
    ConversationSummary {
        conversation,
        peer: Some(peer),
        last_message: None,
        last_seq: 0,
        unread: 0,
        read_seq: 0,
        peer_read_seq: 0,
    }
}

impl ChatService {
    /// The other member of `conversation`, if `me` is a member.
    fn peer(me: UserId, conversation: &ConversationId) -> Result<UserId, EngineError> {
        conversation.peer_of(me).ok_or_else(not_member)
    }

    /// Whether `a` and `b` are friends now.
    async fn are_friends(&self, a: UserId, b: UserId) -> Result<bool, EngineError> {
        let pair = UserPair::new(a, b).ok_or_else(not_member)?;
        Ok(self.engine.store().edge(pair).await?.are_friends())
    }

    /// Stores a message from `actor` in `conversation` (friends only) and returns the ack;
    /// the event goes to both members' devices. A retry with the same idempotency key
    /// returns the stored message with `duplicate: true`.
    pub async fn send(
        &self,
        actor: Actor,
        conversation: &ConversationId,
        body: &str,
        idempotency_key: &str,
    ) -> Result<Outcome<Appended>, EngineError> {
        let me = actor.user;
        let peer = Self::peer(me, conversation)?;
        let new = prepare_send(
            me,
            conversation,
            body,
            idempotency_key,
            self.engine.config().effective_max_body(),
            Timestamp::now(),
        )?;
        // The store checks the friends-only rule in the same atomic step as the append (on
        // every backend, across nodes): a block acknowledged before is seen, one after orders
        // after the message. The conversation's lock, which this node's friendship changes of
        // the pair also take, keeps this node's events in order with it; a friends notice
        // still waiting there is posted first.
        let order = self.engine.lock_conversation(conversation).await;
        let order = self.post_waiting_notice(conversation, order).await?;
        self.store_and_publish(actor, vec![peer, me], new, order)
            .await
    }

    /// Stores a system message (sender [`UserId::SYSTEM`]) in the direct conversation between
    /// two existing users, whatever their relation (the app posting it decides), and returns
    /// it; the event goes to every device of both members. A retry with the same idempotency
    /// key returns the stored message with `duplicate: true` (and publishes it again, like a
    /// send). `conversation_not_found` for a conversation the system cannot post in,
    /// `user_not_found` when a member has no account.
    pub async fn send_system(
        &self,
        conversation: &ConversationId,
        body: &str,
        idempotency_key: &str,
    ) -> Result<Outcome<Appended>, EngineError> {
        let (lo, hi) = conversation
            .participants()
            .filter(|(lo, hi)| !lo.is_system() && !hi.is_system())
            .ok_or_else(not_member)?;
        let store = self.engine.store();
        for member in [lo, hi] {
            if store.user(member).await?.is_none() {
                return Err(EngineError::new(ErrorCode::UserNotFound, "no such user"));
            }
        }
        let order = self.engine.lock_conversation(conversation).await;
        let order = self.post_waiting_notice(conversation, order).await?;
        self.post_system(conversation, body, idempotency_key, order)
            .await
    }

    /// [`ChatService::send_system`] once its members are known to exist, holding the
    /// conversation's `order` lock.
    pub(super) async fn post_system(
        &self,
        conversation: &ConversationId,
        body: &str,
        idempotency_key: &str,
        order: OwnedMutexGuard<()>,
    ) -> Result<Outcome<Appended>, EngineError> {
        let new = prepare_system(
            conversation,
            body,
            idempotency_key,
            self.engine.config().effective_max_body(),
            Timestamp::now(),
        )?;
        let (lo, hi) = conversation.participants().ok_or_else(not_member)?;
        self.store_and_publish(Actor::user(UserId::SYSTEM), vec![lo, hi], new, order)
            .await
    }

    /// Appends `new` (holding its conversation's `order` lock) and builds the outcome: the
    /// `message` event for `recipients`, the engine event for a new message.
    async fn store_and_publish(
        &self,
        actor: Actor,
        recipients: Vec<UserId>,
        new: NewMessage,
        order: OwnedMutexGuard<()>,
    ) -> Result<Outcome<Appended>, EngineError> {
        let appended = self
            .engine
            .store()
            .append(vec![new])
            .await
            .pop()
            .ok_or_else(|| EngineError::internal("append returned nothing"))??;
        if !appended.duplicate {
            self.engine.inner.metrics.messages_total.inc();
        }
        let event = ServerFrame::Push(Push::Message {
            message: appended.message.clone(),
        });
        // Published on the duplicate path too: a retry after a lost ack may follow an append
        // whose event never left (the node died between append and publish). Clients
        // de-duplicate live messages by `seq`.
        let encoded = EncodedMessage::new(&appended.message);
        let mut out = Outcome::new(actor, appended.clone()).event(recipients, event, true);
        if !appended.duplicate {
            let message = appended.message;
            out = out.notice(move || EngineEvent::MessageStored { message });
        }
        out.order = Some(order);
        out.encoded = Some(encoded);
        Ok(out)
    }

    /// A page of `conversation`'s history, for a member.
    pub async fn history(
        &self,
        user: UserId,
        conversation: &ConversationId,
        query: HistoryQuery,
    ) -> Result<HistoryPage, EngineError> {
        if !conversation.has_member(user) {
            return Err(not_member());
        }
        Ok(self.engine.store().history(conversation, query).await?)
    }

    /// `user`'s conversations, most recently active first, including each friend's
    /// conversation before its first message (empty: `last_seq` 0, no `last_message`, placed by
    /// when the friendship began). Stores list conversations from their first message; the
    /// empty ones are merged in here, once for every backend.
    pub async fn conversations(
        &self,
        user: UserId,
        limit: u32,
    ) -> Result<Vec<ConversationSummary>, EngineError> {
        let store = self.engine.store();
        let listed = store.conversations(user, limit).await?;
        let limit = limit as usize;
        let full = listed.len() >= limit;
        // A conversation's activity time: its newest message's.
        let active = |s: &ConversationSummary| s.last_message.as_ref().map(|m| m.sent_at);
        let oldest_listed = listed.last().and_then(active);
        let mut empty = Vec::new();
        for r in store.relations(user).await? {
            if r.relation != Relation::Friends {
                continue;
            }
            let conversation = ConversationId::direct(user, r.peer);
            if listed.iter().any(|s| s.conversation == conversation) {
                continue;
            }
            if full {
                // Not listed on a full page: either older than the page or empty. Only an
                // empty one newer than the page's oldest entry belongs on it.
                if oldest_listed.is_some_and(|t| r.since <= t)
                    || store.last_seq(&conversation).await? > 0
                {
                    continue;
                }
            }
            empty.push((r.since, empty_summary(conversation, r.peer)));
        }
        // Newest friendship first, each placed before the first stored entry it is newer
        // than; the stores' own order is kept.
        empty.sort_by_key(|(since, _)| std::cmp::Reverse(*since));
        let mut out = Vec::with_capacity(listed.len() + empty.len());
        let mut empty = empty.into_iter().peekable();
        for s in listed {
            let t = active(&s).unwrap_or(Timestamp(i64::MIN));
            while let Some((_, e)) = empty.next_if(|(since, _)| *since > t) {
                out.push(e);
            }
            out.push(s);
        }
        out.extend(empty.map(|(_, e)| e));
        out.truncate(limit);
        Ok(out)
    }

    /// Moves `actor`'s read mark in `conversation` to `seq` (never backwards); a change is
    /// told to both members' devices.
    pub async fn mark_read(
        &self,
        actor: Actor,
        conversation: &ConversationId,
        seq: u64,
    ) -> Result<Outcome<ReadMark>, EngineError> {
        let me = actor.user;
        let peer = Self::peer(me, conversation)?;
        // Same rule as `send`, checked by the store atomically with the write: friends only (a
        // read receipt is a message to the peer, so a block or removal stops it).
        let order = self.engine.lock_conversation(conversation).await;
        let mark = self.engine.store().mark_read(conversation, me, seq).await?;
        let event = ServerFrame::Push(Push::Read {
            conversation: conversation.clone(),
            user: me,
            seq: mark.seq,
        });
        let changed = mark.changed;
        let mut out = Outcome::new(actor, mark);
        if changed {
            out = out.event(vec![peer, me], event, true);
        }
        out.order = Some(order);
        Ok(out)
    }

    /// A typing indicator from `actor` to their friend in `conversation` (never stored).
    pub async fn typing(
        &self,
        actor: Actor,
        conversation: &ConversationId,
        active: bool,
    ) -> Result<Outcome<()>, EngineError> {
        let me = actor.user;
        let peer = Self::peer(me, conversation)?;
        // Nothing is stored, so the check is one read of the pair's edge. A block made on
        // another node between this read and the publish (microseconds) can still let this
        // indicator through: it stores nothing and reveals nothing, so that is accepted.
        let order = self.engine.lock_conversation(conversation).await;
        if !self.are_friends(me, peer).await? {
            return Err(not_friends());
        }
        let event = ServerFrame::Push(Push::Typing {
            conversation: conversation.clone(),
            user: me,
            active,
        });
        let mut out = Outcome::new(actor, ()).event(vec![peer], event, false);
        out.order = Some(order);
        Ok(out)
    }
}
