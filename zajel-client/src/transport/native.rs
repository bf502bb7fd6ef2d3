//! Native transport: tokio-tungstenite over a TCP stream, with rustls for `wss://` (feature
//! `tls`).

use super::{Incoming, Socket};
use crate::error::Error;
use crate::url::ServerUrl;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

pub(crate) async fn connect(url: String) -> Result<Socket, Error> {
    let err =
        |e: &dyn std::fmt::Display| Error::Transport(format!("websocket connect to {url}: {e}"));
    let parsed = ServerUrl::parse(&url)?;
    let (host, port) = parsed.host_port();
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| err(&e))?;
    let _ = tcp.set_nodelay(true);
    // Without the `tls` feature `ServerUrl::parse` refused a secure URL already.
    match parsed.secure {
        #[cfg(feature = "tls")]
        true => {
            let tls = crate::tls::connect(&host, tcp).await?;
            let (ws, _resp) = tokio_tungstenite::client_async(url.as_str(), tls)
                .await
                .map_err(|e| err(&e))?;
            Ok(pump(ws))
        }
        _ => {
            let (ws, _resp) = tokio_tungstenite::client_async(url.as_str(), tcp)
                .await
                .map_err(|e| err(&e))?;
            Ok(pump(ws))
        }
    }
}

/// Moves frames between the socket and the driver's channels on a task of its own.
fn pump<S>(mut ws: WebSocketStream<S>) -> Socket
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let closed = loop {
            tokio::select! {
                biased;
                incoming = ws.next() => match incoming {
                    Some(Ok(WsMessage::Text(t))) => {
                        if in_tx.send(Incoming::Text(t.as_str().to_owned())).is_err() {
                            break None;
                        }
                    }
                    Some(Ok(WsMessage::Close(frame))) => {
                        break Some(match frame {
                            Some(f) => Incoming::Closed { code: Some(u16::from(f.code)), reason: f.reason.as_str().to_owned() },
                            None => Incoming::Closed { code: None, reason: String::new() },
                        });
                    }
                    // Pings are answered by tungstenite on the next write/flush; binary frames
                    // are not part of the protocol.
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break Some(Incoming::Closed { code: None, reason: e.to_string() }),
                    None => break Some(Incoming::Closed { code: None, reason: "connection closed".into() }),
                },
                out = out_rx.recv() => match out {
                    Some(text) => {
                        if let Err(e) = ws.send(WsMessage::Text(text.into())).await {
                            break Some(Incoming::Closed { code: None, reason: e.to_string() });
                        }
                    }
                    None => {
                        // The driver let go: close politely, without waiting long for the echo.
                        let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
                        let _ = tokio::time::timeout(
                            std::time::Duration::from_secs(2),
                            async { let _ = ws.close(Some(frame)).await; while let Some(Ok(_)) = ws.next().await {} },
                        ).await;
                        break None;
                    }
                },
            }
        };
        if let Some(c) = closed {
            let _ = in_tx.send(c);
        }
    });
    Socket {
        tx: out_tx,
        rx: in_rx,
    }
}
