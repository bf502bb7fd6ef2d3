//! The message loop against Socket.IO: the same pacing, clock and accounting as the Zajel path
//! (`crate::load`), in Socket.IO's framing. A send is `42<n>["send",{conversation, body}]`
//! (the ack id is the message number), its ack `43<n>[{"message":{…}}]` (or `[{"error":…}]`),
//! a delivery `42["message",{…}]`; the server's Engine.IO pings (`2`) are answered (`3`)
//! through the writer, which owns the socket's sending half.

use anyhow::Result;
use futures_util::SinkExt;
use futures_util::stream::{SplitSink, SplitStream};
use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use super::engineio::{self, Packet};
use crate::load::{
    InMessage, Pacing, Shared, UserStats, Ws, next_due, next_text, on_message, on_sent,
};

/// Sends this user's messages on `pacing` until `stop_at`, and the pongs the reader asks for.
pub(crate) async fn writer(
    mut sink: SplitSink<Ws, Message>,
    conversation: String,
    shared: Arc<Shared>,
    mut pacing: Pacing,
    stop_at: tokio::time::Instant,
    padding: String,
    mut pongs: mpsc::UnboundedReceiver<()>,
) -> Result<SplitSink<Ws, Message>> {
    let conversation = serde_json::to_string(&conversation)?;
    let mut n: u64 = 0;
    loop {
        let due_us = tokio::select! {
            due = next_due(&mut pacing, &shared, stop_at) => match due? {
                Some(due) => due,
                None => break,
            },
            Some(()) = pongs.recv() => {
                sink.send(Message::Text(engineio::PONG.into())).await?;
                continue;
            }
        };
        n += 1;
        let body = format!("{n} {due_us} {padding}");
        let args = format!(
            r#"{{"conversation":{conversation},"body":{}}}"#,
            serde_json::to_string(&body)?
        );
        sink.send(Message::Text(
            engineio::event_with_ack(n, "send", &args).into(),
        ))
        .await?;
        shared.sent.fetch_add(1, Ordering::Relaxed);
    }
    Ok(sink)
}

/// The callback's argument of a `send` ack.
#[derive(serde::Deserialize)]
struct AckArg<'a> {
    #[serde(borrow)]
    message: Option<InMessage<'a>>,
    #[serde(borrow)]
    error: Option<Cow<'a, str>>,
}

/// Reads acks and deliveries into `UserStats` until `stop`.
pub(crate) async fn reader(
    mut stream: SplitStream<Ws>,
    me: String,
    shared: Arc<Shared>,
    window: Option<Arc<Semaphore>>,
    mut stop: watch::Receiver<bool>,
    pongs: mpsc::UnboundedSender<()>,
) -> UserStats {
    let mut st = UserStats::default();
    while let Some(text) = next_text(&mut stream, &mut stop, &mut st).await {
        let now = shared.now_us();
        match engineio::parse(text.as_str()) {
            Ok(Packet::Ack { data, .. }) => match serde_json::from_str::<(AckArg,)>(data) {
                Ok((AckArg {
                    message: Some(m), ..
                },)) => on_sent(
                    &mut st,
                    &shared,
                    window.as_ref(),
                    now,
                    Some(m.body.as_ref()),
                    Some(m.seq),
                    false,
                ),
                Ok((AckArg { error, .. },)) => {
                    st.error(error.as_deref().unwrap_or("bad_ack"));
                    shared.answered.fetch_add(1, Ordering::Relaxed);
                    if let Some(w) = &window {
                        w.add_permits(1);
                    }
                }
                Err(_) => st.error("bad_ack"),
            },
            Ok(Packet::Event { data, .. }) => {
                match serde_json::from_str::<(Cow<str>, InMessage)>(data) {
                    Ok((name, m)) if name == "message" => on_message(
                        &mut st,
                        &shared,
                        &me,
                        now,
                        m.sender.as_deref(),
                        Some(m.body.as_ref()),
                        Some(m.seq),
                    ),
                    Ok(_) => {}
                    Err(_) => st.error("bad_message"),
                }
            }
            Ok(Packet::Ping) => {
                let _ = pongs.send(());
            }
            Ok(Packet::Disconnect | Packet::Close) => {
                st.error("sio_disconnect");
                break;
            }
            Ok(_) => {}
            Err(_) => st.error("bad_packet"),
        }
    }
    st
}
