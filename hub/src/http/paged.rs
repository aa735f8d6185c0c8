//! What every list and count handler does once its statement is built: read the paging a
//! query string asks for, run the statement, render the page or the count.

use axum::Json;
use axum::http::Uri;
use deadpool_postgres::Pool;
use tokio_postgres::Row;

use super::auth::Principal;
use super::cursor::{Keyset, Listing};
use super::error::ApiError;
use super::pagination::{Count, Page, Paging};
use super::sql::Filter;
use crate::secrets::MasterKey;

/// The paging fields of a list's query string: a page number or a cursor, and a page size.
pub trait Paged {
    fn page(&self) -> Option<u32>;
    fn page_size(&self) -> Option<u32>;
    fn cursor(&self) -> Option<&str>;
}

/// Implements [`Paged`] for query structs with `page`, `page_size` and `cursor` fields.
macro_rules! paged {
    ($($query:ty),+ $(,)?) => {$(
        impl $crate::http::paged::Paged for $query {
            fn page(&self) -> Option<u32> {
                self.page
            }
            fn page_size(&self) -> Option<u32> {
                self.page_size
            }
            fn cursor(&self) -> Option<&str> {
                self.cursor.as_deref()
            }
        }
    )+};
}
pub(crate) use paged;

impl Listing {
    /// The listing `query` asks for, ordered by `keyset` (see [`Listing::new`]).
    pub fn of(
        master: &MasterKey,
        principal: &Principal,
        uri: &Uri,
        query: &impl Paged,
        keyset: Keyset,
    ) -> Result<Self, ApiError> {
        Self::new(master, principal, uri, query.page(), query.page_size(), query.cursor(), keyset)
    }

    /// Runs the list's statement and renders its page, each row by `view`, the cursor
    /// taken from `id_column`.
    pub async fn fetch<T>(
        &self,
        pool: &Pool,
        (sql, filter): (String, Filter),
        id_column: &str,
        view: impl Fn(&Row) -> Result<T, tokio_postgres::Error>,
        uri: &Uri,
    ) -> Result<Json<Page<T>>, ApiError> {
        let client = pool.get().await?;
        let rows = client.query(&sql, &filter.params()).await?;
        Ok(Json(self.page(&rows, id_column, view, uri)?))
    }
}

/// Checks `query`'s paging like its list would (a count has no pages, but the same query
/// string must be valid for both), then runs the count statement `built` makes.
pub async fn count(
    pool: &Pool,
    query: &impl Paged,
    built: impl FnOnce() -> Result<(String, Filter), ApiError>,
) -> Result<Json<Count>, ApiError> {
    Paging::new(query.page(), query.page_size())?;
    let (sql, filter) = built()?;
    let client = pool.get().await?;
    let row = client.query_one(&sql, &filter.params()).await?;
    Ok(Json(Count { count: row.try_get("count")? }))
}
