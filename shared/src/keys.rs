//! The format of every secret key the product hands out.
//!
//! `<prefix>_<40 base62 random chars><6-char base62 CRC32 of the random part>`. The typed
//! prefix makes a leaked key recognisable by secret scanners; the checksum rejects typos
//! and garbage before any database lookup. Only a peppered hash is ever stored.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const RANDOM_LEN: usize = 40;
const CHECKSUM_LEN: usize = 6;

/// What a key is for; its prefix says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Admin,
    Interaction,
    PartnerApp,
    WorkspaceSecret,
    InvitationToken,
}

impl KeyKind {
    pub const fn prefix(self) -> &'static str {
        match self {
            Self::Admin => "adm",
            Self::Interaction => "ik",
            Self::PartnerApp => "pak",
            Self::WorkspaceSecret => "wss",
            Self::InvitationToken => "inv",
        }
    }
}

/// A freshly generated key. Its `Debug` never shows the secret.
pub struct GeneratedKey {
    secret: String,
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey").field("hint", &self.hint()).finish()
    }
}

impl GeneratedKey {
    pub fn generate(kind: KeyKind) -> Self {
        let mut random = String::with_capacity(RANDOM_LEN);
        // Rejection sampling keeps every base62 digit equally likely.
        while random.len() < RANDOM_LEN {
            let mut bytes = [0u8; 64];
            getrandom::fill(&mut bytes).expect("the operating system's random source is available");
            random.extend(
                bytes
                    .iter()
                    .filter(|b| **b < 248)
                    .map(|b| BASE62[(*b % 62) as usize] as char)
                    .take(RANDOM_LEN - random.len()),
            );
        }
        let secret = format!("{}_{random}{}", kind.prefix(), checksum(&random));
        Self { secret }
    }

    /// The plaintext: show it once, to the caller that created it, and drop it.
    pub fn expose(&self) -> &str {
        &self.secret
    }

    pub fn hint(&self) -> String {
        partial_hint(&self.secret)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("not a key of this kind")]
    WrongPrefix,
    #[error("malformed key")]
    Malformed,
    #[error("key checksum mismatch")]
    BadChecksum,
}

/// The shape of a key of `kind` as a regex (the checksum is beyond a pattern).
pub fn pattern(kind: KeyKind) -> String {
    format!("^{}_[0-9A-Za-z]{{{}}}$", kind.prefix(), RANDOM_LEN + CHECKSUM_LEN)
}

/// Checks a presented key's shape and checksum, without any lookup.
pub fn parse(kind: KeyKind, presented: &str) -> Result<(), KeyFormatError> {
    let body = presented
        .strip_prefix(kind.prefix())
        .and_then(|rest| rest.strip_prefix('_'))
        .ok_or(KeyFormatError::WrongPrefix)?;
    if body.len() != RANDOM_LEN + CHECKSUM_LEN || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(KeyFormatError::Malformed);
    }
    let (random, sum) = body.split_at(RANDOM_LEN);
    if checksum(random) != sum {
        return Err(KeyFormatError::BadChecksum);
    }
    Ok(())
}

/// What listings show of a key: its prefix and last four characters.
pub fn partial_hint(secret: &str) -> String {
    let prefix = secret.split('_').next().unwrap_or_default();
    let tail: String = secret.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    format!("{prefix}_...{tail}")
}

fn checksum(random: &str) -> String {
    let mut value = u64::from(crc32fast::hash(random.as_bytes()));
    let mut digits = [b'0'; CHECKSUM_LEN];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(value % 62) as usize];
        value /= 62;
    }
    String::from_utf8_lossy(&digits).into_owned()
}

/// Hashes keys with a server-side pepper (HMAC-SHA-256), so a stolen table of hashes
/// cannot be checked against guesses without the pepper.
#[derive(Clone)]
pub struct KeyHasher {
    pepper: Vec<u8>,
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher(..)")
    }
}

impl KeyHasher {
    pub fn new(pepper: &[u8]) -> Self {
        Self { pepper: pepper.to_vec() }
    }

    pub fn hash(&self, secret: &str) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.pepper).expect("HMAC accepts any key length");
        mac.update(secret.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// Constant-time check of a presented secret against a stored hash.
    pub fn matches(&self, secret: &str, stored: &[u8]) -> bool {
        self.hash(secret).ct_eq(stored).into()
    }
}

/// The pepper of every key hash, derived from the master key: the hub hashes the keys it
/// hands out with it, and instances check interaction keys against the same hashes.
pub fn key_pepper(master_key: &[u8]) -> Vec<u8> {
    KeyHasher::new(master_key).hash("admin-api/key-pepper/v1")
}

/// Constant-time equality of two byte strings (of possibly different lengths).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_carry_their_prefix() {
        for kind in [
            KeyKind::Admin,
            KeyKind::Interaction,
            KeyKind::PartnerApp,
            KeyKind::WorkspaceSecret,
            KeyKind::InvitationToken,
        ] {
            let key = GeneratedKey::generate(kind);
            assert!(key.expose().starts_with(&format!("{}_", kind.prefix())));
            assert_eq!(parse(kind, key.expose()), Ok(()));
            assert_eq!(key.expose().len(), kind.prefix().len() + 1 + RANDOM_LEN + CHECKSUM_LEN);
        }
    }

    #[test]
    fn a_typo_or_the_wrong_kind_is_rejected_before_lookup() {
        let key = GeneratedKey::generate(KeyKind::Admin);
        let secret = key.expose();
        let mut typo: Vec<char> = secret.chars().collect();
        let i = 10;
        typo[i] = if typo[i] == 'a' { 'b' } else { 'a' };
        let typo: String = typo.into_iter().collect();
        assert_eq!(parse(KeyKind::Admin, &typo), Err(KeyFormatError::BadChecksum));
        assert_eq!(parse(KeyKind::Interaction, secret), Err(KeyFormatError::WrongPrefix));
        assert_eq!(parse(KeyKind::Admin, "adm_short"), Err(KeyFormatError::Malformed));
        assert_eq!(parse(KeyKind::Admin, &format!("{secret}!")), Err(KeyFormatError::Malformed));
        assert_eq!(parse(KeyKind::Admin, ""), Err(KeyFormatError::WrongPrefix));
    }

    #[test]
    fn hashes_depend_on_the_pepper_and_match_in_constant_time() {
        let key = GeneratedKey::generate(KeyKind::Admin);
        let a = KeyHasher::new(b"pepper-a");
        let b = KeyHasher::new(b"pepper-b");
        assert_ne!(a.hash(key.expose()), b.hash(key.expose()));
        assert!(a.matches(key.expose(), &a.hash(key.expose())));
        assert!(!a.matches(key.expose(), &b.hash(key.expose())));
    }

    #[test]
    fn the_hint_and_debug_never_reveal_the_secret() {
        let key = GeneratedKey::generate(KeyKind::Admin);
        let hint = key.hint();
        assert!(hint.starts_with("adm_...") && hint.len() == 11, "{hint}");
        assert!(!format!("{key:?}").contains(&key.expose()[4..20]));
    }
}
