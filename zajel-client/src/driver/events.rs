//! Server push frames that become events as they are (no driver state involved).

use crate::event::Event;
use zajel_core::protocol::ServerFrame;

/// The event for a stateless push frame (`friend`, `read`, `typing`, `presence`); `Err`
/// gives the frame back when it needs the driver (answers, `message`, `going_away`, …).
pub(crate) fn push_event(frame: ServerFrame) -> Result<Event, ServerFrame> {
    Ok(match frame {
        ServerFrame::Friend {
            user,
            relation,
            reason,
            at,
        } => Event::Friend {
            user,
            relation,
            reason,
            at,
        },
        ServerFrame::Read {
            conversation,
            user,
            seq,
        } => Event::Read {
            conversation,
            user,
            seq,
        },
        ServerFrame::Typing {
            conversation,
            user,
            active,
        } => Event::Typing {
            conversation,
            user,
            active,
        },
        ServerFrame::Presence {
            user,
            online,
            last_seen,
        } => Event::Presence {
            user,
            online,
            last_seen,
        },
        other => return Err(other),
    })
}
