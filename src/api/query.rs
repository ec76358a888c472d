//! EC2 Query parameters: `Name`, lists as `Name.N`, structures as `Name.N.Field`.
//!
//! [`Params`] holds the decoded key/value pairs of a request and answers typed questions
//! about them; every malformed value becomes `InvalidParameterValue`, never a panic.

use crate::error::{Error, Result};
use crate::service::filters::RawFilter;
use crate::service::tags::TagSpecification;
use std::collections::BTreeMap;

/// The parameters of one Query request (or a structure inside one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    map: BTreeMap<String, String>,
}

impl Params {
    /// Decodes an `application/x-www-form-urlencoded` body or query string.
    pub fn from_form(bytes: &[u8]) -> Params {
        let mut params = Params::default();
        params.extend_from_form(bytes);
        params
    }

    /// Adds the pairs of another form-encoded text (later keys win).
    pub fn extend_from_form(&mut self, bytes: &[u8]) {
        for (k, v) in form_urlencoded::parse(bytes) {
            self.map.insert(k.into_owned(), v.into_owned());
        }
    }

    /// Builds parameters from pairs.
    pub fn from_pairs<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Params {
        Params {
            map: pairs.into_iter().collect(),
        }
    }

    /// The raw value of a key.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
    }

    /// An owned copy of a key's value.
    pub fn string(&self, key: &str) -> Option<String> {
        self.get(key).map(str::to_string)
    }

    /// The value of a required key.
    pub fn required(&self, key: &str) -> Result<&str> {
        self.get(key)
            .ok_or_else(|| Error::MissingParameter(key.to_string()))
    }

    /// A boolean (`true` / `false`, any case).
    pub fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(Error::InvalidParameterValue(format!(
                "Value ({v}) for parameter {key} is invalid. Expected 'true' or 'false'."
            ))),
        }
    }

    /// A boolean that defaults to false.
    pub fn flag(&self, key: &str) -> Result<bool> {
        Ok(self.bool(key)?.unwrap_or(false))
    }

    /// An integer.
    pub fn int(&self, key: &str) -> Result<Option<i64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.trim().parse::<i64>().map(Some).map_err(|_| {
                Error::InvalidParameterValue(format!(
                    "Value ({v}) for parameter {key} is invalid. Expected an integer."
                ))
            }),
        }
    }

    /// The values of a list `prefix.1`, `prefix.2`, ... in index order.
    pub fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut items = BTreeMap::new();
        let dotted = format!("{prefix}.");
        for (k, v) in self.map.range(dotted.clone()..) {
            let Some(rest) = k.strip_prefix(&dotted) else {
                break;
            };
            if rest.contains('.') {
                continue;
            }
            items.insert(parse_index(prefix, rest)?, v.clone());
        }
        Ok(items.into_values().collect())
    }

    /// The structures of a list `prefix.N.Field...`, each as its own [`Params`], in index order.
    pub fn structs(&self, prefix: &str) -> Result<Vec<Params>> {
        let mut items: BTreeMap<u32, Params> = BTreeMap::new();
        let dotted = format!("{prefix}.");
        for (k, v) in self.map.range(dotted.clone()..) {
            let Some(rest) = k.strip_prefix(&dotted) else {
                break;
            };
            let Some((index, field)) = rest.split_once('.') else {
                continue;
            };
            let index = parse_index(prefix, index)?;
            items
                .entry(index)
                .or_default()
                .map
                .insert(field.to_string(), v.clone());
        }
        Ok(items.into_values().collect())
    }

    /// The nested structure `prefix.Field...` as its own [`Params`].
    pub fn nested(&self, prefix: &str) -> Params {
        let dotted = format!("{prefix}.");
        Params {
            map: self
                .map
                .range(dotted.clone()..)
                .take_while(|(k, _)| k.starts_with(&dotted))
                .map(|(k, v)| (k[dotted.len()..].to_string(), v.clone()))
                .collect(),
        }
    }

    /// True if any key starts with `prefix.`.
    pub fn has_prefix(&self, prefix: &str) -> bool {
        let dotted = format!("{prefix}.");
        self.map
            .range(dotted.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&dotted))
    }

    /// `Filter.N.Name` / `Filter.N.Value.M`.
    pub fn filters(&self) -> Result<Vec<RawFilter>> {
        self.structs("Filter")?
            .into_iter()
            .map(|f| {
                Ok(RawFilter {
                    name: f
                        .required("Name")
                        .map_err(|_| Error::MissingParameter("Filter.N.Name".into()))?
                        .to_string(),
                    values: f.list("Value")?,
                })
            })
            .collect()
    }

    /// `prefix.N.Key` / `prefix.N.Value` pairs (value defaults to empty).
    pub fn tags(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        self.structs(prefix)?
            .into_iter()
            .map(|t| {
                let key = t
                    .get("Key")
                    .ok_or_else(|| Error::MissingParameter(format!("{prefix}.N.Key")))?;
                Ok((key.to_string(), t.get("Value").unwrap_or("").to_string()))
            })
            .collect()
    }

    /// `TagSpecification.N.ResourceType` / `TagSpecification.N.Tag.M.Key|Value`.
    pub fn tag_specifications(&self) -> Result<Vec<TagSpecification>> {
        self.structs("TagSpecification")?
            .into_iter()
            .map(|s| {
                Ok(TagSpecification {
                    resource_type: s
                        .get("ResourceType")
                        .ok_or_else(|| {
                            Error::MissingParameter("TagSpecification.N.ResourceType".into())
                        })?
                        .to_string(),
                    tags: s.tags("Tag")?,
                })
            })
            .collect()
    }
}

fn parse_index(prefix: &str, text: &str) -> Result<u32> {
    text.parse::<u32>().map_err(|_| {
        Error::InvalidParameterValue(format!(
            "Invalid list index '{text}' in parameter {prefix}.N"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_indices_out_of_order_come_back_in_numeric_order() {
        let p = Params::from_form(b"ImageId.10=c&ImageId.2=b&ImageId.1=a");
        assert_eq!(p.list("ImageId").unwrap(), vec!["a", "b", "c"]);
    }

    #[test]
    fn filters_name_and_values_parse() {
        let p = Params::from_form(
            b"Filter.1.Name=name&Filter.1.Value.1=web-*&Filter.1.Value.2=db&Filter.2.Name=state&Filter.2.Value.1=available",
        );
        let f = p.filters().unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].values, vec!["web-*", "db"]);
        assert_eq!(f[1].name, "state");
    }

    #[test]
    fn list_non_numeric_index_fails_with_invalid_parameter_value() {
        let p = Params::from_form(b"ImageId.x=a");
        assert_eq!(
            p.list("ImageId").unwrap_err().code(),
            "InvalidParameterValue"
        );
    }

    #[test]
    fn bool_garbage_fails_with_invalid_parameter_value() {
        let p = Params::from_form(b"DryRun=maybe");
        assert_eq!(
            p.bool("DryRun").unwrap_err().code(),
            "InvalidParameterValue"
        );
    }

    #[test]
    fn tag_specifications_nested_tags_parse() {
        let p = Params::from_form(
            b"TagSpecification.1.ResourceType=image&TagSpecification.1.Tag.1.Key=Env&TagSpecification.1.Tag.1.Value=prod",
        );
        let specs = p.tag_specifications().unwrap();
        assert_eq!(specs[0].resource_type, "image");
        assert_eq!(specs[0].tags, vec![("Env".to_string(), "prod".to_string())]);
    }

    #[test]
    fn nested_strips_prefix() {
        let p = Params::from_form(b"LaunchPermission.Add.1.UserId=123456789012&Other=1");
        let lp = p.nested("LaunchPermission");
        assert_eq!(
            lp.structs("Add").unwrap()[0].get("UserId"),
            Some("123456789012")
        );
        assert!(lp.get("Other").is_none());
    }
}
