//! Validated values: a command holds only values that passed these checks.

use super::DomainError;

/// A display name: trimmed, 1 to `max` characters, no control characters.
pub fn name(field: &'static str, text: &str, max: usize) -> Result<String, DomainError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(DomainError::invalid(field, "required", format!("{field} must not be blank")));
    }
    if trimmed.chars().count() > max {
        return Err(DomainError::invalid(field, "max_length", format!("{field} is longer than {max} characters")));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(DomainError::invalid(field, "format", format!("{field} must not contain control characters")));
    }
    Ok(trimmed.to_owned())
}

/// An email address: one `@`, a dotted domain, no spaces; at most 254 characters.
pub fn email(field: &'static str, text: &str) -> Result<String, DomainError> {
    let text = text.trim();
    let invalid = || DomainError::invalid(field, "email", format!("{field} is not a valid email address"));
    if text.len() > 254 || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid());
    }
    let (local, domain) = text.split_once('@').ok_or_else(invalid)?;
    // A dot-atom on both sides (RFC 5322): what a mail server takes as a recipient. No
    // quoted local parts, comments, angle brackets or address literals.
    let atom = |part: &str, specials: &str| {
        !part.is_empty()
            && !part.starts_with('.')
            && !part.ends_with('.')
            && !part.contains("..")
            && part.chars().all(|c| c.is_alphanumeric() || c == '.' || specials.contains(c))
    };
    let labels_ok = domain.split('.').all(|label| !label.starts_with('-') && !label.ends_with('-'));
    if local.len() > 64
        || !atom(local, "!#$%&'*+/=?^_`{|}~-")
        || !atom(domain, "-")
        || !domain.contains('.')
        || !labels_ok
    {
        return Err(invalid());
    }
    Ok(format!("{local}@{}", domain.to_ascii_lowercase()))
}

/// A short machine token such as a plan name: `[a-z0-9_-]`, 1 to 50 characters.
pub fn token(field: &'static str, text: &str) -> Result<String, DomainError> {
    let ok = !text.is_empty()
        && text.len() <= 50
        && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(text.to_owned())
    } else {
        Err(DomainError::invalid(field, "format", format!("{field} must match [a-z0-9_-]{{1,50}}")))
    }
}

/// An instance's id: a [`token`] other than `hub`, the subject segment of the events no
/// instance may receive (`hub.events.hub.>` carries every organization, user and key event).
pub fn instance_id(field: &'static str, text: &str) -> Result<String, DomainError> {
    let id = token(field, text)?;
    if id == crate::relayed::HUB_SEGMENT {
        return Err(DomainError::invalid(
            field,
            "reserved",
            format!("`{id}` is reserved: name the instance otherwise"),
        ));
    }
    Ok(id)
}

/// An absolute `http` or `https` URL with a host, at most 2048 characters.
pub fn webhook_uri(text: &str) -> Result<String, DomainError> {
    let invalid =
        || DomainError::invalid("webhook_uris", "url", format!("`{}` is not an absolute http(s) URL", truncate(text)));
    if text.len() > MAX_WEBHOOK_URI_BYTES || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid());
    }
    let rest = text.strip_prefix("https://").or_else(|| text.strip_prefix("http://")).ok_or_else(invalid)?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host.strip_prefix('[') {
        // A bracketed host is an IPv6 address: anything else there is no URL at all.
        Some(bracketed) => {
            let address = bracketed.split(']').next().unwrap_or_default();
            address.parse::<std::net::Ipv6Addr>().map_err(|_| invalid())?;
            host
        }
        None => host.split(':').next().unwrap_or_default(),
    };
    if host.is_empty() {
        return Err(invalid());
    }
    Ok(text.to_owned())
}

fn truncate(text: &str) -> String {
    text.chars().take(80).collect()
}

/// The longest display name of an organization, user or admin key.
pub const MAX_NAME_CHARS: usize = 200;

/// What [`char::is_whitespace`] (and so `trim`) takes as white space, as a regex class body.
const WHITE_SPACE: &str = r"\t-\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";
/// What [`char::is_control`] refuses, as a regex class body.
pub const CONTROL: &str = r"\x00-\x1F\x7F-\x9F";

/// The strings [`name`] accepts with this `max`, as an ECMA-262 (and Python) regex: white
/// space around a trimmed core of 1 to `max` characters, none of them control characters,
/// whose first and last are not white space.
pub fn name_pattern(max: usize) -> String {
    let (ws, cc) = (WHITE_SPACE, CONTROL);
    format!("^[{ws}]*[^{ws}{cc}](?:[^{cc}]{{0,{}}}[^{ws}{cc}])?[{ws}]*$", max.saturating_sub(2))
}

/// Strings [`email`] accepts (a subset: printable ASCII, at most two dots in the domain, so
/// that every string it matches is within the validator's byte limits).
pub const EMAIL_PATTERN: &str = r"^[!-?A-~]{1,64}@[!-\-/-?A-~]{1,60}(?:\.[!-\-/-?A-~]{1,60}){1,2}$";

/// The strings [`token`] accepts.
pub const TOKEN_PATTERN: &str = "^[a-z0-9_-]{1,50}$";

/// URLs [`webhook_uri`] accepts (a subset: printable ASCII, a host name, no user info).
pub const WEBHOOK_URI_PATTERN: &str = r"^https?://[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*(?::[0-9]{1,5})?(?:[/?#][!-~]*)?$";
/// The longest webhook URI.
pub const MAX_WEBHOOK_URI_BYTES: usize = 2048;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_may_not_take_the_name_of_the_events_for_no_instance() {
        assert_eq!(instance_id("instance_id", "alpha").unwrap(), "alpha");
        assert!(matches!(instance_id("instance_id", "hub"), Err(DomainError::Invalid { constraint: "reserved", .. })));
        assert!(instance_id("instance_id", "Alpha").is_err());
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(name("name", "  Acme  ", 10).unwrap(), "Acme");
        assert!(name("name", "   ", 10).is_err());
        assert!(name("name", "elevenchars", 10).is_err());
        assert!(name("name", "tab\there", 10).is_err());
    }

    #[test]
    fn emails_need_a_local_part_and_a_dotted_domain() {
        assert_eq!(email("email", "Ops@Example.TEST").unwrap(), "Ops@example.test");
        for bad in ["", "nobody", "a@b", "@x.io", "a@@x.io", "a b@x.io", "a@.x.io", "a@x..io"] {
            assert!(email("email", bad).is_err(), "{bad}");
        }
        // What a mail server would refuse as a recipient is refused here, not in the outbox.
        for bad in ["x@evil.test>", "x@[127.0.0.1]", "\"x\"@evil.test", "<x@evil.test", "x(c)@evil.test", "x@-a.test"] {
            assert!(email("email", bad).is_err(), "{bad}");
        }
        for good in ["o'brien+tag@mail.example.org", "a.b-c_d@sub-1.example.co", "jos\u{e9}@example.test"] {
            assert!(email("email", good).is_ok(), "{good}");
        }
    }

    #[test]
    fn webhook_uris_are_absolute_http_urls() {
        assert!(webhook_uri("https://hooks.example.test/in?x=1").is_ok());
        assert!(webhook_uri("http://127.0.0.1:9000/hook").is_ok());
        assert!(webhook_uri("https://[::1]:8443/hook").is_ok());
        for bad in
            ["ftp://x.io", "https://", "/relative", "https:// spaced.io", "javascript:alert(1)", "https://[:.]/x"]
        {
            assert!(webhook_uri(bad).is_err(), "{bad}");
        }
    }
}
