//! `ECHO_BOT_PASSWORD=… cargo run -p example-echo-bot -- --server http://127.0.0.1:8080 --username echo`
//!
//! Behind TLS: `--server https://chat.example.com` (public CAs are built in); a private CA or a
//! self-signed certificate with `--ca-file ca.pem`.

use anyhow::{Context, bail};
use zajel_client::Client;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut server = "http://127.0.0.1:8080".to_owned();
    let mut username = "echo".to_owned();
    let mut password = std::env::var("ECHO_BOT_PASSWORD").ok();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--server" => server = value()?,
            "--username" => username = value()?,
            "--password" => password = Some(value()?),
            "--ca-file" => {
                let path = value()?;
                let pem = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
                zajel_client::add_root_certificates_pem(&pem)
                    .with_context(|| format!("certificates in {path}"))?;
            }
            "-h" | "--help" => {
                println!(
                    "usage: echo-bot [--server URL] [--username NAME] [--ca-file PEM] --password PASS\n\
                     (or ECHO_BOT_PASSWORD in the environment; URL may be https://)"
                );
                return Ok(());
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    let Some(password) = password else {
        bail!("--password (or ECHO_BOT_PASSWORD) is required");
    };
    let session = example_echo_bot::sign_in(&server, &username, &password).await?;
    eprintln!(
        "echo-bot: signed in as {} ({})",
        session.user.username, session.user.id
    );
    let (client, events) = Client::connect(server.as_str(), session.token)
        .await
        .context("connect")?;
    let bot = tokio::spawn(example_echo_bot::run(client.clone(), events));
    tokio::select! {
        r = bot => r??,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("echo-bot: bye");
            client.close();
        }
    }
    Ok(())
}
