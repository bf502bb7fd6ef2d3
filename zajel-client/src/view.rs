//! The contact list as the server last showed it, kept in the [`crate::Snapshot`] so an app
//! reloaded (or restarted) while the server is unreachable still shows its friends and
//! conversations, and the messages typed offline have somewhere to show.
//!
//! The server is the truth: every `synced` replaces the whole view, and `friends` /
//! `conversations` answers replace their part. Between them, live events keep it current
//! (a message moves its conversation to the top, a friend change updates the entry), so a
//! reload shows what the app last showed. It is bounded: the
//! [`CachedView::MAX_CONVERSATIONS`] most recent conversations and
//! [`CachedView::MAX_FRIENDS`] friends-list entries, last-message previews cut to
//! [`CachedView::PREVIEW_BYTES`].

use serde::{Deserialize, Serialize};
use zajel_core::protocol::FriendEntry;
use zajel_core::{ConversationId, ConversationSummary, Message, Relation, Timestamp, User, UserId};

/// Friends and conversation summaries as last seen from the server (see the module docs).
/// Serializes as `{ "friends": [...], "conversations": [...] }`, the protocol's shapes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedView {
    /// The friends list (friends, requests both ways, blocks), in the server's order.
    #[serde(default)]
    pub friends: Vec<FriendEntry>,
    /// Conversations, most recently active first.
    #[serde(default)]
    pub conversations: Vec<ConversationSummary>,
}

impl CachedView {
    /// At most this many conversations are kept (the most recently active).
    pub const MAX_CONVERSATIONS: usize = 1000;
    /// At most this many friends-list entries are kept.
    pub const MAX_FRIENDS: usize = 1000;
    /// A cached last message keeps at most this many bytes of its body (a preview).
    pub const PREVIEW_BYTES: usize = 256;

    /// Nothing cached.
    pub fn is_empty(&self) -> bool {
        self.friends.is_empty() && self.conversations.is_empty()
    }

    /// The server's lists, bounded.
    pub(crate) fn from_server(
        friends: Vec<FriendEntry>,
        conversations: Vec<ConversationSummary>,
    ) -> Self {
        let mut view = Self::default();
        view.replace_friends(friends);
        view.replace_conversations(conversations);
        view
    }

    /// A `friends` answer: the whole list.
    pub(crate) fn replace_friends(&mut self, mut friends: Vec<FriendEntry>) {
        friends.truncate(Self::MAX_FRIENDS);
        self.friends = friends;
    }

    /// A complete conversation list (`synced`).
    pub(crate) fn replace_conversations(&mut self, conversations: Vec<ConversationSummary>) {
        self.conversations = conversations
            .into_iter()
            .take(Self::MAX_CONVERSATIONS)
            .map(preview)
            .collect();
    }

    /// A `conversations` answer: the most recent ones (maybe only a page). They go first, in
    /// the server's order; cached ones it did not list keep their place after them.
    pub(crate) fn merge_conversations(&mut self, page: Vec<ConversationSummary>) {
        let mut rest = std::mem::take(&mut self.conversations);
        rest.retain(|c| !page.iter().any(|p| p.conversation == c.conversation));
        let mut all: Vec<ConversationSummary> = page.into_iter().map(preview).collect();
        all.extend(rest);
        all.truncate(Self::MAX_CONVERSATIONS);
        self.conversations = all;
    }

    /// A message stored in a conversation (live, replayed, or my own acknowledged): its
    /// conversation becomes the most recent. Older messages (history pages) change nothing.
    pub(crate) fn on_message(&mut self, me: Option<UserId>, m: &Message) {
        let at = self
            .conversations
            .iter()
            .position(|c| c.conversation == m.conversation);
        let mut summary = match at {
            Some(i) if self.conversations[i].last_seq >= m.seq => return,
            Some(i) => self.conversations.remove(i),
            None => ConversationSummary {
                conversation: m.conversation.clone(),
                peer: me.and_then(|me| m.conversation.peer_of(me)),
                last_message: None,
                last_seq: 0,
                unread: 0,
                read_seq: 0,
                peer_read_seq: 0,
            },
        };
        summary.last_seq = m.seq;
        summary.last_message = Some(m.clone());
        if me == Some(m.sender) {
            // Sending moves my own read mark (the server does the same).
            summary.read_seq = m.seq;
            summary.unread = 0;
        } else {
            summary.unread = m.seq.saturating_sub(summary.read_seq);
        }
        self.conversations.insert(0, preview(summary));
        self.conversations.truncate(Self::MAX_CONVERSATIONS);
    }

    /// A `friend` event: my relation with `user` is now `relation`.
    pub(crate) fn on_friend(&mut self, user: &User, relation: Relation, at: Timestamp) {
        let existing = self.friends.iter().position(|f| f.user.id == user.id);
        match (existing, relation) {
            (Some(i), Relation::None) => {
                self.friends.remove(i);
            }
            (Some(i), relation) => {
                let f = &mut self.friends[i];
                f.user = user.clone();
                f.relation = relation;
                f.since = at;
            }
            (None, Relation::None) => {}
            (None, relation) if self.friends.len() < Self::MAX_FRIENDS => {
                self.friends.push(FriendEntry {
                    user: user.clone(),
                    relation,
                    since: at,
                    online: false,
                    last_seen: None,
                });
            }
            (None, _) => {}
        }
    }

    /// A `read` event: `user`'s mark in `conversation` moved to `seq`.
    pub(crate) fn on_read(
        &mut self,
        me: Option<UserId>,
        conversation: &ConversationId,
        user: UserId,
        seq: u64,
    ) {
        let Some(c) = self
            .conversations
            .iter_mut()
            .find(|c| &c.conversation == conversation)
        else {
            return;
        };
        if me == Some(user) {
            c.read_seq = c.read_seq.max(seq);
            c.unread = c.last_seq.saturating_sub(c.read_seq);
        } else {
            c.peer_read_seq = c.peer_read_seq.max(seq);
        }
    }
}

/// The summary with its last message's body cut to a preview.
fn preview(mut c: ConversationSummary) -> ConversationSummary {
    if let Some(m) = c.last_message.as_mut()
        && m.body.len() > CachedView::PREVIEW_BYTES
    {
        let mut end = CachedView::PREVIEW_BYTES;
        while !m.body.is_char_boundary(end) {
            end -= 1;
        }
        m.body.truncate(end);
        m.body.push('…');
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use zajel_core::MessageId;

    fn message(conversation: &ConversationId, seq: u64, sender: UserId, body: &str) -> Message {
        Message {
            id: MessageId::new_v7(),
            conversation: conversation.clone(),
            seq,
            sender,
            body: body.into(),
            sent_at: Timestamp(seq as i64),
            idempotency_key: format!("k{seq}"),
        }
    }

    fn user(id: UserId, name: &str) -> User {
        User {
            id,
            username: name.into(),
            created_at: Timestamp(1),
        }
    }

    #[test]
    fn live_messages_move_their_conversation_to_the_top_and_count_unread() {
        let (me, bob, carol) = (
            UserId::new_random(),
            UserId::new_random(),
            UserId::new_random(),
        );
        let (cb, cc) = (
            ConversationId::direct(me, bob),
            ConversationId::direct(me, carol),
        );
        let mut view = CachedView::default();
        view.on_message(Some(me), &message(&cb, 1, bob, "hi"));
        view.on_message(Some(me), &message(&cc, 1, carol, "yo"));
        view.on_message(Some(me), &message(&cb, 2, bob, "there?"));
        let order: Vec<_> = view.conversations.iter().map(|c| &c.conversation).collect();
        assert_eq!(order, [&cb, &cc]);
        assert_eq!(view.conversations[0].peer, Some(bob));
        assert_eq!(view.conversations[0].unread, 2);
        // An older message (a history page) changes nothing.
        view.on_message(Some(me), &message(&cb, 1, bob, "hi"));
        assert_eq!(view.conversations[0].last_seq, 2);
        // My own message reads everything before it.
        view.on_message(Some(me), &message(&cb, 3, me, "here"));
        assert_eq!(
            (view.conversations[0].unread, view.conversations[0].read_seq),
            (0, 3)
        );
        view.on_read(Some(me), &cb, bob, 3);
        assert_eq!(view.conversations[0].peer_read_seq, 3);
    }

    #[test]
    fn the_view_is_bounded_and_previews_are_cut() {
        let me = UserId::new_random();
        let mut view = CachedView::default();
        for _ in 0..CachedView::MAX_CONVERSATIONS + 5 {
            let peer = UserId::new_random();
            let c = ConversationId::direct(me, peer);
            view.on_message(Some(me), &message(&c, 1, peer, &"é".repeat(1000)));
        }
        assert_eq!(view.conversations.len(), CachedView::MAX_CONVERSATIONS);
        let body = &view.conversations[0].last_message.as_ref().unwrap().body;
        assert!(
            body.len() <= CachedView::PREVIEW_BYTES + '…'.len_utf8(),
            "{}",
            body.len()
        );
        assert!(body.ends_with('…'));

        let friends: Vec<FriendEntry> = (0..CachedView::MAX_FRIENDS + 1)
            .map(|i| FriendEntry {
                user: user(UserId::new_random(), &format!("u{i}")),
                relation: Relation::Friends,
                since: Timestamp(1),
                online: false,
                last_seen: None,
            })
            .collect();
        let view = CachedView::from_server(friends, Vec::new());
        assert_eq!(view.friends.len(), CachedView::MAX_FRIENDS);
    }

    #[test]
    fn friend_events_update_the_list_and_answers_replace_it() {
        let (me, bob) = (UserId::new_random(), UserId::new_random());
        let mut view = CachedView::default();
        let b = user(bob, "bob");
        view.on_friend(&b, Relation::RequestReceived, Timestamp(5));
        view.on_friend(&b, Relation::Friends, Timestamp(6));
        assert_eq!(view.friends.len(), 1);
        assert_eq!(
            (view.friends[0].relation, view.friends[0].since),
            (Relation::Friends, Timestamp(6))
        );
        view.on_friend(&b, Relation::None, Timestamp(7));
        assert!(view.friends.is_empty());

        // A page of the conversation list goes first; what it did not list stays after it.
        let (c1, c2) = (
            ConversationId::direct(me, bob),
            ConversationId::direct(me, UserId::new_random()),
        );
        view.on_message(Some(me), &message(&c1, 1, bob, "a"));
        view.on_message(Some(me), &message(&c2, 1, me, "b"));
        let mut page = view.conversations[1].clone();
        page.unread = 9;
        view.merge_conversations(vec![page]);
        assert_eq!(view.conversations.len(), 2);
        assert_eq!(
            (
                &view.conversations[0].conversation,
                view.conversations[0].unread
            ),
            (&c1, 9)
        );
        view.replace_conversations(Vec::new());
        assert!(view.conversations.is_empty());
    }
}
