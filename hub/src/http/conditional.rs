//! `ETag: "<version>"` on single resources and `If-Match` on changes.

use axum::http::{HeaderMap, HeaderValue, header};

/// The version an `If-Match` header demands: `None` without the header (or with `*`).
/// A value that names no version can match nothing, so it demands an impossible one; so
/// does a weak tag, since `If-Match` compares strongly (RFC 9110, 13.1.1).
pub fn if_match(headers: &HeaderMap) -> Option<i64> {
    let value = headers.get(header::IF_MATCH)?.to_str().unwrap_or("\"-1\"").trim();
    if value == "*" {
        return None;
    }
    if value.starts_with("W/") {
        return Some(-1);
    }
    Some(value.trim_matches('"').parse::<i64>().unwrap_or(-1))
}

pub fn etag(version: i64) -> [(header::HeaderName, HeaderValue); 1] {
    [(header::ETAG, HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\"")))]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_reads_strong_and_wildcard_tags_and_matches_no_weak_one() {
        let mut headers = HeaderMap::new();
        assert_eq!(if_match(&headers), None);
        headers.insert(header::IF_MATCH, HeaderValue::from_static("\"3\""));
        assert_eq!(if_match(&headers), Some(3));
        headers.insert(header::IF_MATCH, HeaderValue::from_static("W/\"4\""));
        assert_eq!(if_match(&headers), Some(-1), "a weak tag never matches");
        headers.insert(header::IF_MATCH, HeaderValue::from_static("*"));
        assert_eq!(if_match(&headers), None);
        headers.insert(header::IF_MATCH, HeaderValue::from_static("garbage"));
        assert_eq!(if_match(&headers), Some(-1));
    }
}
