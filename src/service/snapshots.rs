//! Snapshots: describe, delete, copy, createVolumePermission, and the EBS direct
//! StartSnapshot / CompleteSnapshot pair that creates them.

use super::filters::{bool_value, tag_filter_values, Filters, RawFilter};
use super::model::{Snapshot, SnapshotState, Tags, VolumePermission};
use super::pagination::PageRequest;
use super::tags::{tags_for_new_resource, TagSpecification};
use super::{ids, time, RequestContext, Service};
use crate::error::{Error, Result};
use crate::store::{Change, ClientTokenRecord};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Block size of the EBS direct APIs (512 KiB).
pub const BLOCK_SIZE: u32 = 524_288;

/// Parameters of DescribeSnapshots.
#[derive(Debug, Clone, Default)]
pub struct DescribeSnapshotsRequest {
    /// Explicit snapshot ids.
    pub snapshot_ids: Vec<String>,
    /// `self`, account ids, aliases.
    pub owner_ids: Vec<String>,
    /// Accounts that can restore: `self`, `all`, account ids.
    pub restorable_by: Vec<String>,
    /// Filters.
    pub filters: Vec<RawFilter>,
    /// Page size.
    pub max_results: Option<i64>,
    /// Continuation token.
    pub next_token: Option<String>,
}

/// Parameters of CopySnapshot.
#[derive(Debug, Clone, Default)]
pub struct CopySnapshotRequest {
    /// Region of the source.
    pub source_region: String,
    /// The source snapshot.
    pub source_snapshot_id: String,
    /// Description of the copy.
    pub description: Option<String>,
    /// Encrypt the copy.
    pub encrypted: bool,
    /// KMS key.
    pub kms_key_id: Option<String>,
    /// Tags for the copy.
    pub tag_specifications: Vec<TagSpecification>,
}

/// Parameters of the EBS direct StartSnapshot.
#[derive(Debug, Clone, Default)]
pub struct StartSnapshotRequest {
    /// Size in GiB.
    pub volume_size: i64,
    /// Parent of an incremental snapshot.
    pub parent_snapshot_id: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Tags.
    pub tags: Vec<(String, String)>,
    /// Idempotency token.
    pub client_token: Option<String>,
    /// Encrypted flag (recorded).
    pub encrypted: bool,
    /// KMS key (recorded).
    pub kms_key_arn: Option<String>,
    /// Minutes the snapshot may stay pending (default 60).
    pub timeout_minutes: Option<i64>,
}

const SNAPSHOT_FILTERS: &[&str] = &[
    "description",
    "encrypted",
    "owner-alias",
    "owner-id",
    "progress",
    "snapshot-id",
    "start-time",
    "status",
    "storage-tier",
    "transfer-type",
    "volume-id",
    "volume-size",
];

/// True if the account may create volumes from the snapshot (owner, shared, or public).
pub fn can_restore(snapshot: &Snapshot, account_id: &str) -> bool {
    snapshot.owner_id == account_id
        || snapshot.create_volume_permissions.iter().any(|p| match p {
            VolumePermission::Public => true,
            VolumePermission::UserId(u) => u == account_id,
        })
}

/// Validates a snapshot id's shape.
pub fn check_snapshot_id(id: &str) -> Result<()> {
    if ids::is_well_formed(id, "snap") {
        Ok(())
    } else {
        Err(Error::InvalidSnapshotIdMalformed(id.to_string()))
    }
}

/// The snapshot, if it exists in the caller's region and the caller may see it.
pub fn visible_snapshot<'s>(
    state: &'s super::state::State,
    ctx: &RequestContext,
    id: &str,
) -> Result<&'s Arc<Snapshot>> {
    check_snapshot_id(id)?;
    state
        .snapshots
        .get(id)
        .filter(|s| s.region == ctx.region && can_restore(s, ctx.account_id()))
        .ok_or_else(|| Error::InvalidSnapshotNotFound(id.to_string()))
}

/// The snapshot, if the caller owns it.
pub fn owned_snapshot<'s>(
    state: &'s super::state::State,
    ctx: &RequestContext,
    id: &str,
) -> Result<&'s Arc<Snapshot>> {
    let snapshot = visible_snapshot(state, ctx, id)?;
    if snapshot.owner_id != ctx.account_id() {
        return Err(Error::AuthFailure(format!(
            "Not authorized for snapshot:{id}: only its owner may change it"
        )));
    }
    Ok(snapshot)
}

/// A new `pending` snapshot record that copies `source` into the caller's region.
pub fn copy_snapshot_record(
    source: &Snapshot,
    ctx: &RequestContext,
    snapshot_id: String,
    description: String,
    encrypt: bool,
    kms_key_id: Option<String>,
    tags: Tags,
) -> Snapshot {
    let encrypted = source.encrypted || encrypt;
    Snapshot {
        description,
        encrypted,
        kms_key_id: if encrypted {
            kms_key_id.or_else(|| source.kms_key_id.clone())
        } else {
            None
        },
        copy_source: Some((source.region.clone(), source.snapshot_id.clone())),
        tags,
        ..Snapshot::new_pending(
            snapshot_id,
            ctx.region.clone(),
            ctx.account_id().to_string(),
            source.volume_size,
            time::now_string(),
        )
    }
}

impl Service {
    /// DescribeSnapshots: the snapshots visible to the caller that match, one page of them.
    pub fn describe_snapshots(
        &self,
        ctx: &RequestContext,
        req: &DescribeSnapshotsRequest,
    ) -> Result<(Vec<Arc<Snapshot>>, Option<String>)> {
        let page = PageRequest::parse(
            req.max_results,
            req.next_token.as_deref(),
            !req.snapshot_ids.is_empty(),
            5,
        )?;
        let filters = Filters::compile(&req.filters, SNAPSHOT_FILTERS, true)?;
        for id in &req.snapshot_ids {
            check_snapshot_id(id)?;
        }
        let owners = self.resolve_owners(ctx, &req.owner_ids)?;
        let restorable = restorable_accounts(ctx, &req.restorable_by)?;
        ctx.finish_dry_run()?;
        let state = self.read()?;
        let selected = |s: &Snapshot| -> bool {
            s.region == ctx.region
                && can_restore(s, ctx.account_id())
                && (owners.is_empty() || owners.contains(&s.owner_id))
                && (restorable.is_empty()
                    || restorable.iter().any(|who| match who.as_str() {
                        "all" => s.is_public(),
                        id => {
                            s.owner_id == id
                                || s.create_volume_permissions
                                    .contains(&VolumePermission::UserId(id.to_string()))
                        }
                    }))
                && filters.matches(|f| self.snapshot_filter_values(s, f, ctx))
        };
        if !req.snapshot_ids.is_empty() {
            let wanted: BTreeSet<&String> = req.snapshot_ids.iter().collect();
            let mut found = Vec::new();
            for id in wanted {
                match state.snapshots.get(id.as_str()) {
                    Some(s) if s.region == ctx.region && can_restore(s, ctx.account_id()) => {
                        if selected(s) {
                            found.push(s.clone());
                        }
                    }
                    _ => return Err(Error::InvalidSnapshotNotFound(id.clone())),
                }
            }
            return Ok((found, None));
        }
        Ok(page.take_from(&state.snapshots, |s| selected(s)))
    }

    fn snapshot_filter_values(
        &self,
        s: &Snapshot,
        f: &super::filters::Filter,
        ctx: &RequestContext,
    ) -> Vec<String> {
        if let Some(values) = tag_filter_values(f, s.tags.of(ctx.account_id())) {
            return values;
        }
        match f.name.as_str() {
            "description" => vec![s.description.clone()],
            "encrypted" => vec![bool_value(s.encrypted)],
            "owner-alias" => self
                .owner_alias(&s.owner_id)
                .map(|a| vec![a.to_string()])
                .unwrap_or_default(),
            "owner-id" => vec![s.owner_id.clone()],
            "progress" => vec![s.progress.clone()],
            "snapshot-id" => vec![s.snapshot_id.clone()],
            "start-time" => vec![s.start_time.clone()],
            "status" => vec![s.state.as_str().to_string()],
            "storage-tier" => vec!["standard".into()],
            "transfer-type" => vec!["standard".into()],
            "volume-id" => vec![s.volume_id.clone()],
            "volume-size" => vec![s.volume_size.to_string()],
            _ => Vec::new(),
        }
    }

    /// DeleteSnapshot: refused while a registered image uses the snapshot.
    pub fn delete_snapshot(&self, ctx: &RequestContext, snapshot_id: &str) -> Result<()> {
        self.write(|state, _| {
            owned_snapshot(state, ctx, snapshot_id)?;
            if let Some(image) = state.images_using_snapshot(snapshot_id).first() {
                return Err(Error::InvalidSnapshotInUse(
                    snapshot_id.to_string(),
                    image.clone(),
                ));
            }
            ctx.finish_dry_run()?;
            Ok((vec![Change::DeleteSnapshot(snapshot_id.to_string())], ()))
        })
    }

    /// CopySnapshot: a `pending` copy in the caller's region, completed in the background.
    pub fn copy_snapshot(
        &self,
        ctx: &RequestContext,
        req: CopySnapshotRequest,
    ) -> Result<(String, Tags)> {
        self.write(|state, issuer| {
            if !self.serves_region(&req.source_region) {
                return Err(Error::InvalidParameterValue(format!(
                    "Invalid source region '{}'",
                    req.source_region
                )));
            }
            check_snapshot_id(&req.source_snapshot_id)?;
            let source = state
                .snapshots
                .get(&req.source_snapshot_id)
                .filter(|s| s.region == req.source_region && can_restore(s, ctx.account_id()))
                .ok_or_else(|| Error::InvalidSnapshotNotFound(req.source_snapshot_id.clone()))?;
            if source.state != SnapshotState::Completed {
                return Err(Error::IncorrectState(format!(
                    "Snapshot {} is in state {} and cannot be copied until it is completed",
                    source.snapshot_id,
                    source.state.as_str()
                )));
            }
            let tags =
                tags_for_new_resource(ctx, &req.tag_specifications, "snapshot", &["snapshot"])?;
            ctx.finish_dry_run()?;
            let id = issuer.issue("snap")?;
            let description = req.description.clone().unwrap_or_else(|| {
                format!("[Copied {} from {}]", source.snapshot_id, source.region)
            });
            let copy = copy_snapshot_record(
                source,
                ctx,
                id.clone(),
                description,
                req.encrypted,
                req.kms_key_id.clone(),
                tags.clone(),
            );
            let changes = vec![
                Change::PutSnapshot(copy),
                // The copy shares every block of its source: no data is copied.
                Change::CopySnapshotBlocks {
                    from: source.snapshot_id.clone(),
                    to: id.clone(),
                },
            ];
            Ok((changes, (id, tags)))
        })
    }

    /// DescribeSnapshotAttribute: `createVolumePermission` or `productCodes` (owner only).
    pub fn describe_snapshot_attribute(
        &self,
        ctx: &RequestContext,
        snapshot_id: &str,
        attribute: &str,
    ) -> Result<Vec<VolumePermission>> {
        let state = self.read()?;
        let snapshot = owned_snapshot(&state, ctx, snapshot_id)?;
        let answer = match attribute {
            "createVolumePermission" => snapshot.create_volume_permissions.clone(),
            "productCodes" => Vec::new(),
            other => {
                return Err(Error::InvalidParameterValue(format!(
                    "Value ({other}) for parameter attribute is invalid."
                )))
            }
        };
        ctx.finish_dry_run()?;
        Ok(answer)
    }

    /// ModifySnapshotAttribute: adds and removes createVolumePermission entries.
    pub fn modify_snapshot_attribute(
        &self,
        ctx: &RequestContext,
        snapshot_id: &str,
        add: Vec<VolumePermission>,
        remove: Vec<VolumePermission>,
    ) -> Result<()> {
        self.write(|state, _| {
            let snapshot = owned_snapshot(state, ctx, snapshot_id)?;
            for p in add.iter().chain(remove.iter()) {
                if let VolumePermission::UserId(u) = p {
                    if !(ids::is_account_id(u)) {
                        return Err(Error::InvalidParameterValue(format!(
                            "Invalid user id '{u}' in createVolumePermission"
                        )));
                    }
                }
            }
            if add.contains(&VolumePermission::Public) && snapshot.encrypted {
                return Err(Error::InvalidParameterValue(format!(
                    "Encrypted snapshot {snapshot_id} cannot be made public"
                )));
            }
            let mut updated = (**snapshot).clone();
            updated
                .create_volume_permissions
                .retain(|p| !remove.contains(p));
            for p in add {
                if !updated.create_volume_permissions.contains(&p) {
                    updated.create_volume_permissions.push(p);
                }
            }
            updated.create_volume_permissions.sort();
            ctx.finish_dry_run()?;
            Ok((vec![Change::PutSnapshot(updated)], ()))
        })
    }

    /// ResetSnapshotAttribute: removes every createVolumePermission entry.
    pub fn reset_snapshot_attribute(
        &self,
        ctx: &RequestContext,
        snapshot_id: &str,
        attribute: &str,
    ) -> Result<()> {
        self.write(|state, _| {
            let snapshot = owned_snapshot(state, ctx, snapshot_id)?;
            if attribute != "createVolumePermission" {
                return Err(Error::InvalidParameterValue(format!(
                    "Value ({attribute}) for parameter attribute is invalid. Only createVolumePermission can be reset"
                )));
            }
            let mut updated = (**snapshot).clone();
            updated.create_volume_permissions.clear();
            ctx.finish_dry_run()?;
            Ok((vec![Change::PutSnapshot(updated)], ()))
        })
    }

    /// EBS StartSnapshot: a new `pending` snapshot that blocks can be written to.
    pub fn start_snapshot(
        &self,
        ctx: &RequestContext,
        req: StartSnapshotRequest,
    ) -> Result<Arc<Snapshot>> {
        let snapshot_id = self.write(|state, issuer| {
            if !(1..=65_536).contains(&req.volume_size) {
                return Err(Error::EbsValidation {
                    reason: "INVALID_VOLUME_SIZE",
                    message: format!(
                        "VolumeSize {} is out of range (1..65536 GiB)",
                        req.volume_size
                    ),
                });
            }
            let timeout = req.timeout_minutes.unwrap_or(60);
            if !(10..=4320).contains(&timeout) {
                return Err(Error::EbsValidation {
                    reason: "INVALID_PARAMETER_VALUE",
                    message: format!("Timeout {timeout} is out of range (10..4320 minutes)"),
                });
            }
            if req.encrypted && req.parent_snapshot_id.is_some() {
                return Err(Error::EbsValidation {
                    reason: "INVALID_PARAMETER_VALUE",
                    message: "Encrypted and ParentSnapshotId cannot be given together: a child inherits its parent's encryption".into(),
                });
            }
            let fingerprint = format!("{req:?}");
            if let Some(token) = &req.client_token {
                let key = (
                    ctx.account_id().to_string(),
                    ctx.region.clone(),
                    "StartSnapshot".to_string(),
                    token.clone(),
                );
                if let Some(record) = state.client_tokens.get(&key) {
                    if record.fingerprint != fingerprint {
                        return Err(Error::EbsConflict(format!(
                            "The client token {token} was already used with a different request"
                        )));
                    }
                    return Ok((Vec::new(), record.resource_id.clone()));
                }
            }
            if let Some(parent) = &req.parent_snapshot_id {
                let parent_snapshot = state
                    .snapshots
                    .get(parent)
                    .filter(|s| s.region == ctx.region && can_restore(s, ctx.account_id()))
                    .ok_or_else(|| {
                        Error::EbsResourceNotFound(format!(
                            "The parent snapshot {parent} does not exist"
                        ))
                    })?;
                if parent_snapshot.state != SnapshotState::Completed {
                    return Err(Error::EbsValidation {
                        reason: "INVALID_SNAPSHOT_ID",
                        message: format!("The parent snapshot {parent} is not completed"),
                    });
                }
                if parent_snapshot.volume_size > req.volume_size {
                    return Err(Error::EbsValidation {
                        reason: "INVALID_VOLUME_SIZE",
                        message: format!(
                            "VolumeSize {} is smaller than the parent snapshot's {}",
                            req.volume_size, parent_snapshot.volume_size
                        ),
                    });
                }
            }
            let mut tag_map = BTreeMap::new();
            for (k, v) in &req.tags {
                super::tags::check_tag(k, v).map_err(|e| Error::EbsValidation {
                    reason: "INVALID_TAG",
                    message: e.to_string(),
                })?;
                tag_map.insert(k.clone(), v.clone());
            }
            let id = issuer.issue("snap")?;
            let now = time::now_ms();
            let tags = Tags::from_pairs(
                ctx.account_id(),
                tag_map.iter().map(|(k, v): (&String, &String)| (k.as_str(), v.as_str())),
            );
            let snapshot = Snapshot {
                description: req.description.clone().unwrap_or_default(),
                encrypted: req.encrypted,
                kms_key_id: req.kms_key_arn.clone(),
                parent_snapshot_id: req.parent_snapshot_id.clone(),
                tags,
                expires_at_ms: Some(now + timeout * 60_000),
                ..Snapshot::new_pending(
                    id.clone(),
                    ctx.region.clone(),
                    ctx.account_id().to_string(),
                    req.volume_size,
                    time::format_ms(now),
                )
            };
            let mut changes = vec![Change::PutSnapshot(snapshot)];
            if let Some(token) = &req.client_token {
                changes.push(Change::PutClientToken(ClientTokenRecord {
                    account_id: ctx.account_id().to_string(),
                    region: ctx.region.clone(),
                    action: "StartSnapshot".into(),
                    token: token.clone(),
                    fingerprint: fingerprint.clone(),
                    resource_id: id.clone(),
                }));
            }
            Ok((changes, id))
        })?;
        let state = self.read()?;
        state
            .snapshots
            .get(&snapshot_id)
            .cloned()
            .ok_or_else(|| Error::InternalError(format!("snapshot {snapshot_id} vanished")))
    }

    /// Moves EBS snapshots left pending past their Timeout to `error`, releasing their blocks.
    pub fn expire_pending_snapshots(&self) -> Result<usize> {
        let now = time::now_ms();
        self.write(|state, _| {
            let changes: Vec<Change> = state
                .snapshots
                .values()
                .filter(|s| {
                    s.state == SnapshotState::Pending && s.expires_at_ms.is_some_and(|t| t <= now)
                })
                .flat_map(|s| {
                    let mut failed = (**s).clone();
                    failed.state = SnapshotState::Error;
                    failed.state_message =
                        Some("The snapshot was not completed before its timeout".into());
                    failed.expires_at_ms = None;
                    // Its blocks lose their pending reference and become collectable.
                    [
                        Change::DropPendingBlocks(s.snapshot_id.clone()),
                        Change::PutSnapshot(failed),
                    ]
                })
                .collect();
            let n = changes.len();
            Ok((changes, n))
        })
    }
}

fn restorable_accounts(ctx: &RequestContext, who: &[String]) -> Result<Vec<String>> {
    who.iter()
        .map(|w| match w.as_str() {
            "self" => Ok(ctx.account_id().to_string()),
            "all" => Ok("all".to_string()),
            id if ids::is_account_id(id) => Ok(id.to_string()),
            other => Err(Error::InvalidParameterValue(format!(
                "Invalid RestorableBy value '{other}': expected 'self', 'all' or an account id"
            ))),
        })
        .collect()
}
