//! The messaging rules over a store: who may send where, and request validation.
//!
//! The store guarantees ordering, durability and idempotency, and checks the friends-only rule
//! in the same atomic step as the append (so a block that has been acknowledged stops every
//! later send, on any node); this module validates a send request before it reaches the
//! store, so every server node and test applies the same rules.

use crate::error::{ErrorCode, HasErrorCode, ValidationError};
use crate::friends::FriendError;
use crate::ids::{ConversationId, Timestamp, UserId};
use crate::limits::{Body, IdempotencyKey};
use crate::model::{Appended, NewMessage};
use crate::store::{MessageStore, StoreError};

/// Why a send was refused.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Invalid body or key.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The sender is not in the conversation.
    #[error("conversation not found")]
    NotAMember,
    /// The participants are not (or no longer) friends.
    #[error("you can only message friends")]
    NotFriends,
    /// Store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl HasErrorCode for SendError {
    fn code(&self) -> ErrorCode {
        match self {
            SendError::Invalid(e) => e.code(),
            SendError::NotAMember => ErrorCode::ConversationNotFound,
            SendError::NotFriends => ErrorCode::NotFriends,
            SendError::Store(e) => e.code(),
        }
    }
}

impl From<FriendError> for SendError {
    fn from(e: FriendError) -> Self {
        match e {
            FriendError::Store(s) => SendError::Store(s),
            _ => SendError::NotFriends,
        }
    }
}

/// Validates a send request (body, key, membership), returning the message to append. The
/// friends-only rule is not checked here: [`MessageStore::append`] checks it atomically with
/// the write (a check here would be a separate read that a block could overtake).
/// `max_body` is the server's configured limit (capped at the protocol ceiling).
///
/// ```
/// use zajel_core::{ConversationId, Timestamp, UserId, messaging::prepare_send};
/// let (me, friend) = (UserId::new_random(), UserId::new_random());
/// let conversation = ConversationId::direct(me, friend);
/// let new = prepare_send(me, &conversation, "hi", "key-1", 4096, Timestamp(0)).unwrap();
/// assert_eq!(new.body.as_str(), "hi");
/// assert!(prepare_send(UserId::new_random(), &conversation, "hi", "k", 4096, Timestamp(0)).is_err());
/// ```
pub fn prepare_send(
    sender: UserId,
    conversation: &ConversationId,
    body: &str,
    idempotency_key: &str,
    max_body: usize,
    at: Timestamp,
) -> Result<NewMessage, SendError> {
    let new = validated(conversation, sender, body, idempotency_key, max_body, at)?;
    if sender.is_system() {
        // Only `prepare_system` writes as the system (whose messages need no friendship).
        return Err(SendError::NotAMember);
    }
    if conversation.peer_of(sender).is_none() {
        return Err(SendError::NotAMember);
    }
    Ok(new)
}

/// The message `sender` would append, once its body and key are valid (checked first, so a bad
/// request says what is wrong with it whoever it is for).
fn validated(
    conversation: &ConversationId,
    sender: UserId,
    body: &str,
    idempotency_key: &str,
    max_body: usize,
    at: Timestamp,
) -> Result<NewMessage, SendError> {
    Ok(NewMessage {
        conversation: conversation.clone(),
        sender,
        body: Body::parse_with_max(body, max_body)?,
        idempotency_key: IdempotencyKey::parse(idempotency_key)?,
        sent_at: at,
    })
}

/// Validates a system message for `conversation` (a direct conversation between two users,
/// neither of them [`UserId::SYSTEM`]), returning the message to append from
/// [`UserId::SYSTEM`]. No friendship is required: the embedding app posting it decides
/// whether the relation allows it. Body and key follow the rules of a person's send; the key
/// is scoped to the system sender in that conversation, apart from the members' keys.
pub fn prepare_system(
    conversation: &ConversationId,
    body: &str,
    idempotency_key: &str,
    max_body: usize,
    at: Timestamp,
) -> Result<NewMessage, SendError> {
    let new = validated(
        conversation,
        UserId::SYSTEM,
        body,
        idempotency_key,
        max_body,
        at,
    )?;
    match conversation.participants() {
        Some((a, b)) if !a.is_system() && !b.is_system() => Ok(new),
        _ => Err(SendError::NotAMember),
    }
}

/// Convenience for one message: [`prepare_send`] then append (which refuses non-friends).
pub async fn send_one<S: MessageStore + ?Sized>(
    store: &S,
    sender: UserId,
    conversation: &ConversationId,
    body: &str,
    idempotency_key: &str,
    at: Timestamp,
) -> Result<Appended, SendError> {
    let msg = prepare_send(
        sender,
        conversation,
        body,
        idempotency_key,
        crate::limits::BODY_MAX_BYTES,
        at,
    )?;
    let mut results = store.append(vec![msg]).await;
    match results.pop() {
        Some(Err(StoreError::NotFriends)) => Err(SendError::NotFriends),
        Some(r) => Ok(r?),
        None => Err(SendError::Store(StoreError::Backend(
            "append returned no result".into(),
        ))),
    }
}
