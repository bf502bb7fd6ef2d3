//! `frame-decode --frames N`: decodes a typical `send` frame N times with
//! [`ClientFrame::decode`], the server's first step for every frame it receives. Run it under
//! `valgrind --tool=callgrind` with two values of N and subtract (`scripts/profile.sh
//! frame-decode`): the difference divided by the difference in frames is the instruction cost
//! of one decode, independent of how busy the machine is.

use serde_json::{Value, json};
use std::hint::black_box;
use std::time::Instant;
use zajel_core::protocol::ClientFrame;

/// A `send` frame as the client SDK writes it (`type` first), with a 64-byte body like the
/// load generator's.
pub fn send_frame() -> String {
    let conv = "dm.1f0c5a52-8d3b-4a7e-9c61-2b7f4e0a9d11.6a4e2c90-3b1d-4f8e-a5c7-90d2e1f3b422";
    ClientFrame::decode(
        &json!({"type": "send", "id": "41", "conversation": conv, "body": "x".repeat(64),
            "idempotency_key": "1f0c5a52-41"})
        .to_string(),
    )
    .expect("a valid frame")
    .encode()
}

/// Decodes [`send_frame`] `frames` times; the JSON line says how many and how long.
pub fn run(frames: u64) -> Value {
    let text = send_frame();
    let started = Instant::now();
    for _ in 0..frames {
        let frame = ClientFrame::decode(black_box(&text));
        black_box(frame.is_ok());
    }
    let secs = started.elapsed().as_secs_f64();
    json!({
        "bench": "frame-decode",
        "frame_bytes": text.len(),
        "frames": frames,
        "seconds": secs,
        "ns_per_frame": secs * 1e9 / frames.max(1) as f64,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_benchmarked_frame_is_a_send_that_decodes() {
        let text = super::send_frame();
        assert!(text.starts_with(r#"{"type":"send""#), "{text}");
        assert_eq!(super::run(3)["frames"], 3);
    }
}
