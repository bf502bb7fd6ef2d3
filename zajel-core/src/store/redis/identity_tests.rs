//! What a crash between the single-slot steps of the identity operations leaves behind, made
//! real with the raw commands an interrupted call would have sent, and how the next call
//! repairs it (the conformance suite covers the steps that complete).

use super::*;
use crate::testing::RedisServer;

async fn setup() -> (RedisStore, RedisServer) {
    let server = RedisServer::start().expect("redis-server");
    let store = RedisStore::connect(&server.url()).await.expect("connect");
    (store, server)
}

async fn raw(store: &RedisStore, cmd: &::redis::Cmd) -> Value {
    store.query(cmd).await.expect("raw command")
}

fn oidc(sub: &str) -> ExternalIdentity {
    ExternalIdentity::oidc("https://idp.example", sub).expect("identity")
}

fn name(n: &str) -> Username {
    Username::parse(n).expect("name")
}

/// Writes what `create_external_user` had written when it stopped after claiming the name
/// (steps 1 and 2): a record naming the identity in `xp`, its list, the name claim.
async fn interrupted_creation(
    store: &RedisStore,
    identity: &ExternalIdentity,
    username: &str,
    created_at: Timestamp,
) -> UserId {
    let id = UserId::new_random();
    let json = identity_json(identity).expect("json");
    raw(
        store,
        ::redis::cmd("HSET")
            .arg(store.keys.user(id))
            .arg("id")
            .arg(id.to_string())
            .arg("username")
            .arg(username)
            .arg("created_at")
            .arg(created_at.0)
            .arg("xp")
            .arg(&json),
    )
    .await;
    raw(
        store,
        ::redis::cmd("HSET")
            .arg(store.user_ext_key(id))
            .arg(&json)
            .arg(created_at.0),
    )
    .await;
    raw(
        store,
        ::redis::cmd("SET")
            .arg(store.keys.username(&name(username).canonical()))
            .arg(id.to_string()),
    )
    .await;
    id
}

#[tokio::test]
async fn a_creation_interrupted_after_the_name_claim_is_finished_by_the_next_sign_in() {
    let (store, _server) = setup().await;
    let now = Timestamp::now();
    let identity = oidc("crashed");
    let orphan = interrupted_creation(&store, &identity, "frank", Timestamp(now.0 - 60_000)).await;
    // Before the repair the identity leads nowhere and the name is held.
    assert_eq!(store.external_user(&identity).await.unwrap(), None);

    let done = store
        .create_external_user(&name("frank"), &identity, now)
        .await
        .unwrap();
    assert!(done.created, "this call finished the creation");
    assert_eq!(
        done.user.id, orphan,
        "the interrupted user, not a second one"
    );
    assert_eq!(done.user.username, "frank");
    assert_eq!(store.external_user(&identity).await.unwrap(), Some(orphan));
    let listed = store.external_identities(orphan).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].identity, identity);
    // And it is a normal account now: the next sign-in finds it.
    let again = store
        .create_external_user(&name("other"), &identity, now)
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.user.id, orphan);
}

#[tokio::test]
async fn a_young_or_foreign_holder_of_the_name_is_not_adopted() {
    let (store, _server) = setup().await;
    let now = Timestamp::now();
    let identity = oidc("racer");
    // A creation of the same identity started a moment ago: a racing sign-in at work.
    let racing = interrupted_creation(&store, &identity, "gina", now).await;
    assert_eq!(
        store
            .create_external_user(&name("gina"), &identity, now)
            .await,
        Err(StoreError::UsernameTaken)
    );
    // An old interrupted creation for another identity.
    let other = oidc("someone-else");
    let foreign = interrupted_creation(&store, &other, "hana", Timestamp(now.0 - 60_000)).await;
    assert_eq!(
        store
            .create_external_user(&name("hana"), &identity, now)
            .await,
        Err(StoreError::UsernameTaken)
    );
    // Neither refused attempt left anything: no claim, the holders untouched.
    assert_eq!(store.external_user(&identity).await.unwrap(), None);
    for (who, n) in [(racing, "gina"), (foreign, "hana")] {
        let u = store.user_by_username(&name(n)).await.unwrap().unwrap();
        assert_eq!(u.id, who);
    }
    // With a free name the identity gets its own account.
    let mine = store
        .create_external_user(&name("ines"), &identity, now)
        .await
        .unwrap();
    assert!(mine.created);
    assert_ne!(mine.user.id, racing);
}

#[tokio::test]
async fn a_link_interrupted_before_the_list_is_listed_by_linking_again() {
    let (store, _server) = setup().await;
    let user = store
        .create_user(&name("joe"), Some("hash"), Timestamp::now())
        .await
        .unwrap();
    let identity = oidc("joe");
    // The claim was written, the list entry was not.
    raw(
        &store,
        ::redis::cmd("SET")
            .arg(store.ext_claim_key(&identity))
            .arg(user.id.to_string()),
    )
    .await;
    assert_eq!(store.external_user(&identity).await.unwrap(), Some(user.id));
    assert!(store.external_identities(user.id).await.unwrap().is_empty());
    store
        .link_external(&identity, user.id, Timestamp(5))
        .await
        .unwrap();
    let listed = store.external_identities(user.id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].linked_at, Timestamp(5));
}

#[tokio::test]
async fn an_unlisted_identity_still_counts_as_a_way_to_sign_in() {
    let (store, _server) = setup().await;
    let (a, b) = (oidc("a"), oidc("b"));
    let user = store
        .create_external_user(&name("kim"), &a, Timestamp::now())
        .await
        .unwrap()
        .user;
    // `b` claimed for kim, its list entry lost (a link interrupted by a crash).
    raw(
        &store,
        ::redis::cmd("SET")
            .arg(store.ext_claim_key(&b))
            .arg(user.id.to_string()),
    )
    .await;
    // The list shows only `a`, but `b` counts too (its claim points here): removing `b`
    // leaves `a`, so it is allowed.
    assert_eq!(
        store.unlink_external(&b, user.id).await.unwrap(),
        Unlink::Removed
    );
    assert_eq!(store.external_user(&b).await.unwrap(), None);
    // Now `a` is the last one: refused, and it still signs in.
    assert_eq!(
        store.unlink_external(&a, user.id).await.unwrap(),
        Unlink::LastSignInMethod
    );
    assert_eq!(store.external_user(&a).await.unwrap(), Some(user.id));
}

#[tokio::test]
async fn an_unlink_interrupted_before_the_claim_release_is_finished_by_unlinking_again() {
    let (store, _server) = setup().await;
    let user = store
        .create_user(&name("lee"), Some("hash"), Timestamp::now())
        .await
        .unwrap();
    let identity = oidc("lee");
    store
        .link_external(&identity, user.id, Timestamp::now())
        .await
        .unwrap();
    // The list entry was removed, the claim not yet released.
    raw(
        &store,
        ::redis::cmd("HDEL")
            .arg(store.user_ext_key(user.id))
            .arg(identity_json(&identity).unwrap()),
    )
    .await;
    assert_eq!(
        store.unlink_external(&identity, user.id).await.unwrap(),
        Unlink::Removed
    );
    assert_eq!(store.external_user(&identity).await.unwrap(), None);
}
