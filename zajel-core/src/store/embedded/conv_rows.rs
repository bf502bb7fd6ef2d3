//! Layout v4's conversation table: everything of a direct conversation in one key range, ordered
//! so that what one send writes sits together.
//!
//! A key is `lo u128 | hi u128 | tag u8 | …` (the two members, big-endian, so a conversation is
//! one contiguous range), and within a conversation:
//!
//! | tag | rest of the key | value |
//! |---|---|---|
//! | 1 idempotency record | `bucket u64 BE | sender u128 BE | key bytes` | seq (`u64` LE) |
//! | 2 meta row | – | [`ConvState`] (41 bytes) |
//! | 3 message | `u64::MAX - seq` BE | the message (JSON) |
//!
//! Messages are keyed by *descending* seq, so the newest one sits right after the meta row and
//! the idempotency records (whose keys grow with each sender's key) right before it: a send's
//! three inserts land in one or two leaves and one branch path of one tree, instead of a leaf
//! and a branch path in each of three tables (layout v3). Measured in
//! `docs/benchmarks.md` ("Issue 13: embedded layout v4 (session 7)").

use super::tables::be;
use crate::ids::{ConversationId, UserId};
use crate::model::Message;
use crate::store::{StoreError, StoreResult};
use redb::{ReadableTable, TableDefinition};

/// `lo | hi | tag | …` → value: see the module docs.
pub(super) const CONV_ROWS: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("conversation_rows");

/// (bucket start ms, lo, hi) → (): which conversations wrote idempotency records into which
/// bucket, so pruning finds them without a per-message index. Written once per conversation
/// and bucket (when its bucket moves on), not per message.
pub(super) const IDEMPOTENCY_WINDOWS: TableDefinition<(u64, u128, u128), ()> =
    TableDefinition::new("idempotency_windows");

const TAG_IDEMPOTENCY: u8 = 1;
const TAG_META: u8 = 2;
const TAG_MESSAGE: u8 = 3;

/// The 32-byte prefix of a conversation's keys: its lower and higher member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ConvKey([u8; 32]);

impl ConvKey {
    pub fn from_uids(lo: u128, hi: u128) -> Self {
        let mut k = [0u8; 32];
        k[..16].copy_from_slice(&lo.to_be_bytes());
        k[16..].copy_from_slice(&hi.to_be_bytes());
        Self(k)
    }

    pub fn new((lo, hi): (UserId, UserId)) -> Self {
        Self::from_uids(lo.0.as_u128(), hi.0.as_u128())
    }

    /// The key prefix of a conversation (every conversation id names its two members).
    pub fn of(conversation: &ConversationId) -> StoreResult<Self> {
        conversation.participants().map(Self::new).ok_or_else(|| {
            StoreError::Corrupt(format!("{conversation}: not a direct conversation"))
        })
    }

    /// The (lower, higher) member ids.
    pub fn members(&self) -> (u128, u128) {
        let mut lo = [0u8; 16];
        let mut hi = [0u8; 16];
        lo.copy_from_slice(&self.0[..16]);
        hi.copy_from_slice(&self.0[16..]);
        (u128::from_be_bytes(lo), u128::from_be_bytes(hi))
    }

    fn with_tag<const N: usize>(&self, tag: u8) -> [u8; N] {
        let mut k = [0u8; N];
        k[..32].copy_from_slice(&self.0);
        k[32] = tag;
        k
    }

    /// The meta row's key.
    pub fn meta(&self) -> [u8; 33] {
        self.with_tag(TAG_META)
    }

    /// Message `seq`'s key (descending: a higher seq sorts first).
    pub fn message(&self, seq: u64) -> [u8; 41] {
        let mut k = self.with_tag::<41>(TAG_MESSAGE);
        k[33..].copy_from_slice(&(u64::MAX - seq).to_be_bytes());
        k
    }

    /// The key of `sender`'s idempotency record `key` in `bucket`.
    pub fn idempotency(&self, bucket: u64, sender: u128, key: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(57 + key.len());
        k.extend_from_slice(&self.with_tag::<33>(TAG_IDEMPOTENCY));
        k.extend_from_slice(&bucket.to_be_bytes());
        k.extend_from_slice(&sender.to_be_bytes());
        k.extend_from_slice(key.as_bytes());
        k
    }

    /// The keys of every idempotency record in `bucket`: `start..end`.
    pub fn idempotency_bucket(&self, bucket: u64) -> (Vec<u8>, Vec<u8>) {
        let mut start = self.with_tag::<33>(TAG_IDEMPOTENCY).to_vec();
        start.extend_from_slice(&bucket.to_be_bytes());
        let end = match bucket.checked_add(1) {
            Some(next) => {
                let mut end = self.with_tag::<33>(TAG_IDEMPOTENCY).to_vec();
                end.extend_from_slice(&next.to_be_bytes());
                end
            }
            None => self.meta().to_vec(),
        };
        (start, end)
    }
}

/// A direct conversation's state (its meta row): one read and one write per message instead of
/// one per concern (sequence, read marks, activity, idempotency bucket).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct ConvState {
    /// Seq of the newest message (0: none yet).
    pub last_seq: u64,
    /// Read marks of the lower and the higher participant id.
    pub marks: [u64; 2],
    /// Activity stamp of the newest message (orders each member's conversation list).
    pub activity: u64,
    /// Start (ms) of the idempotency bucket the conversation writes into. Never moves
    /// backwards, so a clock stepping back cannot hide records written "later".
    pub idem_bucket: u64,
    /// Whether [`IDEMPOTENCY_WINDOWS`] lists `(idem_bucket, this conversation)`. Pruning clears
    /// it when it deletes that entry, so a later record in the same bucket re-adds it.
    pub idem_indexed: bool,
}

/// Bytes of an encoded [`ConvState`]: five `u64` LE and a flag byte.
const STATE_LEN: usize = 41;

impl ConvState {
    pub fn encode(&self) -> [u8; STATE_LEN] {
        let mut out = [0u8; STATE_LEN];
        let fields = [
            self.last_seq,
            self.marks[0],
            self.marks[1],
            self.activity,
            self.idem_bucket,
        ];
        for (i, v) in fields.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        out[40] = u8::from(self.idem_indexed);
        out
    }

    pub fn decode(bytes: &[u8]) -> StoreResult<Self> {
        if bytes.len() != STATE_LEN || bytes[40] > 1 {
            return Err(StoreError::Corrupt(format!(
                "conversation state of {} bytes",
                bytes.len()
            )));
        }
        let field = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            u64::from_le_bytes(b)
        };
        Ok(Self {
            last_seq: field(0),
            marks: [field(1), field(2)],
            activity: field(3),
            idem_bucket: field(4),
            idem_indexed: bytes[40] == 1,
        })
    }

    /// `user`'s read mark, 0 for a non-member (callers check membership first).
    pub fn mark(&self, conversation: &ConversationId, user: UserId) -> u64 {
        conversation
            .participants()
            .and_then(|members| super::tables::member_side(members, user))
            .map_or(0, |side| self.marks[side])
    }
}

/// The table type every lookup below takes (read transactions and the writer alike).
pub(super) trait Rows: ReadableTable<&'static [u8], &'static [u8]> {}
impl<T: ReadableTable<&'static [u8], &'static [u8]>> Rows for T {}

/// The conversation's state; the default (nothing sent yet) when it has no meta row.
pub(super) fn conv_state(t: &impl Rows, key: &ConvKey) -> StoreResult<ConvState> {
    match t.get(&key.meta()[..]).map_err(be)? {
        Some(v) => ConvState::decode(v.value()),
        None => Ok(ConvState::default()),
    }
}

/// Message `seq` of the conversation, if stored.
pub(super) fn message_at(t: &impl Rows, key: &ConvKey, seq: u64) -> StoreResult<Option<Message>> {
    match t.get(&key.message(seq)[..]).map_err(be)? {
        Some(v) => super::tables::decode("message", v.value()).map(Some),
        None => Ok(None),
    }
}

/// The seq an idempotency record points at, if there is one.
pub(super) fn idempotent_seq(
    t: &impl Rows,
    key: &ConvKey,
    bucket: u64,
    sender: u128,
    idempotency_key: &str,
) -> StoreResult<Option<u64>> {
    match t
        .get(key.idempotency(bucket, sender, idempotency_key).as_slice())
        .map_err(be)?
    {
        Some(v) => Ok(Some(seq_value(v.value())?)),
        None => Ok(None),
    }
}

/// An idempotency record's value.
pub(super) fn seq_bytes(seq: u64) -> [u8; 8] {
    seq.to_le_bytes()
}

fn seq_value(bytes: &[u8]) -> StoreResult<u64> {
    let b: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("idempotency record of {} bytes", bytes.len())))?;
    Ok(u64::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A conversation's keys sort idempotency records, then the meta row, then messages newest
    /// first, all inside the members' prefix; a bucket's range holds exactly its records.
    #[test]
    fn keys_sort_as_the_layout_says() {
        let k = ConvKey::from_uids(7, 9);
        let next = ConvKey::from_uids(7, 10);
        let idem_old = k.idempotency(5, u128::MAX, "zzz");
        let idem = k.idempotency(6, 1, "a");
        let meta = k.meta().to_vec();
        let (m9, m2) = (k.message(9).to_vec(), k.message(2).to_vec());
        let mut keys = vec![
            next.meta().to_vec(),
            m2.clone(),
            meta.clone(),
            m9.clone(),
            idem.clone(),
            idem_old.clone(),
        ];
        keys.sort();
        assert_eq!(
            keys,
            vec![
                idem_old.clone(),
                idem.clone(),
                meta,
                m9,
                m2,
                next.meta().to_vec()
            ]
        );
        let (start, end) = k.idempotency_bucket(6);
        assert!(start <= idem && idem < end);
        assert!(idem_old < start);
        let (_, last_end) = k.idempotency_bucket(u64::MAX);
        assert_eq!(last_end, k.meta().to_vec());
        assert_eq!(k.members(), (7, 9));
    }

    /// The meta row round-trips; other lengths or flag values are `Corrupt`, not a panic.
    #[test]
    fn state_round_trips_and_rejects_damage() {
        let s = ConvState {
            last_seq: 3,
            marks: [1, u64::MAX],
            activity: 42,
            idem_bucket: 86_400_000,
            idem_indexed: true,
        };
        assert_eq!(ConvState::decode(&s.encode()), Ok(s));
        assert!(matches!(
            ConvState::decode(&[0; 40]),
            Err(StoreError::Corrupt(_))
        ));
        let mut bad = s.encode();
        bad[40] = 2;
        assert!(matches!(
            ConvState::decode(&bad),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(seq_value(&[1, 2, 3]), Err(StoreError::Corrupt(_))));
    }
}
