//! WebSocket transports behind one shape: a connected socket is a pair of channels, so the
//! connection driver is the same code natively, in the browser and in unit tests.
//!
//! Dropping [`Socket::tx`] closes the socket (normal closure) and releases everything the
//! transport holds (tasks natively; the socket and its JS closures in the browser).

use crate::error::Error;
use crate::rt::BoxFuture;
use std::sync::Arc;
use tokio::sync::mpsc;

#[cfg(not(target_arch = "wasm32"))]
mod native;
#[cfg(target_arch = "wasm32")]
mod web;

/// What the transport reports.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// A text frame.
    Text(String),
    /// The socket closed (close code if the peer sent one) or failed.
    Closed { code: Option<u16>, reason: String },
}

/// A connected socket.
pub(crate) struct Socket {
    /// Text frames to send; drop to close.
    pub tx: mpsc::UnboundedSender<String>,
    /// Frames and the final close.
    pub rx: mpsc::UnboundedReceiver<Incoming>,
}

/// Opens a socket to a `ws://`/`wss://` URL.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) type Connector =
    Arc<dyn Fn(String) -> BoxFuture<'static, Result<Socket, Error>> + Send + Sync>;
/// Opens a socket to a `ws://`/`wss://` URL.
#[cfg(target_arch = "wasm32")]
pub(crate) type Connector = Arc<dyn Fn(String) -> BoxFuture<'static, Result<Socket, Error>>>;

/// The platform's WebSocket transport.
pub(crate) fn default_connector() -> Connector {
    #[cfg(not(target_arch = "wasm32"))]
    {
        Arc::new(|url| Box::pin(native::connect(url)))
    }
    #[cfg(target_arch = "wasm32")]
    {
        Arc::new(|url| Box::pin(web::connect(url)))
    }
}
