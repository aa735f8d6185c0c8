//! Building list queries: fixed SQL fragments, values always as parameters.

use tokio_postgres::types::ToSql;

use super::error::ApiError;
use crate::projections::Param;

#[derive(Default)]
pub struct Filter {
    clauses: Vec<String>,
    params: Vec<Param>,
}

impl Filter {
    /// Adds a clause; each `$?` in it becomes the next parameter number, bound to `value`.
    pub fn bind(&mut self, clause: &str, value: Param) -> &mut Self {
        self.params.push(value);
        self.clauses.push(clause.replace("$?", &format!("${}", self.params.len())));
        self
    }

    pub fn clause(&mut self, clause: &str) -> &mut Self {
        self.clauses.push(clause.to_owned());
        self
    }

    /// Binds a value without a clause (e.g. for `LIMIT`); returns its placeholder.
    pub fn placeholder(&mut self, value: Param) -> String {
        self.params.push(value);
        format!("${}", self.params.len())
    }

    pub fn where_sql(&self) -> String {
        if self.clauses.is_empty() { String::new() } else { format!("WHERE {}", self.clauses.join(" AND ")) }
    }

    pub fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect()
    }
}

/// Checks a text filter from a query string: bounded and free of control characters.
pub fn text_filter<'a>(name: &str, text: &'a str, max: usize) -> Result<&'a str, ApiError> {
    if text.chars().count() > max {
        return Err(ApiError::invalid(name, "max_length", format!("{name} is longer than {max} characters")));
    }
    if text.chars().any(char::is_control) {
        return Err(ApiError::invalid(name, "format", format!("{name} must not contain control characters")));
    }
    Ok(text)
}

/// A `LIKE` pattern matching `text` anywhere, with `%`, `_` and `\` taken literally.
pub fn contains_pattern(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{escaped}%")
}
