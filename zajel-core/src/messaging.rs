//! The messaging rules over a store: who may send where, and request validation.
//!
//! The store guarantees ordering, durability and idempotency; this module adds the product
//! rules the server enforces (only friends message each other) so every server node and test
//! applies the same ones.

use crate::error::{ErrorCode, HasErrorCode, ValidationError};
use crate::friends::{FriendError, UserPair};
use crate::ids::{ConversationId, Timestamp, UserId};
use crate::limits::{Body, IdempotencyKey};
use crate::model::{Appended, NewMessage};
use crate::store::{FriendStore, StoreError};

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

/// Validates a send request and checks the friends-only rule, returning the message to append.
/// `max_body` is the server's configured limit (capped at the protocol ceiling).
pub async fn prepare_send<S: FriendStore + ?Sized>(
    store: &S,
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
    let peer = conversation.peer_of(sender).ok_or(SendError::NotAMember)?;
    let pair = UserPair::new(sender, peer).ok_or(SendError::NotAMember)?;
    if !store.edge(pair).await?.are_friends() {
        return Err(SendError::NotFriends);
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

/// Convenience for one message: [`prepare_send`] then append.
pub async fn send_one<S: FriendStore + crate::store::MessageStore + ?Sized>(
    store: &S,
    sender: UserId,
    conversation: &ConversationId,
    body: &str,
    idempotency_key: &str,
    at: Timestamp,
) -> Result<Appended, SendError> {
    let msg = prepare_send(
        store,
        sender,
        conversation,
        body,
        idempotency_key,
        crate::limits::BODY_MAX_BYTES,
        at,
    )
    .await?;
    let mut results = store.append(vec![msg]).await;
    match results.pop() {
        Some(r) => Ok(r?),
        None => Err(SendError::Store(StoreError::Backend(
            "append returned no result".into(),
        ))),
    }
}
