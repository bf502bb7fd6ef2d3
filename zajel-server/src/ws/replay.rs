//! Resume: replay what a device missed, then `synced`.

use super::CLOSE_INTERNAL;
use super::socket::Conn;
use axum::extract::ws::Utf8Bytes;
use std::collections::HashMap;
use zajel_core::protocol::{Push, ResumeState, ServerFrame, SyncState, Unlisted};
use zajel_core::{ConversationId, HistoryQuery, UserId};

/// Largest history page read at once while replaying.
const REPLAY_PAGE: u32 = 200;

impl Conn {
    /// Resume: replays, per conversation, every message after the client's cursor (bounded by
    /// `replay_limit`), then `synced`. Live events queued meanwhile are sent afterwards, minus
    /// messages already replayed.
    ///
    /// `auth_ok` has already answered the `auth`, so nothing here carries its `re` (every
    /// request is answered exactly once): `synced` is an event, and a store failure is a
    /// connection-level `error` followed by close 1011.
    pub(super) async fn replay(
        &mut self,
        me: UserId,
        resume: ResumeState,
        known: &mut HashMap<ConversationId, u64>,
    ) -> bool {
        let engine = self.engine.clone();
        let store = engine.store();
        let cfg = engine.config();
        let conversations = match engine
            .chat()
            .conversations(me, cfg.replay_conversations.max(1))
            .await
        {
            Ok(c) => c,
            Err(e) => {
                self.answer(&e.to_frame(None)).await;
                self.close(CLOSE_INTERNAL, "resume failed").await;
                return false;
            }
        };
        let mut truncated = Vec::new();
        let mut ahead = Vec::new();
        for summary in &conversations {
            let conv = &summary.conversation;
            let cursor = match (resume.cursors.get(conv), resume.unlisted) {
                (Some(&cursor), _) => cursor,
                (None, Unlisted::Replay) => 0,
                // A fresh device starts from now; `synced` tells it each conversation's end.
                (None, Unlisted::Skip) => summary.last_seq,
            };
            // A cursor beyond the stored end must not hide the next live messages (they get
            // the sequence numbers the client thinks it has): filter from the stored end, and
            // say so in `synced.ahead`.
            if cursor > summary.last_seq {
                ahead.push(conv.clone());
            }
            let cursor = cursor.min(summary.last_seq);
            known.insert(conv.clone(), cursor);
            if summary.last_seq <= cursor {
                continue;
            }
            let mut after = cursor;
            let mut sent: u32 = 0;
            loop {
                let limit = REPLAY_PAGE.min(cfg.replay_limit.saturating_sub(sent));
                if limit == 0 {
                    truncated.push(conv.clone());
                    break;
                }
                let page = match store
                    .history(
                        conv,
                        HistoryQuery {
                            before: None,
                            after: Some(after),
                            limit,
                        },
                    )
                    .await
                {
                    Ok(p) => p,
                    Err(e) => {
                        self.answer(&crate::error::EngineError::from(&e).to_frame(None))
                            .await;
                        self.close(CLOSE_INTERNAL, "resume failed").await;
                        return false;
                    }
                };
                for message in page.messages {
                    after = message.seq;
                    sent += 1;
                    let frame = ServerFrame::Push(Push::Message { message });
                    if !self.feed_text(Utf8Bytes::from(frame.encode())).await {
                        return false;
                    }
                }
                if !page.has_more {
                    break;
                }
            }
            known.insert(conv.clone(), after);
        }
        let friends = match engine.chat().friends(me).await {
            Ok(f) => f,
            Err(e) => {
                self.answer(&e.to_frame(None)).await;
                self.close(CLOSE_INTERNAL, "resume failed").await;
                return false;
            }
        };
        let synced = ServerFrame::Push(Push::Synced {
            state: SyncState {
                conversations,
                friends,
                truncated,
                ahead,
            },
        });
        self.feed_text(Utf8Bytes::from(synced.encode())).await && self.flush().await
    }
}
