//! Redis store: every trait on one Redis node ([`RedisStore::connect_with`]) or a Redis Cluster
//! ([`RedisStore::connect_cluster`]).
//!
//! Each multi-key change is one Lua script (`*.lua` next to this file) over keys of one hash
//! tag (`{u:<id>}`, `{c:<conversation>}`, `{n:<name>}`, `{i:<identity>}`), so it is atomic and
//! stays in one Cluster slot; changes spanning entities are ordered single-slot steps with a
//! commit point. A pair's relation (its edge) lives under its conversation's tag, so the append
//! and read-mark scripts check the friends-only rule atomically with their writes. Every
//! connect brings older data to the current key layout first (`layout.rs`).
//! `docs/storage-redis.md` has the key table, which script touches which keys, and what a
//! Cluster failover can lose.
//!
//! One multiplexed connection (a reconnecting [`::redis::aio::ConnectionManager`], or the
//! cluster client's) carries all traffic, so [`RedisStore`] is cheap to clone and concurrent
//! calls share it. Every round trip runs under a timeout and a circuit breaker (`breaker.rs`).
//! On one node, concurrent appends are merged into shared script calls (`coalesce.rs`).

mod breaker;
mod coalesce;
mod conn;
mod eviction;
mod probe;
mod relations;

pub use conn::RedisConnection;
/// The store's connection (short name inside this module).
use conn::RedisConnection as Conn;

use super::*;
use crate::friends::{Edge, UserPair};
use crate::ids::MessageId;
use crate::model::Message;
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Cmd, ErrorKind, RedisError, Script, ServerErrorKind, Value};
use breaker::Breaker;
use coalesce::Coalescer;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

mod identity;
mod layout;

/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "zajel";

/// How long a user's session hash outlives the expiry of its longest-lived session (Redis
/// deletes it then, with `PEXPIRE`). Generous so clock differences between the server (which
/// sets `expires_at`) and Redis (which counts the TTL) never cut a session short.
const SESSION_GRACE_MS: i64 = 60 * 60 * 1000;

/// Connection settings for [`RedisStore::connect_with`].
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// Key prefix, so several apps (or tests) can share one Redis (default `"zajel"`; no
    /// braces: they would break the Cluster hash tags).
    pub prefix: String,
    /// Longest wait for one command's reply (default 2 s). A call that takes longer fails
    /// with [`StoreError::Unavailable`] and opens the circuit breaker.
    pub command_timeout: Duration,
    /// Longest wait for a TCP connect (default 1 s).
    pub connect_timeout: Duration,
    /// How long the circuit breaker stays open after a timeout or connection failure
    /// (default 1 s): meanwhile every call fails at once with `Unavailable` and this as
    /// `retry_after_ms`, then calls try Redis again.
    pub breaker_cooldown: Duration,
    /// How long an idempotency record deduplicates retries (default 24 h, at least 1 ms).
    pub dedupe_window_ms: u64,
    /// Start even if Redis may evict keys (`maxmemory-policy` other than `noeviction`;
    /// default `false`: connecting fails with [`StoreError::Misconfigured`]). Eviction deletes
    /// acknowledged messages, sessions and idempotency records without telling anyone; only
    /// set this for a Redis whose contents you can afford to lose.
    pub allow_eviction: bool,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
            command_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            breaker_cooldown: Duration::from_secs(1),
            dedupe_window_ms: DEFAULT_DEDUPE_WINDOW_MS,
            allow_eviction: false,
        }
    }
}

/// The Redis backend. Clones share one multiplexed connection.
///
/// ```no_run
/// # async fn demo() -> Result<(), zajel_core::StoreError> {
/// use zajel_core::RedisStore;
/// let store = RedisStore::connect("redis://127.0.0.1:6379/").await?;
/// let isolated = RedisStore::connect_with_prefix("redis://127.0.0.1:6379/", "myapp").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    con: Conn,
    keys: Arc<Keys>,
    breaker: Arc<Breaker>,
    options: Arc<RedisOptions>,
    activity: Arc<ActivityClock>,
    /// The queue that merges concurrent appends into one script call (one node only; `None`
    /// in the clone the queue's own task appends through).
    appends: Option<Arc<Coalescer>>,
}

/// Scores for the per-user conversation lists: wall-clock microseconds, strictly increasing
/// within this process (so two appends in one microsecond still order). Across nodes the
/// order follows their clocks; `ZADD GT` keeps each entry from moving backwards.
#[derive(Default)]
struct ActivityClock {
    last: std::sync::atomic::AtomicU64,
}

impl ActivityClock {
    fn next(&self) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let mut last = self.last.load(Relaxed);
        loop {
            let next = now.max(last + 1);
            match self
                .last
                .compare_exchange_weak(last, next, Relaxed, Relaxed)
            {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.keys.prefix)
            .finish_non_exhaustive()
    }
}

/// A script with its source (for `SCRIPT LOAD` after `NOSCRIPT`) and its SHA1.
struct Lua {
    source: &'static str,
    script: Script,
}

impl Lua {
    fn new(source: &'static str) -> Self {
        Self {
            source,
            script: Script::new(source),
        }
    }
}

/// The scripts, hashed once per process.
struct Scripts {
    update_user: Lua,
    create_session: Lua,
    delete_sessions: Lua,
    swap_edge: Lua,
    set_relation: Lua,
    append: Lua,
    mark_read: Lua,
    summary: Lua,
    migrate_edge: Lua,
    migrate_layout_3: Lua,
}

impl Scripts {
    fn all(&self) -> [&Lua; 10] {
        [
            &self.update_user,
            &self.create_session,
            &self.delete_sessions,
            &self.swap_edge,
            &self.set_relation,
            &self.append,
            &self.mark_read,
            &self.summary,
            &self.migrate_edge,
            &self.migrate_layout_3,
        ]
    }
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    update_user: Lua::new(include_str!("update_user.lua")),
    create_session: Lua::new(include_str!("create_session.lua")),
    delete_sessions: Lua::new(include_str!("delete_sessions.lua")),
    swap_edge: Lua::new(include_str!("swap_edge.lua")),
    set_relation: Lua::new(include_str!("set_relation.lua")),
    append: Lua::new(include_str!("append.lua")),
    mark_read: Lua::new(include_str!("mark_read.lua")),
    summary: Lua::new(include_str!("summary.lua")),
    migrate_edge: Lua::new(include_str!("migrate_edge.lua")),
    migrate_layout_3: Lua::new(include_str!("migrate_layout_3.lua")),
});

/// Key names. The part in braces is the Cluster hash tag; see `docs/storage-redis.md`.
struct Keys {
    prefix: String,
}

impl Keys {
    fn user(&self, u: UserId) -> String {
        format!("{}:{{u:{u}}}:user", self.prefix)
    }
    fn sessions(&self, u: UserId) -> String {
        format!("{}:{{u:{u}}}:sessions", self.prefix)
    }
    fn relations(&self, u: UserId) -> String {
        format!("{}:{{u:{u}}}:rel", self.prefix)
    }
    fn relation_versions(&self, u: UserId) -> String {
        format!("{}:{{u:{u}}}:relv", self.prefix)
    }
    /// Relation changes begun but not yet written to this user's list (`relations.rs`).
    fn relations_pending(&self, u: UserId) -> String {
        format!("{}:{{u:{u}}}:pend", self.prefix)
    }
    fn conversations(&self, u: UserId) -> String {
        format!("{}:{{u:{u}}}:convs", self.prefix)
    }
    fn username(&self, canonical: &str) -> String {
        format!("{}:{{n:{canonical}}}:name", self.prefix)
    }
    /// The pair's authoritative relation (edge, version, friends flag), under the hash tag
    /// of the pair's conversation so the append and read-mark scripts can check it.
    fn pair(&self, pair: UserPair) -> String {
        self.pair_of(&ConversationId::direct(pair.lo, pair.hi))
    }
    fn pair_of(&self, c: &ConversationId) -> String {
        format!("{}:{{c:{c}}}:pair", self.prefix)
    }
    /// Which key layout the data is in (see `layout.rs`).
    fn layout(&self) -> String {
        format!("{}:layout", self.prefix)
    }
    fn meta(&self, c: &ConversationId) -> String {
        format!("{}:{{c:{c}}}:meta", self.prefix)
    }
    fn log(&self, c: &ConversationId) -> String {
        format!("{}:{{c:{c}}}:log", self.prefix)
    }
    /// Layout 2: the idempotency records of one dedupe window (`bucket` = `sent_at /
    /// window`), a hash of their own; layout 3 keeps them in the meta hash (`idempotency_field`).
    #[cfg(test)]
    fn legacy_idempotency(&self, c: &ConversationId, bucket: u64) -> String {
        format!("{}:{{c:{c}}}:idem:{bucket}", self.prefix)
    }
}

/// The meta-hash field of an idempotency record (layout 3): `<window>:<sender>:<key>`, written
/// into `out` (cleared first). The window leads, so a sweep finds a record's age without a
/// lookup, and no other meta field (`seq`, `f`, `ib`, `r:<user>`) starts with a digit.
fn idempotency_field(out: &mut String, window: u64, sender: UserId, key: &str) {
    out.clear();
    push_decimal(out, window);
    out.push(':');
    out.push_str(
        sender
            .0
            .hyphenated()
            .encode_lower(&mut ::uuid::Uuid::encode_buffer()),
    );
    out.push(':');
    out.push_str(key);
}

/// Appends `n` in decimal, without the formatting machinery (four numbers per message).
fn push_decimal(out: &mut String, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut rest = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    out.push_str(std::str::from_utf8(&digits[i..]).unwrap_or_default());
}

/// Layout 3's stream entry: one field `m` whose value is the message id and the sender (36
/// characters each), `sent_at`, `:`, the idempotency key's length in bytes, `:`, the key, then
/// the body to the end. One field instead of five name/value pairs: fewer strings for Redis to
/// receive and store per message. Layout-2 entries (fields `id`, `sender`, `body`, `sent_at`,
/// `key`) are read as they are (`message_from_fields`).
fn pack_entry(
    out: &mut String,
    id: MessageId,
    sender: UserId,
    sent_at: i64,
    key: &str,
    body: &str,
) {
    out.clear();
    let mut uuid = ::uuid::Uuid::encode_buffer();
    out.push_str(id.0.hyphenated().encode_lower(&mut uuid));
    out.push_str(sender.0.hyphenated().encode_lower(&mut uuid));
    if sent_at < 0 {
        out.push('-');
    }
    push_decimal(out, sent_at.unsigned_abs());
    out.push(':');
    push_decimal(out, key.len() as u64);
    out.push(':');
    out.push_str(key);
    out.push_str(body);
}

/// The message in a packed entry (`pack_entry`); anything that does not decode is `Corrupt`.
fn unpack_entry(conv: &ConversationId, seq: u64, packed: &str) -> StoreResult<Message> {
    let bad = || corrupt(format_args!("malformed entry {seq} in the log of {conv}"));
    let (Some(id), Some(sender), Some(rest)) =
        (packed.get(..36), packed.get(36..72), packed.get(72..))
    else {
        return Err(bad());
    };
    let (sent_at, rest) = rest.split_once(':').ok_or_else(bad)?;
    let (key_len, rest) = rest.split_once(':').ok_or_else(bad)?;
    let key_len: usize = parse(key_len, "idempotency key length")?;
    let (Some(key), Some(body)) = (rest.get(..key_len), rest.get(key_len..)) else {
        return Err(bad());
    };
    Ok(Message {
        id: MessageId(parse(id, "message id")?),
        conversation: conv.clone(),
        seq,
        sender: parse(sender, "sender")?,
        body: body.to_owned(),
        sent_at: Timestamp(parse(sent_at, "sent_at")?),
        idempotency_key: key.to_owned(),
    })
}

/// Deletes a claim (a username's or an external identity's: a string holding its owner's id)
/// if it belongs to `ARGV[1]` (compare-and-delete).
const RELEASE_CLAIM: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

/// Escapes the characters that would end or split a hash tag (and the escape and separator
/// characters themselves), so free-form issuer/subject strings keep one well-formed tag.
fn tag_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            '|' => out.push_str("%7C"),
            c => out.push(c),
        }
    }
    out
}

fn read_field(u: UserId) -> String {
    format!("r:{u}")
}

/// One script call: keys and arguments, written into the `EVALSHA` command as they are added
/// (keys first; the append writes ~10 arguments per message straight from its fields, without
/// a `String` or a copy each).
struct Call {
    /// `EVALSHA <sha>`, then (once the first argument arrives) `<numkeys> <keys…>` and the
    /// arguments.
    cmd: Cmd,
    /// Keys not yet written into `cmd` (its key count comes first).
    keys: Vec<String>,
    keys_written: bool,
}

impl Call {
    fn new(script: &'static Lua) -> Self {
        Self::with_capacity(script, 8, 256)
    }
    /// A call expected to carry about `args` arguments of `bytes` in all.
    fn with_capacity(script: &'static Lua, args: usize, bytes: usize) -> Self {
        let mut cmd = Cmd::with_capacity(args + 3, bytes + 64);
        cmd.arg("EVALSHA").arg(script.script.get_hash());
        Self {
            cmd,
            keys: Vec::new(),
            keys_written: false,
        }
    }
    fn key(mut self, k: String) -> Self {
        debug_assert!(!self.keys_written, "keys come before arguments");
        self.keys.push(k);
        self
    }
    fn arg(mut self, a: impl ToString) -> Self {
        self.args().arg(a.to_string());
        self
    }
    /// The command, to write arguments into directly (after the keys).
    fn args(&mut self) -> &mut Cmd {
        if !self.keys_written {
            self.keys_written = true;
            self.cmd.arg(self.keys.len()).arg(&self.keys);
        }
        &mut self.cmd
    }
    fn evalsha(&self) -> Cmd {
        if self.keys_written {
            return self.cmd.clone();
        }
        let mut cmd = self.cmd.clone();
        cmd.arg(self.keys.len()).arg(&self.keys);
        cmd
    }
}

/// Whether a call may be repeated after a connection failure. Only `swap_edge` may not: if
/// the first attempt committed, a repeat would report "not swapped" for a swap that happened.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    Once,
    Never,
}

/// A connection-level failure the ConnectionManager recovers from by reconnecting.
fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_unrecoverable_error() || e.is_connection_refusal()
}

/// Reads a user's profile: `HMGET` of the two fields a [`User`] has, not `HGETALL` (which
/// would also carry the password hash and `last_seen`, and need a map to pick from).
fn user_cmd(keys: &Keys, id: UserId) -> Cmd {
    let mut cmd = ::redis::cmd("HMGET");
    cmd.arg(keys.user(id)).arg("username").arg("created_at");
    cmd
}

/// The user from [`user_cmd`]'s reply: `None` when both fields are nil (the hash does not
/// exist, or is damaged: [`RedisStore::confirm_no_user`] tells which).
fn user_from_fields(id: UserId, reply: Value) -> StoreResult<Option<User>> {
    let mut f = array(reply)?.into_iter();
    let (Some(username), Some(created_at), None) = (f.next(), f.next(), f.next()) else {
        return Err(corrupt("expected 2 fields of a user"));
    };
    if matches!((&username, &created_at), (Value::Nil, Value::Nil)) {
        return Ok(None);
    }
    let missing = |field: &str| corrupt(format_args!("user {id}: missing field {field:?}"));
    Ok(Some(User {
        id,
        username: opt_string(username)?.ok_or_else(|| missing("username"))?,
        created_at: Timestamp(
            opt_int(created_at, "created_at")?.ok_or_else(|| missing("created_at"))?,
        ),
    }))
}

/// What the friend announcements need of a relation entry (its other fields are skipped).
#[derive(serde::Deserialize)]
struct FriendOrNot {
    peer: UserId,
    relation: Relation,
}

/// The friends' ids from an `HGETALL` of a relation list, sorted.
fn friends_from_relations(reply: Value) -> StoreResult<Vec<UserId>> {
    let values: Vec<Value> = match reply {
        Value::Map(m) => m.into_iter().map(|(_, v)| v).collect(),
        v => array(v)?.into_iter().skip(1).step_by(2).collect(),
    };
    let mut friends = Vec::new();
    for v in values {
        let Value::BulkString(b) = v else {
            return Err(corrupt("relation entry is not a string"));
        };
        let e: FriendOrNot = serde_json::from_slice(&b)
            .map_err(|e| corrupt(format_args!("bad relation entry: {e}")))?;
        if e.relation == Relation::Friends {
            friends.push(e.peer);
        }
    }
    friends.sort();
    Ok(friends)
}

/// A Redis error as a store error: a key of the wrong type is damaged data, a refusal (see
/// [`refusal`]) is `Unavailable` (retry later: the command did not run), the rest is the
/// backend failing.
fn redis_err(e: RedisError) -> StoreError {
    if e.code() == Some("WRONGTYPE") {
        StoreError::Corrupt(e.to_string())
    } else if refusal(&e).is_some() {
        StoreError::unavailable(refusal_reason(&e), REFUSAL_RETRY_MS)
    } else {
        StoreError::Backend(e.to_string())
    }
}

/// The retry hint of a refusal answered outside the breaker's bookkeeping (the breaker's own
/// errors carry its cooldown).
const REFUSAL_RETRY_MS: u64 = 1000;

/// Replies by which Redis says it cannot do this now, though it is reachable. None of them
/// ran the command: a script refused by `OOM`/`MISCONF`/`READONLY` fails at its first write
/// command and nothing before it wrote (Redis 7 refuses a write inside a script only while the
/// script has not written yet; checked against redis-server 7.0 in `redis_faults.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// Writes are refused, reads still work: `OOM` (`maxmemory` reached under `noeviction`),
    /// `READONLY` (a replica, e.g. the old primary after a failover), `MISCONF` (RDB snapshots
    /// fail and `stop-writes-on-bgsave-error` is on), `NOREPLICAS` (`min-replicas-to-write`).
    Writes,
    /// Every command is refused for a while: `LOADING` (reading its data at start), `BUSY` (a
    /// script runs too long), `MASTERDOWN` (a replica cut off from its primary with
    /// `replica-serve-stale-data no`), `CLUSTERDOWN` (slots not served). Handled like a
    /// timeout: the breaker opens.
    Server,
    /// One slot is being moved (`TRYAGAIN`, Cluster): retry this call shortly; the rest of
    /// the store is fine.
    Retry,
}

fn refusal(e: &RedisError) -> Option<Refusal> {
    match e.code()? {
        "OOM" | "READONLY" | "MISCONF" | "NOREPLICAS" => Some(Refusal::Writes),
        "LOADING" | "BUSY" | "MASTERDOWN" | "CLUSTERDOWN" => Some(Refusal::Server),
        "TRYAGAIN" => Some(Refusal::Retry),
        _ => None,
    }
}

/// The reason given for a refusal: its code and Redis's own words (they name the setting to
/// look at).
fn refusal_reason(e: &RedisError) -> String {
    format!(
        "Redis refuses the command ({}): {e}",
        e.code().unwrap_or("?")
    )
}

/// Room Redis must have below `maxmemory` before the write probe reports writes as taken
/// again: 1 MiB, or a tenth of `maxmemory` if that is smaller. At the limit, memory use moves
/// by a few KB with every reply and connection buffer, so a tiny probe write fits now and then
/// while real writes still fail; health would flap (the embedded store's full-disk health did
/// until it waited for free space too).
fn memory_margin(maxmemory: u64) -> u64 {
    (1 << 20).min(maxmemory / 10)
}

/// From `INFO memory`: why writes should still count as refused (memory within
/// [`memory_margin`] of `maxmemory`), or `None`. Memory Redis does not count towards its
/// limit (replica and AOF buffers) is left out, as Redis does.
fn memory_too_full(info: &str) -> Option<String> {
    let field = |name: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let max = field("maxmemory");
    let used = field("used_memory").saturating_sub(field("mem_not_counted_for_evict"));
    (max > 0 && used + memory_margin(max) > max).then(|| {
        format!(
            "Redis memory is nearly full: {used} of maxmemory {max} bytes used (writes are \
             refused with OOM at the limit)"
        )
    })
}

fn is_noscript(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}

impl RedisStore {
    /// Connects with the default key prefix (`"zajel"`).
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::connect_with_prefix(url, DEFAULT_PREFIX).await
    }

    /// Connects with a key prefix, so several apps (or tests) can share one Redis. The prefix
    /// must not contain `{` or `}` (it would break the Cluster hash tags).
    pub async fn connect_with_prefix(url: &str, prefix: &str) -> StoreResult<Self> {
        Self::connect_with(
            url,
            RedisOptions {
                prefix: prefix.to_owned(),
                ..RedisOptions::default()
            },
        )
        .await
    }

    /// Connects with explicit [`RedisOptions`] (timeouts, circuit breaker, prefix).
    pub async fn connect_with(url: &str, options: RedisOptions) -> StoreResult<Self> {
        if options.prefix.contains(['{', '}']) {
            return Err(StoreError::Backend(format!(
                "invalid key prefix {:?}: braces are reserved for hash tags",
                options.prefix
            )));
        }
        let client = ::redis::Client::open(url).map_err(StoreError::backend)?;
        // One quick reconnect attempt per failed call: the breaker, not the connection
        // manager's retry loop, decides how long to wait while Redis is away.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.command_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(100));
        let con = tokio::time::timeout(
            options.connect_timeout + options.command_timeout,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| StoreError::unavailable("cannot connect to Redis: timed out", 0))?
        .map_err(|e| match is_connection_error(&e) {
            true => StoreError::unavailable(format!("cannot connect to Redis: {e}"), 0),
            false => redis_err(e),
        })?;
        Self::with_connection(Conn::Single(con), options)?
            .check_eviction()
            .await?
            .ensure_layout()
            .await
    }

    /// Connects to a Redis Cluster through any of its nodes (`seeds`: `redis://host:port/`
    /// URLs; the client discovers the rest and follows slot moves and failovers). Every
    /// script touches one slot (see `docs/storage-redis.md`), so the whole store works on a
    /// Cluster.
    pub async fn connect_cluster(seeds: &[String], options: RedisOptions) -> StoreResult<Self> {
        let client = ::redis::cluster::ClusterClientBuilder::new(seeds.to_vec())
            .connection_timeout(options.connect_timeout)
            .response_timeout(options.command_timeout)
            .retries(2)
            .min_retry_wait(10)
            .max_retry_wait(200)
            .build()
            .map_err(StoreError::backend)?;
        let con = tokio::time::timeout(
            options.connect_timeout + options.command_timeout,
            client.get_async_connection(),
        )
        .await
        .map_err(|_| StoreError::unavailable("cannot connect to the Redis Cluster: timed out", 0))?
        .map_err(|e| match is_connection_error(&e) {
            true => StoreError::unavailable(format!("cannot connect to the Redis Cluster: {e}"), 0),
            false => redis_err(e),
        })?;
        Self::with_connection(Conn::Cluster(con), options)?
            .check_eviction()
            .await?
            .ensure_layout()
            .await
    }

    fn with_connection(con: Conn, options: RedisOptions) -> StoreResult<Self> {
        if options.prefix.contains(['{', '}']) {
            return Err(StoreError::Backend(format!(
                "invalid key prefix {:?}: braces are reserved for hash tags",
                options.prefix
            )));
        }
        let mut store = Self {
            con,
            keys: Arc::new(Keys {
                prefix: options.prefix.clone(),
            }),
            breaker: Arc::new(Breaker::new(options.breaker_cooldown)),
            options: Arc::new(options),
            activity: Arc::default(),
            appends: None,
        };
        if matches!(store.con, Conn::Single(_)) {
            store.appends = Coalescer::start(store.clone()).map(Arc::new);
        }
        Ok(store)
    }

    /// Runs one Redis round trip under the command timeout and the circuit breaker: fails at
    /// once while the breaker is open; a timeout or connection failure opens it.
    async fn guarded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, RedisError>>,
    ) -> StoreResult<T> {
        self.breaker.check()?;
        match tokio::time::timeout(self.options.command_timeout, call).await {
            Err(_) => Err(self.breaker.trip(format!(
                "Redis did not answer within {} ms",
                self.options.command_timeout.as_millis()
            ))),
            Ok(Err(e)) if is_connection_error(&e) => {
                Err(self.breaker.trip(format!("Redis connection failed: {e}")))
            }
            Ok(Err(e)) => match refusal(&e) {
                Some(kind) => Err(self.refused(kind, &e)),
                None => {
                    self.breaker.close();
                    Err(redis_err(e))
                }
            },
            Ok(Ok(v)) => {
                self.breaker.close();
                Ok(v)
            }
        }
    }

    /// Records a refusal reply (see [`Refusal`]) in the breaker and returns the call's error.
    fn refused(&self, kind: Refusal, e: &RedisError) -> StoreError {
        let reason = refusal_reason(e);
        match kind {
            Refusal::Server => self.breaker.trip(reason),
            Refusal::Writes => {
                // Redis answered: the connection is fine, only writes are not.
                self.breaker.close();
                let (error, started) = self.breaker.refuse_writes(reason);
                if started {
                    self.probe_writes();
                }
                error
            }
            Refusal::Retry => {
                self.breaker.close();
                StoreError::unavailable(reason, REFUSAL_RETRY_MS)
            }
        }
    }

    /// Records the refusals among the per-command replies of a pipeline (the callers turn
    /// each into its error with [`redis_err`]).
    fn note_refusals(&self, replies: &[Result<Value, RedisError>]) {
        for e in replies.iter().filter_map(|r| r.as_ref().err()) {
            if let Some(kind) = refusal(e) {
                self.refused(kind, e);
            }
        }
    }

    /// The key prefix in use.
    pub fn prefix(&self) -> &str {
        &self.keys.prefix
    }

    /// Runs one command, retrying once after a connection failure (reads and idempotent
    /// writes only).
    async fn query(&self, cmd: &Cmd) -> StoreResult<Value> {
        let mut con = self.con.clone();
        self.guarded(async move {
            match cmd.query_async::<Value>(&mut con).await {
                Err(e) if is_connection_error(&e) => cmd.query_async::<Value>(&mut con).await,
                r => r,
            }
        })
        .await
    }

    /// Runs one script call; see [`RedisStore::eval_many`].
    async fn eval(&self, call: Call, retry: Retry) -> StoreResult<Value> {
        let mut results = self.eval_many(&[call], &[], retry).await?;
        match results.pop() {
            Some(r) => r.map_err(redis_err),
            None => Err(StoreError::Backend("no reply to a script call".into())),
        }
    }

    /// Sends all calls as one pipeline (one round trip, one EVALSHA each) and returns one
    /// result per call, in order. Calls that hit `NOSCRIPT` (the script cache is empty after a
    /// Redis restart) did not run; the scripts are loaded and those calls are sent once more.
    /// If only some calls of a pipeline hit `NOSCRIPT` (another task refilled the cache in
    /// between), the retried ones run after the others, so their sequences may not follow the
    /// input order; each result still belongs to its input.
    ///
    /// `side` commands ride along in the same pipeline, after the calls; their replies are
    /// ignored and they are not re-sent after `NOSCRIPT`.
    async fn eval_many(
        &self,
        calls: &[Call],
        side: &[Cmd],
        retry: Retry,
    ) -> StoreResult<Vec<Result<Value, RedisError>>> {
        let mut results = self.pipeline(calls.iter().collect(), side, retry).await?;
        let missing: Vec<usize> = results
            .iter()
            .enumerate()
            .filter_map(|(i, r)| matches!(r, Err(e) if is_noscript(e)).then_some(i))
            .collect();
        if missing.is_empty() {
            return Ok(results);
        }
        // Load every script, not just the missing ones: the cache is empty as a whole after a
        // restart, and refilling it in one go keeps other in-flight calls from hitting
        // NOSCRIPT one script at a time.
        let load: Vec<Cmd> = SCRIPTS
            .all()
            .iter()
            .map(|lua| {
                let mut cmd = ::redis::cmd("SCRIPT");
                cmd.arg("LOAD").arg(lua.source);
                cmd
            })
            .collect();
        let n = load.len();
        for r in self.send_all(load, n, Retry::Once).await? {
            r.map_err(redis_err)?;
        }
        let again = self
            .pipeline(missing.iter().map(|&i| &calls[i]).collect(), &[], retry)
            .await?;
        for (i, r) in missing.into_iter().zip(again) {
            results[i] = r;
        }
        Ok(results)
    }

    async fn pipeline(
        &self,
        calls: Vec<&Call>,
        side: &[Cmd],
        retry: Retry,
    ) -> StoreResult<Vec<Result<Value, RedisError>>> {
        let mut cmds: Vec<Cmd> = calls.iter().map(|c| c.evalsha()).collect();
        cmds.extend(side.iter().cloned());
        let results = self.send_all(cmds, calls.len(), retry).await?;
        if results.len() != calls.len() {
            return Err(StoreError::Backend(format!(
                "expected {} replies, got {}",
                calls.len(),
                results.len()
            )));
        }
        Ok(results)
    }

    /// Sends `cmds` in one round trip and returns the replies of the first `keep` of them
    /// (the rest are fire-and-forget side commands). On one node that is one pipeline; on a
    /// Cluster, where a pipeline must stay in one slot, each command goes on its own,
    /// concurrently (still about one round trip).
    async fn send_all(
        &self,
        cmds: Vec<Cmd>,
        keep: usize,
        retry: Retry,
    ) -> StoreResult<Vec<Result<Value, RedisError>>> {
        match &self.con {
            Conn::Single(_) => {
                let mut pipe = ::redis::pipe();
                pipe.ignore_errors();
                for (i, cmd) in cmds.into_iter().enumerate() {
                    pipe.add_command(cmd);
                    if i >= keep {
                        pipe.ignore();
                    }
                }
                let mut con = self.con.clone();
                let results: Vec<Result<Value, RedisError>> = self
                    .guarded(async move {
                        match pipe.query_async(&mut con).await {
                            Err(e) if retry == Retry::Once && is_connection_error(&e) => {
                                pipe.query_async(&mut con).await
                            }
                            r => r,
                        }
                    })
                    .await?;
                self.note_refusals(&results);
                Ok(results)
            }
            Conn::Cluster(_) => {
                let tasks: Vec<_> = cmds
                    .into_iter()
                    .map(|cmd| {
                        let mut con = self.con.clone();
                        tokio::spawn(async move { cmd.query_async::<Value>(&mut con).await })
                    })
                    .collect();
                let all = async move {
                    let mut out = Vec::with_capacity(tasks.len());
                    for t in tasks {
                        out.push(t.await.map_err(|e| {
                            RedisError::from(std::io::Error::other(format!("task failed: {e}")))
                        })?);
                    }
                    Ok::<_, RedisError>(out)
                };
                let mut results = self.guarded(all).await?;
                // A dead connection surfaces per command: let the breaker see it.
                if let Some(Err(e)) = results
                    .iter()
                    .find(|r| matches!(r, Err(e) if is_connection_error(e)))
                {
                    return Err(self.breaker.trip(format!("Redis connection failed: {e}")));
                }
                results.truncate(keep);
                self.note_refusals(&results);
                Ok(results)
            }
        }
    }

    async fn user_field(&self, id: UserId, field: &str) -> StoreResult<Value> {
        self.query(::redis::cmd("HGET").arg(self.keys.user(id)).arg(field))
            .await
    }
}

// ---- decoding: everything from Redis is checked; failures are `Corrupt` ----

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn opt_string(v: Value) -> StoreResult<Option<String>> {
    match v {
        Value::Nil => Ok(None),
        Value::BulkString(b) => String::from_utf8(b).map(Some).map_err(corrupt),
        Value::SimpleString(s) => Ok(Some(s)),
        Value::VerbatimString { text, .. } => Ok(Some(text)),
        Value::Int(i) => Ok(Some(i.to_string())),
        Value::Okay => Ok(Some("OK".into())),
        other => Err(corrupt(format_args!("expected a string, got {other:?}"))),
    }
}

fn string(v: Value) -> StoreResult<String> {
    opt_string(v)?.ok_or_else(|| corrupt("unexpected nil"))
}

fn parse<T: FromStr>(s: &str, what: &str) -> StoreResult<T> {
    s.parse()
        .map_err(|_| corrupt(format_args!("bad {what}: {s:?}")))
}

/// A number from an integer or a string reply (without an intermediate `String`: the append
/// reads two per message).
fn int<T: FromStr + TryFrom<i64>>(v: Value, what: &str) -> StoreResult<T> {
    match v {
        Value::Int(i) => T::try_from(i).map_err(|_| corrupt(format_args!("bad {what}: {i}"))),
        Value::BulkString(b) => match std::str::from_utf8(&b) {
            Ok(s) => parse(s, what),
            Err(_) => Err(corrupt(format_args!("bad {what}: {b:?}"))),
        },
        v => parse(&string(v)?, what),
    }
}

fn opt_int<T: FromStr + TryFrom<i64>>(v: Value, what: &str) -> StoreResult<Option<T>> {
    match v {
        Value::Nil => Ok(None),
        v => int(v, what).map(Some),
    }
}

fn array(v: Value) -> StoreResult<Vec<Value>> {
    match v {
        Value::Array(a) | Value::Set(a) => Ok(a),
        Value::Nil => Ok(Vec::new()),
        other => Err(corrupt(format_args!("expected an array, got {other:?}"))),
    }
}

/// A field/value reply (flat RESP2 array or RESP3 map) as a map.
fn fields(v: Value) -> StoreResult<HashMap<String, Value>> {
    let pairs: Vec<(Value, Value)> = match v {
        Value::Map(m) => m,
        v => {
            let flat = array(v)?;
            if flat.len() % 2 != 0 {
                return Err(corrupt("odd number of field/value items"));
            }
            let mut it = flat.into_iter();
            let mut out = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((k, v));
            }
            out
        }
    };
    pairs
        .into_iter()
        .map(|(k, v)| Ok((string(k)?, v)))
        .collect()
}

fn take(map: &mut HashMap<String, Value>, field: &str) -> StoreResult<Value> {
    map.remove(field)
        .ok_or_else(|| corrupt(format_args!("missing field {field:?}")))
}

fn json<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> StoreResult<T> {
    serde_json::from_str(s).map_err(|e| corrupt(format_args!("bad {what}: {e}")))
}

fn to_json<T: Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(StoreError::backend)
}

/// A message from a stream entry's fields: layout 3's one packed field `m`, or layout 2's five.
fn message_from_fields(conv: &ConversationId, seq: u64, v: Value) -> StoreResult<Message> {
    if let Value::Array(items) = &v
        && let [Value::BulkString(name), Value::BulkString(packed)] = items.as_slice()
        && name == b"m"
    {
        let packed = std::str::from_utf8(packed).map_err(corrupt)?;
        return unpack_entry(conv, seq, packed);
    }
    let mut f = fields(v)?;
    if let Some(packed) = f.remove("m") {
        return unpack_entry(conv, seq, &string(packed)?);
    }
    Ok(Message {
        id: MessageId(parse(&string(take(&mut f, "id")?)?, "message id")?),
        conversation: conv.clone(),
        seq,
        sender: parse(&string(take(&mut f, "sender")?)?, "sender")?,
        body: string(take(&mut f, "body")?)?,
        sent_at: Timestamp(int(take(&mut f, "sent_at")?, "sent_at")?),
        idempotency_key: string(take(&mut f, "key")?)?,
    })
}

/// A message from a stream entry `[id, fields]` (entry ids are `<seq>-0`).
fn message_from_entry(conv: &ConversationId, entry: Value) -> StoreResult<Message> {
    let mut parts = array(entry)?.into_iter();
    let (Some(id), Some(f)) = (parts.next(), parts.next()) else {
        return Err(corrupt("malformed stream entry"));
    };
    let id = string(id)?;
    let seq = match id.split_once('-') {
        Some((seq, "0")) => parse(seq, "stream entry id")?,
        _ => return Err(corrupt(format_args!("unexpected stream entry id {id:?}"))),
    };
    message_from_fields(conv, seq, f)
}

#[async_trait]
impl UserStore for RedisStore {
    async fn create_user(
        &self,
        username: &Username,
        password_hash: Option<&str>,
        at: Timestamp,
    ) -> StoreResult<User> {
        let user = User {
            id: UserId::new_random(),
            username: username.as_str().to_owned(),
            created_at: at,
        };
        // Two single-slot steps (the name and the user live in different Cluster slots):
        // write the user record, then claim the name. The claim is the commit point: a record
        // whose claim failed is deleted, and a crash in between leaves a record nobody can
        // reach (no name points to it, nobody has its id).
        let mut record = ::redis::cmd("HSET");
        record
            .arg(self.keys.user(user.id))
            .arg("id")
            .arg(user.id.to_string())
            .arg("username")
            .arg(&user.username)
            .arg("created_at")
            .arg(at.0);
        if let Some(hash) = password_hash {
            record.arg("pw").arg(hash);
        }
        self.query(&record).await?;
        // SET NX GET: claims the name or returns its owner, atomically. A retry after a lost
        // reply finds its own claim.
        let owner = self
            .query(
                ::redis::cmd("SET")
                    .arg(self.keys.username(&username.canonical()))
                    .arg(user.id.to_string())
                    .arg("NX")
                    .arg("GET"),
            )
            .await?;
        match opt_string(owner)? {
            None => Ok(user),
            Some(owner) if owner == user.id.to_string() => Ok(user),
            Some(_) => {
                self.query(::redis::cmd("DEL").arg(self.keys.user(user.id)))
                    .await?;
                Err(StoreError::UsernameTaken)
            }
        }
    }

    async fn user(&self, id: UserId) -> StoreResult<Option<User>> {
        let reply = self.query(&user_cmd(&self.keys, id)).await?;
        match user_from_fields(id, reply)? {
            Some(user) => Ok(Some(user)),
            None => self.confirm_no_user(id).await.map(|()| None),
        }
    }

    async fn user_by_username(&self, username: &Username) -> StoreResult<Option<User>> {
        let reply = self
            .query(::redis::cmd("GET").arg(self.keys.username(&username.canonical())))
            .await?;
        let Some(id) = opt_string(reply)? else {
            return Ok(None);
        };
        let id: UserId = parse(&id, "user id")?;
        // The claim and the user are written by one script, so a claim without a user is damage.
        match self.user(id).await? {
            Some(u) => Ok(Some(u)),
            None => Err(corrupt(format_args!(
                "username {:?} points to missing user {id}",
                username.canonical()
            ))),
        }
    }

    async fn password_hash(&self, id: UserId) -> StoreResult<Option<String>> {
        opt_string(self.user_field(id, "pw").await?)
    }

    async fn rename_user(&self, id: UserId, new: &Username) -> StoreResult<User> {
        let mut user = self.user(id).await?.ok_or(StoreError::UserNotFound)?;
        let (old, canonical) = (user.username.to_ascii_lowercase(), new.canonical());
        // Three single-slot steps, like `create_user` (name and user live in different
        // slots). 1: claim the new name, the commit point (SET NX GET: claims it or names its
        // owner; a retry finds its own claim).
        let owner = self
            .query(
                ::redis::cmd("SET")
                    .arg(self.keys.username(&canonical))
                    .arg(id.to_string())
                    .arg("NX")
                    .arg("GET"),
            )
            .await?;
        if opt_string(owner)?.is_some_and(|o| o != id.to_string()) {
            return Err(StoreError::UsernameTaken);
        }
        // 2: the record.
        let call = Call::new(&SCRIPTS.update_user)
            .key(self.keys.user(id))
            .arg("username")
            .arg(new.as_str())
            .arg("set");
        if int::<u8>(self.eval(call, Retry::Once).await?, "update_user reply")? != 1 {
            return Err(StoreError::UserNotFound);
        }
        // 3: free the old name, only if it is still ours. A crash before this step leaves the
        // old name reserved for this user (nobody else can take it); nothing is lost.
        if old != canonical {
            self.query(
                ::redis::cmd("EVAL")
                    .arg(RELEASE_CLAIM)
                    .arg(1)
                    .arg(self.keys.username(&old))
                    .arg(id.to_string()),
            )
            .await?;
        }
        user.username = new.as_str().to_owned();
        Ok(user)
    }

    async fn set_password_hash(&self, id: UserId, hash: &str) -> StoreResult<()> {
        let call = Call::new(&SCRIPTS.update_user)
            .key(self.keys.user(id))
            .arg("pw")
            .arg(hash)
            .arg("set");
        match int::<u8>(self.eval(call, Retry::Once).await?, "update_user reply")? {
            1 => Ok(()),
            _ => Err(StoreError::UserNotFound),
        }
    }

    async fn set_last_seen(&self, id: UserId, at: Timestamp) -> StoreResult<()> {
        let call = Call::new(&SCRIPTS.update_user)
            .key(self.keys.user(id))
            .arg("last_seen")
            .arg(at.0)
            .arg("max");
        match int::<u8>(self.eval(call, Retry::Once).await?, "update_user reply")? {
            1 => Ok(()),
            _ => Err(StoreError::UserNotFound),
        }
    }

    async fn last_seen(&self, id: UserId) -> StoreResult<Option<Timestamp>> {
        Ok(opt_int(self.user_field(id, "last_seen").await?, "last_seen")?.map(Timestamp))
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create_session(&self, session: &Session) -> StoreResult<()> {
        let call = Call::new(&SCRIPTS.create_session)
            .key(self.keys.user(session.user_id))
            .key(self.keys.sessions(session.user_id))
            .arg(&session.token_hash)
            .arg(to_json(session)?)
            .arg(session.created_at.0)
            .arg(
                session
                    .expires_at
                    .0
                    .saturating_sub(session.created_at.0)
                    .saturating_add(SESSION_GRACE_MS),
            );
        match int::<u8>(self.eval(call, Retry::Once).await?, "create_session reply")? {
            1 => Ok(()),
            _ => Err(StoreError::UserNotFound),
        }
    }

    async fn session(
        &self,
        user: UserId,
        token_hash: &str,
        now: Timestamp,
    ) -> StoreResult<Option<Session>> {
        let reply = self
            .query(
                ::redis::cmd("HGET")
                    .arg(self.keys.sessions(user))
                    .arg(token_hash),
            )
            .await?;
        let Some(text) = opt_string(reply)? else {
            return Ok(None);
        };
        let session: Session = json(&text, "session")?;
        Ok((session.expires_at > now).then_some(session))
    }

    async fn session_with_user(
        &self,
        user: UserId,
        token_hash: &str,
        now: Timestamp,
    ) -> StoreResult<Option<(Session, User)>> {
        let mut replies = self
            .session_read(user, token_hash, false)
            .await?
            .into_iter();
        let (Some(session), Some(row)) = (replies.next(), replies.next()) else {
            return Err(StoreError::Backend(
                "expected 2 replies to a session read".into(),
            ));
        };
        self.session_and_user(user, session, row, now).await
    }

    async fn delete_session(&self, user: UserId, token_hash: &str) -> StoreResult<bool> {
        let reply = self
            .query(
                ::redis::cmd("HDEL")
                    .arg(self.keys.sessions(user))
                    .arg(token_hash),
            )
            .await?;
        Ok(int::<u64>(reply, "HDEL reply")? > 0)
    }

    async fn delete_user_sessions(&self, user: UserId) -> StoreResult<u64> {
        let call = Call::new(&SCRIPTS.delete_sessions).key(self.keys.sessions(user));
        int(self.eval(call, Retry::Once).await?, "delete_sessions reply")
    }
}

#[async_trait]
impl FriendStore for RedisStore {
    async fn edge(&self, pair: UserPair) -> StoreResult<Edge> {
        let reply = self
            .query(::redis::cmd("HGET").arg(self.keys.pair(pair)).arg("edge"))
            .await?;
        match opt_string(reply)? {
            None => Ok(Edge::default()),
            Some(text) => json(&text, "edge"),
        }
    }

    async fn swap_edge(&self, pair: UserPair, expected: Edge, new: Edge) -> StoreResult<bool> {
        self.swap_edge_tracked(pair, expected, new).await
    }

    async fn friend_ids(&self, user: UserId) -> StoreResult<Vec<UserId>> {
        let mut list = ::redis::cmd("HGETALL");
        list.arg(self.keys.relations(user));
        let mut replies = self
            .send_all(vec![list, self.pending_cmd(user)], 2, Retry::Once)
            .await?
            .into_iter();
        let (Some(list), Some(pending)) = (replies.next(), replies.next()) else {
            return Err(corrupt("expected 2 replies to a friends read"));
        };
        self.friends_repaired(user, list, pending).await
    }

    async fn relations(&self, user: UserId) -> StoreResult<Vec<RelationEntry>> {
        self.relations_repaired(user).await
    }
}

#[async_trait]
impl MessageStore for RedisStore {
    async fn append(&self, batch: Vec<NewMessage>) -> Vec<StoreResult<Appended>> {
        match &self.appends {
            Some(queue) if !batch.is_empty() => queue.append(self, batch).await,
            _ => self.append_now(batch).await,
        }
    }

    async fn history(
        &self,
        conversation: &ConversationId,
        query: HistoryQuery,
    ) -> StoreResult<HistoryPage> {
        let last = self.last_seq(conversation).await?;
        let range = plan_page(query, last)?;
        if range.is_empty() {
            return Ok(HistoryPage {
                messages: Vec::new(),
                has_more: range.has_more,
            });
        }
        let reply = self
            .query(
                ::redis::cmd("XRANGE")
                    .arg(self.keys.log(conversation))
                    .arg(format!("{}-0", range.first))
                    .arg(format!("{}-0", range.last)),
            )
            .await?;
        let messages = array(reply)?
            .into_iter()
            .map(|e| message_from_entry(conversation, e))
            .collect::<StoreResult<Vec<_>>>()?;
        // Sequences are gap-free, so anything but exactly first..=last is damage.
        if !messages.iter().map(|m| m.seq).eq(range.first..=range.last) {
            return Err(corrupt(format_args!(
                "log of {conversation} is missing entries in {}..={}",
                range.first, range.last
            )));
        }
        Ok(HistoryPage {
            messages,
            has_more: range.has_more,
        })
    }

    async fn last_seq(&self, conversation: &ConversationId) -> StoreResult<u64> {
        let reply = self
            .query(
                ::redis::cmd("HGET")
                    .arg(self.keys.meta(conversation))
                    .arg("seq"),
            )
            .await?;
        Ok(opt_int(reply, "last seq")?.unwrap_or(0))
    }

    async fn conversations(
        &self,
        user: UserId,
        limit: u32,
    ) -> StoreResult<Vec<ConversationSummary>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let reply = self
            .query(
                ::redis::cmd("ZREVRANGE")
                    .arg(self.keys.conversations(user))
                    .arg(0)
                    .arg(i64::from(limit) - 1),
            )
            .await?;
        let ids = array(reply)?
            .into_iter()
            .map(|v| parse::<ConversationId>(&string(v)?, "conversation id"))
            .collect::<StoreResult<Vec<_>>>()?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let calls: Vec<Call> = ids
            .iter()
            .map(|c| {
                let peer_field = c.peer_of(user).map_or_else(|| "r:-".into(), read_field);
                Call::new(&SCRIPTS.summary)
                    .key(self.keys.meta(c))
                    .key(self.keys.log(c))
                    .arg(read_field(user))
                    .arg(peer_field)
            })
            .collect();
        let replies = self.eval_many(&calls, &[], Retry::Once).await?;
        let mut out = Vec::with_capacity(ids.len());
        for (conversation, reply) in ids.into_iter().zip(replies) {
            let mut parts = array(reply.map_err(redis_err)?)?.into_iter();
            let mut next = || parts.next().unwrap_or_default();
            let last_seq: u64 = int(next(), "last seq")?;
            let read_seq: u64 = int(next(), "read mark")?;
            let peer_read_seq: u64 = int(next(), "read mark")?;
            let last_message = match next() {
                Value::Nil => None,
                entry => Some(message_from_entry(&conversation, entry)?),
            };
            if last_message.is_none() {
                continue;
            }
            out.push(ConversationSummary {
                peer: conversation.peer_of(user),
                conversation,
                last_message,
                last_seq,
                unread: last_seq.saturating_sub(read_seq),
                read_seq,
                peer_read_seq,
            });
        }
        Ok(out)
    }

    async fn mark_read(
        &self,
        conversation: &ConversationId,
        user: UserId,
        seq: u64,
    ) -> StoreResult<ReadMark> {
        if !conversation.has_member(user) {
            return Err(StoreError::NotAMember);
        }
        let call = Call::new(&SCRIPTS.mark_read)
            .key(self.keys.meta(conversation))
            .arg(read_field(user))
            .arg(seq);
        let mut reply = array(self.eval(call, Retry::Once).await?)?.into_iter();
        let code: i64 = int(reply.next().unwrap_or_default(), "mark_read reply")?;
        let value: u64 = int(reply.next().unwrap_or_default(), "mark_read reply")?;
        match code {
            -2 => Err(StoreError::NotFriends),
            -1 => Err(StoreError::InvalidCursor(format!(
                "seq {seq} is past the last message ({value})"
            ))),
            0 | 1 => Ok(ReadMark {
                conversation: conversation.clone(),
                user,
                seq: value,
                changed: code == 1,
            }),
            other => Err(corrupt(format_args!("unexpected mark_read reply {other}"))),
        }
    }
}

impl RedisStore {
    /// Appends `batch` with one script call on one node (per conversation on a Cluster); what
    /// [`MessageStore::append`] does once the coalescing queue has merged concurrent callers.
    async fn append_now(&self, batch: Vec<NewMessage>) -> Vec<StoreResult<Appended>> {
        if batch.is_empty() {
            return Vec::new();
        }
        // Membership is decided by the conversation id alone; refused items never reach Redis.
        let mut results: Vec<Option<StoreResult<Appended>>> = Vec::with_capacity(batch.len());
        let window = self.options.dedupe_window_ms.max(1);
        // One node: one script call for the whole batch (see append.lua), which also moves the
        // appended conversations up both members' lists: one round trip in all. On a Cluster
        // a script may only touch one slot: one call per conversation, and the lists (in the
        // members' slots) are updated afterwards, for the messages the script accepted only
        // (a refused send must not move a conversation: that would tell the blocker).
        let per_conversation = matches!(self.con, Conn::Cluster(_));
        // The script derives every key from the prefix and the conversation id; a Cluster
        // call declares the conversation's meta hash so it is routed to that slot.
        let new_call = |routing: Option<&ConversationId>, messages: usize| {
            // 7 arguments per message of ~400 bytes with a 64-byte body.
            let mut call = Call::with_capacity(&SCRIPTS.append, 2 + 7 * messages, 450 * messages);
            if let Some(c) = routing {
                call = call.key(self.keys.meta(c));
            }
            call.args()
                .arg(self.keys.prefix.as_str())
                .arg(if per_conversation { "0" } else { "1" });
            call
        };
        let mut groups: Vec<(Call, Vec<(usize, Message)>)> = Vec::new();
        let mut group_of: HashMap<ConversationId, usize> = HashMap::new();
        let mut lists: Vec<Option<Cmd>> = Vec::with_capacity(2 * batch.len());
        let mut uuid = ::uuid::Uuid::encode_buffer();
        // Scratch buffers for the arguments built per message (written into the command).
        let (mut field, mut entry) = (String::with_capacity(128), String::with_capacity(256));
        let n = batch.len();
        for (i, m) in batch.into_iter().enumerate() {
            let members = m
                .conversation
                .participants()
                .filter(|(lo, hi)| m.sender == *lo || m.sender == *hi || m.sender.is_system());
            let Some((lo, hi)) = members else {
                results.push(Some(Err(StoreError::NotAMember)));
                lists.extend([None, None]);
                continue;
            };
            results.push(None);
            let g = if per_conversation {
                match group_of.get(&m.conversation) {
                    Some(&g) => g,
                    None => {
                        groups.push((new_call(Some(&m.conversation), 1), Vec::new()));
                        group_of.insert(m.conversation.clone(), groups.len() - 1);
                        groups.len() - 1
                    }
                }
            } else {
                if groups.is_empty() {
                    groups.push((new_call(None, n), Vec::new()));
                }
                0
            };
            let bucket = (m.sent_at.0.max(0) as u64) / window;
            let score = self.activity.next();
            let id = MessageId::new_v7();
            let c = m.conversation.as_str();
            let key = m.idempotency_key.as_str();
            let (call, members_of_group) = &mut groups[g];
            // The script's 7 arguments per message (append.lua), written straight into the
            // command buffer.
            let args = call.args();
            args.arg(c).arg(bucket);
            idempotency_field(&mut field, bucket, m.sender, key);
            args.arg(field.as_str());
            idempotency_field(&mut field, bucket.saturating_sub(1), m.sender, key);
            args.arg(field.as_str());
            if m.sender.is_system() {
                args.arg("");
            } else {
                field.clear();
                field.push_str("r:");
                field.push_str(m.sender.0.hyphenated().encode_lower(&mut uuid));
                args.arg(field.as_str());
            }
            pack_entry(&mut entry, id, m.sender, m.sent_at.0, key, m.body.as_str());
            args.arg(entry.as_str()).arg(score);
            if per_conversation {
                for member in [lo, hi] {
                    let mut zadd = ::redis::cmd("ZADD");
                    zadd.arg(self.keys.conversations(member))
                        .arg("GT")
                        .arg(score)
                        .arg(c);
                    lists.push(Some(zadd));
                }
            } else {
                lists.extend([None, None]);
            }
            members_of_group.push((i, unsequenced(id, m)));
        }
        if groups.is_empty() {
            return results
                .into_iter()
                .map(|r| r.unwrap_or_else(|| Err(StoreError::Backend("no reply".into()))))
                .collect();
        }
        let (calls, pending): (Vec<Call>, Vec<Vec<(usize, Message)>>) = groups.into_iter().unzip();
        // Retrying after a connection failure is safe: the idempotency keys turn any message
        // that did get stored into a `duplicate` answer, and `ZADD GT` is idempotent.
        let mut replies = match self.eval_many(&calls, &[], Retry::Once).await {
            Ok(r) => Ok(r.into_iter()),
            Err(e) => Err(e),
        };
        for group in pending {
            let reply = match &mut replies {
                Ok(r) => match r.next() {
                    Some(Ok(v)) => array(v),
                    Some(Err(e)) => Err(redis_err(e)),
                    None => Err(StoreError::Backend("no reply to the append script".into())),
                },
                Err(e) => Err(e.clone()),
            };
            match reply.and_then(|values| decode_appends(&group, values)) {
                Ok(answers) => {
                    for ((i, message), answer) in group.into_iter().zip(answers) {
                        results[i] = Some(answer.decode(message));
                    }
                }
                Err(e) => {
                    for (i, _) in group {
                        results[i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        if per_conversation {
            self.update_lists(&mut results, lists).await;
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(StoreError::Backend("no reply".into()))))
            .collect()
    }

    /// Cluster: moves the conversations of the accepted appends (new or repeated) up both
    /// members' lists (`lists[2i]`, `lists[2i + 1]` for input `i`), concurrently, about one
    /// round trip. If that fails the message is stored but its result becomes the error: the
    /// client's retry (same key) is a `duplicate` and re-issues the update, which repairs the
    /// lists.
    async fn update_lists(
        &self,
        results: &mut [Option<StoreResult<Appended>>],
        lists: Vec<Option<Cmd>>,
    ) {
        let mut owners = Vec::new();
        let mut cmds = Vec::new();
        for (k, cmd) in lists.into_iter().enumerate() {
            if let (Some(cmd), Some(Some(Ok(_)))) = (cmd, results.get(k / 2)) {
                owners.push(k / 2);
                cmds.push(cmd);
            }
        }
        if cmds.is_empty() {
            return;
        }
        let n = cmds.len();
        let failed = match self.send_all(cmds, n, Retry::Once).await {
            Err(e) => owners.into_iter().map(|i| (i, e.clone())).collect(),
            Ok(replies) => owners
                .into_iter()
                .zip(replies)
                .filter_map(|(i, r)| r.err().map(|e| (i, redis_err(e))))
                .collect::<Vec<_>>(),
        };
        for (i, e) in failed {
            results[i] = Some(Err(e));
        }
    }
}

/// The pair hash's `friends` field for `edge` (what append.lua and mark_read.lua check).
fn friends_flag(edge: &Edge) -> &'static str {
    match edge.are_friends() {
        true => "1",
        false => "0",
    }
}

/// `m` as the message its append answers, before the script gives it its sequence.
fn unsequenced(id: MessageId, m: NewMessage) -> Message {
    Message {
        id,
        seq: 0,
        sender: m.sender,
        body: m.body.as_str().to_owned(),
        sent_at: m.sent_at,
        idempotency_key: m.idempotency_key.as_str().to_owned(),
        conversation: m.conversation,
    }
}

/// One message's answer in the append script's flat reply (append.lua): `seq` new, `0` not
/// friends, `-seq` then the stored entry's fields for a repeat.
#[derive(Debug)]
enum AppendAnswer {
    New(u64),
    NotFriends,
    Repeat(u64, Value),
}

/// Splits a script call's flat reply into one answer per message of `group`; a reply that
/// does not spell exactly one answer per message is `Corrupt` for the whole call.
fn decode_appends(
    group: &[(usize, Message)],
    values: Vec<Value>,
) -> StoreResult<Vec<AppendAnswer>> {
    let mut values = values.into_iter();
    let mut answers = Vec::with_capacity(group.len());
    for _ in group {
        let Some(v) = values.next() else { break };
        let seq: i64 = int(v, "append reply")?;
        answers.push(match seq {
            0 => AppendAnswer::NotFriends,
            s if s > 0 => AppendAnswer::New(s.unsigned_abs()),
            s => match values.next() {
                Some(entry) => AppendAnswer::Repeat(s.unsigned_abs(), entry),
                None => break,
            },
        });
    }
    if answers.len() != group.len() || values.next().is_some() {
        return Err(corrupt(format_args!(
            "append script answered {} of {} messages, or more",
            answers.len(),
            group.len()
        )));
    }
    Ok(answers)
}

impl AppendAnswer {
    /// The result for `message` (the message as sent; a repeat answers the stored one).
    fn decode(self, mut message: Message) -> StoreResult<Appended> {
        match self {
            Self::NotFriends => Err(StoreError::NotFriends),
            Self::New(seq) => {
                message.seq = seq;
                Ok(Appended {
                    message,
                    duplicate: false,
                })
            }
            Self::Repeat(seq, Value::Nil) => Err(corrupt(format_args!(
                "idempotency record points to missing message {seq} in {}",
                message.conversation
            ))),
            Self::Repeat(seq, fields) => Ok(Appended {
                message: message_from_fields(&message.conversation, seq, fields)?,
                duplicate: true,
            }),
        }
    }
}

#[async_trait]
impl Store for RedisStore {
    fn health(&self) -> StoreHealth {
        self.breaker.health()
    }

    async fn session_with_friends(
        &self,
        user: UserId,
        token_hash: &str,
        now: Timestamp,
    ) -> StoreResult<Option<(Session, User, Vec<UserId>)>> {
        let mut replies = self.session_read(user, token_hash, true).await?.into_iter();
        let (Some(session), Some(row), Some(relations)) =
            (replies.next(), replies.next(), replies.next())
        else {
            return Err(StoreError::Backend(
                "expected 3 replies to a session read".into(),
            ));
        };
        let Some((session, found)) = self.session_and_user(user, session, row, now).await? else {
            return Ok(None);
        };
        let Some(pending) = replies.next() else {
            return Err(StoreError::Backend(
                "expected 4 replies to a session read".into(),
            ));
        };
        let friends = self.friends_repaired(user, relations, pending).await?;
        Ok(Some((session, found, friends)))
    }
}

impl RedisStore {
    /// The session, the user's profile and (`with_friends`) their relation list in one
    /// pipeline: every key carries the user's hash tag (one slot), so one round trip.
    async fn session_read(
        &self,
        user: UserId,
        token_hash: &str,
        with_friends: bool,
    ) -> StoreResult<Vec<Result<Value, RedisError>>> {
        let mut session_cmd = ::redis::cmd("HGET");
        session_cmd.arg(self.keys.sessions(user)).arg(token_hash);
        let mut cmds = vec![session_cmd, user_cmd(&self.keys, user)];
        if with_friends {
            let mut relations = ::redis::cmd("HGETALL");
            relations.arg(self.keys.relations(user));
            cmds.push(relations);
            cmds.push(self.pending_cmd(user));
        }
        let n = cmds.len();
        self.send_all(cmds, n, Retry::Once).await
    }

    /// A session read's first two replies: `None` for no session, an expired one, or no user.
    async fn session_and_user(
        &self,
        user: UserId,
        session: Result<Value, RedisError>,
        row: Result<Value, RedisError>,
        now: Timestamp,
    ) -> StoreResult<Option<(Session, User)>> {
        let Some(text) = opt_string(session.map_err(redis_err)?)? else {
            return Ok(None);
        };
        let session: Session = json(&text, "session")?;
        if session.expires_at <= now {
            return Ok(None);
        }
        match user_from_fields(user, row.map_err(redis_err)?)? {
            Some(found) => Ok(Some((session, found))),
            None => self.confirm_no_user(user).await.map(|()| None),
        }
    }

    /// After a profile read found neither field: `Corrupt` if the user's hash exists anyway
    /// (damaged: it lost its name), so damage is reported, not taken for "no such user". A
    /// second round trip, but only on this rare path.
    async fn confirm_no_user(&self, id: UserId) -> StoreResult<()> {
        let reply = self
            .query(::redis::cmd("EXISTS").arg(self.keys.user(id)))
            .await?;
        match int::<u64>(reply, "EXISTS reply")? {
            0 => Ok(()),
            _ => Err(corrupt(format_args!("user {id}: hash without its profile"))),
        }
    }
}

#[cfg(all(test, feature = "test-suite"))]
mod tests;
