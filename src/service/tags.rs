//! Tags: CreateTags, DeleteTags, DescribeTags and TagSpecifications at creation.
//!
//! Tags belong to the account that set them (see [`super::model::Tags`]).

use super::filters::{Filters, RawFilter};
use super::images::visible_image;
use super::model::Tags;
use super::pagination::PageRequest;
use super::snapshots::visible_snapshot;
use super::state::State;
use super::volumes::owned_volume;
use super::{ids, RequestContext, Service};
use crate::error::{Error, Result};
use crate::store::Change;
use std::collections::BTreeMap;

/// Most tags one account may put on one resource.
pub const MAX_TAGS_PER_RESOURCE: usize = 50;

/// `TagSpecification.N`: tags for a resource type created by the call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagSpecification {
    /// `image`, `snapshot`, ...
    pub resource_type: String,
    /// Key/value pairs.
    pub tags: Vec<(String, String)>,
}

/// A tag to delete: the key, and the value it must have if given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagToDelete {
    /// Tag key.
    pub key: String,
    /// Only delete if the tag has this value.
    pub value: Option<String>,
}

/// One row of DescribeTags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagDescription {
    /// Resource id.
    pub resource_id: String,
    /// `image` or `snapshot`.
    pub resource_type: &'static str,
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
}

const TAG_FILTERS: &[&str] = &["key", "resource-id", "resource-type", "value"];

/// Checks one tag against AWS's rules.
pub fn check_tag(key: &str, value: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidParameterValue(
            "Tag keys must not be empty".into(),
        ));
    }
    if key.chars().count() > 128 {
        return Err(Error::InvalidParameterValue(format!(
            "Tag key exceeds the maximum length of 128 characters: {key}"
        )));
    }
    if value.chars().count() > 256 {
        return Err(Error::InvalidParameterValue(format!(
            "Tag value exceeds the maximum length of 256 characters for key {key}"
        )));
    }
    if key.to_ascii_lowercase().starts_with("aws:") {
        return Err(Error::InvalidParameterValue(format!(
            "Tag keys starting with 'aws:' are reserved for internal use: {key}"
        )));
    }
    Ok(())
}

/// The tags the caller's TagSpecifications give a new resource of `resource_type`.
/// `allowed` lists the resource types the action accepts.
pub fn tags_for_new_resource(
    ctx: &RequestContext,
    specs: &[TagSpecification],
    resource_type: &str,
    allowed: &[&str],
) -> Result<Tags> {
    let mut mine = BTreeMap::new();
    for spec in specs {
        if !allowed.contains(&spec.resource_type.as_str()) {
            return Err(Error::InvalidParameterValue(format!(
                "'{}' is not a valid taggable resource type for this operation (expected one of: {})",
                spec.resource_type,
                allowed.join(", ")
            )));
        }
        if spec.resource_type != resource_type {
            continue;
        }
        for (k, v) in &spec.tags {
            check_tag(k, v)?;
            mine.insert(k.clone(), v.clone());
        }
    }
    if mine.len() > MAX_TAGS_PER_RESOURCE {
        return Err(Error::TagLimitExceeded(MAX_TAGS_PER_RESOURCE));
    }
    Ok(Tags::from_pairs(
        ctx.account_id(),
        mine.iter()
            .map(|(k, v): (&String, &String)| (k.as_str(), v.as_str())),
    ))
}

/// A taggable resource the caller can see, by id.
enum Taggable {
    Image(Box<super::model::Image>),
    Snapshot(Box<super::model::Snapshot>),
    Volume(Box<super::model::Volume>),
    Instance(Box<super::model::Instance>),
}

fn find_taggable(state: &State, ctx: &RequestContext, id: &str) -> Result<Taggable> {
    match ids::prefix_of(id) {
        Some("ami") => Ok(Taggable::Image(Box::new(
            (**visible_image(state, ctx, id)?).clone(),
        ))),
        Some("snap") => Ok(Taggable::Snapshot(Box::new(
            (**visible_snapshot(state, ctx, id)?).clone(),
        ))),
        Some("vol") => Ok(Taggable::Volume(Box::new(
            (**owned_volume(state, ctx, id)?).clone(),
        ))),
        Some("i") => Ok(Taggable::Instance(Box::new(
            (**super::instances::owned_instance(state, ctx, id)?).clone(),
        ))),
        _ => Err(Error::InvalidId(id.to_string())),
    }
}

impl Taggable {
    fn tags_mut(&mut self) -> &mut Tags {
        match self {
            Taggable::Image(i) => &mut i.tags,
            Taggable::Snapshot(s) => &mut s.tags,
            Taggable::Volume(v) => &mut v.tags,
            Taggable::Instance(i) => &mut i.tags,
        }
    }

    fn into_change(self) -> Change {
        match self {
            Taggable::Image(i) => Change::PutImage(*i),
            Taggable::Snapshot(s) => Change::PutSnapshot(*s),
            Taggable::Volume(v) => Change::PutVolume(*v),
            Taggable::Instance(i) => Change::PutInstance(*i),
        }
    }
}

impl Service {
    /// CreateTags: adds or overwrites the caller's tags on every resource, all or nothing.
    pub fn create_tags(
        &self,
        ctx: &RequestContext,
        resources: &[String],
        tags: &[(String, String)],
    ) -> Result<()> {
        if resources.is_empty() {
            return Err(Error::MissingParameter("ResourceId".into()));
        }
        if tags.is_empty() {
            return Err(Error::MissingParameter("Tag".into()));
        }
        for (k, v) in tags {
            check_tag(k, v)?;
        }
        self.write(|state, _| {
            let mut changes = Vec::new();
            for id in resources {
                let mut resource = find_taggable(state, ctx, id)?;
                let all = resource.tags_mut();
                for (k, v) in tags {
                    all.set(ctx.account_id(), k, v);
                }
                if all.of(ctx.account_id()).len() > MAX_TAGS_PER_RESOURCE {
                    return Err(Error::TagLimitExceeded(MAX_TAGS_PER_RESOURCE));
                }
                changes.push(resource.into_change());
            }
            ctx.finish_dry_run()?;
            Ok((changes, ()))
        })
    }

    /// DeleteTags: removes the caller's tags (all of them when no tag is named).
    pub fn delete_tags(
        &self,
        ctx: &RequestContext,
        resources: &[String],
        tags: &[TagToDelete],
    ) -> Result<()> {
        if resources.is_empty() {
            return Err(Error::MissingParameter("ResourceId".into()));
        }
        for t in tags {
            if t.key.to_ascii_lowercase().starts_with("aws:") {
                return Err(Error::InvalidParameterValue(format!(
                    "Tag keys starting with 'aws:' are reserved for internal use: {}",
                    t.key
                )));
            }
        }
        self.write(|state, _| {
            let mut changes = Vec::new();
            for id in resources {
                let mut resource = find_taggable(state, ctx, id)?;
                let all = resource.tags_mut();
                if tags.is_empty() {
                    all.clear(ctx.account_id());
                }
                for t in tags {
                    all.remove(ctx.account_id(), &t.key, t.value.as_deref());
                }
                changes.push(resource.into_change());
            }
            ctx.finish_dry_run()?;
            Ok((changes, ()))
        })
    }

    /// DescribeTags: the caller's tags on resources it can see in the region.
    pub fn describe_tags(
        &self,
        ctx: &RequestContext,
        filters: &[RawFilter],
        max_results: Option<i64>,
        next_token: Option<&str>,
    ) -> Result<(Vec<TagDescription>, Option<String>)> {
        let page = PageRequest::parse(max_results, next_token, false, 5)?;
        let filters = Filters::compile(filters, TAG_FILTERS, true)?;
        ctx.finish_dry_run()?;
        let state = self.read()?;
        let me = ctx.account_id();
        let images = state
            .images
            .values()
            .filter(|i| i.region == ctx.region && super::images::can_launch(i, &ctx.account))
            .map(|i| (i.image_id.as_str(), "image", i.tags.of(me)));
        let snapshots = state
            .snapshots
            .values()
            .filter(|s| s.region == ctx.region && super::snapshots::can_restore(s, me))
            .map(|s| (s.snapshot_id.as_str(), "snapshot", s.tags.of(me)));
        let volumes = state
            .volumes
            .values()
            .filter(|v| v.region == ctx.region && v.owner_id == me)
            .map(|v| (v.volume_id.as_str(), "volume", v.tags.of(me)));
        let instances = state
            .instances
            .values()
            .filter(|i| i.region == ctx.region && i.owner_id == me)
            .map(|i| (i.instance_id.as_str(), "instance", i.tags.of(me)));
        // Rows are keyed "resource-id key" so pages follow a stable order.
        let mut rows: Vec<(String, TagDescription)> = Vec::new();
        for (resource_id, resource_type, tags) in
            images.chain(snapshots).chain(volumes).chain(instances)
        {
            for (key, value) in tags.iter() {
                let row = TagDescription {
                    resource_id: resource_id.to_string(),
                    resource_type,
                    key: key.to_string(),
                    value: value.to_string(),
                };
                let keep = filters.matches(|f| match f.name.as_str() {
                    "key" => vec![row.key.clone()],
                    "value" => vec![row.value.clone()],
                    "resource-id" => vec![row.resource_id.clone()],
                    "resource-type" => vec![row.resource_type.to_string()],
                    name => match name.strip_prefix("tag:") {
                        Some(k) => tags.get(k).map(str::to_string).into_iter().collect(),
                        None => Vec::new(),
                    },
                });
                if keep {
                    rows.push((format!("{resource_id} {key}"), row));
                }
            }
        }
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let after = page.after.clone();
        let rest = rows
            .into_iter()
            .filter(|(k, _)| after.as_ref().is_none_or(|a| k > a));
        Ok(page.take(rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_tag_aws_prefix_fails_with_invalid_parameter_value() {
        assert_eq!(
            check_tag("aws:cloudformation", "x").unwrap_err().code(),
            "InvalidParameterValue"
        );
    }

    #[test]
    fn check_tag_long_key_fails() {
        assert!(check_tag(&"k".repeat(129), "v").is_err());
        assert!(check_tag(&"k".repeat(128), "v").is_ok());
    }
}
