//! The workspace access token: what a hub mints and an instance verifies.
//!
//! An HS256 JWT whose `kid` is the version of the workspace secret that signed it, with
//! `sub` and `aud` both the workspace, `iss` [`ISSUER`], and `iat`, `nbf`, `exp`. An
//! instance accepts it only for that one workspace, while valid (with [`LEEWAY_SECONDS`] of
//! clock skew) and when it lives at most [`MAX_LIFETIME_SECONDS`].

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The `iss` of every access token.
pub const ISSUER: &str = "admin-api";
/// The longest life of an access token (`exp - iat`).
pub const MAX_LIFETIME_SECONDS: i64 = 86_400;
/// Clock skew tolerated between the hub that minted a token and the instance checking it.
pub const LEEWAY_SECONDS: u64 = 60;
/// The claims a token must carry.
pub const REQUIRED_CLAIMS: [&str; 5] = ["exp", "nbf", "sub", "iss", "aud"];
const ALGORITHM: Algorithm = Algorithm::HS256;

/// The claims a hub mints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
}

impl Claims {
    /// The claims of a token for `workspace`, valid from `issued_at` to `expires_at` (Unix
    /// seconds), with a fresh `jti`.
    pub fn new(workspace: Uuid, issued_at: i64, expires_at: i64) -> Self {
        Self {
            sub: workspace.to_string(),
            aud: workspace.to_string(),
            iss: ISSUER.into(),
            iat: issued_at,
            nbf: issued_at,
            exp: expires_at,
            jti: Uuid::now_v7().to_string(),
        }
    }
}

/// The signed token, naming `secret_version` as its `kid`.
pub fn encode(claims: &Claims, secret_version: i32, secret: &[u8]) -> jsonwebtoken::errors::Result<String> {
    let header = Header { kid: Some(secret_version.to_string()), ..Header::new(ALGORITHM) };
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret))
}

/// What a token says about itself before it is verified: its workspace (`sub`) and the
/// secret version that signed it (`kid`), which say which secret verifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unverified {
    pub workspace: Uuid,
    pub secret_version: i32,
}

#[derive(Deserialize)]
struct Subject {
    sub: String,
}

/// The token's workspace and secret version, unverified; `None` when it is malformed.
pub fn unverified(token: &str) -> Option<Unverified> {
    let header = jsonwebtoken::decode_header(token).ok()?;
    let secret_version = header.kid.as_deref()?.parse().ok()?;
    let subject: Subject = jsonwebtoken::dangerous::insecure_decode_claims(token).ok()?;
    Some(Unverified { workspace: subject.sub.parse().ok()?, secret_version })
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A bad signature, issuer or algorithm, a missing claim, not yet or no longer valid.
    #[error("invalid or expired token")]
    Invalid,
    /// The audience is not exactly this workspace (a list that merely includes it is not).
    #[error("the token is not for this workspace")]
    OtherAudience,
    /// It lives longer than [`MAX_LIFETIME_SECONDS`], or was issued in the future.
    #[error("the token lives longer than 24 hours")]
    TooLong,
}

/// The claims checked beyond what `jsonwebtoken` validates.
#[derive(Deserialize)]
struct Checked {
    aud: serde_json::Value,
    iat: i64,
    exp: i64,
}

/// Verifies a token for `workspace` signed with `secret`, at `now` (Unix seconds).
pub fn verify(token: &str, workspace: Uuid, secret: &[u8], now: i64) -> Result<(), Refusal> {
    let mut validation = Validation::new(ALGORITHM);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[workspace.to_string()]);
    validation.set_required_spec_claims(&REQUIRED_CLAIMS);
    validation.validate_nbf = true;
    validation.leeway = LEEWAY_SECONDS;
    let claims = jsonwebtoken::decode::<Checked>(token, &DecodingKey::from_secret(secret), &validation)
        .map_err(|_| Refusal::Invalid)?
        .claims;
    if claims.aud != serde_json::Value::String(workspace.to_string()) {
        return Err(Refusal::OtherAudience);
    }
    if !lifetime_is_acceptable(claims.iat, claims.exp, now) {
        return Err(Refusal::TooLong);
    }
    Ok(())
}

/// Whether a token issued at `iat` and expiring at `exp` lives at most 24 hours and was not
/// issued in the future (beyond the clock skew): such a token could outlive its 24 hours.
/// Any `i64` is a claim an attacker may send: the arithmetic cannot overflow.
fn lifetime_is_acceptable(iat: i64, exp: i64, now: i64) -> bool {
    let issued_in_future = i128::from(iat) > i128::from(now) + i128::from(LEEWAY_SECONDS);
    !issued_in_future && i128::from(exp) - i128::from(iat) <= i128::from(MAX_LIFETIME_SECONDS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a workspace secret of enough bytes";

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn forged(claims: serde_json::Value, kid: &str) -> String {
        let header = Header { kid: Some(kid.into()), ..Header::new(Algorithm::HS256) };
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    #[test]
    fn a_minted_token_names_its_workspace_and_secret_and_verifies_for_it_alone() {
        let (workspace, other) = (Uuid::now_v7(), Uuid::now_v7());
        let token = encode(&Claims::new(workspace, now(), now() + 600), 3, SECRET).unwrap();
        assert_eq!(unverified(&token), Some(Unverified { workspace, secret_version: 3 }));
        assert_eq!(verify(&token, workspace, SECRET, now()), Ok(()));
        assert_eq!(verify(&token, other, SECRET, now()), Err(Refusal::Invalid));
        assert_eq!(verify(&token, workspace, b"another secret", now()), Err(Refusal::Invalid));
    }

    #[test]
    fn minted_claims_read_back_with_the_wire_names() {
        let workspace = Uuid::now_v7();
        let claims = Claims::new(workspace, 1_800_000_000, 1_800_000_600);
        let token = encode(&claims, 1, SECRET).unwrap();
        let json: serde_json::Value = jsonwebtoken::dangerous::insecure_decode_claims(&token).unwrap();
        let id = workspace.to_string();
        assert_eq!((json["sub"].as_str(), json["aud"].as_str()), (Some(id.as_str()), Some(id.as_str())));
        assert_eq!(json["iss"], "admin-api");
        assert_eq!(
            (json["iat"].as_i64(), json["nbf"].as_i64(), json["exp"].as_i64()),
            (Some(1_800_000_000), Some(1_800_000_000), Some(1_800_000_600))
        );
        assert_eq!(serde_json::from_value::<Claims>(json).unwrap(), claims);
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!((header.alg, header.kid.as_deref()), (Algorithm::HS256, Some("1")));
    }

    #[test]
    fn a_token_with_an_audience_list_or_a_long_life_is_refused() {
        let ws = Uuid::now_v7().to_string();
        let other = Uuid::now_v7().to_string();
        let workspace = ws.parse().unwrap();
        let list = serde_json::json!({"sub": ws, "aud": [ws, other], "iss": ISSUER, "iat": now(), "nbf": now(), "exp": now() + 600});
        assert_eq!(verify(&forged(list, "1"), workspace, SECRET, now()), Err(Refusal::OtherAudience));
        let long = serde_json::json!({"sub": ws, "aud": ws, "iss": ISSUER, "iat": now(), "nbf": now(), "exp": now() + MAX_LIFETIME_SECONDS + 1});
        assert_eq!(verify(&forged(long, "1"), workspace, SECRET, now()), Err(Refusal::TooLong));
        let issuer = serde_json::json!({"sub": ws, "aud": ws, "iss": "elsewhere", "iat": now(), "nbf": now(), "exp": now() + 600});
        assert_eq!(verify(&forged(issuer, "1"), workspace, SECRET, now()), Err(Refusal::Invalid));
    }

    #[test]
    fn a_malformed_token_names_nothing() {
        let ws = Uuid::now_v7().to_string();
        let claims =
            serde_json::json!({"sub": ws, "aud": ws, "iss": ISSUER, "iat": now(), "nbf": now(), "exp": now() + 600});
        assert_eq!(unverified(&forged(claims, "one")), None, "a kid that is not a version");
        assert_eq!(unverified(&forged(serde_json::json!({"sub": "x"}), "1")), None, "a sub that is not a workspace");
        assert_eq!(unverified("not a token"), None);
    }

    #[test]
    fn token_lifetimes_at_the_extremes_are_refused_without_overflow() {
        let now = 1_800_000_000;
        assert!(lifetime_is_acceptable(now, now + 600, now));
        assert!(lifetime_is_acceptable(now, now + MAX_LIFETIME_SECONDS, now));
        assert!(!lifetime_is_acceptable(now, now + MAX_LIFETIME_SECONDS + 1, now));
        assert!(!lifetime_is_acceptable(i64::MIN, now + 3600, now));
        assert!(!lifetime_is_acceptable(i64::MIN, i64::MAX, now));
        assert!(!lifetime_is_acceptable(i64::MAX, i64::MAX, now), "issued in the future");
        assert!(!lifetime_is_acceptable(now + 2 * 86_400, now + 2 * 86_400 + 600, now));
    }
}
