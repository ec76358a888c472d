//! DescribeRegions and DescribeAvailabilityZones.

use super::Call;
use crate::error::Result;

/// DescribeRegions.
pub fn describe_regions(call: &Call<'_>) -> Result<String> {
    let p = call.params;
    let regions = call.service.describe_regions(
        call.ctx,
        &p.list("RegionName")?,
        &p.filters()?,
        call.endpoint,
    )?;
    let mut w = call.response();
    w.open("regionInfo");
    for r in regions {
        w.open("item")
            .leaf("regionName", &r.name)
            .leaf("regionEndpoint", &r.endpoint)
            .leaf("optInStatus", "opt-in-not-required")
            .close("item");
    }
    w.close("regionInfo");
    Ok(call.finish(w))
}

/// DescribeAvailabilityZones.
pub fn describe_availability_zones(call: &Call<'_>) -> Result<String> {
    let p = call.params;
    let zones = call.service.describe_availability_zones(
        call.ctx,
        &p.list("ZoneName")?,
        &p.list("ZoneId")?,
        &p.filters()?,
    )?;
    let mut w = call.response();
    w.open("availabilityZoneInfo");
    for z in zones {
        w.open("item")
            .leaf("optInStatus", "opt-in-not-required")
            .empty("messageSet")
            .leaf("regionName", &z.region_name)
            .leaf("zoneName", &z.zone_name)
            .leaf("zoneId", &z.zone_id)
            .leaf("groupName", &z.region_name)
            .leaf("networkBorderGroup", &z.region_name)
            .leaf("zoneType", "availability-zone")
            .leaf("zoneState", "available")
            .close("item");
    }
    w.close("availabilityZoneInfo");
    Ok(call.finish(w))
}
