//! Per-key rate limits: a window of one minute opened by a key's first request, counted
//! in this process's memory, announced in the IETF `RateLimit` headers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue};

const WINDOW: Duration = Duration::from_secs(60);
/// Windows kept before stale ones are swept.
const SWEEP_ABOVE: usize = 10_000;

#[derive(Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<String, Window>>,
}

struct Window {
    opened: Instant,
    count: u32,
}

pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    pub reset_seconds: u64,
}

impl RateLimiter {
    pub fn check(&self, subject: &str, limit: u32) -> Decision {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if windows.len() > SWEEP_ABOVE {
            windows.retain(|_, w| now.duration_since(w.opened) < WINDOW);
        }
        let window = windows.entry(subject.to_owned()).or_insert(Window { opened: now, count: 0 });
        if now.duration_since(window.opened) >= WINDOW {
            *window = Window { opened: now, count: 0 };
        }
        let allowed = window.count < limit;
        if allowed {
            window.count += 1;
        }
        let reset = WINDOW.saturating_sub(now.duration_since(window.opened));
        Decision {
            allowed,
            limit,
            remaining: limit.saturating_sub(window.count),
            reset_seconds: reset.as_secs() + u64::from(reset.subsec_nanos() > 0),
        }
    }
}

impl Decision {
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let policy = format!("\"default\";q={};w={}", self.limit, WINDOW.as_secs());
        let state = format!("\"default\";r={};t={}", self.remaining, self.reset_seconds);
        if let (Ok(policy), Ok(state)) = (HeaderValue::from_str(&policy), HeaderValue::from_str(&state)) {
            headers.insert("ratelimit-policy", policy);
            headers.insert("ratelimit", state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_past_the_limit_is_refused_and_others_are_unaffected() {
        let limiter = RateLimiter::default();
        for i in 0..3 {
            let decision = limiter.check("a", 3);
            assert!(decision.allowed);
            assert_eq!(decision.remaining, 2 - i);
        }
        let refused = limiter.check("a", 3);
        assert!(!refused.allowed);
        assert!(refused.reset_seconds >= 1 && refused.reset_seconds <= 60);
        assert!(limiter.check("b", 3).allowed);
    }
}
