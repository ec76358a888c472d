//! `MaxResults` / `NextToken` pagination.
//!
//! Results are walked in key order (resource ids are the keys), and a token carries the
//! last key returned. A page therefore starts right after the previous one whatever was
//! created or deleted in between: no item that existed throughout is skipped or repeated.

use crate::error::{Error, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

const TOKEN_PREFIX: &str = "kiln1:";

/// Where a page starts and how long it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// Page size; `None` means everything.
    pub max_results: Option<usize>,
    /// Key after which the page starts.
    pub after: Option<String>,
}

impl PageRequest {
    /// Validates `MaxResults` (`min..=1000`) and decodes `NextToken`.
    /// `ids_given` rejects combining `MaxResults` with explicit ids, as EC2 does.
    pub fn parse(
        max_results: Option<i64>,
        next_token: Option<&str>,
        ids_given: bool,
        min: i64,
    ) -> Result<PageRequest> {
        if ids_given && max_results.is_some() {
            return Err(Error::InvalidParameterCombination(
                "The parameter MaxResults cannot be used with the parameter of resource ids".into(),
            ));
        }
        let max_results = match max_results {
            Some(n) if !(min..=1000).contains(&n) => {
                return Err(Error::InvalidParameterValue(format!(
                    "Value ( {n} ) for parameter maxResults is invalid. Expecting a value between {min} and 1000."
                )))
            }
            Some(n) => Some(n as usize),
            None => None,
        };
        let after = match next_token {
            Some(t) if !t.is_empty() => Some(decode_token(t)?),
            _ => None,
        };
        Ok(PageRequest { max_results, after })
    }

    /// Takes a page from an ordered stream of matching (key, item) pairs.
    /// Returns the items and the token for the next page, if there is one.
    pub fn take<T>(
        &self,
        mut matching: impl Iterator<Item = (String, T)>,
    ) -> (Vec<T>, Option<String>) {
        let Some(max) = self.max_results else {
            return (matching.map(|(_, item)| item).collect(), None);
        };
        let mut items = Vec::with_capacity(max.min(1000));
        let mut last_key = None;
        for (key, item) in matching.by_ref() {
            if items.len() == max {
                // There is at least one more: hand out a token.
                return (items, last_key.map(|k: String| encode_token(&k)));
            }
            last_key = Some(key);
            items.push(item);
        }
        (items, None)
    }
}

impl PageRequest {
    /// Takes a page of the values of an ordered map that satisfy `selected`, resuming after
    /// the token's key.
    pub fn take_from<K: Ord + std::borrow::Borrow<str>, V: Clone>(
        &self,
        map: &std::collections::BTreeMap<K, V>,
        selected: impl Fn(&V) -> bool,
    ) -> (Vec<V>, Option<String>) {
        let start = match &self.after {
            Some(after) => std::ops::Bound::Excluded(after.as_str()),
            None => std::ops::Bound::Unbounded,
        };
        let matching = map
            .range::<str, _>((start, std::ops::Bound::Unbounded))
            .filter(|(_, v)| selected(v))
            .map(|(k, v)| (k.borrow().to_string(), v.clone()));
        self.take(matching)
    }
}

/// Encodes the last key of a page as an opaque token.
pub fn encode_token(last_key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{TOKEN_PREFIX}{last_key}"))
}

fn decode_token(token: &str) -> Result<String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| Error::InvalidPaginationToken(token.to_string()))?;
    let text =
        String::from_utf8(bytes).map_err(|_| Error::InvalidPaginationToken(token.to_string()))?;
    text.strip_prefix(TOKEN_PREFIX)
        .map(str::to_string)
        .ok_or_else(|| Error::InvalidPaginationToken(token.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: usize) -> impl Iterator<Item = (String, usize)> {
        (0..n).map(|i| (format!("k{i:03}"), i))
    }

    #[test]
    fn take_more_items_than_page_returns_token_to_next() {
        let page = PageRequest::parse(Some(5), None, false, 5).unwrap();
        let (got, token) = page.take(items(12));
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        let next = PageRequest::parse(Some(5), token.as_deref(), false, 5).unwrap();
        assert_eq!(next.after.as_deref(), Some("k004"));
    }

    #[test]
    fn take_exactly_one_page_returns_no_token() {
        let page = PageRequest::parse(Some(5), None, false, 5).unwrap();
        let (got, token) = page.take(items(5));
        assert_eq!(got.len(), 5);
        assert_eq!(token, None);
    }

    #[test]
    fn parse_garbage_token_fails_with_invalid_pagination_token() {
        let err = PageRequest::parse(Some(5), Some("!!!"), false, 5).unwrap_err();
        assert_eq!(err.code(), "InvalidPaginationToken");
    }

    #[test]
    fn parse_max_results_with_ids_fails_with_invalid_parameter_combination() {
        let err = PageRequest::parse(Some(5), None, true, 5).unwrap_err();
        assert_eq!(err.code(), "InvalidParameterCombination");
    }

    #[test]
    fn parse_max_results_out_of_range_fails() {
        assert!(PageRequest::parse(Some(1001), None, false, 5).is_err());
        assert!(PageRequest::parse(Some(4), None, false, 5).is_err());
    }
}
