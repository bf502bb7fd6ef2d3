//! Requests other than `send`: what each one is on the wire, which are safe to repeat after a
//! reconnect, and the queue of those waiting for a connection (or a retry).

use crate::error::Error;
use crate::event::HistoryQuery;
use std::collections::VecDeque;
use tokio::sync::oneshot;
use zajel_core::protocol::{ClientFrame, RequestId, ServerFrame};
use zajel_core::{ConversationId, UserId};

/// A request other than `send`.
#[derive(Clone, Debug)]
pub(crate) enum ReqKind {
    FriendRequest(String),
    FriendAccept(UserId),
    FriendDecline(UserId),
    FriendCancel(UserId),
    FriendRemove(UserId),
    Block(UserId),
    Unblock(UserId),
    FriendsList,
    History(ConversationId, HistoryQuery),
    Conversations(Option<u32>),
    MarkRead(ConversationId, u64),
    Ping,
}

impl ReqKind {
    pub(crate) fn frame(&self, id: RequestId) -> ClientFrame {
        use ReqKind::*;
        match self.clone() {
            FriendRequest(username) => ClientFrame::FriendRequest { id, username },
            FriendAccept(user_id) => ClientFrame::FriendAccept { id, user_id },
            FriendDecline(user_id) => ClientFrame::FriendDecline { id, user_id },
            FriendCancel(user_id) => ClientFrame::FriendCancel { id, user_id },
            FriendRemove(user_id) => ClientFrame::FriendRemove { id, user_id },
            Block(user_id) => ClientFrame::Block { id, user_id },
            Unblock(user_id) => ClientFrame::Unblock { id, user_id },
            FriendsList => ClientFrame::FriendsList { id },
            History(conversation, q) => ClientFrame::History {
                id,
                conversation,
                before: q.before,
                after: q.after,
                limit: q.limit,
            },
            Conversations(limit) => ClientFrame::Conversations { id, limit },
            MarkRead(conversation, seq) => ClientFrame::MarkRead {
                id,
                conversation,
                seq,
            },
            Ping => ClientFrame::Ping { id },
        }
    }

    /// Reads and idempotent writes are re-sent after a reconnect; friend operations are not
    /// (their outcome is unknown once sent).
    pub(crate) fn repeatable(&self) -> bool {
        matches!(
            self,
            ReqKind::FriendsList
                | ReqKind::History(..)
                | ReqKind::Conversations(_)
                | ReqKind::MarkRead(..)
                | ReqKind::Ping
        )
    }
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, Error>>;

pub(crate) struct PendingRequest {
    pub kind: ReqKind,
    pub reply: Reply<ServerFrame>,
    pub deadline: u64,
    pub not_before: u64,
    pub retries: u32,
}

/// Requests waiting to be sent, in call order.
#[derive(Default)]
pub(crate) struct Requests {
    queue: VecDeque<PendingRequest>,
}

impl Requests {
    pub(crate) fn push_back(&mut self, p: PendingRequest) {
        self.queue.push_back(p);
    }

    pub(crate) fn push_front(&mut self, p: PendingRequest) {
        self.queue.push_front(p);
    }

    /// The first request that is due.
    pub(crate) fn pop_due(&mut self, now: u64) -> Option<PendingRequest> {
        let i = self.queue.iter().position(|p| p.not_before <= now)?;
        self.queue.remove(i)
    }

    /// Earliest `not_before` and earliest deadline.
    pub(crate) fn next_wake(&self) -> (Option<u64>, Option<u64>) {
        let nb = self.queue.iter().map(|p| p.not_before).min();
        let dl = self.queue.iter().map(|p| p.deadline).min();
        (nb, dl)
    }

    /// Fails the requests whose deadline passed.
    pub(crate) fn expire(&mut self, now: u64) {
        let mut kept = VecDeque::new();
        for p in self.queue.drain(..) {
            if p.deadline <= now {
                let _ = p.reply.send(Err(Error::Timeout));
            } else {
                kept.push_back(p);
            }
        }
        self.queue = kept;
    }

    pub(crate) fn fail_all(&mut self, err: &Error) {
        for p in self.queue.drain(..) {
            let _ = p.reply.send(Err(err.clone()));
        }
    }
}
