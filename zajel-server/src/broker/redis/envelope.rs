//! The cross-node wire format: the event's JSON as serialized once by the origin, behind a
//! small text header (origin node, message conversation and sequence, recipients).

use crate::hub::Event;
use std::sync::Arc;
use zajel_core::{ConversationId, UserId};

const MAGIC: &str = "z1";

/// `z1\n<origin>\n<conversation or empty>\n<seq>\n<uid>,<uid>…\n<json>`.
pub(super) fn encode(origin: &str, users: &[UserId], event: &Event) -> Vec<u8> {
    let json = event.text();
    let mut out = String::with_capacity(json.len() + 64 + users.len() * 37);
    out.push_str(MAGIC);
    out.push('\n');
    out.push_str(origin);
    out.push('\n');
    match event.message_seq() {
        Some((c, seq)) => {
            out.push_str(&c.to_string());
            out.push('\n');
            out.push_str(&seq.to_string());
        }
        None => out.push_str("\n0"),
    }
    out.push('\n');
    for (i, u) in users.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&u.to_string());
    }
    out.push('\n');
    out.push_str(json);
    out.into_bytes()
}

/// A received envelope: origin node, recipients and the event.
pub(super) struct Envelope {
    pub(super) origin: String,
    pub(super) users: Vec<UserId>,
    pub(super) event: Arc<Event>,
}

pub(super) fn decode(payload: &[u8]) -> Option<Envelope> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.splitn(6, '\n');
    if parts.next()? != MAGIC {
        return None;
    }
    let origin = parts.next()?.to_owned();
    let conv = parts.next()?;
    let seq: u64 = parts.next()?.parse().ok()?;
    let users = parts
        .next()?
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<UserId>().ok())
        .collect::<Option<Vec<_>>>()?;
    let json = parts.next()?;
    let message = if conv.is_empty() {
        None
    } else {
        Some((conv.parse::<ConversationId>().ok()?, seq))
    };
    Some(Envelope {
        origin,
        users,
        event: Event::from_serialized(json.to_owned(), message),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use zajel_core::protocol::ServerFrame;

    #[test]
    fn envelope_round_trips_without_reserializing() {
        let a: UserId = "00000000-0000-4000-8000-000000000001"
            .parse()
            .expect("uuid");
        let b: UserId = "00000000-0000-4000-8000-000000000002"
            .parse()
            .expect("uuid");
        let ev = Event::new(&ServerFrame::Typing {
            conversation: ConversationId::direct(a, b),
            user: a,
            active: true,
        });
        let bytes = encode("node-1", &[a, b], &ev);
        let env = decode(&bytes).expect("decodes");
        assert_eq!(env.origin, "node-1");
        assert_eq!(env.users, vec![a, b]);
        assert_eq!(env.event.text(), ev.text());
        assert!(env.event.message_seq().is_none());
        assert!(decode(b"z2\nx").is_none());
        assert!(decode(b"z1\nn\n\n0\nnot-a-uuid\n{}").is_none());
    }
}
