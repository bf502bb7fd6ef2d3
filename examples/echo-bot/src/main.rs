//! `ECHO_BOT_PASSWORD=… cargo run -p example-echo-bot -- --server http://127.0.0.1:8080 --username echo`

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
            "-h" | "--help" => {
                println!(
                    "usage: echo-bot [--server URL] [--username NAME] --password PASS\n\
                     (or ECHO_BOT_PASSWORD in the environment)"
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
