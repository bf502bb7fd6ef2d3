//! The broker's background tasks: the publisher (batched cross-node delivery), the subscriber
//! (this node's channel, with gap detection), the heartbeat and the dead-node sweep.

use super::envelope::{decode, decode_close, encode};
use super::presence::Dirty;
use super::{BATCH, Outgoing, Shared};
use crate::hub::{CLOSE_LAGGED, ConnId};
use futures_util::StreamExt;
use redis::{AsyncCommands, Cmd, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use zajel_core::UserId;
use zajel_core::store::redis::RedisConnection;

/// Reaps a dead node's entry from one user's presence hash.
const REAP_LUA: &str = include_str!("reap.lua");

/// One target node's publishes of a batch, in order, with the recipients each one is for.
type NodeBatch = (Vec<Cmd>, Vec<Vec<UserId>>);

/// The nodes holding each of `users` (their presence hashes' fields), in order; one
/// round trip.
async fn locate(
    con: &RedisConnection,
    keys: &super::Keys,
    users: &[UserId],
) -> redis::RedisResult<Vec<Vec<String>>> {
    let groups = users
        .iter()
        .map(|&u| {
            let mut c = redis::cmd("HKEYS");
            c.arg(keys.presence(u));
            vec![c]
        })
        .collect();
    con.query_groups(groups)
        .await?
        .into_iter()
        .map(|mut r| match r.pop() {
            Some(v) => Ok(redis::from_redis_value(v)?),
            None => Ok(Vec::new()),
        })
        .collect()
}

/// Adds `users` to a node's missed set (one slot: the node's), which expires after 60 s.
fn mark_missed(key: &str, users: Vec<String>) -> Vec<Cmd> {
    let mut sadd = redis::cmd("SADD");
    sadd.arg(key).arg(users);
    let mut pexpire = redis::cmd("PEXPIRE");
    pexpire.arg(key).arg(60_000);
    vec![sadd, pexpire]
}

pub(super) async fn publisher(shared: Arc<Shared>, mut rx: mpsc::Receiver<Outgoing>) {
    let mut stop = shared.stop.subscribe();
    loop {
        let first = tokio::select! {
            _ = stop.changed() => return,
            ev = rx.recv() => match ev {
                Some(ev) => ev,
                None => return,
            },
        };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(ev) => batch.push(ev),
                Err(_) => break,
            }
        }
        // 1. Where are the recipients? One pipelined round trip.
        let mut users: Vec<UserId> = batch.iter().flat_map(|o| o.users.iter().copied()).collect();
        users.sort_unstable();
        users.dedup();
        let nodes = match locate(&shared.con, &shared.keys, &users).await {
            Ok(n) => n,
            Err(e) => {
                shared.lost.fetch_add(batch.len() as u64, Ordering::Relaxed);
                for out in &batch {
                    shared.lose(&out.users);
                }
                tracing::warn!(error = %e, events = batch.len(), "cross-node lookup failed; remote delivery lost");
                continue;
            }
        };
        let dead = shared
            .dead
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let located: HashMap<UserId, Vec<String>> = users
            .into_iter()
            .zip(nodes)
            .map(|(u, ns)| {
                let remote = ns
                    .into_iter()
                    .filter(|n| *n != shared.node && !dead.contains(n))
                    .collect();
                (u, remote)
            })
            .collect();
        // 2. Each event once to each other node holding a recipient, in publish order: one
        //    group per target node (one slot on a Cluster), so each node's events stay in
        //    order.
        let mut per_node: HashMap<&str, NodeBatch> = HashMap::new();
        let mut count = 0u64;
        for out in &batch {
            let mut targets: Vec<&str> = out
                .users
                .iter()
                .filter_map(|u| located.get(u))
                .flatten()
                .map(String::as_str)
                .collect();
            if targets.is_empty() {
                continue;
            }
            targets.sort_unstable();
            targets.dedup();
            let payload = encode(&shared.node, &out.users, &out.event);
            for t in targets {
                // (PUBLISH, recipients on the target) pairs, to mark missed deliveries.
                let (cmds, on) = per_node.entry(t).or_default();
                cmds.push(shared.publish_cmd(t, &payload));
                on.push(
                    out.users
                        .iter()
                        .filter(|u| located.get(u).is_some_and(|ns| ns.iter().any(|n| n == t)))
                        .copied()
                        .collect(),
                );
                count += 1;
            }
        }
        if count == 0 {
            continue;
        }
        let (targets, batches): (Vec<&str>, Vec<NodeBatch>) = per_node.into_iter().unzip();
        let (groups, recipients): (Vec<Vec<Cmd>>, Vec<Vec<Vec<UserId>>>) =
            batches.into_iter().unzip();
        match shared.con.query_groups(groups).await {
            Ok(receivers) => {
                shared.published.fetch_add(count, Ordering::Relaxed);
                // A node that holds recipients but was not subscribed (its subscription is
                // reconnecting) missed the event: tell it which users to resync.
                let mut missed = Vec::new();
                let mut missed_users: Vec<UserId> = Vec::new();
                for ((t, on), replies) in targets.iter().zip(recipients).zip(receivers) {
                    let mut ids: Vec<String> = Vec::new();
                    for (users, n) in on.iter().zip(replies) {
                        if matches!(n, Value::Int(0)) {
                            ids.extend(users.iter().map(UserId::to_string));
                            missed_users.extend(users);
                        }
                    }
                    if !ids.is_empty() {
                        missed.push(mark_missed(&shared.keys.missed(t), ids));
                    }
                }
                if !missed.is_empty()
                    && let Err(e) = shared.con.query_groups(missed).await
                {
                    // Not only logged: the heartbeat marks them again until Redis takes it.
                    shared.lose(&missed_users);
                    tracing::warn!(error = %e, "could not record missed cross-node deliveries; retrying");
                }
            }
            Err(e) => {
                shared.lost.fetch_add(count, Ordering::Relaxed);
                for out in &batch {
                    shared.lose(&out.users);
                }
                tracing::warn!(error = %e, "cross-node publish failed; remote delivery lost");
            }
        }
    }
}

pub(super) async fn subscriber(shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    let channel = shared.keys.channel(&shared.node);
    let mut backoff = Duration::from_millis(100);
    // Set when a subscription is lost: connections older than this may have missed events.
    let mut gap_from: Option<ConnId> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        let attempt = super::sharded::subscribe(&shared, &channel);
        let ps = tokio::select! {
            _ = stop.changed() => return,
            r = attempt => r,
        };
        match ps {
            Ok(mut stream) => {
                backoff = Duration::from_millis(100);
                if let Some(h) = shared.hub.get() {
                    shared
                        .missable_before
                        .store(h.next_conn_id(), Ordering::Release);
                }
                if let Some(before) = gap_from.take() {
                    // Events published to this node while it was not subscribed are lost.
                    shared.resync(before, "cross-node subscription restored after a gap");
                }
                tracing::debug!(channel = %channel, "subscribed");
                loop {
                    let msg = tokio::select! {
                        _ = stop.changed() => return,
                        m = stream.next() => m,
                    };
                    let Some(msg) = msg else { break };
                    match decode(&msg) {
                        Some(env) if env.origin != shared.node => {
                            shared.received.fetch_add(1, Ordering::Relaxed);
                            if let Some(hub) = shared.hub.get() {
                                hub.deliver(&env.users, &env.event, None);
                            }
                        }
                        Some(_) => {}
                        None => match decode_close(&msg) {
                            Some(req) if req.origin != shared.node => {
                                if let Some(hub) = shared.hub.get() {
                                    hub.close_user(req.user, req.session.as_deref(), req.code);
                                }
                            }
                            Some(_) => {}
                            None => tracing::warn!("ignoring a malformed cross-node event"),
                        },
                    }
                }
                tracing::warn!("cross-node subscription lost; reconnecting");
                shared.missable_before.store(u64::MAX, Ordering::Release);
                if gap_from.is_none() {
                    gap_from = shared.hub.get().map(|h| h.next_conn_id());
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot subscribe to Redis");
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        // At most 2 s: a Cluster failover (a few seconds) should not cost much more.
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

pub(super) async fn heartbeat(shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    let mut beat = tokio::time::interval(Duration::from_millis(shared.config.heartbeat_ms.max(1)));
    let mut sweep = tokio::time::interval(Duration::from_millis(shared.config.sweep_ms.max(1)));
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut con = shared.con.clone();
    let mut registered = false;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = beat.tick() => {
                let mut set = redis::cmd("SET");
                set.arg(shared.keys.heartbeat(&shared.node))
                    .arg("1")
                    .arg("PX")
                    .arg(shared.config.node_ttl_ms.max(1));
                let mut sadd = redis::cmd("SADD");
                sadd.arg(shared.keys.nodes()).arg(&shared.node);
                let beat = shared.con.query_groups(vec![vec![set], vec![sadd]]).await;
                let added = beat.and_then(|mut r| match r.pop().and_then(|mut g| g.pop()) {
                    Some(v) => Ok(redis::from_redis_value::<i64>(v)?),
                    None => Err(redis::RedisError::from((
                        redis::ErrorKind::UnexpectedReturnType,
                        "no SADD reply",
                    ))),
                });
                match added {
                    Ok(added) => {
                        if added == 1 && registered {
                            // Another node declared this one dead (or Redis lost its data):
                            // our presence entries are gone; make clients re-register.
                            let before = shared.hub.get().map_or(0, |h| h.next_conn_id());
                            shared.resync(before, "this node was missing from the node registry");
                        }
                        registered = true;
                    }
                    Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                }
                if let Err(e) = mark_lost(&shared).await {
                    tracing::warn!(error = %e, "could not mark lost cross-node deliveries");
                }
                let key = shared.keys.missed(&shared.node);
                let taken = redis::pipe()
                    .atomic()
                    .smembers(&key)
                    .del(&key)
                    .ignore()
                    .query_async::<(Vec<String>,)>(&mut con)
                    .await;
                if let (Ok((users,)), Some(hub)) = (taken, shared.hub.get()) {
                    // Connections registered after the (re)subscription receive every later
                    // publish, and a resume reads history after registering: spare them.
                    let before = shared.missable_before.load(Ordering::Acquire);
                    let wave = users.len();
                    for u in users.iter().filter_map(|u| u.parse::<UserId>().ok()) {
                        tracing::info!(user = %u, "missed a cross-node event: closing (4008) to resume");
                        hub.close_user_older(u, before, CLOSE_LAGGED, wave);
                    }
                }
            }
            _ = sweep.tick() => {
                if let Err(e) = sweep_dead(&shared, &mut con).await {
                    tracing::warn!(error = %e, "dead-node sweep failed");
                }
            }
        }
    }
}

/// Marks the recipients of lost cross-node events as missed on every node holding them
/// (including this one: its hub got the event, but the recipients' other nodes did not, and
/// marking is cheaper than telling the two apart). Those nodes close the users' connections
/// with 4008 at their next heartbeat, and the clients resume from history.
async fn mark_lost(shared: &Shared) -> redis::RedisResult<()> {
    let users: Vec<UserId> = {
        let mut set = shared.lost_users.lock().unwrap_or_else(|e| e.into_inner());
        set.drain().collect()
    };
    if users.is_empty() {
        return Ok(());
    }
    let result = async {
        let nodes = locate(&shared.con, &shared.keys, &users).await?;
        let mut per_node: HashMap<&str, Vec<String>> = HashMap::new();
        for (u, ns) in users.iter().zip(&nodes) {
            for n in ns.iter().filter(|n| **n != shared.node) {
                per_node.entry(n).or_default().push(u.to_string());
            }
        }
        if !per_node.is_empty() {
            let groups = per_node
                .into_iter()
                .map(|(n, ids)| mark_missed(&shared.keys.missed(n), ids))
                .collect();
            shared.con.query_groups(groups).await?;
        }
        Ok(())
    }
    .await;
    if result.is_err() {
        // Try again at the next heartbeat.
        shared.lose(&users);
    }
    result
}

/// Finds nodes whose heartbeat expired, claims each (one node wins the `SREM`), removes its
/// presence entries and reports users now offline everywhere.
async fn sweep_dead(shared: &Shared, con: &mut RedisConnection) -> redis::RedisResult<()> {
    let members: Vec<String> = con.smembers(shared.keys.nodes()).await?;
    let others: Vec<String> = members.into_iter().filter(|n| *n != shared.node).collect();
    if others.is_empty() {
        shared
            .dead
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        return reap_claimed(shared, con).await;
    }
    let groups = others
        .iter()
        .map(|n| {
            let mut c = redis::cmd("EXISTS");
            c.arg(shared.keys.heartbeat(n));
            vec![c]
        })
        .collect();
    let alive: Vec<bool> = con
        .query_groups(groups)
        .await?
        .into_iter()
        .map(|g| matches!(g.first(), Some(Value::Int(n)) if *n > 0))
        .collect();
    let dead: Vec<String> = others
        .into_iter()
        .zip(alive)
        .filter(|(_, a)| !a)
        .map(|(n, _)| n)
        .collect();
    *shared.dead.write().unwrap_or_else(|e| e.into_inner()) = dead.iter().cloned().collect();
    for node in dead {
        let claimed: i64 = con.srem(shared.keys.nodes(), &node).await?;
        if claimed == 1 {
            tracing::info!(node = %node, "node is dead (heartbeat expired); reaping its presence");
            shared.lock_reaping().insert(node);
        }
    }
    reap_claimed(shared, con).await
}

/// Reaps the dead nodes this node claimed. They stay claimed until reaped: no other node will
/// claim them again (they left `P:nodes`), so a reap that fails halfway is retried at the next
/// sweep (it is idempotent) rather than leaving the dead node's users online forever.
async fn reap_claimed(shared: &Shared, con: &mut RedisConnection) -> redis::RedisResult<()> {
    let pending: Vec<String> = shared.lock_reaping().iter().cloned().collect();
    for node in pending {
        let alive: bool = con.exists(shared.keys.heartbeat(&node)).await?;
        if !alive {
            reap(shared, con, &node).await?;
        }
        shared.lock_reaping().remove(&node);
    }
    Ok(())
}

/// Removes dead node `node`'s entries from its users' presence hashes, announces the users
/// now offline everywhere, then drops the node's users and missed sets.
async fn reap(shared: &Shared, con: &mut RedisConnection, node: &str) -> redis::RedisResult<()> {
    let users: Vec<String> = con.smembers(shared.keys.node_users(node)).await?;
    for chunk in users.chunks(BATCH) {
        let ids: Vec<UserId> = chunk.iter().filter_map(|u| u.parse().ok()).collect();
        let groups = ids
            .iter()
            .map(|&u| {
                // EVAL (not EVALSHA): runs once per dead node, no NOSCRIPT handling needed.
                let mut c = redis::cmd("EVAL");
                c.arg(REAP_LUA)
                    .arg(1)
                    .arg(shared.keys.presence(u))
                    .arg(node);
                vec![c]
            })
            .collect();
        let hashes = con
            .query_groups(groups)
            .await?
            .into_iter()
            .map(|mut g| match g.pop() {
                Some(v) => Ok(redis::from_redis_value::<Vec<(String, i64)>>(v)?),
                None => Ok(Vec::new()),
            })
            .collect::<redis::RedisResult<Vec<_>>>()?;
        for (u, h) in ids.into_iter().zip(hashes) {
            let (mine, others) = shared.split_counts(&h);
            if mine <= 0 && !others {
                shared.announce(u, false);
            }
        }
    }
    con.del::<_, ()>(&[shared.keys.node_users(node), shared.keys.missed(node)])
        .await?;
    Ok(())
}

/// Rewrites the presence entries of the users whose update Redis did not take (see
/// `presence.rs`), as soon as they are marked and then with backoff (0.1 s doubling to 2 s)
/// until Redis takes every one.
pub(super) async fn repair(shared: Arc<Shared>) {
    const FIRST: Duration = Duration::from_millis(100);
    let mut stop = shared.stop.subscribe();
    let mut backoff = FIRST;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = shared.dirty_wake.notified() => {}
        }
        loop {
            let batch: Vec<(UserId, Dirty)> = shared
                .dirty
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drain()
                .collect();
            if batch.is_empty() {
                backoff = FIRST;
                break;
            }
            let mut failed = None;
            for (user, dirty) in batch {
                if failed.is_some() {
                    shared.requeue_dirty(user, dirty);
                    continue;
                }
                if let Err(e) = shared.repair_user(user, dirty).await {
                    shared.requeue_dirty(user, dirty);
                    failed = Some(e);
                }
            }
            let Some(e) = failed else {
                backoff = FIRST;
                continue;
            };
            tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "presence repair: Redis still does not take the update");
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}
