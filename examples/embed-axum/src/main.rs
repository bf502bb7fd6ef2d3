//! Run with `cargo run -p example-embed-axum` (listens on 127.0.0.1:3000, or `$PORT`).

use example_embed_axum::{engine, run};
use zajel_server::ServerConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("embed-axum listening on http://{}", listener.local_addr()?);
    let engine = engine(ServerConfig::default());
    run(listener, engine, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
