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

    /// Keeps the rows whose `column` contains `text`, ignoring case (`ILIKE '%text%'`).
    ///
    /// The trigram index is asked only for the pattern's words of three or more letters
    /// or digits, each as `ILIKE '%word%'`: those give trigrams of the text itself. The
    /// trigrams padded at a word's boundary (`  a`, ` ab`, `ab `), which a pattern with
    /// punctuation or spaces adds, are shared by every name that starts or ends a word
    /// the same way, so their posting lists span much of the table and the index would
    /// decode them all to intersect them. The whole text is then checked on the few rows
    /// the words leave (`strpos` on the lowered texts, which no index serves). A text that
    /// is one word, or has no word of three characters, goes to the index as it is.
    pub fn contains(&mut self, column: &str, text: &str) -> &mut Self {
        let words: Vec<&str> =
            text.split(|c: char| !c.is_alphanumeric()).filter(|word| word.chars().count() >= 3).collect();
        if words.is_empty() || words == [text] {
            return self.bind(&format!("{column} ILIKE $?"), Box::new(contains_pattern(text)));
        }
        for word in words {
            self.bind(&format!("{column} ILIKE $?"), Box::new(contains_pattern(word)));
        }
        self.bind(&format!("strpos(lower({column}), lower($?)) > 0"), Box::new(text.to_owned()))
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
fn contains_pattern(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{escaped}%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_substring_filter_asks_the_index_for_its_words_and_checks_the_whole_text_apart() {
        let mut filter = Filter::default();
        filter.contains("w.name", "s-00042");
        assert_eq!(filter.where_sql(), "WHERE w.name ILIKE $1 AND strpos(lower(w.name), lower($2)) > 0");
        assert_eq!(format!("{:?}", filter.params()), r#"["%00042%", "s-00042"]"#);

        let mut filter = Filter::default();
        filter.contains("k.name", "Acme Corp_EU");
        assert_eq!(
            filter.where_sql(),
            "WHERE k.name ILIKE $1 AND k.name ILIKE $2 AND strpos(lower(k.name), lower($3)) > 0"
        );
        assert_eq!(format!("{:?}", filter.params()), r#"["%Acme%", "%Corp%", "Acme Corp_EU"]"#);

        for (text, pattern) in [("acme", "%acme%"), ("a-b", "%a-b%"), ("50%_x", "%50\\%\\_x%"), ("", "%%")] {
            let mut filter = Filter::default();
            filter.contains("w.name", text);
            assert_eq!(filter.where_sql(), "WHERE w.name ILIKE $1", "{text}");
            assert_eq!(format!("{:?}", filter.params()), format!("[{pattern:?}]"), "{text}");
        }
    }
}
