//! Usernames for accounts created by a first external sign-in: derived from the profile,
//! made valid, then made unique by a suffix.

use zajel_core::Username;
use zajel_core::limits::USERNAME_MAX;

/// The base name for hints such as `preferred_username`, `name` or an e-mail address: only
/// the characters a username allows, starting with a letter or digit, 3 to 25 long (room for a
/// suffix). Falls back to `user`.
pub(crate) fn base_name(hints: &[Option<&str>]) -> String {
    for hint in hints.iter().flatten() {
        let hint = hint.split('@').next().unwrap_or_default();
        let mut s: String = hint
            .chars()
            .map(|c| if c.is_whitespace() { '_' } else { c })
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            .collect();
        let start = s
            .find(|c: char| c.is_ascii_alphanumeric())
            .unwrap_or(s.len());
        s.drain(..start);
        s.truncate(USERNAME_MAX - 7);
        if s.len() >= 3 {
            return s;
        }
    }
    "user".to_owned()
}

/// The `n`th candidate for `base`: `base`, `base_2`, `base_3`, …; past a few tries a random
/// suffix, so a popular name does not cost many round trips.
pub(crate) fn candidate(base: &str, n: u32) -> Option<Username> {
    let name = match n {
        0 => base.to_owned(),
        1..=4 => format!("{base}_{}", n + 1),
        _ => {
            let mut b = [0u8; 3];
            getrandom::fill(&mut b).ok()?;
            format!("{base}_{}", hex::encode(b))
        }
    };
    Username::parse(&name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_profiles_are_valid() {
        assert_eq!(base_name(&[Some("alice"), Some("x")]), "alice");
        assert_eq!(base_name(&[None, Some("Ada Lovelace")]), "Ada_Lovelace");
        assert_eq!(
            base_name(&[Some("jo"), Some("jo.smith@example.com")]),
            "jo.smith"
        );
        assert_eq!(base_name(&[Some("__ü√x")]), "user");
        assert_eq!(base_name(&[Some("ÆØÅ 日本")]), "user");
        assert_eq!(base_name(&[]), "user");
        let long = base_name(&[Some(&"a".repeat(100))]);
        assert_eq!(long.len(), USERNAME_MAX - 7);
        for n in 0..8 {
            let c = candidate(&long, n).expect("valid candidate");
            assert!(c.as_str().starts_with(&long));
        }
        assert_eq!(candidate("bob", 1).unwrap().as_str(), "bob_2");
        assert_ne!(candidate("bob", 6), candidate("bob", 6));
    }
}
