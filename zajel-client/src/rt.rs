//! The runtime shim: the only place where native and browser builds differ in how they spawn
//! tasks, sleep, read the clock and draw random bytes.
//!
//! * native: tokio (`tokio::spawn`, `tokio::time::sleep`), `std::time::Instant`, `getrandom`;
//! * `wasm32`: `wasm_bindgen_futures::spawn_local`, `gloo-timers`, `Date.now()`,
//!   `crypto.getRandomValues` (falling back to `Math.random`).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed future: `Send` natively, not on wasm (browser futures are single-threaded).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// A boxed future: `Send` natively, not on wasm (browser futures are single-threaded).
#[cfg(target_arch = "wasm32")]
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Runs a future in the background.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn spawn<F: Future<Output = ()> + Send + 'static>(f: F) {
    tokio::spawn(f);
}
/// Runs a future in the background.
#[cfg(target_arch = "wasm32")]
pub(crate) fn spawn<F: Future<Output = ()> + 'static>(f: F) {
    wasm_bindgen_futures::spawn_local(f);
}

/// Completes after `d`.
pub(crate) fn sleep(d: Duration) -> BoxFuture<'static, ()> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        Box::pin(tokio::time::sleep(d))
    }
    #[cfg(target_arch = "wasm32")]
    {
        let ms = u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        Box::pin(gloo_timers::future::TimeoutFuture::new(ms))
    }
}

/// Monotonic-enough milliseconds for deadlines (native: since first use; wasm: `Date.now()`).
pub(crate) fn now_ms() -> u64 {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::sync::OnceLock;
        use std::time::Instant;
        static START: OnceLock<Instant> = OnceLock::new();
        let start = *START.get_or_init(Instant::now);
        u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
    #[cfg(target_arch = "wasm32")]
    {
        js_sys::Date::now() as u64
    }
}

/// Fills `buf` with random bytes (cryptographic where the platform offers it).
pub(crate) fn random_bytes(buf: &mut [u8]) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        if getrandom::fill(buf).is_err() {
            fallback_random(buf);
        }
    }
    #[cfg(target_arch = "wasm32")]
    {
        use wasm_bindgen::JsCast;
        let global = js_sys::global();
        let crypto = js_sys::Reflect::get(&global, &"crypto".into())
            .ok()
            .and_then(|c| c.dyn_into::<web_sys::Crypto>().ok());
        let ok = crypto.is_some_and(|c| c.get_random_values_with_u8_array(buf).is_ok());
        if !ok {
            fallback_random(buf);
        }
    }
}

fn fallback_random(buf: &mut [u8]) {
    // Not cryptographic; only reached when the platform has no random source. Idempotency keys
    // need uniqueness, not secrecy, so the clock mixed with a counter is good enough here.
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let mut x = COUNTER.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed) ^ now_ms();
    for b in buf.iter_mut() {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        *b = (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8;
    }
}

/// A random number in `[0, 1)`.
pub(crate) fn random_unit() -> f64 {
    let mut b = [0u8; 8];
    random_bytes(&mut b);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// 128 random bits as 32 lower-case hex characters (an idempotency key).
pub(crate) fn random_key() -> String {
    let mut b = [0u8; 16];
    random_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}
