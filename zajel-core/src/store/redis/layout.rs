//! The key layout's version (`P:layout`) and the migration to the current one, run by every
//! connect before the store is handed out.
//!
//! * Layout 1 (no `P:layout` key): a pair's edge in `P:{p:<lo>:<hi>}:edge` (JSON) and its
//!   version counter in `P:{p:<lo>:<hi>}:ver`: a slot of their own, so the friendship check
//!   and the append were two steps and a block could land between them.
//! * Layout 2: edge, version and a `friends` flag in the pair hash `P:{c:dm.<lo>.<hi>}:pair`,
//!   in the conversation's slot, so `append.lua` and `mark_read.lua` check the friends-only
//!   rule in the same atomic step as their write.
//! * Layout 3: the conversation's meta hash also holds the pair's `friends` flag (`f`, written
//!   by `swap_edge.lua` together with the pair hash) and the idempotency records
//!   (`<window>:<sender>:<key>` → seq, swept by `append.lua` after 3 windows) that layout 2
//!   kept in one hash per window (`P:{c:<conv>}:idem:<window>`, expiring by `PEXPIRE`); new
//!   stream entries are one packed field `m`. So an append reads everything it checks with
//!   one `HMGET` and writes with one `HSET`.
//!
//! Migrating 1 → 2: `SCAN` every primary for layout-1 edges; per page, read each edge and its
//! version (one slot each), write the pair hash unless it already exists
//! (`migrate_edge.lua`), delete the old keys; at the end `SET P:layout 2`. The version
//! counter carries over, so the per-user relation lists (stamped with edge versions, see
//! `set_relation.lua`) keep accepting the next changes.
//!
//! * Idempotent and resumable: a crash leaves the version at 1 and the next start scans
//!   again; moved edges are no longer found, and a pair hash is never overwritten.
//! * Safe with several nodes starting together: each runs the same steps; a node that read
//!   an old edge another node already moved (and that may have changed since) writes nothing.
//! * Not supported: nodes of a version before layout 2 running against the same Redis after
//!   the migration (they would read the old keys, which are gone). Stop them first.
//!
//! Migrating 2 → 3: `SCAN` every primary for pair hashes and for idempotency buckets; per page,
//! one `migrate_layout_3.lua` call per key (a pair: copy its `friends` flag into the meta
//! hash; a bucket: move its records into the meta hash, delete it), then raise `P:layout` to 3.
//! Old stream entries stay as they are: the readers accept both shapes. Idempotent (each call
//! reads and writes in one step and writes the current values), resumable (the version is
//! raised only after both scans), safe with several nodes starting together (a node done
//! first serves appends in layout 3 while another still scans: every bucket that existed was
//! moved before that node finished, and nobody creates buckets any more). Nodes of layout 2
//! must be stopped first: their `swap_edge` would not update the meta hash's flag, so a block
//! would not hold, and their appends would not see the moved records.

use super::*;
use ::redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};

/// The layout this code reads and writes.
pub(super) const LAYOUT: u64 = 3;

/// Raises `KEYS[1]` (the layout version) to `ARGV[1]`, never lowers it: a node that finishes a
/// migration step late must not move the version back under a node that finished them all.
const RAISE_LAYOUT: &str = "if (tonumber(redis.call('GET', KEYS[1])) or 1) < tonumber(ARGV[1]) \
     then redis.call('SET', KEYS[1], ARGV[1]) end return 0";

/// Keys asked for per `SCAN` step.
const SCAN_COUNT: usize = 500;

/// What a migration scan does with each page of keys.
#[derive(Clone, Copy)]
enum Step {
    /// Layout 1 → 2: move edges into pair hashes.
    Edges,
    /// Layout 2 → 3: copy pair flags and move idempotency buckets into meta hashes.
    Layout3,
}

/// Where a `SCAN` runs: the one node, or one primary of a Cluster.
pub(super) enum ScanTarget {
    Single,
    Node { host: String, port: u16 },
}

/// Escapes the glob characters of `SCAN MATCH` so a prefix is matched literally.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Keys {
    /// Layout 1: the pair's edge JSON.
    pub(super) fn legacy_edge(&self, pair: UserPair) -> String {
        format!("{}:{{p:{}:{}}}:edge", self.prefix, pair.lo, pair.hi)
    }
    /// Layout 1: the pair's edge version counter.
    pub(super) fn legacy_edge_version(&self, pair: UserPair) -> String {
        format!("{}:{{p:{}:{}}}:ver", self.prefix, pair.lo, pair.hi)
    }
    /// The conversation of a layout-2 key `P:{c:<conv>}<suffix>`, checked by spelling it
    /// again.
    fn conversation_of(&self, key: &str, suffix: &str) -> Option<ConversationId> {
        let conv: ConversationId = key
            .strip_prefix(&format!("{}:{{c:", self.prefix))?
            .strip_suffix(suffix)?
            .parse()
            .ok()?;
        (format!("{}:{{c:{conv}{suffix}", self.prefix) == key).then_some(conv)
    }
    /// A layout-2 key found by the 2 → 3 scan: a pair hash, or an idempotency bucket with its
    /// window; returns the conversation's meta hash and the `migrate_layout_3.lua` arguments.
    fn layout_2_key(&self, key: &str) -> StoreResult<(String, &'static str, u64)> {
        if let Some(c) = self.conversation_of(key, "}:pair") {
            return Ok((self.meta(&c), "pair", 0));
        }
        let bucket = key.rsplit_once(":idem:").and_then(|(_, window)| {
            let window: u64 = window.parse().ok()?;
            let c = self.conversation_of(key, &format!("}}:idem:{window}"))?;
            Some((self.meta(&c), window))
        });
        match bucket {
            Some((meta, window)) => Ok((meta, "idem", window)),
            None => Err(corrupt(format_args!("unexpected layout-2 key {key:?}"))),
        }
    }
    /// The pair of a layout-1 edge key.
    fn legacy_pair(&self, key: &str) -> StoreResult<UserPair> {
        let ids = key
            .strip_prefix(&format!("{}:{{p:", self.prefix))
            .and_then(|rest| rest.strip_suffix("}:edge"))
            .and_then(|ids| ids.split_once(':'));
        let pair = ids.and_then(|(lo, hi)| UserPair::new(lo.parse().ok()?, hi.parse().ok()?));
        match pair {
            Some(p) if self.legacy_edge(p) == key => Ok(p),
            _ => Err(corrupt(format_args!(
                "unexpected layout-1 edge key {key:?}"
            ))),
        }
    }
}

impl RedisStore {
    /// Brings the data to [`LAYOUT`] (see the module docs) and returns the store. Costs one
    /// `GET` when the data is already there.
    pub(super) async fn ensure_layout(self) -> StoreResult<Self> {
        let found = self
            .query(::redis::cmd("GET").arg(self.keys.layout()))
            .await?;
        let found = opt_int::<u64>(found, "layout version")?.unwrap_or(1);
        if found > LAYOUT {
            return Err(StoreError::Backend(format!(
                "the data is in key layout {found}, newer than this version of Zajel \
                 understands ({LAYOUT})"
            )));
        }
        let prefix = glob_escape(&self.keys.prefix);
        if found < 2 {
            self.scan(&format!("{prefix}:{{p:*}}:edge"), Step::Edges)
                .await?;
            self.raise_layout(2).await?;
        }
        if found < 3 {
            for pattern in ["pair", "idem:*"] {
                self.scan(&format!("{prefix}:{{c:*}}:{pattern}"), Step::Layout3)
                    .await?;
            }
            self.raise_layout(3).await?;
        }
        Ok(self)
    }

    pub(super) async fn raise_layout(&self, to: u64) -> StoreResult<()> {
        self.query(
            ::redis::cmd("EVAL")
                .arg(RAISE_LAYOUT)
                .arg(1)
                .arg(self.keys.layout())
                .arg(to),
        )
        .await
        .map(drop)
    }

    /// Runs `step` on every key matching `pattern` on every primary, a `SCAN` page at a time;
    /// returns how many keys (edges) or fields (layout 3) this call wrote.
    async fn scan(&self, pattern: &str, step: Step) -> StoreResult<u64> {
        let mut moved = 0;
        for target in self.scan_targets().await? {
            let mut cursor = String::from("0");
            loop {
                let mut scan = ::redis::cmd("SCAN");
                scan.arg(&cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(SCAN_COUNT);
                let mut reply = array(self.query_on(&target, scan).await?)?.into_iter();
                cursor = string(reply.next().unwrap_or_default())?;
                let keys = array(reply.next().unwrap_or_default())?
                    .into_iter()
                    .map(string)
                    .collect::<StoreResult<Vec<_>>>()?;
                moved += match step {
                    Step::Edges => self.migrate_page(&keys).await?,
                    Step::Layout3 => self.migrate_page_3(&keys).await?,
                };
                if cursor == "0" {
                    break;
                }
            }
        }
        Ok(moved)
    }

    /// One `SCAN` page: read the old edges, write the pair hashes, delete the old keys (three
    /// round trips for the whole page).
    async fn migrate_page(&self, keys: &[String]) -> StoreResult<u64> {
        let pairs = keys
            .iter()
            .map(|k| self.keys.legacy_pair(k))
            .collect::<StoreResult<Vec<_>>>()?;
        if pairs.is_empty() {
            return Ok(0);
        }
        let reads = pairs
            .iter()
            .map(|&p| {
                let mut get = ::redis::cmd("GET");
                get.arg(self.keys.legacy_edge(p));
                let mut ver = ::redis::cmd("GET");
                ver.arg(self.keys.legacy_edge_version(p));
                vec![get, ver]
            })
            .collect();
        let read = self.guarded(self.con.query_groups(reads)).await?;
        let mut found = Vec::new();
        let mut calls = Vec::new();
        for (&pair, values) in pairs.iter().zip(read) {
            let mut values = values.into_iter();
            // Gone: another node moved it after our SCAN saw it.
            let Some(text) = opt_string(values.next().unwrap_or_default())? else {
                continue;
            };
            let edge: Edge = json(&text, "layout-1 edge")?;
            let version = opt_int::<u64>(values.next().unwrap_or_default(), "edge version")?;
            calls.push(
                Call::new(&SCRIPTS.migrate_edge)
                    .key(self.keys.pair(pair))
                    .key(self.keys.meta(&ConversationId::direct(pair.lo, pair.hi)))
                    .arg(text)
                    .arg(version.unwrap_or(0))
                    .arg(friends_flag(&edge)),
            );
            found.push(pair);
        }
        if calls.is_empty() {
            return Ok(0);
        }
        let mut moved = 0;
        for r in self.eval_many(&calls, &[], Retry::Once).await? {
            moved += int::<u64>(r.map_err(redis_err)?, "migrate_edge reply")?;
        }
        // Only now, with every pair hash in place, the old keys go.
        let deletes = found
            .iter()
            .map(|&p| {
                let mut del = ::redis::cmd("DEL");
                del.arg(self.keys.legacy_edge(p))
                    .arg(self.keys.legacy_edge_version(p));
                vec![del]
            })
            .collect();
        self.guarded(self.con.query_groups(deletes)).await?;
        Ok(moved)
    }

    /// One `SCAN` page of layout-2 pair hashes or idempotency buckets: one
    /// `migrate_layout_3.lua` call each, one round trip for the page.
    async fn migrate_page_3(&self, keys: &[String]) -> StoreResult<u64> {
        let calls = keys
            .iter()
            .map(|key| {
                let (meta, what, window) = self.keys.layout_2_key(key)?;
                Ok(Call::new(&SCRIPTS.migrate_layout_3)
                    .key(meta)
                    .key(key.clone())
                    .arg(what)
                    .arg(window))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        if calls.is_empty() {
            return Ok(0);
        }
        let mut moved = 0;
        for r in self.eval_many(&calls, &[], Retry::Once).await? {
            moved += int::<u64>(r.map_err(redis_err)?, "migrate_layout_3 reply")?;
        }
        Ok(moved)
    }

    /// The nodes whose keys together are the whole data set: the one node, or every primary.
    pub(super) async fn scan_targets(&self) -> StoreResult<Vec<ScanTarget>> {
        if !self.con.is_cluster() {
            return Ok(vec![ScanTarget::Single]);
        }
        // CLUSTER SLOTS: [[first slot, last slot, [primary host, port, id, ...], replicas...]]
        let reply = self.query(::redis::cmd("CLUSTER").arg("SLOTS")).await?;
        let mut nodes: Vec<(String, u16)> = Vec::new();
        for range in array(reply)? {
            let primary = array(range)?.into_iter().nth(2).unwrap_or_default();
            let mut primary = array(primary)?.into_iter();
            let host = string(primary.next().unwrap_or_default())?;
            let port: u16 = int(primary.next().unwrap_or_default(), "cluster node port")?;
            if !nodes.contains(&(host.clone(), port)) {
                nodes.push((host, port));
            }
        }
        Ok(nodes
            .into_iter()
            .map(|(host, port)| ScanTarget::Node { host, port })
            .collect())
    }

    /// Runs `cmd` on `target` (under the timeout and the breaker).
    pub(super) async fn query_on(&self, target: &ScanTarget, cmd: Cmd) -> StoreResult<Value> {
        match (target, &self.con) {
            (ScanTarget::Node { host, port }, Conn::Cluster(con)) => {
                let mut con = con.clone();
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                self.guarded(async move { con.route_command(cmd, routing).await })
                    .await
            }
            _ => self.query(&cmd).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_keys_round_trip_and_odd_keys_are_refused() {
        let keys = Keys {
            prefix: "t*1".into(),
        };
        let pair = UserPair::new(UserId::new_random(), UserId::new_random()).unwrap();
        assert_eq!(keys.legacy_pair(&keys.legacy_edge(pair)), Ok(pair));
        for odd in ["t*1:{p:x:y}:edge", "t*1:{p:}:edge", "other:{p:a:b}:edge"] {
            assert!(matches!(keys.legacy_pair(odd), Err(StoreError::Corrupt(_))));
        }
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
