//! List pages: `page`/`page_size` (or `cursor`, see [`super::cursor`]) in,
//! `items`/`pagination`/`links` out.

use axum::http::Uri;
use serde::{Deserialize, Serialize};

use super::error::ApiError;

pub const DEFAULT_PAGE_SIZE: u32 = 20;
pub const MAX_PAGE_SIZE: u32 = 100;
/// Pages past this would mean scanning millions of rows: filter instead.
pub const MAX_PAGE: u32 = 100_000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SortOrder {
    #[default]
    Asc,
    Desc,
}

impl SortOrder {
    pub fn sql(self) -> &'static str {
        match self {
            Self::Asc => "ASC",
            Self::Desc => "DESC",
        }
    }
}

/// Validated paging of a list request.
#[derive(Debug, Clone, Copy)]
pub struct Paging {
    pub page: u32,
    pub page_size: u32,
}

impl Paging {
    pub fn new(page: Option<u32>, page_size: Option<u32>) -> Result<Self, ApiError> {
        let page = page.unwrap_or(1);
        let page_size = page_size.unwrap_or(DEFAULT_PAGE_SIZE);
        if !(1..=MAX_PAGE).contains(&page) {
            return Err(ApiError::invalid("page", "range", format!("page must be between 1 and {MAX_PAGE}")));
        }
        if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
            return Err(ApiError::invalid(
                "page_size",
                "range",
                format!("page_size must be between 1 and {MAX_PAGE_SIZE}"),
            ));
        }
        Ok(Self { page, page_size })
    }

    /// `LIMIT` (one more than the page, to learn whether a next page exists) and `OFFSET`.
    pub fn limit_offset(self) -> (i64, i64) {
        (i64::from(self.page_size) + 1, i64::from(self.page - 1) * i64::from(self.page_size))
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PageInfo {
    pub page: u32,
    pub page_size: u32,
    /// Opaque; `?cursor=<next_cursor>` with the same filters and sort returns the next
    /// page at the cost of the first. Absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Link {
    pub rel: &'static str,
    pub href: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub pagination: PageInfo,
    pub links: Vec<Link>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Count {
    pub count: i64,
}

impl<T> Page<T> {
    /// Builds a page from up to `page_size + 1` rows; links keep every query parameter.
    pub fn new(mut rows: Vec<T>, paging: Paging, uri: &Uri) -> Self {
        let has_next = rows.len() > paging.page_size as usize;
        rows.truncate(paging.page_size as usize);
        let mut page = Self::build(rows, paging, uri, false, None);
        if has_next && page.links.iter().all(|l| l.rel != "next") {
            page.links.push(Link { rel: "next", href: href(uri, "page", &(paging.page + 1).to_string()) });
        }
        page
    }

    /// A page of `items` (at most `page_size`), reached by a cursor or by number; `next`
    /// goes by number while that stays within [`super::cursor::MAX_DEPTH`], else by
    /// `next_cursor`.
    pub fn build(items: Vec<T>, paging: Paging, uri: &Uri, by_cursor: bool, next_cursor: Option<String>) -> Self {
        let self_href = if by_cursor { current(uri) } else { href(uri, "page", &paging.page.to_string()) };
        let mut links = vec![Link { rel: "self", href: self_href }];
        if paging.page > 1 && super::cursor::within_depth(paging.page - 1, paging.page_size) {
            links.push(Link { rel: "previous", href: href(uri, "page", &(paging.page - 1).to_string()) });
        }
        if let Some(cursor) = &next_cursor {
            let next = if !by_cursor && super::cursor::within_depth(paging.page + 1, paging.page_size) {
                href(uri, "page", &(paging.page + 1).to_string())
            } else {
                href(uri, "cursor", cursor)
            };
            links.push(Link { rel: "next", href: next });
        }
        let pagination = PageInfo { page: paging.page, page_size: paging.page_size, next_cursor };
        Self { items, pagination, links }
    }
}

/// `uri` with its paging (`page`, `cursor`) replaced by `name=value`.
fn href(uri: &Uri, name: &str, value: &str) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (key, value) in form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
        if key != "page" && key != "cursor" {
            query.append_pair(&key, &value);
        }
    }
    query.append_pair(name, value);
    format!("{}?{}", uri.path(), query.finish())
}

fn current(uri: &Uri) -> String {
    uri.path_and_query().map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_keep_filters_and_appear_only_when_pages_exist() {
        let uri: Uri = "/v1/workspaces?name=a%20b&page=2&page_size=2".parse().unwrap();
        let page = Page::new(vec![1, 2, 3], Paging::new(Some(2), Some(2)).unwrap(), &uri);
        assert_eq!(page.items, [1, 2]);
        let rels: Vec<_> = page.links.iter().map(|l| (l.rel, l.href.as_str())).collect();
        assert_eq!(
            rels,
            [
                ("self", "/v1/workspaces?name=a+b&page_size=2&page=2"),
                ("previous", "/v1/workspaces?name=a+b&page_size=2&page=1"),
                ("next", "/v1/workspaces?name=a+b&page_size=2&page=3"),
            ]
        );
        let last = Page::new(vec![1], Paging::new(Some(1), Some(2)).unwrap(), &uri);
        assert_eq!(last.links.len(), 1);
    }

    #[test]
    fn page_size_is_bounded() {
        assert!(Paging::new(None, Some(101)).is_err());
        assert!(Paging::new(Some(0), None).is_err());
        assert_eq!(Paging::new(None, None).unwrap().page_size, 20);
    }
}
