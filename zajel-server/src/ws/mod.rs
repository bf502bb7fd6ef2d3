//! The WebSocket side: the upgrade and handshake (`handshake.rs`), the socket loop
//! (`socket.rs`) and resume replay (`replay.rs`). Requests are performed by the chat service
//! ([`crate::chat`]); this module only moves frames.
//!
//! A connection task owns its socket. It waits on four things at once (`select!`):
//! * a close request from the hub: 4008 lagged, 4001 session revoked, and shutdown (the
//!   engine asks every registered connection to close with 1001: send `going_away`, close);
//! * its event queue: forward pre-serialized events (batched, one flush);
//! * the socket: answer requests in order, one at a time (a connection's requests are
//!   handled sequentially, so its answers come back in request order);
//! * the idle timer: nothing received for `idle_timeout_ms` closes with 4000.
//!
//! Answers to this connection's own requests are written directly, before the queue is read
//! again, so an answer always precedes the events its request caused.

mod handshake;
mod limits;
mod reconnect;
mod replay;
mod replay_gate;
mod socket;
#[cfg(test)]
mod task_size;

pub(crate) use handshake::{ws_upgrade, ws_wrong_method};
pub(crate) use replay_gate::ReplayGate;

use crate::hub::CLOSE_LAGGED;

/// Normal closure.
pub const CLOSE_NORMAL: u16 = 1000;
/// Server shutting down (after `going_away`).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Policy violation: persistent rate-limit abuse, or no `auth` within `auth_timeout_ms`.
pub const CLOSE_POLICY: u16 = 1008;
/// A frame over `max_frame_bytes` (after a `frame_too_large` error).
pub const CLOSE_TOO_LARGE: u16 = 1009;
/// Unexpected server error.
pub const CLOSE_INTERNAL: u16 = 1011;
/// Nothing received for `idle_timeout_ms`.
pub const CLOSE_IDLE: u16 = 4000;
/// Unauthenticated: the token given in `auth` is unknown, expired or revoked, or the session
/// of an open connection was revoked (logout / logout-all). Sign in again; do not retry with
/// the same token.
pub const CLOSE_UNAUTHENTICATED: u16 = 4001;

pub(crate) fn close_reason(code: u16) -> &'static str {
    match code {
        CLOSE_LAGGED => "lagged: resume from your cursor",
        CLOSE_UNAUTHENTICATED => "session ended: sign in again",
        CLOSE_GOING_AWAY => "server shutting down",
        _ => "closed",
    }
}
