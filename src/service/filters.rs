//! EC2 filters: `Filter.N.Name` / `Filter.N.Value.M`.
//!
//! Filters combine with AND, the values of one filter with OR. Values may use `*` (any run of
//! characters) and `?` (one character). Each describe action declares which filter names it
//! knows; `tag:<key>` is accepted wherever tags are.

use super::model::AccountTags;
use crate::error::{Error, Result};
use wildmatch::WildMatch;

/// A filter as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFilter {
    /// Filter name (`name`, `tag:Env`, ...).
    pub name: String,
    /// Values, possibly with wildcards.
    pub values: Vec<String>,
}

/// One compiled filter.
#[derive(Debug)]
pub struct Filter {
    /// Filter name.
    pub name: String,
    patterns: Vec<WildMatch>,
}

impl Filter {
    /// True if any of the resource's values for this filter matches any pattern.
    pub fn matches_any<S: AsRef<str>>(&self, values: &[S]) -> bool {
        values
            .iter()
            .any(|v| self.patterns.iter().any(|p| p.matches(v.as_ref())))
    }

    /// The tag key of a `tag:<key>` filter.
    pub fn tag_key(&self) -> Option<&str> {
        self.name.strip_prefix("tag:")
    }
}

/// A compiled filter list.
#[derive(Debug, Default)]
pub struct Filters(Vec<Filter>);

impl Filters {
    /// Compiles filters, rejecting names not in `known` (and `tag:<key>` unless `tags` is true).
    pub fn compile(raw: &[RawFilter], known: &[&str], tags: bool) -> Result<Filters> {
        let mut out = Vec::with_capacity(raw.len());
        for f in raw {
            let is_tag = tags
                && ((f.name.starts_with("tag:") && f.name.len() > 4)
                    || f.name == "tag-key"
                    || f.name == "tag-value");
            if !is_tag && !known.contains(&f.name.as_str()) {
                return Err(Error::InvalidParameterValue(format!(
                    "The filter '{}' is invalid",
                    f.name
                )));
            }
            if f.values.is_empty() {
                return Err(Error::InvalidParameterValue(format!(
                    "The filter '{}' has no values",
                    f.name
                )));
            }
            out.push(Filter {
                name: f.name.clone(),
                patterns: f.values.iter().map(|v| WildMatch::new(v)).collect(),
            });
        }
        Ok(Filters(out))
    }

    /// True if every filter matches; `field` gives the resource's values for a filter.
    pub fn matches(&self, mut field: impl FnMut(&Filter) -> Vec<String>) -> bool {
        self.0.iter().all(|f| f.matches_any(&field(f)))
    }

    /// True when there are no filters.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Values for the tag filters (`tag:<key>`, `tag-key`, `tag-value`) from a tag map.
pub fn tag_filter_values(filter: &Filter, tags: AccountTags<'_>) -> Option<Vec<String>> {
    if let Some(key) = filter.tag_key() {
        return Some(tags.get(key).map(str::to_string).into_iter().collect());
    }
    match filter.name.as_str() {
        "tag-key" => Some(tags.iter().map(|(k, _)| k.to_string()).collect()),
        "tag-value" => Some(tags.iter().map(|(_, v)| v.to_string()).collect()),
        _ => None,
    }
}

/// Renders a boolean as filters compare it.
pub fn bool_value(b: bool) -> String {
    if b { "true" } else { "false" }.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(name: &str, values: &[&str]) -> RawFilter {
        RawFilter {
            name: name.into(),
            values: values.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn compile_unknown_name_fails_with_invalid_parameter_value() {
        let err = Filters::compile(&[raw("colour", &["red"])], &["name"], true).unwrap_err();
        assert_eq!(err.code(), "InvalidParameterValue");
    }

    #[test]
    fn matches_wildcards_star_and_question_mark_match() {
        let f = Filters::compile(&[raw("name", &["web-?-*"])], &["name"], false).unwrap();
        assert!(f.matches(|_| vec!["web-1-2026".into()]));
        assert!(!f.matches(|_| vec!["web-12-2026".into()]));
    }

    #[test]
    fn matches_two_filters_need_both() {
        let f = Filters::compile(
            &[raw("name", &["a"]), raw("state", &["available"])],
            &["name", "state"],
            false,
        )
        .unwrap();
        assert!(!f.matches(|f| if f.name == "name" {
            vec!["a".into()]
        } else {
            vec!["pending".into()]
        }));
    }

    #[test]
    fn compile_tag_filter_without_tags_support_fails() {
        let err = Filters::compile(&[raw("tag:Env", &["x"])], &["name"], false).unwrap_err();
        assert_eq!(err.code(), "InvalidParameterValue");
    }
}
