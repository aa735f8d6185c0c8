//! A secret in the one response that shows it: serialized as the plain string, printed by
//! `Debug` as `[redacted]`, so a view that carries it can be logged or traced whole.

use secrecy::{ExposeSecret, SecretString};
use serde::{Serialize, Serializer};
use shared::keys::GeneratedKey;

pub struct ShownOnce(SecretString);

impl ShownOnce {
    pub fn new(secret: &str) -> Self {
        Self(SecretString::from(secret))
    }
}

impl ShownOnce {
    /// A workspace signing secret as Standard Webhooks libraries take it: `whsec_` and the
    /// base64 of the secret's UTF-8 bytes (the key its signatures are made with).
    pub fn webhook_secret(secret: &str) -> Self {
        use base64::Engine;
        Self::new(&format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(secret.as_bytes())))
    }
}

impl From<&GeneratedKey> for ShownOnce {
    fn from(key: &GeneratedKey) -> Self {
        Self::new(key.expose())
    }
}

impl std::fmt::Debug for ShownOnce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for ShownOnce {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.expose_secret())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_carries_the_secret_and_debug_never_does() {
        let shown = ShownOnce::new("adm_plaintext");
        assert_eq!(serde_json::to_string(&shown).unwrap(), "\"adm_plaintext\"");
        assert_eq!(format!("{shown:?}"), "[redacted]");
        assert!(!format!("{:?}", Some(&shown)).contains("plaintext"));
    }

    #[test]
    fn the_webhook_form_is_whsec_and_the_base64_of_the_secret() {
        let shown = ShownOnce::webhook_secret("wss_abc");
        assert_eq!(serde_json::to_string(&shown).unwrap(), "\"whsec_d3NzX2FiYw==\"");
    }
}
