//! Standard Webhooks signatures: `webhook-signature` is `v1,<base64 HMAC-SHA256 of
//! "<webhook-id>.<webhook-timestamp>.<body>">`, keyed with the UTF-8 bytes of the
//! workspace secret. During a rotation's grace period a delivery carries one signature per
//! secret, space-separated, the new secret's first, so a receiver verifies with either.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// One `v1,<base64>` signature of the message.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header: one signature per key, in the order given (the current
/// secret first).
pub fn header<K: AsRef<[u8]>>(keys: &[K], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter().map(|key| sign(key.as_ref(), id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_matches_the_standard_webhooks_reference_example() {
        // The example of the Standard Webhooks specification: `whsec_` + base64 of the key.
        let key = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn during_a_grace_period_the_new_secret_signs_first() {
        let both = header(&[b"new-secret".as_slice(), b"old-secret".as_slice()], "id", 1, b"{}");
        let (first, second) = both.split_once(' ').unwrap();
        assert_eq!(first, sign(b"new-secret", "id", 1, b"{}"));
        assert_eq!(second, sign(b"old-secret", "id", 1, b"{}"));
        assert_eq!(header(&[b"only"], "id", 1, b"{}"), sign(b"only", "id", 1, b"{}"));
    }
}
