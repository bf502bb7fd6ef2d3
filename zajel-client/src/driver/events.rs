//! Push frames ([`Push`]) and the events they become. Most reach the app as they are
//! ([`Event::Server`]), so a new push needs no code here; `message` and `synced` carry
//! delivery state (exactly-once, catch-up) and become [`Event::Message`] and [`Event::Synced`];
//! `going_away` also sets the reconnect delay.

use super::{Conn, Driver, Phase, lock};
use crate::backoff::MAX_SERVER_DELAY;
use crate::event::{ConnectionState, Event};
use crate::rt;
use crate::view::CachedView;
use std::time::Duration;
use zajel_core::protocol::Push;

impl Driver {
    /// Handles one push frame of the connection `conn`.
    pub(super) fn on_push(&mut self, conn: &mut Conn, push: Push) {
        match push {
            // An event ending this connection's resume (`auth_ok` answered the `auth`); one
            // outside a resume is a server bug and is dropped.
            Push::Synced { state } => {
                if conn.phase != Phase::Syncing {
                    return;
                }
                conn.phase = Phase::Online;
                let first = !self.synced_once;
                self.synced_once = true;
                let now = rt::now_ms();
                {
                    let mut cursors = lock(&self.shared.cursors);
                    for summary in &state.conversations {
                        let c = &summary.conversation;
                        if self.partial_resume && !self.fresh_resume {
                            if cursors.watermark(c) < summary.last_seq {
                                // Left out of the resume (or new): page it in.
                                self.catchup.want(c, summary.last_seq, now);
                            }
                        } else {
                            // A fresh device starts each conversation at its end; after a
                            // full replay this only adds conversations with no message.
                            cursors.seed(c, summary.last_seq);
                        }
                    }
                    for c in &state.truncated {
                        self.catchup.want(c, u64::MAX, now);
                    }
                }
                let (friends, conversations) = (state.friends.clone(), state.conversations.clone());
                self.update_view(|view, _| *view = CachedView::from_server(friends, conversations));
                self.shared.emit(Event::Synced {
                    conversations: state.conversations,
                    friends: state.friends,
                    first,
                });
                self.shared.set_state(ConnectionState::Online);
            }
            Push::Message { message } => {
                if self.observe(&message) {
                    let replayed = conn.phase != Phase::Online;
                    if !replayed {
                        self.check_gap(&message.conversation);
                    }
                    self.shared.emit(Event::Message { message, replayed });
                }
            }
            Push::GoingAway {
                reconnect_after_ms, ..
            } => {
                // Clamped: the number comes from the network.
                let d = Duration::from_millis(reconnect_after_ms).min(MAX_SERVER_DELAY);
                conn.hint = Some(d);
                self.shared.emit(Event::Server(push));
            }
            Push::Friend {
                ref user,
                relation,
                at,
                ..
            } => {
                self.update_view(|view, _| view.on_friend(user, relation, at));
                self.shared.emit(Event::Server(push));
            }
            Push::Read {
                ref conversation,
                user,
                seq,
            } => {
                self.update_view(|view, me| view.on_read(me, conversation, user, seq));
                self.shared.emit(Event::Server(push));
            }
            // Everything else is shown as the server sent it.
            other => self.shared.emit(Event::Server(other)),
        }
    }
}
