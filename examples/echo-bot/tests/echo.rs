//! The echo bot answers, against the real server over loopback.

use std::time::Duration;
use tokio::time::timeout;
use zajel_client::{Client, Event, Push, Relation};
use zajel_test_support::LoopbackServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_bot_accepts_and_answers() {
    let server = LoopbackServer::memory().await;
    let url = server.url();

    // The bot registers itself on first run, and logs in on the second.
    let session = example_echo_bot::sign_in(&url, "echo", "echo-password")
        .await
        .unwrap();
    let again = example_echo_bot::sign_in(&url, "echo", "echo-password")
        .await
        .unwrap();
    assert_eq!(session.user.id, again.user.id);
    let (bot, bot_events) = Client::connect(url.as_str(), session.token).await.unwrap();
    tokio::spawn(example_echo_bot::run(bot.clone(), bot_events));

    let me = Client::register(&url, "erin", "password-123")
        .await
        .unwrap();
    let (erin, mut events) = Client::connect(url.as_str(), me.token).await.unwrap();
    erin.request_friend("echo").await.unwrap();
    let wait = Duration::from_secs(15);
    timeout(wait, async {
        loop {
            if let Some(Event::Server(Push::Friend {
                relation: Relation::Friends,
                ..
            })) = events.next().await
            {
                break;
            }
        }
    })
    .await
    .expect("the bot accepts");

    for text in ["ping", "second"] {
        let sent = erin.send(session.user.id, text).await.unwrap();
        let reply = timeout(wait, async {
            loop {
                if let Some(Event::Message { message, .. }) = events.next().await {
                    break message;
                }
            }
        })
        .await
        .expect("the bot answers");
        assert_eq!(reply.body, format!("echo: {text}"));
        assert_eq!(reply.sender, session.user.id);
        assert_eq!(reply.seq, sent.seq + 1);
    }
    bot.close();
    erin.close();
    server.stop().await;
}
