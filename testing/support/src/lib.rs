//! Test helpers shared by the tests of `zajel-client` and the examples (dev-dependency only,
//! never published): the real server engine on a loopback port ([`LoopbackServer`]) and a TLS
//! endpoint in front of it ([`TlsProxy`]). The server crate's own tests keep theirs in
//! `zajel-server/tests/common`.

mod server;
mod tls;

pub use server::{LoopbackServer, test_config};
pub use tls::TlsProxy;
