//! The standalone binary: graceful shutdown on SIGTERM, configuration precedence, static files,
//! health and metrics.

mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_sends_going_away_closes_1001_and_exits_0() {
    let bin = Binary::start(&["--memory"]);
    let addr = bin.addr;
    let Pair {
        mut a, mut b, conv, ..
    } = alice_and_bob(addr).await;
    a.send_message(&conv, "before shutdown", "k1").await;
    b.expect("message").await;

    let exit = tokio::task::spawn_blocking(move || bin.terminate());
    for c in [&mut a, &mut b] {
        let (code, frames) = c.expect_close().await;
        assert_eq!(code, 1001, "{frames:?}");
        let going = frames
            .iter()
            .find(|f| f["type"] == "going_away")
            .unwrap_or_else(|| panic!("no going_away in {frames:?}"));
        assert!(going["reconnect_after_ms"].as_u64().is_some());
    }
    assert_eq!(exit.await.expect("join"), Some(0));
    // The port is closed: nothing listens any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// Flag > environment > file > default, for fields of several kinds: numbers, a boolean and
/// lists (the unit tests in `config.rs` cover the other kinds without the environment).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_precedence_flags_env_file_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("zajel.toml");
    std::fs::write(
        &file,
        "memory = true\n[engine]\nmax_body_bytes = 100\nrate_per_second = 7\nidle_timeout_ms = 1111\n\
         max_frame_bytes = 5000\ncookie_secure = false\ncors_origins = [\"https://file.example\"]\n\
         allowed_origins = [\"https://file-ws.example\"]\n",
    )
    .expect("write config");
    let bin = Binary::start_with(
        &[
            "--config",
            file.to_str().expect("utf-8 path"),
            "--idle-timeout-ms",
            "33333",
            "--allowed-origins",
            "https://flag-ws.example",
        ],
        &[
            ("ZAJEL_MAX_BODY_BYTES", "200"),
            ("ZAJEL_IDLE_TIMEOUT_MS", "22222"),
            ("ZAJEL_COOKIE_SECURE", "true"),
            (
                "ZAJEL_CORS_ORIGINS",
                "https://env.example,https://env2.example",
            ),
            ("ZAJEL_ALLOWED_ORIGINS", "https://env-ws.example"),
        ],
    );
    let addr = bin.addr;
    let body = json!({"username": "alice", "password": "correct horse battery"}).to_string();
    let reg = http(addr, "POST", "/api/register", Some(&body), &[]).await;
    assert_eq!(reg.status, 201, "{}", reg.body);
    let cookie = reg.header("set-cookie").expect("session cookie");
    assert!(cookie.contains("Secure"), "env beats file (bool): {cookie}");
    // CORS allows cors_origins and allowed_origins: env's list and the flag's list.
    for (origin, allowed, why) in [
        ("https://env2.example", true, "env beats file (list)"),
        ("https://file.example", false, "env beats file (list)"),
        ("https://flag-ws.example", true, "flag beats env (list)"),
        ("https://env-ws.example", false, "flag beats env (list)"),
        ("https://file-ws.example", false, "flag beats file (list)"),
    ] {
        let r = http(addr, "GET", "/healthz", None, &[("Origin", origin)]).await;
        assert_eq!(
            r.header("access-control-allow-origin").is_some(),
            allowed,
            "{origin}: {why}"
        );
    }
    let v = reg.json();
    let alice = Account {
        id: v["user"]["id"].as_str().expect("id").to_owned(),
        username: "alice".into(),
        token: v["token"].as_str().expect("token").to_owned(),
    };
    let (c, ok) = Client::login(addr, &alice).await;
    let limits = &ok["limits"];
    assert_eq!(limits["idle_timeout_ms"], 33333, "flag beats env and file");
    assert_eq!(limits["max_body_bytes"], 200, "env beats file");
    assert_eq!(limits["requests_per_second"], 7, "file beats default");
    assert_eq!(limits["max_frame_bytes"], 5000, "file");
    // Closed first: `terminate` blocks this thread, so nobody would answer the shutdown's
    // close and the server would wait out its 1 s linger.
    c.close().await;
    assert_eq!(bin.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_dir_health_and_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("index.html"), "<h1>zajel app</h1>").expect("write");
    std::fs::write(dir.path().join("app.js"), "console.log(1)").expect("write");
    let bin = Binary::start(&[
        "--memory",
        "--static-dir",
        dir.path().to_str().expect("path"),
    ]);
    let addr = bin.addr;
    let r = http(addr, "GET", "/", None, &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "<h1>zajel app</h1>"));
    let r = http(addr, "GET", "/app.js", None, &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "console.log(1)"));
    let r = http(addr, "GET", "/chat/with/bob", None, &[]).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "<h1>zajel app</h1>"),
        "SPA fallback"
    );
    let r = http(addr, "GET", "/healthz", None, &[]).await;
    assert_eq!(r.status, 200);

    let alice = register(addr, "alice").await;
    let (mut c, _) = Client::login(addr, &alice).await;
    let r = c.call(json!({"type": "teleport"})).await;
    assert_eq!(r["code"], "unknown_type");
    let m = http(addr, "GET", "/metrics", None, &[]).await;
    assert_eq!(m.status, 200);
    for series in [
        "zajel_connections 1",
        "zajel_messages_total 0",
        "zajel_errors_total{code=\"unknown_type\"} 1",
        "zajel_request_duration_seconds_count{transport=\"ws\"}",
        "zajel_request_duration_seconds_bucket{transport=\"http\",le=\"+Inf\"}",
    ] {
        assert!(m.body.contains(series), "missing {series} in\n{}", m.body);
    }
    c.close().await;
    assert_eq!(bin.terminate(), Some(0));
}

/// Runs the binary with stderr redirected to a file (not a terminal), stops it with SIGTERM and
/// returns what it logged.
fn logs_to_file(args: &[&str]) -> String {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("zajel.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_zajel-server"))
        .args(["--listen", "127.0.0.1:0", "--memory"])
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn zajel-server");
    let stdout = child.stdout.take().expect("stdout");
    for line in std::io::BufReader::new(stdout).lines() {
        if line
            .expect("stdout")
            .starts_with("zajel-server listening on")
        {
            break;
        }
    }
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    assert!(child.wait().expect("wait").success());
    std::fs::read_to_string(&log).expect("read log")
}

#[test]
fn logs_written_to_a_file_carry_no_colour_codes() {
    let text = logs_to_file(&[]);
    assert!(text.contains("listening"), "{text}");
    assert!(text.contains("SIGTERM received"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "ANSI escape in a log file: {text:?}"
    );
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    let text = logs_to_file(&["--log-format", "json"]);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "INFO" && l["fields"]["message"] == "listening"),
        "{text}"
    );
    assert!(!text.contains('\u{1b}'), "{text:?}");
}
