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
    /// A text with punctuation or spaces gives the trigram index, besides the trigrams of
    /// its words, the trigrams padded at each word's boundary (`  a`, ` ab`, `ab `), which
    /// every name that starts or ends a word the same way shares: their posting lists can
    /// span much of the table, and the index decodes them all to intersect them. So when
    /// the text's words of three or more letters or digits give at least three trigrams of
    /// their own, the index is asked only for those words (each as `ILIKE '%word%'`) and
    /// the whole text is checked on the rows they leave (`strpos` on the lowered texts,
    /// which no index serves). Otherwise (one word, or words too short to narrow the
    /// search) the text goes to the index as it is.
    pub fn contains(&mut self, column: &str, text: &str) -> &mut Self {
        let words: Vec<&str> =
            text.split(|c: char| !c.is_alphanumeric()).filter(|word| word.chars().count() >= 3).collect();
        let trigrams: usize = words.iter().map(|word| word.chars().count() - 2).sum();
        if trigrams < 3 || words == [text] {
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

        let whole = [("acme", "%acme%"), ("a-b", "%a-b%"), ("50%_x", "%50\\%\\_x%"), ("", "%%"), ("key-1", "%key-1%")];
        for (text, pattern) in whole {
            let mut filter = Filter::default();
            filter.contains("w.name", text);
            assert_eq!(filter.where_sql(), "WHERE w.name ILIKE $1", "{text}");
            assert_eq!(format!("{:?}", filter.params()), format!("[{pattern:?}]"), "{text}");
        }
    }
}
