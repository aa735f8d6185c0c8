//! Per-key rate limits: a window of one minute opened by a key's first request, counted
//! in this process's memory, announced in the IETF `RateLimit` headers. The same windows,
//! keyed by client address (an IPv6 client by its /64), throttle failed authentications.

use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderValue};
use shared::rate_limit::{WINDOW, Windows, client};

pub use shared::rate_limit::Decision;

#[derive(Default)]
pub struct RateLimiter {
    requests: Windows,
    failed_authentications: Windows,
}

impl RateLimiter {
    /// Counts a request of `subject` against its limit.
    pub fn check(&self, subject: &str, limit: u32) -> Decision {
        let decision = self.requests.check(subject, limit);
        if !decision.allowed {
            shared::metrics::rate_limited(shared::metrics::Limit::Requests);
        }
        decision
    }

    /// Whether `ip` may still try credentials: refused once `limit` failures were counted
    /// in its window.
    pub fn may_authenticate(&self, ip: Option<IpAddr>, limit: u32) -> Decision {
        let decision = self.failed_authentications.peek(&client(ip), limit);
        if !decision.allowed {
            shared::metrics::rate_limited(shared::metrics::Limit::FailedAuthentications);
        }
        decision
    }

    /// Counts a failed authentication from `ip`.
    pub fn authentication_failed(&self, ip: Option<IpAddr>) {
        shared::metrics::authentication_failed();
        self.failed_authentications.record(&client(ip));
    }
}

/// Writes the IETF `RateLimit-Policy` and `RateLimit` headers of a decision.
pub fn write_headers(decision: &Decision, headers: &mut HeaderMap) {
    let policy = format!("\"default\";q={};w={}", decision.limit, WINDOW.as_secs());
    let state = format!("\"default\";r={};t={}", decision.remaining, decision.reset_seconds);
    if let (Ok(policy), Ok(state)) = (HeaderValue::from_str(&policy), HeaderValue::from_str(&state)) {
        headers.insert("ratelimit-policy", policy);
        headers.insert("ratelimit", state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_authentications_are_counted_per_address_apart_from_requests() {
        let limiter = RateLimiter::default();
        let ip: Option<IpAddr> = Some([10, 0, 0, 1].into());
        limiter.authentication_failed(ip);
        assert!(limiter.may_authenticate(ip, 2).allowed);
        limiter.authentication_failed(ip);
        assert!(!limiter.may_authenticate(ip, 2).allowed);
        assert!(limiter.may_authenticate(Some([10, 0, 0, 2].into()), 2).allowed);
        assert!(limiter.check("10.0.0.1", 1).allowed, "request windows are separate");
    }
}
