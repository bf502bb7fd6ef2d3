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

const CLOSE_MAGIC: &str = "z1c";

/// A request to close a user's connections on the receiving node.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct CloseRequest {
    pub(super) origin: String,
    pub(super) user: UserId,
    /// Only this session's connections (its token hash), or all.
    pub(super) session: Option<String>,
    pub(super) code: u16,
}

/// `z1c\n<origin>\n<uid>\n<session hash or empty>\n<code>`.
pub(super) fn encode_close(
    origin: &str,
    user: UserId,
    session: Option<&str>,
    code: u16,
) -> Vec<u8> {
    format!(
        "{CLOSE_MAGIC}\n{origin}\n{user}\n{}\n{code}",
        session.unwrap_or("")
    )
    .into_bytes()
}

pub(super) fn decode_close(payload: &[u8]) -> Option<CloseRequest> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.split('\n');
    if parts.next()? != CLOSE_MAGIC {
        return None;
    }
    let origin = parts.next()?.to_owned();
    let user = parts.next()?.parse().ok()?;
    let session = Some(parts.next()?)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let code = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some(CloseRequest {
        origin,
        user,
        session,
        code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use zajel_core::protocol::{Push, ServerFrame};

    #[test]
    fn close_requests_round_trip() {
        let a: UserId = "00000000-0000-4000-8000-000000000001"
            .parse()
            .expect("uuid");
        for session in [None, Some("ab12")] {
            let bytes = encode_close("n1", a, session, 4001);
            let req = decode_close(&bytes).expect("decodes");
            assert_eq!(
                (
                    req.origin.as_str(),
                    req.user,
                    req.session.as_deref(),
                    req.code
                ),
                ("n1", a, session, 4001)
            );
            assert!(decode(&bytes).is_none(), "not an event");
        }
        assert!(decode_close(b"z1c\nn1\nnot-a-user\n\n4001").is_none());
    }

    #[test]
    fn envelope_round_trips_without_reserializing() {
        let a: UserId = "00000000-0000-4000-8000-000000000001"
            .parse()
            .expect("uuid");
        let b: UserId = "00000000-0000-4000-8000-000000000002"
            .parse()
            .expect("uuid");
        let ev = Event::new(&ServerFrame::Push(Push::Typing {
            conversation: ConversationId::direct(a, b),
            user: a,
            active: true,
        }));
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
