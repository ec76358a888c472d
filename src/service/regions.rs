//! Regions and availability zones: the configured regions, three zones each.

use super::filters::{Filters, RawFilter};
use super::{RequestContext, Service};
use crate::error::{Error, Result};

/// A region as DescribeRegions reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionInfo {
    /// `us-east-1`.
    pub name: String,
    /// The endpoint clients use (the same for every region).
    pub endpoint: String,
}

/// An availability zone as DescribeAvailabilityZones reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneInfo {
    /// `us-east-1a`.
    pub zone_name: String,
    /// `use1-az1`.
    pub zone_id: String,
    /// Region of the zone.
    pub region_name: String,
}

const REGION_FILTERS: &[&str] = &["endpoint", "opt-in-status", "region-name"];
const ZONE_FILTERS: &[&str] = &[
    "group-name",
    "message",
    "opt-in-status",
    "region-name",
    "state",
    "zone-id",
    "zone-name",
    "zone-type",
];

/// Short zone-id prefix of a region, e.g. `use1` for `us-east-1`.
fn zone_id_prefix(region: &str) -> String {
    let parts: Vec<&str> = region.split('-').collect();
    match parts.as_slice() {
        [geo, direction, number] => {
            format!("{geo}{}{number}", direction.chars().next().unwrap_or('x'))
        }
        _ => region.replace('-', ""),
    }
}

/// The zones of a region: `a`, `b`, `c`.
pub fn zones_of(region: &str) -> Vec<ZoneInfo> {
    ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, suffix)| ZoneInfo {
            zone_name: format!("{region}{suffix}"),
            zone_id: format!("{}-az{}", zone_id_prefix(region), i + 1),
            region_name: region.to_string(),
        })
        .collect()
}

impl Service {
    /// DescribeRegions.
    pub fn describe_regions(
        &self,
        ctx: &RequestContext,
        names: &[String],
        filters: &[RawFilter],
        endpoint: &str,
    ) -> Result<Vec<RegionInfo>> {
        for name in names {
            if !self.serves_region(name) {
                return Err(Error::InvalidParameterValue(format!(
                    "Invalid region: {name} (this Kiln serves {})",
                    self.config().regions.join(", ")
                )));
            }
        }
        let filters = Filters::compile(filters, REGION_FILTERS, false)?;
        ctx.finish_dry_run()?;
        Ok(self
            .config()
            .regions
            .iter()
            .filter(|r| names.is_empty() || names.contains(r))
            .map(|r| RegionInfo {
                name: r.clone(),
                endpoint: endpoint.to_string(),
            })
            .filter(|r| {
                filters.matches(|f| match f.name.as_str() {
                    "endpoint" => vec![r.endpoint.clone()],
                    "opt-in-status" => vec!["opt-in-not-required".into()],
                    _ => vec![r.name.clone()],
                })
            })
            .collect())
    }

    /// DescribeAvailabilityZones for the caller's region.
    pub fn describe_availability_zones(
        &self,
        ctx: &RequestContext,
        zone_names: &[String],
        zone_ids: &[String],
        filters: &[RawFilter],
    ) -> Result<Vec<ZoneInfo>> {
        let zones = zones_of(&ctx.region);
        for name in zone_names {
            if !zones.iter().any(|z| &z.zone_name == name) {
                return Err(Error::InvalidParameterValue(format!(
                    "The availability zone {name} is not valid in {}",
                    ctx.region
                )));
            }
        }
        for id in zone_ids {
            if !zones.iter().any(|z| &z.zone_id == id) {
                return Err(Error::InvalidParameterValue(format!(
                    "The availability zone id {id} is not valid in {}",
                    ctx.region
                )));
            }
        }
        let filters = Filters::compile(filters, ZONE_FILTERS, false)?;
        ctx.finish_dry_run()?;
        Ok(zones
            .into_iter()
            .filter(|z| zone_names.is_empty() || zone_names.contains(&z.zone_name))
            .filter(|z| zone_ids.is_empty() || zone_ids.contains(&z.zone_id))
            .filter(|z| {
                filters.matches(|f| match f.name.as_str() {
                    "group-name" | "region-name" => vec![z.region_name.clone()],
                    "opt-in-status" => vec!["opt-in-not-required".into()],
                    "state" => vec!["available".into()],
                    "zone-id" => vec![z.zone_id.clone()],
                    "zone-name" => vec![z.zone_name.clone()],
                    "zone-type" => vec!["availability-zone".into()],
                    _ => Vec::new(),
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_of_us_east_1_gives_three_named_zones() {
        let zones = zones_of("us-east-1");
        assert_eq!(zones.len(), 3);
        assert_eq!(zones[0].zone_name, "us-east-1a");
        assert_eq!(zones[0].zone_id, "use1-az1");
    }
}
