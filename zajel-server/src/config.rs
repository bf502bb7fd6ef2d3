//! [`ServerConfig`]: the engine's limits and policies.
//!
//! Every field has a default (see `docs/server.md` for the full table with the standalone
//! binary's flags and environment variables). The struct deserializes from TOML/JSON with
//! missing fields taken from [`ServerConfig::default`] and unknown fields rejected, so an
//! embedding application can keep it as a section of its own configuration file.

use serde::{Deserialize, Serialize};
use zajel_core::limits::BODY_MAX_BYTES;
use zajel_core::protocol::Limits;

/// The engine's configuration. Durations are in milliseconds or seconds as the field name says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Largest WebSocket text frame accepted, in bytes. Larger: `frame_too_large`, close 1009.
    pub max_frame_bytes: u32,
    /// Largest message body in bytes (capped at the protocol ceiling of 16 KiB).
    pub max_body_bytes: u32,
    /// Sustained frames per second per connection (token bucket refill rate).
    pub rate_per_second: u32,
    /// Token bucket size: frames a connection may send in a burst.
    pub rate_burst: u32,
    /// A connection that sends nothing for this long is closed (code 4000). Clients `ping`.
    pub idle_timeout_ms: u64,
    /// A connection must authenticate within this time (else close 4001).
    pub auth_timeout_ms: u64,
    /// Capacity of each connection's outbound event queue. A full queue closes the
    /// connection with 4008 ("lagged"); the client resumes from its cursor.
    pub queue_capacity: usize,
    /// A write to a client that takes longer than this closes the connection.
    pub write_timeout_ms: u64,
    /// Most messages replayed per conversation on resume; larger backlogs are listed in
    /// `synced.truncated` and paged with `history`.
    pub replay_limit: u32,
    /// Most conversations considered on resume (most recently active first).
    pub replay_conversations: u32,
    /// Session token lifetime in seconds (default 30 days).
    pub token_ttl_secs: u64,
    /// Origins (e.g. `https://chat.example.com`) whose WebSocket upgrades may authenticate with
    /// the `zajel_session` cookie. A same-origin upgrade (Origin matches Host) is always allowed.
    pub allowed_origins: Vec<String>,
    /// Mark the session cookie `Secure` (set this when serving over HTTPS).
    pub cookie_secure: bool,
    /// Failed logins allowed per account per minute (token bucket of that size).
    pub login_failures_per_minute: u32,
    /// Login attempts allowed per client address per minute.
    pub login_attempts_per_address_per_minute: u32,
    /// Use the first `X-Forwarded-For` address as the client address (only behind a trusted
    /// reverse proxy that sets it).
    pub trust_forwarded_for: bool,
    /// Argon2id memory cost in KiB (OWASP: 19456).
    pub argon2_memory_kib: u32,
    /// Argon2id iterations (OWASP: 2).
    pub argon2_iterations: u32,
    /// How long shutdown waits for connections to drain.
    pub shutdown_grace_ms: u64,
    /// Delay suggested to clients in `going_away`.
    pub reconnect_after_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 64 * 1024,
            max_body_bytes: 4096,
            rate_per_second: 20,
            rate_burst: 40,
            idle_timeout_ms: 60_000,
            auth_timeout_ms: 10_000,
            queue_capacity: 256,
            write_timeout_ms: 10_000,
            replay_limit: 1000,
            replay_conversations: 1000,
            token_ttl_secs: 30 * 24 * 3600,
            allowed_origins: Vec::new(),
            cookie_secure: false,
            login_failures_per_minute: 10,
            login_attempts_per_address_per_minute: 60,
            trust_forwarded_for: false,
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
            shutdown_grace_ms: 10_000,
            reconnect_after_ms: 1000,
        }
    }
}

impl ServerConfig {
    /// The message body limit actually enforced (never above the protocol ceiling).
    pub fn effective_max_body(&self) -> usize {
        (self.max_body_bytes as usize).clamp(1, BODY_MAX_BYTES)
    }

    /// The limits announced to clients in `auth_ok`.
    pub fn limits(&self) -> Limits {
        Limits {
            max_frame_bytes: self.max_frame_bytes,
            max_body_bytes: self.effective_max_body() as u32,
            requests_per_second: self.rate_per_second,
            idle_timeout_ms: self.idle_timeout_ms,
        }
    }
}
