//! Zajel benchmarks. Each run prints one JSON line to stdout.
//!
//! ```text
//! cargo run --release -p zajel-benches -- store-append --backend embedded --messages 20000 --batch 32 --concurrency 64
//! ```
//!
//! `load` is the end-to-end load generator (pairs of friends over real WebSockets against an
//! in-process or external server, and the bare relay as the baseline in the same invocation);
//! see `zajel_benches::load`, `zajel_benches::compare` and `benches/README.md`.
//!
//! `chart --in FILE.jsonl --out FILE.svg` draws p50/p99 against offered rate from the lines.
//!
//! `serve --store memory|embedded|redis --listen ADDR` and `relay --store memory|redis|redb
//! --listen ADDR` serve Zajel (with the load generator's `--spawn` configuration) or the bare
//! relay in a process of their own until standard input closes: for profiling the server
//! alone (`scripts/profile.sh`) with `load --url`.
//!
//! `frame-decode --frames N` decodes a typical `send` frame N times (the client frame
//! decoder's instruction cost under callgrind: `scripts/profile.sh frame-decode`).
//!
//! `store-append` measures the message-append path of a store: `concurrency` tasks each send
//! their share of `messages` into their own conversation, in batches of `batch` messages per
//! `append` call, and the line reports throughput and per-call latency percentiles. With
//! `--batch 1` and high concurrency it shows how much a backend gains from coalescing
//! concurrent callers (the embedded store's group commit) versus explicit batches.

use anyhow::{Context, Result, bail};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zajel_core::{Body, ConversationId, IdempotencyKey, NewMessage, Store, Timestamp, Username};

struct Args {
    backend: String,
    messages: u64,
    batch: u64,
    concurrency: u64,
}

const USAGE: &str = "usage: zajel-benches store-append [--backend B] [--messages N] [--batch N] [--concurrency N]\n       zajel-benches load --help\n       zajel-benches chart --in FILE.jsonl --out FILE.svg [--title T]\n       zajel-benches serve --store memory|embedded|redis --listen ADDR\n       zajel-benches relay --store memory|redis|redb --listen ADDR\n       zajel-benches frame-decode [--frames N]";

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args> {
    let mut args = Args {
        backend: "memory".into(),
        messages: 20_000,
        batch: 1,
        concurrency: 32,
    };
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--backend" => args.backend = value,
            "--messages" => args.messages = value.parse()?,
            "--batch" => args.batch = value.parse()?,
            "--concurrency" => args.concurrency = value.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    if args.batch == 0 || args.concurrency == 0 {
        bail!("--batch and --concurrency must be at least 1");
    }
    Ok(args)
}

/// Keeps a backend's resources (temp dir, redis-server) alive for the run.
type Guard = Box<dyn std::any::Any>;

async fn open_store(backend: &str) -> Result<(Arc<dyn Store>, Guard)> {
    Ok(match backend {
        "memory" => (Arc::new(zajel_core::MemoryStore::new()), Box::new(())),
        "embedded" => {
            let dir = tempfile::tempdir()?;
            let store = zajel_core::EmbeddedStore::open_with(
                dir.path().join("bench.redb"),
                zajel_benches::load::embedded_options_from_env()?,
            )?;
            (Arc::new(store), Box::new(dir))
        }
        "redis" => {
            let server = zajel_core::testing::RedisServer::start()?;
            let store = zajel_core::RedisStore::connect(&server.url()).await?;
            (Arc::new(store), Box::new(server))
        }
        other => bail!("unknown backend {other} (memory, embedded, redis)"),
    })
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

async fn store_append(args: Args) -> Result<serde_json::Value> {
    let (store, _guard) = open_store(&args.backend).await?;
    let hub = store
        .create_user(&Username::parse("bench_hub")?, None, Timestamp::now())
        .await?;
    let per_task = args.messages / args.concurrency;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..args.concurrency {
        let store = store.clone();
        let peer = store
            .create_user(
                &Username::parse(&format!("bench_{t}"))?,
                None,
                Timestamp::now(),
            )
            .await?;
        // Stores refuse messages between non-friends.
        let graph = zajel_core::FriendGraph::new(&*store);
        graph
            .apply(
                hub.id,
                peer.id,
                zajel_core::FriendOp::Request,
                Timestamp::now(),
            )
            .await?;
        graph
            .apply(
                peer.id,
                hub.id,
                zajel_core::FriendOp::Accept,
                Timestamp::now(),
            )
            .await?;
        let conv = ConversationId::direct(hub.id, peer.id);
        let batch = args.batch;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut sent = 0;
            while sent < per_task {
                let n = batch.min(per_task - sent);
                let msgs: Vec<NewMessage> = (0..n)
                    .map(|i| NewMessage {
                        conversation: conv.clone(),
                        sender: peer.id,
                        body: Body::parse("benchmark message body of a typical chat length")
                            .expect("valid"),
                        idempotency_key: IdempotencyKey::parse(&format!("{t}-{}", sent + i))
                            .expect("valid"),
                        sent_at: Timestamp::now(),
                    })
                    .collect();
                let call = Instant::now();
                for r in store.append(msgs).await {
                    r?;
                }
                latencies.push(call.elapsed());
                sent += n;
            }
            Ok::<_, zajel_core::StoreError>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let total = per_task * args.concurrency;
    Ok(serde_json::json!({
        "bench": "store-append",
        "backend": args.backend,
        "messages": total,
        "batch": args.batch,
        "concurrency": args.concurrency,
        "seconds": secs,
        "messages_per_second": total as f64 / secs,
        "call_latency_ms": { "p50": percentile(&latencies, 0.50), "p99": percentile(&latencies, 0.99), "max": percentile(&latencies, 1.0) },
    }))
}

/// `--flag value` pairs into a map (each flag at most once).
fn flags(it: impl Iterator<Item = String>, known: &[&str]) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    let mut it = it;
    while let Some(flag) = it.next() {
        if !known.contains(&flag.as_str()) {
            bail!("unknown flag {flag}\n{USAGE}");
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        out.insert(flag, value);
    }
    Ok(out)
}

/// Resolves when standard input reaches its end (the way `serve` and `relay` are stopped).
fn stdin_closed() -> tokio::sync::oneshot::Receiver<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        let _ = tx.send(());
    });
    rx
}

fn listen_addr(f: &HashMap<String, String>) -> Result<SocketAddr> {
    f.get("--listen")
        .map_or("127.0.0.1:0", String::as_str)
        .parse()
        .context("--listen must be IP:PORT")
}

async fn serve(f: HashMap<String, String>) -> Result<()> {
    let store = f.get("--store").map_or("memory", String::as_str);
    let backend = match zajel_benches::load::Target::parse_spawn(store)? {
        zajel_benches::load::Target::Spawn(b) => b,
        _ => bail!("serve --store takes memory, embedded, redis or redis-aof"),
    };
    let (store, _guard) = zajel_benches::load::open_backend(backend).await?;
    let listener = tokio::net::TcpListener::bind(listen_addr(&f)?).await?;
    println!("listening on {}", listener.local_addr()?);
    let engine = zajel_server::Engine::new(store, zajel_benches::load::spawn_config());
    let stop = stdin_closed();
    zajel_server::serve(listener, engine, async move {
        let _ = stop.await;
    })
    .await?;
    Ok(())
}

async fn relay(f: HashMap<String, String>) -> Result<()> {
    let store =
        zajel_benches::relay::RelayStore::parse(f.get("--store").map_or("memory", String::as_str))?;
    let running = zajel_benches::relay::start(store, listen_addr(&f)?).await?;
    println!("listening on {}", running.addr);
    let _ = stdin_closed().await;
    running.stop().await
}

fn chart(f: HashMap<String, String>) -> Result<()> {
    let input = f.get("--in").context("--in FILE.jsonl")?;
    let output = f.get("--out").context("--out FILE.svg")?;
    let text = std::fs::read_to_string(input).with_context(|| format!("read {input}"))?;
    let series = zajel_benches::chart::series_from_lines(&text);
    if series.is_empty() {
        bail!("no find-max lines in {input}");
    }
    let title = f.get("--title").map_or(
        "Zajel vs. the bare relay: e2e latency against offered rate",
        String::as_str,
    );
    std::fs::write(output, zajel_benches::chart::svg(&series, title, 50.0))
        .with_context(|| format!("write {output}"))?;
    eprintln!("wrote {output} ({} series)", series.len());
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut it = std::env::args().skip(1);
    let bench = it.next().context(USAGE)?;
    let line = match bench.as_str() {
        "store-append" => store_append(parse_args(it)?).await?,
        "load" => {
            zajel_benches::compare::run_command(zajel_benches::load::LoadConfig::from_args(it)?)
                .await?
        }
        "chart" => return chart(flags(it, &["--in", "--out", "--title"])?),
        "serve" => return serve(flags(it, &["--store", "--listen"])?).await,
        "relay" => return relay(flags(it, &["--store", "--listen"])?).await,
        "frame-decode" => {
            let f = flags(it, &["--frames"])?;
            let frames = f.get("--frames").map_or(Ok(100_000), |n| n.parse())?;
            zajel_benches::frame_decode::run(frames)
        }
        other => {
            bail!(
                "unknown benchmark {other} (store-append, load, chart, serve, relay, frame-decode)\n{USAGE}"
            )
        }
    };
    println!("{line}");
    Ok(())
}
