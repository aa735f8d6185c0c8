//! Fixed one-minute windows counted per subject in this process's memory: the per-key
//! rate limits of the hub and the failed-authentication throttles of hub and instances.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const WINDOW: Duration = Duration::from_secs(60);
/// The problem `code` of a 429 for an address past its failed authentications, on hub and
/// instances alike (apart from a key's own `rate_limited`).
pub const TOO_MANY_FAILURES_CODE: &str = "too_many_failed_authentications";
/// The problem `detail` that goes with [`TOO_MANY_FAILURES_CODE`].
pub const TOO_MANY_FAILURES_DETAIL: &str = "too many failed authentications from this address; retry later";
/// The subject a client address is counted as: an IPv4 address on its own, an IPv6 address
/// by its /64 (one client holds a whole /64 and could otherwise rotate through it).
pub fn client(ip: Option<IpAddr>) -> String {
    match ip.map(|ip| ip.to_canonical()) {
        None => "unknown".to_owned(),
        Some(IpAddr::V4(ip)) => ip.to_string(),
        Some(IpAddr::V6(ip)) => {
            let prefix = u128::from(ip) & (u128::MAX << 64);
            format!("{}/64", Ipv6Addr::from(prefix))
        }
    }
}

/// Subjects tracked at most; past it, new subjects share one window (see [`Windows`]).
const MAX_SUBJECTS: usize = 100_000;
/// The subject every new subject is counted as while the map is full.
const OVERFLOW: &str = "overflow";

/// Windows per subject. Closed windows are swept at most once per [`WINDOW`], and at most
/// [`MAX_SUBJECTS`] are kept: while that many windows are open, a new subject is counted
/// in one shared window, so a flood of addresses costs bounded memory and cannot dodge
/// the count.
pub struct Windows {
    state: Mutex<State>,
}

struct State {
    windows: HashMap<String, Window>,
    swept: Instant,
}

impl Default for Windows {
    fn default() -> Self {
        Self { state: Mutex::new(State { windows: HashMap::new(), swept: Instant::now() }) }
    }
}

#[derive(Clone, Copy)]
struct Window {
    opened: Instant,
    count: u32,
}

/// A subject's window after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Whole seconds until the window closes (at least 1 while it is open).
    pub reset_seconds: u64,
}

impl Windows {
    /// Counts one event for `subject` when it is under `limit`; refuses it otherwise.
    pub fn check(&self, subject: &str, limit: u32) -> Decision {
        self.with_window(subject, limit, |window| {
            let allowed = window.count < limit;
            if allowed {
                window.count += 1;
            }
            allowed
        })
    }

    /// Whether `subject` is still under `limit`, counting nothing and storing nothing.
    pub fn peek(&self, subject: &str, limit: u32) -> Decision {
        let now = Instant::now();
        let state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let window = state
            .windows
            .get(subject)
            .or_else(|| state.windows.get(OVERFLOW).filter(|_| state.windows.len() >= MAX_SUBJECTS))
            .copied()
            .filter(|w| now.duration_since(w.opened) < WINDOW)
            .unwrap_or(Window { opened: now, count: 0 });
        decision(&window, window.count < limit, limit, now)
    }

    /// Counts one event for `subject`, whatever its limit.
    pub fn record(&self, subject: &str) {
        self.with_window(subject, u32::MAX, |window| {
            window.count = window.count.saturating_add(1);
            true
        });
    }

    fn with_window(&self, subject: &str, limit: u32, decide: impl FnOnce(&mut Window) -> bool) -> Decision {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if now.duration_since(state.swept) >= WINDOW {
            state.windows.retain(|_, w| now.duration_since(w.opened) < WINDOW);
            state.swept = now;
        }
        let subject = if state.windows.len() >= MAX_SUBJECTS && !state.windows.contains_key(subject) {
            OVERFLOW
        } else {
            subject
        };
        let window = state.windows.entry(subject.to_owned()).or_insert(Window { opened: now, count: 0 });
        if now.duration_since(window.opened) >= WINDOW {
            *window = Window { opened: now, count: 0 };
        }
        let allowed = decide(window);
        decision(window, allowed, limit, now)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).windows.len()
    }
}

fn decision(window: &Window, allowed: bool, limit: u32, now: Instant) -> Decision {
    let reset = WINDOW.saturating_sub(now.duration_since(window.opened));
    Decision {
        allowed,
        limit,
        remaining: limit.saturating_sub(window.count),
        reset_seconds: (reset.as_secs() + u64::from(reset.subsec_nanos() > 0)).max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_past_the_limit_is_refused_and_others_are_unaffected() {
        let windows = Windows::default();
        for i in 0..3 {
            let decision = windows.check("a", 3);
            assert!(decision.allowed);
            assert_eq!(decision.remaining, 2 - i);
        }
        let refused = windows.check("a", 3);
        assert!(!refused.allowed);
        assert!(refused.reset_seconds >= 1 && refused.reset_seconds <= 60);
        assert!(windows.check("b", 3).allowed);
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_and_ipv4_ones_alone() {
        let v6 = |s: &str| client(Some(s.parse().unwrap()));
        assert_eq!(v6("2001:db8:1:2:aaaa::1"), v6("2001:db8:1:2:bbbb::2"));
        assert_eq!(v6("2001:db8:1:2::1"), "2001:db8:1:2::/64");
        assert_ne!(v6("2001:db8:1:2::1"), v6("2001:db8:1:3::1"));
        assert_eq!(v6("10.0.0.1"), "10.0.0.1");
        assert_eq!(v6("::ffff:10.0.0.1"), "10.0.0.1");
        assert_ne!(v6("10.0.0.1"), v6("10.0.0.2"));
        assert_eq!(client(None), "unknown");
    }

    #[test]
    fn peeking_stores_nothing_and_the_map_is_bounded() {
        let windows = Windows::default();
        for i in 0..1000 {
            assert!(windows.peek(&format!("peeked {i}"), 1).allowed);
        }
        assert_eq!(windows.len(), 0, "peeking stored windows");
        for i in 0..MAX_SUBJECTS + 10 {
            windows.record(&format!("recorded {i}"));
        }
        assert_eq!(windows.len(), MAX_SUBJECTS + 1, "past the bound, new subjects share one window");
        // Those past the bound are counted together: they cannot dodge the count.
        assert!(!windows.peek("a newcomer", 10).allowed);
        assert!(windows.peek("recorded 0", 2).allowed);
    }

    #[test]
    fn recorded_events_close_the_window_that_peek_reports() {
        let windows = Windows::default();
        assert!(windows.peek("ip", 2).allowed);
        windows.record("ip");
        assert!(windows.peek("ip", 2).allowed, "peeking counts nothing");
        windows.record("ip");
        let closed = windows.peek("ip", 2);
        assert!(!closed.allowed);
        assert!(closed.reset_seconds >= 1);
        assert!(windows.peek("other", 2).allowed);
    }
}
