//! Passwords (argon2id) and session tokens.
//!
//! A token is `zs1.<user-uuid>.<base64url of 32 random bytes>`. Only the SHA-256 (hex) of the
//! random part is stored, under (user, hash), so a stolen database yields no usable tokens and
//! "log out everywhere" is one delete of the user's sessions.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use zajel_core::UserId;

/// Shortest accepted password, in characters.
pub const PASSWORD_MIN: usize = 8;
/// Longest accepted password, in characters.
pub const PASSWORD_MAX: usize = 128;

const TOKEN_PREFIX: &str = "zs1";

/// Why a password could not be hashed (bad parameters or no randomness).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

fn hasher(memory_kib: u32, iterations: u32) -> Result<Argon2<'static>, HashError> {
    let params = Params::new(memory_kib.max(8), iterations.max(1), 1, None)
        .map_err(|e| HashError(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes `password` with argon2id into a PHC string (CPU heavy: call from `spawn_blocking`).
pub fn hash_password(
    password: &str,
    memory_kib: u32,
    iterations: u32,
) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| HashError(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashError(e.to_string()))?;
    Ok(hasher(memory_kib, iterations)?
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| HashError(e.to_string()))?
        .to_string())
}

/// Checks `password` against a PHC string (parameters come from the string).
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Whether `password` has an acceptable length.
pub fn password_ok(password: &str) -> bool {
    (PASSWORD_MIN..=PASSWORD_MAX).contains(&password.chars().count())
}

/// A new token for `user` and the hash to store.
pub fn new_token(user: UserId) -> Result<(String, String), getrandom::Error> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)?;
    let secret = URL_SAFE_NO_PAD.encode(secret);
    let hash = hash_secret(&secret);
    Ok((format!("{TOKEN_PREFIX}.{user}.{secret}"), hash))
}

/// Splits a token into its user and the hash of its secret; `None` if malformed.
pub fn parse_token(token: &str) -> Option<(UserId, String)> {
    let mut parts = token.split('.');
    if parts.next()? != TOKEN_PREFIX {
        return None;
    }
    let user: UserId = parts.next()?.parse().ok()?;
    let secret = parts.next()?;
    if parts.next().is_some()
        || secret.len() != 43
        || !secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    Some((user, hash_secret(secret)))
}

/// Lower-case hex of the secret's SHA-256. Written out rather than `hex::encode`, which goes
/// through a `char` iterator: every connection's `auth` hashes a token, and that iterator
/// cost more (~2,300 instructions) than the rest of the encoding.
pub(crate) fn hash_secret(secret: &str) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(secret.as_bytes());
    let mut out = String::with_capacity(2 * digest.len());
    for b in digest {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let user: UserId = "00000000-0000-4000-8000-000000000001".parse().unwrap();
        let (token, hash) = new_token(user).unwrap();
        assert!(token.starts_with("zs1.00000000-0000-4000-8000-000000000001."));
        assert_eq!(parse_token(&token), Some((user, hash)));
        assert_eq!(parse_token("zs1.nope.abc"), None);
        assert_eq!(parse_token(&format!("{token}.x")), None);
        assert_eq!(parse_token(&token.replace("zs1", "zs2")), None);
    }

    #[test]
    fn the_stored_hash_is_the_hex_sha256_of_the_secret() {
        // Stored sessions are keyed by this exact text: it must not change.
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hash_secret("abc"), hex::encode(Sha256::digest(b"abc")));
    }

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse", 64, 1).unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(password_ok("12345678") && !password_ok("1234567"));
    }
}
