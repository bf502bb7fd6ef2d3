//! The uniffi layer called from Rust against the real server over loopback: conversions,
//! the listener thread and the typed errors (the generated bindings are exercised by the
//! Python and Kotlin tests; this checks the layer they share, quickly).

use std::sync::{Arc, Mutex};
use std::time::Duration;
use zajel_server::{Engine, ServerConfig};
use zajel_uniffi::{
    ConnectionState, ErrorCode, EventListener, HistoryQuery, MessageKind, Relation, ZajelError,
    ZajelEvent,
};

#[derive(Clone, Default)]
struct Recorder {
    events: Arc<Mutex<Vec<(ZajelEvent, String)>>>,
}

impl EventListener for Recorder {
    fn on_event(&self, event: ZajelEvent) {
        let thread = std::thread::current().name().unwrap_or("").to_owned();
        self.events.lock().unwrap().push((event.clone(), thread));
        // A listener that fails must not stop the delivery of later events.
        if let ZajelEvent::Presence { .. } = event {
            panic!("listener failure on purpose");
        }
    }
}

impl Recorder {
    async fn wait_for(&self, what: &str, pred: impl Fn(&ZajelEvent) -> bool) -> ZajelEvent {
        for _ in 0..750 {
            if let Some((e, _)) = self.events.lock().unwrap().iter().find(|(e, _)| pred(e)) {
                return e.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no {what} event in 15 s: {:?}", self.events.lock().unwrap());
    }
}

async fn server() -> (String, tokio::sync::oneshot::Sender<()>) {
    let (url, stop, _) = server_with_engine().await;
    (url, stop)
}

async fn server_with_engine() -> (String, tokio::sync::oneshot::Sender<()>, Engine) {
    let config = ServerConfig {
        argon2_memory_kib: 256,
        argon2_iterations: 1,
        ..ServerConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let engine = Engine::new(Arc::new(zajel_core::MemoryStore::new()), config);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(zajel_server::serve(listener, engine.clone(), async move {
        let _ = stopped.await;
    }));
    (url, stop, engine)
}

/// A system message (posted by the embedding app) reaches the layer marked as one, live and
/// in history; a person's message is `User`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_messages_carry_their_kind() {
    let (url, _stop, engine) = server_with_engine().await;
    let a = zajel_uniffi::register(url.clone(), "ada".into(), "password-123".into())
        .await
        .unwrap();
    let b = zajel_uniffi::register(url.clone(), "bob".into(), "password-123".into())
        .await
        .unwrap();
    let ra = Recorder::default();
    let ada = zajel_uniffi::connect(url.clone(), a.token.clone(), Box::new(ra.clone()), None)
        .await
        .unwrap();
    let (ida, idb) = (a.user.id.parse().unwrap(), b.user.id.parse().unwrap());
    engine
        .send_system(ida, idb, "welcome, ada and bob", "welcome")
        .await
        .unwrap();
    let got = ra
        .wait_for("system message", |e| {
            matches!(e, ZajelEvent::Message { .. })
        })
        .await;
    let ZajelEvent::Message { message, .. } = got else {
        unreachable!()
    };
    assert_eq!(
        (message.kind, message.sender.as_str(), message.body.as_str()),
        (
            MessageKind::System,
            "00000000-0000-0000-0000-000000000000",
            "welcome, ada and bob"
        )
    );
    engine.make_friends(ida, idb).await.unwrap();
    let mine = ada.send(b.user.id.clone(), "hi bob".into()).await.unwrap();
    assert_eq!(mine.kind, MessageKind::User);
    let page = ada
        .history(mine.conversation.clone(), HistoryQuery::default())
        .await
        .unwrap();
    let kinds: Vec<_> = page.messages.iter().map(|m| m.kind).collect();
    assert_eq!(kinds, [MessageKind::System, MessageKind::User]);
    ada.disconnect();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn friends_messages_events_and_errors_through_the_layer() {
    let (url, _stop) = server().await;
    let a = zajel_uniffi::register(url.clone(), "ada".into(), "password-123".into())
        .await
        .unwrap();
    let b = zajel_uniffi::register(url.clone(), "bob".into(), "password-123".into())
        .await
        .unwrap();
    assert!(
        !format!("{a:?}").contains(&a.token),
        "the token stays out of Debug"
    );

    let (ra, rb) = (Recorder::default(), Recorder::default());
    let ada = zajel_uniffi::connect(url.clone(), a.token.clone(), Box::new(ra.clone()), None)
        .await
        .unwrap();
    let bo = zajel_uniffi::connect(url.clone(), b.token.clone(), Box::new(rb.clone()), None)
        .await
        .unwrap();
    assert_eq!(ada.state(), ConnectionState::Online);
    assert_eq!(ada.user().unwrap().username, "ada");

    // Friends: the request arrives as an event; accepting it reaches ada as one.
    let sent = ada.request_friend("bob".into()).await.unwrap();
    assert_eq!(sent.relation, Relation::RequestSent);
    rb.wait_for("friend request", |e| {
        matches!(
            e,
            ZajelEvent::Friend {
                relation: Relation::RequestReceived,
                ..
            }
        )
    })
    .await;
    bo.accept_friend(a.user.id.clone()).await.unwrap();
    ra.wait_for("friend accepted", |e| {
        matches!(
            e,
            ZajelEvent::Friend {
                relation: Relation::Friends,
                ..
            }
        )
    })
    .await;

    // Send to the friend's user id; the reply goes to the conversation id.
    let m1 = ada.send(b.user.id.clone(), "hi bo".into()).await.unwrap();
    assert_eq!(m1.seq, 1);
    assert_eq!(
        ada.conversation_with(b.user.id.clone()).unwrap().as_deref(),
        Some(m1.conversation.as_str())
    );
    let got = rb
        .wait_for("message", |e| matches!(e, ZajelEvent::Message { .. }))
        .await;
    let ZajelEvent::Message { message, replayed } = got else {
        unreachable!()
    };
    assert_eq!((message.body.as_str(), replayed), ("hi bo", false));
    bo.send(m1.conversation.clone(), "hi ada".into())
        .await
        .unwrap();
    ra.wait_for(
        "reply",
        |e| matches!(e, ZajelEvent::Message { message, .. } if message.body == "hi ada"),
    )
    .await;

    let page = ada
        .history(m1.conversation.clone(), HistoryQuery::default())
        .await
        .unwrap();
    let bodies: Vec<_> = page.messages.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["hi bo", "hi ada"]);
    assert_eq!(ada.mark_read(m1.conversation.clone(), 2).await.unwrap(), 2);
    rb.wait_for("read mark", |e| {
        matches!(e, ZajelEvent::Read { seq: 2, .. })
    })
    .await;
    let convs = bo.conversations(None).await.unwrap();
    assert_eq!(convs[0].peer_read_seq, 2);
    assert_eq!(ada.cursors().cursors.get(&m1.conversation), Some(&2));

    // Presence makes the listener panic (see Recorder): later events must still arrive.
    bo.disconnect();
    ra.wait_for("presence", |e| {
        matches!(e, ZajelEvent::Presence { online: false, .. })
    })
    .await;
    let bo2 = zajel_uniffi::connect(url.clone(), b.token.clone(), Box::new(rb.clone()), None)
        .await
        .unwrap();
    bo2.send(m1.conversation.clone(), "after the panic".into())
        .await
        .unwrap();
    ra.wait_for(
        "message after a listener panic",
        |e| matches!(e, ZajelEvent::Message { message, .. } if message.body == "after the panic"),
    )
    .await;
    // All on the SDK's own event thread, never a runtime worker.
    assert!(
        ra.events
            .lock()
            .unwrap()
            .iter()
            .all(|(_, t)| t == "zajel-events")
    );

    // Typed errors: bad arguments change nothing and name the problem.
    for bad in ["", "not-a-user", "dm.x.y"] {
        let e = ada.send(bad.into(), "x".into()).await.unwrap_err();
        assert!(matches!(e, ZajelError::InvalidArgument { .. }), "{e:?}");
        let e = ada.accept_friend(bad.into()).await.unwrap_err();
        assert!(matches!(e, ZajelError::InvalidArgument { .. }), "{e:?}");
        let e = ada.typing(bad.into(), true).unwrap_err();
        assert!(matches!(e, ZajelError::InvalidArgument { .. }), "{e:?}");
    }
    let stranger = zajel_uniffi::register(url.clone(), "cyd".into(), "password-123".into())
        .await
        .unwrap();
    match ada.send(stranger.user.id.clone(), "hello?".into()).await {
        Err(ZajelError::Rejected { code, .. }) => assert_eq!(code, ErrorCode::NotFriends),
        other => panic!("expected not_friends, got {other:?}"),
    }
    match zajel_uniffi::login(url.clone(), "ada".into(), "wrong-password".into()).await {
        Err(ZajelError::Rejected { code, .. }) => assert_eq!(code, ErrorCode::InvalidCredentials),
        other => panic!("expected invalid_credentials, got {other:?}"),
    }
    let e = zajel_uniffi::login("ftp://x".into(), "ada".into(), "p".into())
        .await
        .unwrap_err();
    assert!(matches!(e, ZajelError::InvalidUrl { .. }), "{e:?}");
    let e = zajel_uniffi::connect(
        url.clone(),
        "bogus".into(),
        Box::new(Recorder::default()),
        None,
    )
    .await
    .err()
    .unwrap();
    assert_eq!(e, ZajelError::SignedOut);

    // After disconnect, calls fail with Closed, and the state says so.
    ada.disconnect();
    let e = ada.ping().await.unwrap_err();
    assert_eq!(e, ZajelError::Closed);
    ra.wait_for("closed", |e| {
        matches!(
            e,
            ZajelEvent::State {
                state: ConnectionState::Closed
            }
        )
    })
    .await;
    bo2.disconnect();
}
