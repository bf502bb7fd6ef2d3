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

/// How long closing waits for the other side: sending our echo of the server's close, or the
/// server's echo of ours.
const CLOSE_ECHO: std::time::Duration = std::time::Duration::from_secs(2);

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
                        // Answer the close (tungstenite queued the echo; a flush sends it):
                        // the server then finishes at once instead of waiting out its
                        // linger, and both ends see a clean closing handshake.
                        let _ = tokio::time::timeout(CLOSE_ECHO, ws.flush()).await;
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
                            CLOSE_ECHO,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The server closes (here 4001, as after a revoked session): the client reports the
    /// code and answers with a close frame of its own, so a server waiting for the echo
    /// (zajel-server lingers up to 1 s for it) is done at once. Before, the client dropped
    /// the socket without answering: the server read an end of stream, not a close.
    #[tokio::test]
    async fn answers_the_servers_close() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut ws = tokio_tungstenite::accept_async(tcp).await.expect("upgrade");
            let frame = CloseFrame {
                code: CloseCode::from(4001),
                reason: "session revoked".into(),
            };
            ws.send(WsMessage::Close(Some(frame))).await.expect("close");
            tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
                .await
                .expect("the client answers within 5 s")
        });
        let mut socket = connect(format!("ws://{addr}/ws")).await.expect("connect");
        match socket.rx.recv().await {
            Some(Incoming::Closed { code, reason }) => {
                assert_eq!((code, reason.as_str()), (Some(4001), "session revoked"));
            }
            other => panic!("expected the close, got {other:?}"),
        }
        let echo = server.await.expect("server task");
        assert!(
            matches!(echo, Some(Ok(WsMessage::Close(Some(ref f)))) if u16::from(f.code) == 4001),
            "the server got {echo:?} instead of the echo of its close"
        );
    }
}
