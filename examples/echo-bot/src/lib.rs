//! The echo bot's logic, as a library so tests can run it in-process.
//!
//! * signs in, registering the account on first run;
//! * accepts every friend request (live, and the ones that arrived while it was offline);
//! * answers every message from someone else with `echo: <body>` and marks it read, so after a
//!   restart or reconnect it answers exactly the messages it has not answered yet (those above
//!   its read mark).

use anyhow::Context;
use std::collections::HashMap;
use zajel_client::{
    Client, ConversationId, ErrorCode, Event, EventStream, Message, Push, Relation,
};

/// Logs in, or registers the account if it does not exist yet.
pub async fn sign_in(
    server: &str,
    username: &str,
    password: &str,
) -> anyhow::Result<zajel_client::Session> {
    match Client::login(server, username, password).await {
        Ok(s) => Ok(s),
        Err(e) if e.code() == Some(ErrorCode::InvalidCredentials) => {
            match Client::register(server, username, password).await {
                Ok(s) => Ok(s),
                // Registered by someone else (or another bot instance) meanwhile: wrong password.
                Err(e2) => Err(e2).context(format!("login failed ({e}), and so did registering")),
            }
        }
        Err(e) => Err(e).context("login"),
    }
}

/// Runs the bot until the client stops (signed out or closed).
pub async fn run(client: Client, mut events: EventStream) -> anyhow::Result<()> {
    // Messages replayed on (re)connect wait for the `Synced` that follows them, which says up
    // to where the bot has already answered (its read mark per conversation).
    let mut replayed: Vec<Message> = Vec::new();
    while let Some(event) = events.next().await {
        match event {
            Event::Server(Push::Friend {
                user,
                relation: Relation::RequestReceived,
                ..
            }) => accept(&client, user.id).await,
            Event::Message {
                message,
                replayed: true,
            } => replayed.push(message),
            Event::Message { message, .. } => echo(&client, &message).await,
            Event::Synced {
                conversations,
                friends,
                ..
            } => {
                for f in friends
                    .iter()
                    .filter(|f| f.relation == Relation::RequestReceived)
                {
                    accept(&client, f.user.id).await;
                }
                let read: HashMap<ConversationId, u64> = conversations
                    .into_iter()
                    .map(|c| (c.conversation, c.read_seq))
                    .collect();
                for m in std::mem::take(&mut replayed) {
                    if m.seq > read.get(&m.conversation).copied().unwrap_or(0) {
                        echo(&client, &m).await;
                    }
                }
            }
            Event::State(state) => eprintln!("echo-bot: connection {state:?}"),
            _ => {}
        }
    }
    Ok(())
}

async fn accept(client: &Client, user: zajel_client::UserId) {
    match client.accept_friend(user).await {
        Ok(s) => eprintln!("echo-bot: now friends with {}", s.user.username),
        Err(e) => eprintln!("echo-bot: accepting {user} failed: {e}"),
    }
}

async fn echo(client: &Client, message: &Message) {
    let me = client.user().map(|u| u.id);
    if Some(message.sender) == me {
        return;
    }
    let reply = format!("echo: {}", message.body);
    match client.send(&message.conversation, reply).await {
        Ok(_) => {
            if let Err(e) = client.mark_read(&message.conversation, message.seq).await {
                eprintln!("echo-bot: mark_read failed: {e}");
            }
        }
        Err(e) => eprintln!("echo-bot: reply failed: {e}"),
    }
}
