//! Storage accounting: for every snapshot and image, its logical size, the bytes it
//! references, the bytes unique to it (exactly what deleting it would free) and the bytes it
//! shares with others; totals per account and region; an estimated monthly cost.

use super::model::SnapshotState;
use super::Service;
use crate::error::{Error, Result};
use serde::Serialize;
use std::collections::BTreeMap;

/// Bytes in one GiB (logical sizes) and one GB (pricing, as AWS bills).
const GIB: u64 = 1 << 30;
const GB: f64 = 1e9;

/// Usage of one snapshot or image.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct UsageLine {
    /// `snap-...` or `ami-...`.
    pub resource_id: String,
    /// Owner account.
    pub owner_id: String,
    /// Region.
    pub region: String,
    /// Logical size (sum of volume sizes), bytes.
    pub logical_bytes: u64,
    /// Distinct stored bytes referenced.
    pub referenced_bytes: u64,
    /// Bytes only this resource references: freed by deleting it.
    pub unique_bytes: u64,
    /// Bytes it shares with other snapshots.
    pub shared_bytes: u64,
}

/// Totals of one account in one region.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct UsageTotal {
    /// Account.
    pub owner_id: String,
    /// Region.
    pub region: String,
    /// Snapshots counted.
    pub snapshots: usize,
    /// Logical bytes of those snapshots.
    pub logical_bytes: u64,
    /// Distinct stored bytes they reference.
    pub referenced_bytes: u64,
    /// Bytes no other account-region references.
    pub unique_bytes: u64,
    /// Estimated monthly cost of the referenced bytes.
    pub monthly_cost: f64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct UsageReport {
    /// Price per GB-month used for the estimates.
    pub price_per_gb_month: f64,
    /// One line per completed snapshot.
    pub snapshots: Vec<UsageLine>,
    /// One line per image (its snapshots together).
    pub images: Vec<UsageLine>,
    /// Totals per account and region.
    pub totals: Vec<UsageTotal>,
}

fn line(
    resource_id: &str,
    owner_id: &str,
    region: &str,
    logical_bytes: u64,
    usage: crate::store::BlockUsage,
) -> UsageLine {
    UsageLine {
        resource_id: resource_id.to_string(),
        owner_id: owner_id.to_string(),
        region: region.to_string(),
        logical_bytes,
        referenced_bytes: usage.referenced_bytes,
        unique_bytes: usage.unique_bytes,
        shared_bytes: usage.referenced_bytes - usage.unique_bytes,
    }
}

impl Service {
    /// Usage of everything (or one account's resources), priced at `price_per_gb_month`.
    pub fn usage(&self, account: Option<&str>, price_per_gb_month: f64) -> Result<UsageReport> {
        let (snapshots, images) = {
            let state = self.read()?;
            let keep = |owner: &str| account.is_none_or(|a| a == owner);
            let snapshots: Vec<_> = state
                .snapshots
                .values()
                .filter(|s| keep(&s.owner_id) && s.state == SnapshotState::Completed)
                .cloned()
                .collect();
            let images: Vec<_> = state
                .images
                .values()
                .filter(|i| keep(&i.owner_id))
                .cloned()
                .collect();
            (snapshots, images)
        };
        let mut report = UsageReport {
            price_per_gb_month,
            snapshots: Vec::new(),
            images: Vec::new(),
            totals: Vec::new(),
        };
        let mut groups: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        let mut logical: BTreeMap<(String, String), u64> = BTreeMap::new();
        for s in &snapshots {
            let usage = self
                .store()
                .block_usage(std::slice::from_ref(&s.snapshot_id))?;
            let size = s.volume_size as u64 * GIB;
            report
                .snapshots
                .push(line(&s.snapshot_id, &s.owner_id, &s.region, size, usage));
            let key = (s.owner_id.clone(), s.region.clone());
            groups
                .entry(key.clone())
                .or_default()
                .push(s.snapshot_id.clone());
            *logical.entry(key).or_default() += size;
        }
        for image in &images {
            let ids: Vec<String> = image.snapshot_ids().map(str::to_string).collect();
            let size: u64 = image
                .block_device_mappings
                .iter()
                .filter_map(|m| m.ebs.as_ref()?.volume_size)
                .map(|g| g as u64 * GIB)
                .sum();
            let usage = self.store().block_usage(&ids)?;
            report.images.push(line(
                &image.image_id,
                &image.owner_id,
                &image.region,
                size,
                usage,
            ));
        }
        for ((owner_id, region), ids) in groups {
            let usage = self.store().block_usage(&ids)?;
            report.totals.push(UsageTotal {
                snapshots: ids.len(),
                logical_bytes: logical
                    .get(&(owner_id.clone(), region.clone()))
                    .copied()
                    .unwrap_or(0),
                referenced_bytes: usage.referenced_bytes,
                unique_bytes: usage.unique_bytes,
                monthly_cost: usage.referenced_bytes as f64 / GB * price_per_gb_month,
                owner_id,
                region,
            });
        }
        Ok(report)
    }

    /// Usage of one image.
    pub fn image_usage(&self, image_id: &str) -> Result<UsageLine> {
        let image = self
            .read()?
            .images
            .get(image_id)
            .cloned()
            .ok_or_else(|| Error::InvalidAmiIdNotFound(image_id.to_string()))?;
        let ids: Vec<String> = image.snapshot_ids().map(str::to_string).collect();
        let size: u64 = image
            .block_device_mappings
            .iter()
            .filter_map(|m| m.ebs.as_ref()?.volume_size)
            .map(|g| g as u64 * GIB)
            .sum();
        let usage = self.store().block_usage(&ids)?;
        Ok(line(
            &image.image_id,
            &image.owner_id,
            &image.region,
            size,
            usage,
        ))
    }
}
