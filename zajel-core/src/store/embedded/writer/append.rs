//! The append path: a message is prepared on the caller's task (everything that does not
//! depend on the transaction's state: its id, its stored JSON, its keys), so the single
//! writer thread, which every send in the process queues behind, only reads, checks and
//! inserts.

use super::{OpError, OpResult, Tx, fatal};
use crate::ids::{MessageId, UserId};
use crate::model::{Appended, Message, NewMessage};
use crate::store::embedded::conv_rows::{
    ConvKey, conv_state, idempotent_seq, message_at, seq_bytes,
};
use crate::store::embedded::tables::{bucket_of, encode, member_side, uid};
use crate::store::{StoreError, StoreResult};

/// What the JSON of a message prepared with `seq` 0 has where the seq goes. Only the id and
/// the conversation id come before it, and neither can contain it (a UUID and
/// `dm.<hex>.<hex>`), so its first occurrence is the field.
const SEQ_FIELD: &[u8] = b",\"seq\":0,";

/// A message ready to append, prepared off the writer thread by [`PreparedMessage::new`].
pub(in crate::store::embedded) struct PreparedMessage {
    /// The message as it will be stored, with `seq` 0 until the writer assigns it.
    message: Message,
    /// The lower and higher member.
    members: (UserId, UserId),
    /// The conversation's key prefix (its members).
    key: ConvKey,
    /// The sender's side (whose read mark the send moves); `None` for the system.
    side: Option<usize>,
    /// The idempotency bucket of `sent_at` (the conversation's current one may be later).
    bucket: u64,
    /// `message` as stored, with `0` for the seq at `seq_at`.
    json: Vec<u8>,
    seq_at: usize,
}

impl PreparedMessage {
    /// Mints the id and encodes the row; `NotAMember` when the sender is not in the
    /// conversation (refused before queueing: it depends on nothing stored).
    pub(in crate::store::embedded) fn new(m: NewMessage, window_ms: u64) -> StoreResult<Self> {
        let members = m
            .conversation
            .participants()
            .ok_or(StoreError::NotAMember)?;
        // A member's side; none for the system's messages, which need no friendship either
        // (the embedding app decides).
        let side = match m.sender.is_system() {
            true => None,
            false => Some(member_side(members, m.sender).ok_or(StoreError::NotAMember)?),
        };
        let message = Message {
            id: MessageId::new_v7(),
            conversation: m.conversation,
            seq: 0,
            sender: m.sender,
            body: m.body.as_str().to_owned(),
            sent_at: m.sent_at,
            idempotency_key: m.idempotency_key.as_str().to_owned(),
        };
        let json = encode(&message)?;
        let seq_at = json
            .windows(SEQ_FIELD.len())
            .position(|w| w == SEQ_FIELD)
            .map(|at| at + SEQ_FIELD.len() - 2)
            .ok_or_else(|| StoreError::Backend("a message's JSON has no seq field".into()))?;
        Ok(Self {
            bucket: bucket_of(message.sent_at, window_ms),
            message,
            members,
            key: ConvKey::new(members),
            side,
            json,
            seq_at,
        })
    }

    /// The stored row with `seq` in place: the same bytes as encoding the message with it.
    fn row(&self, seq: u64) -> Vec<u8> {
        let digits = seq.to_string();
        let mut row = Vec::with_capacity(self.json.len() + digits.len());
        row.extend_from_slice(&self.json[..self.seq_at]);
        row.extend_from_slice(digits.as_bytes());
        row.extend_from_slice(&self.json[self.seq_at + 1..]);
        row
    }
}

impl Tx<'_> {
    /// Appends each message; per-message refusals are values, I/O failures abort the batch.
    /// `window_ms` is the dedupe window (the idempotency bucket width).
    pub(in crate::store::embedded) fn append(
        &mut self,
        batch: Vec<StoreResult<PreparedMessage>>,
        window_ms: u64,
    ) -> OpResult<Vec<StoreResult<Appended>>> {
        batch
            .into_iter()
            .map(|m| {
                match m
                    .map_err(OpError::Reject)
                    .and_then(|m| self.append_one(m, window_ms))
                {
                    Ok(a) => Ok(Ok(a)),
                    Err(OpError::Reject(e)) => Ok(Err(e)),
                    Err(fatal) => Err(fatal),
                }
            })
            .collect()
    }

    /// One message: reads the pair's edge, the conversation's meta row and at most two
    /// idempotency records, writes the message, its idempotency record and the meta row, all in
    /// the conversation's one key range (plus the bucket's entry in `idempotency_windows` when
    /// the conversation's bucket moves on, and the two members' list entries for a
    /// conversation's first message).
    fn append_one(&mut self, m: PreparedMessage, window_ms: u64) -> OpResult<Appended> {
        let (lo, hi) = m.members;
        if m.side.is_some() {
            self.require_friends(lo, hi)?;
        }
        let conv = &m.key;
        let key = m.message.idempotency_key.as_str();
        let sender = uid(m.message.sender);
        let mut state = conv_state(self.rows()?, conv)?;
        // The bucket never moves backwards (see `ConvState::idem_bucket`); a key is looked up
        // in it and the one before. Sees earlier messages of this same transaction, so
        // in-batch duplicates are caught.
        let bucket = state.idem_bucket.max(m.bucket);
        let previous = bucket.checked_sub(window_ms.max(1));
        let mut first = None;
        for b in std::iter::once(bucket).chain(previous) {
            first = idempotent_seq(self.rows()?, conv, b, sender, key)?;
            if first.is_some() {
                break;
            }
        }
        if let Some(seq) = first {
            let message = message_at(self.rows()?, conv, seq)?.ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "idempotency key points at missing {}#{seq}",
                    m.message.conversation
                ))
            })?;
            return Ok(Appended {
                message,
                duplicate: true,
            });
        }
        let is_new = state.last_seq == 0;
        let seq = state.last_seq + 1;
        let row = m.row(seq);
        state.last_seq = seq;
        // Sending advances the sender's own read mark (the new message is the newest).
        if let Some(side) = m.side {
            state.marks[side] = seq;
        }
        state.activity = self.next_activity()?;
        // Pruning finds records through `idempotency_windows`: list this bucket once.
        let list_bucket = bucket != state.idem_bucket || !state.idem_indexed;
        state.idem_bucket = bucket;
        state.idem_indexed = true;

        let rows = self.rows()?;
        rows.insert(&conv.message(seq)[..], row.as_slice())
            .map_err(fatal)?;
        rows.insert(
            conv.idempotency(bucket, sender, key).as_slice(),
            &seq_bytes(seq)[..],
        )
        .map_err(fatal)?;
        rows.insert(&conv.meta()[..], &state.encode()[..])
            .map_err(fatal)?;
        if list_bucket {
            self.idem_windows()?
                .insert((bucket, uid(lo), uid(hi)), ())
                .map_err(fatal)?;
        }
        if is_new {
            let name = m.message.conversation.as_str();
            for member in [lo, hi] {
                self.member_convs()?
                    .insert((uid(member), name), ())
                    .map_err(fatal)?;
            }
        }
        let mut message = m.message;
        message.seq = seq;
        Ok(Appended {
            message,
            duplicate: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ConversationId, Timestamp};
    use crate::limits::{Body, IdempotencyKey};

    /// The writer's row is byte for byte what encoding the finished message gives, for any
    /// seq, for system messages (whose extra field follows the seq) and for bodies and keys
    /// that contain the seq field's own text.
    #[test]
    fn row_equals_the_encoded_message() {
        let (a, b) = (UserId::new_random(), UserId::new_random());
        let conv = ConversationId::direct(a, b);
        let tricky = r#"x,"seq":0,"seq":0"#;
        for (sender, body, key) in [
            (a, "hello", "k1"),
            (b, tricky, "k2"),
            (UserId::SYSTEM, "notice", r#"k,"seq":0,"#),
        ] {
            let new = NewMessage {
                conversation: conv.clone(),
                sender,
                body: Body::parse(body).unwrap(),
                idempotency_key: IdempotencyKey::parse(key).unwrap(),
                sent_at: Timestamp(1_700_000_000_123),
            };
            let prepared = PreparedMessage::new(new, 60_000).unwrap();
            for seq in [1, 9, 10, 12_345, u64::MAX] {
                let mut message = prepared.message.clone();
                message.seq = seq;
                assert_eq!(prepared.row(seq), encode(&message).unwrap(), "seq {seq}");
            }
        }
    }

    /// A sender outside the conversation is refused while preparing, before queueing.
    #[test]
    fn outsiders_are_refused_before_queueing() {
        let (a, b, c) = (
            UserId::new_random(),
            UserId::new_random(),
            UserId::new_random(),
        );
        let new = NewMessage {
            conversation: ConversationId::direct(a, b),
            sender: c,
            body: Body::parse("m").unwrap(),
            idempotency_key: IdempotencyKey::parse("k").unwrap(),
            sent_at: Timestamp(1),
        };
        assert!(matches!(
            PreparedMessage::new(new, 60_000),
            Err(StoreError::NotAMember)
        ));
    }
}
