//! Sealing with AES-256-GCM: `nonce (12 bytes) ‖ ciphertext+tag`, bound to a context
//! string (associated data) so a sealed value cannot be moved to another purpose.
//!
//! Secrets the product must use later are sealed under a per-workspace data key; data
//! keys are sealed under the master key and kept in a mutable keyring, so destroying a
//! data key makes every copy of its ciphertexts (the immutable log included) unreadable.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};

const NONCE_LEN: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("sealed data is corrupt, or was sealed under another key or context")]
pub struct OpenError;

pub fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).expect("the operating system's random source is available");
    key
}

pub fn seal(key: &[u8; 32], plaintext: &[u8], context: &str) -> Vec<u8> {
    let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key));
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).expect("the operating system's random source is available");
    let ciphertext = cipher
        .encrypt(&Nonce::from(nonce), Payload { msg: plaintext, aad: context.as_bytes() })
        .expect("AES-GCM encryption of an in-memory buffer cannot fail");
    [nonce.as_slice(), &ciphertext].concat()
}

pub fn open(key: &[u8; 32], sealed: &[u8], context: &str) -> Result<Vec<u8>, OpenError> {
    if sealed.len() < NONCE_LEN + 16 {
        return Err(OpenError);
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| OpenError)?;
    let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key));
    cipher.decrypt(&Nonce::from(nonce), Payload { msg: ciphertext, aad: context.as_bytes() }).map_err(|_| OpenError)
}

/// The context a workspace's data key is sealed under (by the master key).
pub fn data_key_context(workspace_id: uuid::Uuid) -> String {
    format!("admin-api/workspace-data-key/{workspace_id}")
}

/// The context of a workspace's signing secret of one version (under its data key).
pub fn secret_context(workspace_id: uuid::Uuid, version: i32) -> String {
    format!("admin-api/workspace-secret/{workspace_id}/{version}")
}

/// The context of an external key's credential (under its workspace's data key).
pub fn external_key_context(workspace_id: uuid::Uuid, external_key_id: uuid::Uuid) -> String {
    format!("admin-api/external-key/{workspace_id}/{external_key_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_only_with_its_key_and_context() {
        let key = random_key();
        let sealed = seal(&key, b"secret", "ctx-a");
        assert_eq!(open(&key, &sealed, "ctx-a").unwrap(), b"secret");
        assert_eq!(open(&key, &sealed, "ctx-b"), Err(OpenError));
        assert_eq!(open(&random_key(), &sealed, "ctx-a"), Err(OpenError));
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert_eq!(open(&key, &tampered, "ctx-a"), Err(OpenError));
        assert_ne!(seal(&key, b"secret", "ctx-a"), sealed, "a fresh nonce every time");
    }
}
