//! Server push frames that become events as they are (no driver state involved).

use crate::event::Event;
use zajel_core::protocol::ServerFrame;

/// A frame sorted: an event as it is, or one the driver must look at.
pub(crate) enum Push {
    /// A stateless push frame's event.
    Event(Event),
    /// Answers, `message`, `going_away`, …
    Driver(ServerFrame),
}

/// The event for a stateless push frame (`friend`, `read`, `typing`, `presence`); other
/// frames are given back.
pub(crate) fn push_event(frame: ServerFrame) -> Push {
    Push::Event(match frame {
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
        other => return Push::Driver(other),
    })
}
