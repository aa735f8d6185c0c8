//! Keyset pagination that any list adopts by declaring its sort key.
//!
//! A list orders its rows by one sort expression with the row's id as tiebreak, both in
//! the same direction ([`Keyset`]); the page after a row is then the rows past
//! `(sort value, id)`, which an index on `(…, sort expression, id)` finds at the cost of
//! the first page however deep the walk is, and which stays exact while rows are inserted
//! or deleted elsewhere in the order (no row moves between pages the way it does under
//! `OFFSET`).
//!
//! The cursor handed out (`pagination.next_cursor`) carries the last row's sort value and
//! id, the number of the page it leads to and a digest of what the list was asked for:
//! the path, the filters, the sort and the principal's organization (and workspace
//! restriction). It is signed with a key derived from the master key, so a cursor that was
//! altered, or issued for other filters, another sort or another organization, is refused
//! with a 422 problem before any query runs, and a position can only ever come from a page
//! the same principal's organization was shown.
//!
//! Page numbers keep working, but only over the first [`MAX_DEPTH`] items: deeper pages
//! are refused with 422 `page_too_deep`, whose detail names the cursor (an `OFFSET` that
//! deep reads and throws away every row before the page).

use axum::http::Uri;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shared::keys::{KeyHasher, constant_time_eq};
use uuid::Uuid;

use super::auth::Principal;
use super::error::ApiError;
use super::pagination::{Page, Paging, SortOrder};
use super::sql::Filter;
use crate::secrets::MasterKey;

/// Page numbers reach this many items at most (`page × page_size`); a cursor goes further.
pub const MAX_DEPTH: u64 = 10_000;
/// A longer `cursor` is not one the hub issued.
const MAX_CURSOR_LEN: usize = 2_048;
/// The column every list query adds for the sort value of each row.
pub const CURSOR_KEY: &str = "cursor_key";

/// The type of a list's sort value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKind {
    Text,
    Time,
    /// A unique integer (the log's position): the id adds nothing to its order, and the
    /// place after a cursor is the sort value alone, which an index on it finds directly.
    UniqueInteger,
}

/// How a list is ordered: `sort` (an expression its indexes cover), then `id`.
#[derive(Debug, Clone, Copy)]
pub struct Keyset {
    pub sort: &'static str,
    pub kind: SortKind,
    pub id: &'static str,
    pub order: SortOrder,
}

/// A row's place in a list's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyValue {
    Text(String),
    Time(DateTime<Utc>),
    Integer(i64),
}

/// What a cursor says (signed, then encoded).
#[derive(Debug, Serialize, Deserialize)]
struct Position {
    /// The number of the page the cursor leads to.
    page: u32,
    key: KeyValue,
    id: Uuid,
    /// Hex digest of the request the cursor was issued for.
    bound: String,
}

/// One list request: its paging, its order and where it starts.
#[derive(Debug)]
pub struct Listing {
    paging: Paging,
    keyset: Keyset,
    after: Option<(KeyValue, Uuid)>,
    bound: String,
    key: Vec<u8>,
}

impl Listing {
    /// Validates `page`/`page_size`/`cursor` of a request for `uri` ordered by `keyset`.
    pub fn new(
        master: &MasterKey,
        principal: &Principal,
        uri: &Uri,
        page: Option<u32>,
        page_size: Option<u32>,
        cursor: Option<&str>,
        keyset: Keyset,
    ) -> Result<Self, ApiError> {
        let key = KeyHasher::new(master.expose_secret()).hash("admin-api/list-cursor/v1");
        let bound = binding(principal, uri, keyset);
        let Some(cursor) = cursor else {
            let paging = Paging::new(page, page_size)?;
            if u64::from(paging.page) * u64::from(paging.page_size) > MAX_DEPTH {
                return Err(ApiError::Unprocessable {
                    code: "page_too_deep",
                    detail: format!(
                        "page numbers reach the first {MAX_DEPTH} items only; to go further, follow \
                         `pagination.next_cursor`: repeat the request with `cursor=<next_cursor>` instead of `page`"
                    ),
                });
            }
            return Ok(Self { paging, keyset, after: None, bound, key });
        };
        if page.is_some() {
            return Err(ApiError::invalid("page", "exclusive", "give either page or cursor, not both"));
        }
        let position = open(&key, cursor).ok_or_else(|| ApiError::Unprocessable {
            code: "invalid_cursor",
            detail: "the cursor is not one this list handed out; start again from the first page".into(),
        })?;
        if !constant_time_eq(position.bound.as_bytes(), bound.as_bytes()) {
            return Err(ApiError::Unprocessable {
                code: "cursor_mismatch",
                detail: "the cursor was handed out for other filters, another sort or another organization; \
                         repeat the request it came from with the same filters and sort"
                    .into(),
            });
        }
        let kind_matches = matches!(
            (&position.key, keyset.kind),
            (KeyValue::Text(_), SortKind::Text)
                | (KeyValue::Time(_), SortKind::Time)
                | (KeyValue::Integer(_), SortKind::UniqueInteger)
        );
        if !kind_matches {
            return Err(ApiError::Unprocessable {
                code: "cursor_mismatch",
                detail: "the cursor was handed out for another sort".into(),
            });
        }
        // A walk by cursor has no depth limit: its page number only counts the pages.
        let paging = Paging { page: position.page.max(1), ..Paging::new(None, page_size)? };
        Ok(Self { paging, keyset, after: Some((position.key, position.id)), bound, key })
    }

    /// A listing for a page given directly (the plan checks of every list query).
    pub(crate) fn at(keyset: Keyset, paging: Paging, after: Option<(KeyValue, Uuid)>) -> Self {
        Self { paging, keyset, after, bound: String::new(), key: Vec::new() }
    }

    pub fn paging(&self) -> Paging {
        self.paging
    }

    /// The list query: `select` (`SELECT <columns> FROM …`) with the sort value added as
    /// [`CURSOR_KEY`], `filter`'s clauses, the place after the cursor, the order, the limit
    /// (one more row than the page, to learn whether another follows) and, for page
    /// numbers without a cursor, the offset.
    pub fn sql(&self, select: &str, filter: &mut Filter) -> String {
        let Keyset { sort, id, order, .. } = self.keyset;
        let columns = select.strip_prefix("SELECT ").unwrap_or(select);
        let past = match order {
            SortOrder::Asc => ">",
            SortOrder::Desc => "<",
        };
        match &self.after {
            Some((KeyValue::Text(value), after)) => {
                let (value, after) =
                    (filter.placeholder(Box::new(value.clone())), filter.placeholder(Box::new(*after)));
                filter.clause(&format!("({sort}, {id}) {past} ({value}::text, {after}::uuid)"));
            }
            Some((KeyValue::Time(value), after)) => {
                let (value, after) = (filter.placeholder(Box::new(*value)), filter.placeholder(Box::new(*after)));
                filter.clause(&format!("({sort}, {id}) {past} ({value}::timestamptz, {after}::uuid)"));
            }
            Some((KeyValue::Integer(value), _)) => {
                let value = filter.placeholder(Box::new(*value));
                filter.clause(&format!("{sort} {past} {value}::bigint"));
            }
            None => {}
        }
        let (limit, offset) = self.paging.limit_offset();
        let limit = filter.placeholder(Box::new(limit));
        let offset = if self.after.is_some() || offset == 0 {
            String::new()
        } else {
            format!(" OFFSET {}", filter.placeholder(Box::new(offset)))
        };
        let order = order.sql();
        let tiebreak = match self.keyset.kind {
            SortKind::UniqueInteger => String::new(),
            SortKind::Text | SortKind::Time => format!(", {id} {order}"),
        };
        format!(
            "SELECT {sort} AS {CURSOR_KEY}, {columns} {} ORDER BY {sort} {order}{tiebreak} LIMIT {limit}{offset}",
            filter.where_sql()
        )
    }

    /// The page of `rows` (up to one more than the page), with `next_cursor` and links.
    pub fn page<T>(
        &self,
        rows: &[tokio_postgres::Row],
        id_column: &str,
        view: impl Fn(&tokio_postgres::Row) -> Result<T, tokio_postgres::Error>,
        uri: &Uri,
    ) -> Result<Page<T>, ApiError> {
        let size = self.paging.page_size as usize;
        let next_cursor = match rows.get(size.saturating_sub(1)) {
            Some(last) if rows.len() > size => {
                let key = match self.keyset.kind {
                    SortKind::Text => KeyValue::Text(last.try_get(CURSOR_KEY)?),
                    SortKind::Time => KeyValue::Time(last.try_get(CURSOR_KEY)?),
                    SortKind::UniqueInteger => KeyValue::Integer(last.try_get(CURSOR_KEY)?),
                };
                let position = Position {
                    page: self.paging.page.saturating_add(1),
                    key,
                    id: last.try_get(id_column)?,
                    bound: self.bound.clone(),
                };
                Some(seal(&self.key, &position))
            }
            _ => None,
        };
        let items = rows.iter().take(size).map(view).collect::<Result<Vec<_>, _>>()?;
        Ok(Page::build(items, self.paging, uri, self.after.is_some(), next_cursor))
    }
}

/// Whether page `page` of `page_size` items may be asked for by number.
pub fn within_depth(page: u32, page_size: u32) -> bool {
    u64::from(page) * u64::from(page_size) <= MAX_DEPTH
}

/// The digest a cursor is bound to: path, filters (every query parameter but the paging
/// ones and the sort, which enters as the expression it resolved to), sort and principal.
fn binding(principal: &Principal, uri: &Uri, keyset: Keyset) -> String {
    let mut filters: Vec<(String, String)> = form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .filter(|(name, _)| !matches!(name.as_ref(), "page" | "page_size" | "cursor" | "sort_by" | "sort_order"))
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    filters.sort();
    let mut digest = Sha256::new();
    let mut field = |text: &str| {
        digest.update((text.len() as u64).to_be_bytes());
        digest.update(text.as_bytes());
    };
    field(uri.path());
    // An app belongs to no organization: its cursors are its own.
    let owner = match principal {
        Principal::App(_) => principal.subject(),
        _ => principal.organization_id().map_or_else(|| "operator".to_owned(), |org| org.to_string()),
    };
    field(&owner);
    let mut roots: Vec<String> = principal.workspace_roots().unwrap_or_default().iter().map(Uuid::to_string).collect();
    roots.sort();
    field(&roots.join(","));
    field(keyset.sort);
    field(keyset.order.sql());
    for (name, value) in &filters {
        field(name);
        field(value);
    }
    hex::encode(&digest.finalize()[..16])
}

fn seal(key: &[u8], position: &Position) -> String {
    let body = serde_json::to_vec(position).unwrap_or_default();
    let tag = KeyHasher::new(key).hash(&URL_SAFE_NO_PAD.encode(&body));
    format!("{}.{}", URL_SAFE_NO_PAD.encode(&body), URL_SAFE_NO_PAD.encode(tag))
}

/// The position of a cursor this hub sealed, or `None` for anything else.
fn open(key: &[u8], cursor: &str) -> Option<Position> {
    if cursor.len() > MAX_CURSOR_LEN {
        return None;
    }
    let (body, tag) = cursor.split_once('.')?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    if !KeyHasher::new(key).matches(body, &tag) {
        return None;
    }
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master() -> MasterKey {
        MasterKey::new(Box::new([7; 32]))
    }

    const KEYSET: Keyset = Keyset { sort: "w.created_at", kind: SortKind::Time, id: "w.id", order: SortOrder::Asc };

    #[test]
    fn a_cursor_opens_only_unaltered_and_for_the_request_it_was_issued_for() {
        let uri: Uri = "/v1/workspaces?status=active&page_size=2".parse().unwrap();
        let listing = Listing::new(&master(), &Principal::Operator, &uri, None, Some(2), None, KEYSET).unwrap();
        let position =
            Position { page: 2, key: KeyValue::Time(Utc::now()), id: Uuid::nil(), bound: listing.bound.clone() };
        let cursor = seal(&listing.key, &position);
        let next = Listing::new(&master(), &Principal::Operator, &uri, None, Some(2), Some(&cursor), KEYSET).unwrap();
        assert_eq!(next.paging().page, 2);

        let mut altered = cursor.clone().into_bytes();
        altered[3] ^= 1;
        let altered = String::from_utf8(altered).unwrap();
        let refused = Listing::new(&master(), &Principal::Operator, &uri, None, None, Some(&altered), KEYSET);
        assert!(matches!(refused, Err(ApiError::Unprocessable { code: "invalid_cursor", .. })));

        let other: Uri = "/v1/workspaces?status=archived".parse().unwrap();
        let refused = Listing::new(&master(), &Principal::Operator, &other, None, None, Some(&cursor), KEYSET);
        assert!(matches!(refused, Err(ApiError::Unprocessable { code: "cursor_mismatch", .. })));
    }

    #[test]
    fn a_walk_by_cursor_goes_past_every_page_number() {
        let uri: Uri = "/v1/workspaces?page_size=1".parse().unwrap();
        let listing = Listing::new(&master(), &Principal::Operator, &uri, None, Some(1), None, KEYSET).unwrap();
        let position = Position {
            page: 2_000_000,
            key: KeyValue::Time(Utc::now()),
            id: Uuid::nil(),
            bound: listing.bound.clone(),
        };
        let cursor = seal(&listing.key, &position);
        let next = Listing::new(&master(), &Principal::Operator, &uri, None, Some(1), Some(&cursor), KEYSET).unwrap();
        assert_eq!(next.paging().page, 2_000_000);
    }

    #[test]
    fn page_numbers_stop_at_the_depth_limit() {
        let uri: Uri = "/v1/workspaces".parse().unwrap();
        assert!(Listing::new(&master(), &Principal::Operator, &uri, Some(100), Some(100), None, KEYSET).is_ok());
        let deep = Listing::new(&master(), &Principal::Operator, &uri, Some(101), Some(100), None, KEYSET);
        assert!(matches!(deep, Err(ApiError::Unprocessable { code: "page_too_deep", .. })));
    }
}
