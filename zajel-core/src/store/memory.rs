//! In-memory store: for tests and for embedding where persistence is not wanted.
//!
//! One mutex around plain maps. No `.await` happens while it is held, so it never blocks an
//! executor for long, and every method is trivially atomic.

use super::*;
use crate::friends::{Edge, UserPair};
use crate::ids::MessageId;
use crate::model::Message;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

mod identity;

/// The in-memory store. Cheap to create; data lives as long as the value.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use zajel_core::{MemoryStore, Timestamp, UserStore, Username};
/// let store = MemoryStore::new();
/// let u = store.create_user(&Username::parse("alice").unwrap(), None, Timestamp(0)).await.unwrap();
/// assert_eq!(store.user(u.id).await.unwrap().unwrap().username, "alice");
/// # });
/// ```
pub struct MemoryStore {
    state: Mutex<State>,
    dedupe_window_ms: u64,
    tickets: super::tickets::Tickets,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            dedupe_window_ms: DEFAULT_DEDUPE_WINDOW_MS,
            tickets: Default::default(),
        }
    }
}

#[derive(Default)]
struct State {
    users: HashMap<UserId, UserRow>,
    usernames: HashMap<String, UserId>,
    /// External identity → owner ([`IdentityStore`]).
    externals: HashMap<ExternalIdentity, UserId>,
    /// Owner → their external identities and when each was linked.
    user_externals: HashMap<UserId, BTreeMap<ExternalIdentity, Timestamp>>,
    sessions: HashMap<UserId, HashMap<String, Session>>,
    edges: HashMap<UserPair, Edge>,
    relations: HashMap<UserId, BTreeMap<UserId, RelationEntry>>,
    conversations: HashMap<ConversationId, Conversation>,
    user_conversations: HashMap<UserId, HashMap<ConversationId, u64>>,
    /// Monotonic counter ordering conversation activity (ties broken by it, not by clocks).
    activity: u64,
}

struct UserRow {
    user: User,
    password_hash: Option<String>,
    last_seen: Option<Timestamp>,
}

#[derive(Default)]
struct Conversation {
    messages: Vec<Message>,
    /// (sender, key) -> (seq, when it was recorded: the message's `sent_at`).
    idempotency: HashMap<(UserId, String), (u64, Timestamp)>,
    read: HashMap<UserId, u64>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets how long idempotency records deduplicate retries (default
    /// [`DEFAULT_DEDUPE_WINDOW_MS`]); [`Store::prune`] forgets older ones.
    pub fn with_dedupe_window(mut self, window_ms: u64) -> Self {
        self.dedupe_window_ms = window_ms;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave maps half-updated in a way that matters
        // more than losing the whole store, so recover the guard instead of propagating poison.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Updates both users' relation lists from an edge (shared by the backends' logic).
fn index_edge(
    relations: &mut HashMap<UserId, BTreeMap<UserId, RelationEntry>>,
    pair: UserPair,
    edge: &Edge,
) {
    for (me, peer, me_is_lo) in [(pair.lo, pair.hi, true), (pair.hi, pair.lo, false)] {
        let relation = edge.relation(me_is_lo);
        let list = relations.entry(me).or_default();
        if relation == Relation::None {
            list.remove(&peer);
        } else {
            list.insert(
                peer,
                RelationEntry {
                    peer,
                    relation,
                    since: edge.since_for(me_is_lo),
                },
            );
        }
    }
}

#[async_trait]
impl UserStore for MemoryStore {
    async fn create_user(
        &self,
        username: &Username,
        password_hash: Option<&str>,
        at: Timestamp,
    ) -> StoreResult<User> {
        let mut s = self.lock();
        let key = username.canonical();
        if s.usernames.contains_key(&key) {
            return Err(StoreError::UsernameTaken);
        }
        let user = User {
            id: UserId::new_random(),
            username: username.as_str().to_owned(),
            created_at: at,
        };
        s.usernames.insert(key, user.id);
        s.users.insert(
            user.id,
            UserRow {
                user: user.clone(),
                password_hash: password_hash.map(str::to_owned),
                last_seen: None,
            },
        );
        Ok(user)
    }

    async fn rename_user(&self, id: UserId, new: &Username) -> StoreResult<User> {
        let mut s = self.lock();
        let old = s
            .users
            .get(&id)
            .ok_or(StoreError::UserNotFound)?
            .user
            .username
            .clone();
        let key = new.canonical();
        if s.usernames.get(&key).is_some_and(|owner| *owner != id) {
            return Err(StoreError::UsernameTaken);
        }
        // Usernames are ASCII; the canonical form is the lower-case one (`Username::canonical`).
        s.usernames.remove(&old.to_ascii_lowercase());
        s.usernames.insert(key, id);
        let row = s.users.get_mut(&id).ok_or(StoreError::UserNotFound)?;
        row.user.username = new.as_str().to_owned();
        Ok(row.user.clone())
    }

    async fn user(&self, id: UserId) -> StoreResult<Option<User>> {
        Ok(self.lock().users.get(&id).map(|r| r.user.clone()))
    }

    async fn user_by_username(&self, username: &Username) -> StoreResult<Option<User>> {
        let s = self.lock();
        Ok(s.usernames
            .get(&username.canonical())
            .and_then(|id| s.users.get(id))
            .map(|r| r.user.clone()))
    }

    async fn password_hash(&self, id: UserId) -> StoreResult<Option<String>> {
        Ok(self
            .lock()
            .users
            .get(&id)
            .and_then(|r| r.password_hash.clone()))
    }

    async fn set_password_hash(&self, id: UserId, hash: &str) -> StoreResult<()> {
        let mut s = self.lock();
        let row = s.users.get_mut(&id).ok_or(StoreError::UserNotFound)?;
        row.password_hash = Some(hash.to_owned());
        Ok(())
    }

    async fn set_last_seen(&self, id: UserId, at: Timestamp) -> StoreResult<()> {
        let mut s = self.lock();
        let row = s.users.get_mut(&id).ok_or(StoreError::UserNotFound)?;
        row.last_seen = Some(row.last_seen.map_or(at, |t| t.max(at)));
        Ok(())
    }

    async fn last_seen(&self, id: UserId) -> StoreResult<Option<Timestamp>> {
        Ok(self.lock().users.get(&id).and_then(|r| r.last_seen))
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create_session(&self, session: &Session) -> StoreResult<()> {
        let mut s = self.lock();
        if !s.users.contains_key(&session.user_id) {
            return Err(StoreError::UserNotFound);
        }
        s.sessions
            .entry(session.user_id)
            .or_default()
            .insert(session.token_hash.clone(), session.clone());
        Ok(())
    }

    async fn session(
        &self,
        user: UserId,
        token_hash: &str,
        now: Timestamp,
    ) -> StoreResult<Option<Session>> {
        let s = self.lock();
        Ok(s.sessions
            .get(&user)
            .and_then(|m| m.get(token_hash))
            .filter(|sess| sess.expires_at > now)
            .cloned())
    }

    async fn session_with_user(
        &self,
        user: UserId,
        token_hash: &str,
        now: Timestamp,
    ) -> StoreResult<Option<(Session, User)>> {
        let s = self.lock();
        let Some(session) = s
            .sessions
            .get(&user)
            .and_then(|m| m.get(token_hash))
            .filter(|sess| sess.expires_at > now)
        else {
            return Ok(None);
        };
        Ok(s.users
            .get(&user)
            .map(|row| (session.clone(), row.user.clone())))
    }

    async fn delete_session(&self, user: UserId, token_hash: &str) -> StoreResult<bool> {
        Ok(self
            .lock()
            .sessions
            .get_mut(&user)
            .and_then(|m| m.remove(token_hash))
            .is_some())
    }

    async fn delete_user_sessions(&self, user: UserId) -> StoreResult<u64> {
        Ok(self
            .lock()
            .sessions
            .remove(&user)
            .map_or(0, |m| m.len() as u64))
    }
}

#[async_trait]
impl FriendStore for MemoryStore {
    async fn edge(&self, pair: UserPair) -> StoreResult<Edge> {
        Ok(self.lock().edges.get(&pair).copied().unwrap_or_default())
    }

    async fn swap_edge(&self, pair: UserPair, expected: Edge, new: Edge) -> StoreResult<bool> {
        let mut s = self.lock();
        let State {
            edges, relations, ..
        } = &mut *s;
        let current = edges.get(&pair).copied().unwrap_or_default();
        if current != expected {
            return Ok(false);
        }
        edges.insert(pair, new);
        index_edge(relations, pair, &new);
        Ok(true)
    }

    async fn relations(&self, user: UserId) -> StoreResult<Vec<RelationEntry>> {
        Ok(self
            .lock()
            .relations
            .get(&user)
            .map(|m| m.values().copied().collect())
            .unwrap_or_default())
    }
}

impl State {
    /// `NotFriends` unless the pair's edge says friends (the rule `append` and `mark_read`
    /// check atomically with their write).
    fn require_friends(&self, a: UserId, b: UserId) -> StoreResult<()> {
        let pair = UserPair::new(a, b).ok_or(StoreError::NotAMember)?;
        match self.edges.get(&pair).is_some_and(Edge::are_friends) {
            true => Ok(()),
            false => Err(StoreError::NotFriends),
        }
    }

    fn append_one(&mut self, m: NewMessage) -> StoreResult<Appended> {
        let Some((lo, hi)) = m.conversation.participants() else {
            return Err(StoreError::NotAMember);
        };
        let system = m.sender.is_system();
        if m.sender != lo && m.sender != hi && !system {
            return Err(StoreError::NotAMember);
        }
        // Under the same lock as `swap_edge`: a block that returned is seen here. The system's
        // messages need no friendship (the embedding app decides).
        if !system {
            self.require_friends(lo, hi)?;
        }
        let conv = self
            .conversations
            .entry(m.conversation.clone())
            .or_default();
        let key = (m.sender, m.idempotency_key.as_str().to_owned());
        if let Some((seq, _)) = conv.idempotency.get(&key) {
            let message = conv.messages[(*seq - 1) as usize].clone();
            return Ok(Appended {
                message,
                duplicate: true,
            });
        }
        let seq = conv.messages.len() as u64 + 1;
        let message = Message {
            id: MessageId::new_v7(),
            conversation: m.conversation.clone(),
            seq,
            sender: m.sender,
            body: m.body.as_str().to_owned(),
            sent_at: m.sent_at,
            idempotency_key: m.idempotency_key.as_str().to_owned(),
        };
        conv.messages.push(message.clone());
        conv.idempotency.insert(key, (seq, m.sent_at));
        if !system {
            // Sending advances the sender's own mark; the system has none.
            let mark = conv.read.entry(m.sender).or_default();
            *mark = (*mark).max(seq);
        }
        self.activity += 1;
        for member in [lo, hi] {
            self.user_conversations
                .entry(member)
                .or_default()
                .insert(m.conversation.clone(), self.activity);
        }
        Ok(Appended {
            message,
            duplicate: false,
        })
    }
}

#[async_trait]
impl MessageStore for MemoryStore {
    async fn append(&self, batch: Vec<NewMessage>) -> Vec<StoreResult<Appended>> {
        let mut s = self.lock();
        batch.into_iter().map(|m| s.append_one(m)).collect()
    }

    async fn history(
        &self,
        conversation: &ConversationId,
        query: HistoryQuery,
    ) -> StoreResult<HistoryPage> {
        let s = self.lock();
        let messages = s
            .conversations
            .get(conversation)
            .map(|c| c.messages.as_slice())
            .unwrap_or_default();
        let range = plan_page(query, messages.len() as u64)?;
        let page = if range.is_empty() {
            Vec::new()
        } else {
            messages[(range.first - 1) as usize..range.last as usize].to_vec()
        };
        Ok(HistoryPage {
            messages: page,
            has_more: range.has_more,
        })
    }

    async fn last_seq(&self, conversation: &ConversationId) -> StoreResult<u64> {
        Ok(self
            .lock()
            .conversations
            .get(conversation)
            .map_or(0, |c| c.messages.len() as u64))
    }

    async fn conversations(
        &self,
        user: UserId,
        limit: u32,
    ) -> StoreResult<Vec<ConversationSummary>> {
        let s = self.lock();
        let Some(mine) = s.user_conversations.get(&user) else {
            return Ok(Vec::new());
        };
        let mut order: Vec<(&ConversationId, &u64)> = mine.iter().collect();
        order.sort_by(|a, b| b.1.cmp(a.1));
        Ok(order
            .into_iter()
            .take(limit as usize)
            .filter_map(|(cid, _)| {
                let conv = s.conversations.get(cid)?;
                let peer = cid.peer_of(user);
                let last_seq = conv.messages.len() as u64;
                let read_seq = conv.read.get(&user).copied().unwrap_or(0);
                Some(ConversationSummary {
                    conversation: cid.clone(),
                    peer,
                    last_message: conv.messages.last().cloned(),
                    last_seq,
                    unread: last_seq.saturating_sub(read_seq),
                    read_seq,
                    peer_read_seq: peer.and_then(|p| conv.read.get(&p).copied()).unwrap_or(0),
                })
            })
            .collect())
    }

    async fn mark_read(
        &self,
        conversation: &ConversationId,
        user: UserId,
        seq: u64,
    ) -> StoreResult<ReadMark> {
        let (lo, hi) = conversation
            .participants()
            .filter(|(lo, hi)| user == *lo || user == *hi)
            .ok_or(StoreError::NotAMember)?;
        let mut s = self.lock();
        s.require_friends(lo, hi)?;
        let last = s
            .conversations
            .get(conversation)
            .map_or(0, |c| c.messages.len() as u64);
        if seq > last {
            return Err(StoreError::InvalidCursor(format!(
                "seq {seq} is past the last message ({last})"
            )));
        }
        let conv = s.conversations.entry(conversation.clone()).or_default();
        let mark = conv.read.entry(user).or_default();
        let changed = seq > *mark;
        *mark = (*mark).max(seq);
        Ok(ReadMark {
            conversation: conversation.clone(),
            user,
            seq: *mark,
            changed,
        })
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn prune(&self, now: Timestamp) -> StoreResult<Pruned> {
        let mut s = self.lock();
        let mut pruned = Pruned::default();
        s.sessions.retain(|_, mine| {
            let before = mine.len();
            mine.retain(|_, session| session.expires_at > now);
            pruned.sessions += (before - mine.len()) as u64;
            !mine.is_empty()
        });
        // Records at or before this instant are past the window.
        let horizon = now.plus_millis(-(self.dedupe_window_ms.min(i64::MAX as u64) as i64));
        for conv in s.conversations.values_mut() {
            let before = conv.idempotency.len();
            conv.idempotency.retain(|_, (_, at)| *at > horizon);
            pruned.idempotency_records += (before - conv.idempotency.len()) as u64;
        }
        Ok(pruned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{Body, IdempotencyKey};

    const T0: Timestamp = Timestamp(1_700_000_000_000);

    #[tokio::test]
    async fn prune_deletes_expired_records() {
        let store = MemoryStore::new().with_dedupe_window(1_000);
        let a = store
            .create_user(&Username::parse("alice").unwrap(), None, T0)
            .await
            .unwrap();
        let b = UserId::new_random();
        for (hash, life) in [("short", 10), ("long", 60_000)] {
            let s = Session {
                user_id: a.id,
                token_hash: hash.into(),
                created_at: T0,
                expires_at: T0.plus_millis(life),
            };
            store.create_session(&s).await.unwrap();
        }
        let friends = Edge {
            link: crate::friends::Link::Friends,
            ..Edge::default()
        };
        let pair = UserPair::new(a.id, b).unwrap();
        assert!(
            store
                .swap_edge(pair, Edge::default(), friends)
                .await
                .unwrap()
        );
        let conv = ConversationId::direct(a.id, b);
        let at = |key: &str, t: Timestamp| NewMessage {
            conversation: conv.clone(),
            sender: a.id,
            body: Body::parse("m").unwrap(),
            idempotency_key: IdempotencyKey::parse(key).unwrap(),
            sent_at: t,
        };
        let batch = vec![at("k1", T0), at("k2", T0), at("k3", T0.plus_millis(5_000))];
        for r in store.append(batch).await {
            r.unwrap();
        }
        let now = T0.plus_millis(3_000);
        let pruned = store.prune(now).await.unwrap();
        assert_eq!((pruned.sessions, pruned.idempotency_records), (1, 2));
        assert_eq!(store.prune(now).await.unwrap(), Pruned::default());
        assert!(store.session(a.id, "long", now).await.unwrap().is_some());
        assert_eq!(store.session(a.id, "short", T0).await.unwrap(), None);
        let again = store.append(vec![at("k1", now)]).await.remove(0).unwrap();
        assert_eq!((again.duplicate, again.message.seq), (false, 4));
        let dup = store.append(vec![at("k3", now)]).await.remove(0).unwrap();
        assert!(dup.duplicate);
    }
}
