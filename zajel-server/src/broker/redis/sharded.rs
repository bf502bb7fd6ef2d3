//! The subscription to this node's channel: plain pub/sub on one Redis, sharded pub/sub on a
//! Cluster.
//!
//! **Why our own shard connection on a Cluster.** redis-rs's cluster connection can
//! `SSUBSCRIBE` (RESP3) and re-subscribes by itself after a reconnect or a slot move, but its
//! push stream does not say *which* node disconnected, so the broker could not tell a gap in
//! its own subscription (events lost: resync the clients) from a failover of an unrelated
//! shard (nothing lost). So the subscriber resolves the primary owning the channel's slot
//! (`CLUSTER KEYSLOT` + `CLUSTER SLOTS` through the cluster connection), opens one RESP3
//! connection to it and `SSUBSCRIBE`s there. The subscription ends, exactly when events may
//! be lost, on a disconnection (the primary died or the network broke) or on the server's
//! `sunsubscribe` push (the slot moved, e.g. a manual failover turned the primary into a
//! replica); the subscriber then starts over, which finds the new owner, and treats it as a
//! gap like any other. A stale `CLUSTER SLOTS` answer right after a failover only costs a
//! retry: the old primary refuses the connection, or answers `MOVED`.

use super::{Shared, Source};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use redis::aio::ConnectionLike;
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, ProtocolVersion, PushKind, RedisError,
    RedisResult, Value,
};
use std::time::Duration;
use zajel_core::store::redis::RedisConnection;

/// The payloads published to the channel, until the subscription is lost.
pub(super) type Payloads = BoxStream<'static, Vec<u8>>;

/// Subscribes to `channel` (see the module docs).
pub(super) async fn subscribe(shared: &Shared, channel: &str) -> RedisResult<Payloads> {
    match &shared.source {
        Source::Single(client) => {
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe(channel).await?;
            Ok(ps
                .into_on_message()
                .map(|m| m.get_payload_bytes().to_vec())
                .boxed())
        }
        Source::Cluster(seed) => subscribe_shard(&shared.con, seed, channel).await,
    }
}

async fn subscribe_shard(
    con: &RedisConnection,
    seed: &ConnectionInfo,
    channel: &str,
) -> RedisResult<Payloads> {
    let (host, port) = slot_owner(con, channel).await?;
    let info = seed
        .clone()
        .set_addr(ConnectionAddr::Tcp(host, port))
        .set_redis_settings(
            seed.redis_settings()
                .clone()
                .set_protocol(ProtocolVersion::RESP3),
        );
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_push_sender(tx);
    let mut sub = redis::Client::open(info)?
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    // The `ssubscribe` confirmation is the reply (an error such as MOVED fails the attempt).
    sub.req_packed_command(redis::cmd("SSUBSCRIBE").arg(channel))
        .await?
        .extract_error()?;
    // `sub` lives in the stream's state: dropping it ends the subscription.
    let payloads = futures_util::stream::unfold((rx, sub), |(mut rx, sub)| async move {
        while let Some(push) = rx.recv().await {
            match push.kind {
                PushKind::SMessage => {
                    // [channel, payload]
                    if let Some(Value::BulkString(payload)) = push.data.into_iter().nth(1) {
                        return Some((payload, (rx, sub)));
                    }
                }
                PushKind::SUnsubscribe | PushKind::Disconnection => return None,
                _ => {}
            }
        }
        None
    });
    Ok(payloads.boxed())
}

/// The address of the primary serving `channel`'s slot, as the cluster connection's node
/// sees it.
async fn slot_owner(con: &RedisConnection, channel: &str) -> RedisResult<(String, u16)> {
    let mut con = con.clone();
    let slot: i64 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(channel)
        .query_async(&mut con)
        .await?;
    // [[start, end, [host, port, id, …] (the primary), replicas…], …]
    let ranges: Vec<Vec<Value>> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut con)
        .await?;
    for range in ranges {
        let mut it = range.into_iter();
        let (Some(start), Some(end), Some(primary)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let (start, end): (i64, i64) = (
            redis::from_redis_value(start)?,
            redis::from_redis_value(end)?,
        );
        if !(start..=end).contains(&slot) {
            continue;
        }
        let primary: Vec<Value> = redis::from_redis_value(primary)?;
        let mut p = primary.into_iter();
        if let (Some(host), Some(port)) = (p.next(), p.next()) {
            let host: String = redis::from_redis_value(host)?;
            let port: u16 = redis::from_redis_value(port)?;
            if !host.is_empty() {
                return Ok((host, port));
            }
        }
    }
    Err(RedisError::from((
        redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown),
        "no primary serves the node channel's slot",
    )))
}
