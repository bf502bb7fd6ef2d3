//! A client frame to its operation, and the operation's reply to the answer frame.

use super::{Actor, Answer, ChatService, Outcome};
use crate::error::EngineError;
use zajel_core::limits::page_limit;
use zajel_core::protocol::{ClientFrame, ServerFrame};
use zajel_core::{ErrorCode, FriendOp, FriendUpdate, HistoryQuery};

fn friend_ok(re: zajel_core::protocol::RequestId) -> impl FnOnce(FriendUpdate) -> ServerFrame {
    move |u| ServerFrame::FriendOk {
        re,
        user: u.user,
        relation: u.relation,
    }
}

impl ChatService {
    /// Performs the request `frame` (an authenticated connection's frame other than `auth`)
    /// for `actor`. The reply is the answer frame (`None` for a successful `typing`).
    pub async fn handle(
        &self,
        actor: Actor,
        frame: ClientFrame,
    ) -> Result<Outcome<Option<ServerFrame>>, EngineError> {
        let me = actor.user;
        let friend_op = |id, user_id, op| async move {
            Ok(self
                .friend(actor, user_id, op)
                .await?
                .map(friend_ok(id))
                .map(Some))
        };
        match frame {
            ClientFrame::Auth { .. } => Err(EngineError::new(
                ErrorCode::AlreadyAuthenticated,
                "this connection is already authenticated",
            )),
            ClientFrame::Ping { id } => Ok(Outcome::new(actor, Some(ServerFrame::Pong { re: id }))),
            ClientFrame::FriendRequest { id, username } => Ok(self
                .friend_request(actor, &username)
                .await?
                .map(friend_ok(id))
                .map(Some)),
            ClientFrame::FriendAccept { id, user_id } => {
                friend_op(id, user_id, FriendOp::Accept).await
            }
            ClientFrame::FriendDecline { id, user_id } => {
                friend_op(id, user_id, FriendOp::Decline).await
            }
            ClientFrame::FriendCancel { id, user_id } => {
                friend_op(id, user_id, FriendOp::Cancel).await
            }
            ClientFrame::FriendRemove { id, user_id } => {
                friend_op(id, user_id, FriendOp::Remove).await
            }
            ClientFrame::Block { id, user_id } => friend_op(id, user_id, FriendOp::Block).await,
            ClientFrame::Unblock { id, user_id } => friend_op(id, user_id, FriendOp::Unblock).await,
            ClientFrame::FriendsList { id } => Ok(Outcome::new(
                actor,
                Some(ServerFrame::Friends {
                    re: id,
                    friends: self.friends(me).await?,
                }),
            )),
            ClientFrame::Send {
                id,
                conversation,
                body,
                idempotency_key,
            } => Ok(self
                .send(actor, &conversation, &body, &idempotency_key)
                .await?
                .map(|a| {
                    Some(ServerFrame::Sent {
                        re: id,
                        message: a.message,
                        duplicate: a.duplicate,
                    })
                })),
            ClientFrame::History {
                id,
                conversation,
                before,
                after,
                limit,
            } => {
                let query = HistoryQuery {
                    before,
                    after,
                    limit: page_limit(limit)?,
                };
                let page = self.history(me, &conversation, query).await?;
                Ok(Outcome::new(
                    actor,
                    Some(ServerFrame::History {
                        re: id,
                        conversation,
                        messages: page.messages,
                        has_more: page.has_more,
                    }),
                ))
            }
            ClientFrame::Conversations { id, limit } => {
                let conversations = self.conversations(me, page_limit(limit)?).await?;
                Ok(Outcome::new(
                    actor,
                    Some(ServerFrame::Conversations {
                        re: id,
                        conversations,
                    }),
                ))
            }
            ClientFrame::MarkRead {
                id,
                conversation,
                seq,
            } => Ok(self
                .mark_read(actor, &conversation, seq)
                .await?
                .map(|mark| {
                    Some(ServerFrame::ReadOk {
                        re: id,
                        conversation,
                        seq: mark.seq,
                    })
                })),
            ClientFrame::Typing {
                conversation,
                active,
                ..
            } => Ok(self
                .typing(actor, &conversation, active)
                .await?
                .map(|()| None)),
        }
    }

    /// [`ChatService::handle`] then [`ChatService::commit`]: the answer frame to send back
    /// (an `error` frame on failure; `None` for a successful `typing`).
    pub async fn execute(&self, actor: Actor, frame: ClientFrame) -> Option<ServerFrame> {
        let re = frame.id().cloned();
        match self.handle(actor, frame).await {
            Ok(out) => self.commit(out),
            Err(e) => Some(e.to_frame(re)),
        }
    }

    /// [`ChatService::execute`] with the answer serialized for the wire; a send's `sent`
    /// answer splices the message JSON its event was built from (serialized once).
    pub(crate) async fn execute_encoded(&self, actor: Actor, frame: ClientFrame) -> Option<Answer> {
        let re = frame.id().cloned();
        match self.handle(actor, frame).await {
            Ok(out) => {
                let (reply, encoded) = self.commit_encoded(out);
                let reply = reply?;
                Some(match (&reply, encoded) {
                    (ServerFrame::Sent { re, duplicate, .. }, Some(encoded)) => Answer {
                        text: encoded.sent_frame(re, *duplicate),
                        error: None,
                    },
                    _ => Answer::frame(&reply),
                })
            }
            Err(e) => Some(Answer::frame(&e.to_frame(re))),
        }
    }
}
