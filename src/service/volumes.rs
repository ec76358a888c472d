//! Volumes: CreateVolume, DescribeVolumes, DeleteVolume, ModifyVolume,
//! DescribeVolumesModifications, and CreateSnapshot of a volume.
//!
//! A volume is created in constant time: its record names the snapshot whose block map it
//! reads through, and no block is copied (the store keeps that map while the volume exists,
//! even if the snapshot is deleted). Its bytes are served by [`crate::volumes`] once it is
//! attached; until volumes can be attached, a volume holds exactly its source's blocks.

use super::filters::{bool_value, tag_filter_values, Filter, Filters, RawFilter};
use super::images::VOLUME_TYPES;
use super::model::{Snapshot, SnapshotState, Volume, VolumeModification, VolumeState};
use super::pagination::PageRequest;
use super::regions::zones_of;
use super::snapshots::visible_snapshot;
use super::state::State;
use super::tags::{tags_for_new_resource, TagSpecification};
use super::{ids, time, RequestContext, Service};
use crate::blocks::{zero_block_hash, BlockHash};
use crate::error::{Error, Result};
use crate::store::{Change, ClientTokenRecord};
use crate::volumes::cow::CowVolume;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

/// Bytes per GiB.
const GIB: u64 = 1 << 30;

/// Parameters of CreateVolume.
#[derive(Debug, Clone, Default)]
pub struct CreateVolumeRequest {
    /// Zone of the caller's region.
    pub availability_zone: Option<String>,
    /// Size in GiB (defaults to the snapshot's).
    pub size: Option<i64>,
    /// Source snapshot.
    pub snapshot_id: Option<String>,
    /// gp2 (default), gp3, io1, io2, st1, sc1, standard.
    pub volume_type: Option<String>,
    /// Provisioned IOPS (io1, io2, gp3).
    pub iops: Option<i64>,
    /// Throughput in MiB/s (gp3).
    pub throughput: Option<i64>,
    /// Encrypt the volume (recorded).
    pub encrypted: bool,
    /// KMS key (recorded).
    pub kms_key_id: Option<String>,
    /// Multi-attach (io1/io2 only).
    pub multi_attach_enabled: bool,
    /// Tags for the volume.
    pub tag_specifications: Vec<TagSpecification>,
    /// Idempotency token: a repeated call answers with the first call's volume.
    pub client_token: Option<String>,
}

/// Parameters of DescribeVolumes.
#[derive(Debug, Clone, Default)]
pub struct DescribeVolumesRequest {
    /// Explicit volume ids.
    pub volume_ids: Vec<String>,
    /// Filters.
    pub filters: Vec<RawFilter>,
    /// Page size.
    pub max_results: Option<i64>,
    /// Continuation token.
    pub next_token: Option<String>,
}

/// Parameters of ModifyVolume.
#[derive(Debug, Clone, Default)]
pub struct ModifyVolumeRequest {
    /// The volume.
    pub volume_id: String,
    /// New size in GiB (not smaller).
    pub size: Option<i64>,
    /// New type.
    pub volume_type: Option<String>,
    /// New IOPS.
    pub iops: Option<i64>,
    /// New throughput.
    pub throughput: Option<i64>,
}

/// A volume id and its latest modification (a row of DescribeVolumesModifications).
pub type VolumeModificationRow = (String, VolumeModification);

const VOLUME_FILTERS: &[&str] = &[
    "attachment.attach-time",
    "attachment.delete-on-termination",
    "attachment.device",
    "attachment.instance-id",
    "attachment.status",
    "availability-zone",
    "create-time",
    "encrypted",
    "fast-restored",
    "multi-attach-enabled",
    "size",
    "snapshot-id",
    "status",
    "volume-id",
    "volume-type",
];

const MODIFICATION_FILTERS: &[&str] = &[
    "modification-state",
    "original-size",
    "original-volume-type",
    "original-iops",
    "original-throughput",
    "start-time",
    "target-size",
    "target-volume-type",
    "target-iops",
    "target-throughput",
    "volume-id",
];

/// Validates a volume id's shape.
pub fn check_volume_id(id: &str) -> Result<()> {
    if ids::is_well_formed(id, "vol") {
        Ok(())
    } else {
        Err(Error::InvalidVolumeIdMalformed(id.to_string()))
    }
}

/// The volume, if the caller owns it in this region (volumes are never shared).
pub(crate) fn owned_volume<'s>(
    state: &'s State,
    ctx: &RequestContext,
    id: &str,
) -> Result<&'s Arc<Volume>> {
    check_volume_id(id)?;
    state
        .volumes
        .get(id)
        .filter(|v| v.region == ctx.region && v.owner_id == ctx.account_id())
        .ok_or_else(|| Error::InvalidVolumeNotFound(id.to_string()))
}

/// Size limits of a volume type, GiB.
fn size_limits(volume_type: &str) -> (i64, i64) {
    match volume_type {
        "standard" => (1, 1024),
        "io1" => (4, 16_384),
        "io2" => (4, 65_536),
        "st1" | "sc1" => (125, 16_384),
        _ => (1, 16_384),
    }
}

/// Checks type, size, IOPS and throughput together, and fills the defaults AWS reports:
/// gp2 gets 3 IOPS per GiB (100..16,000), gp3 3,000 IOPS and 125 MiB/s.
pub(crate) fn settle_performance(
    volume_type: &str,
    size: i64,
    iops: Option<i64>,
    throughput: Option<i64>,
) -> Result<(Option<i64>, Option<i64>)> {
    if !VOLUME_TYPES.contains(&volume_type) {
        return Err(Error::InvalidParameterValue(format!(
            "Value ({volume_type}) for parameter volumeType is invalid. Expected one of: {}",
            VOLUME_TYPES.join(", ")
        )));
    }
    let (min, max) = size_limits(volume_type);
    if !(min..=max).contains(&size) {
        return Err(Error::InvalidParameterValue(format!(
            "Volume of {size}GiB is out of range for {volume_type}: {min}-{max}GiB"
        )));
    }
    if throughput.is_some() && volume_type != "gp3" {
        return Err(Error::InvalidParameterCombination(format!(
            "The parameter throughput is not supported for {volume_type} volumes."
        )));
    }
    match (volume_type, iops) {
        ("io1" | "io2", None) => Err(Error::MissingParameter("iops".into())),
        ("io1" | "io2" | "gp3", Some(n)) if n < 100 => Err(Error::InvalidParameterValue(format!(
            "Iops {n} is below the minimum of 100"
        ))),
        ("io1" | "io2", Some(n)) => Ok((Some(n), None)),
        ("gp3", n) => Ok((Some(n.unwrap_or(3000)), Some(throughput.unwrap_or(125)))),
        (_, Some(_)) => Err(Error::InvalidParameterCombination(format!(
            "The parameter iops is not supported for {volume_type} volumes."
        ))),
        ("gp2", None) => Ok((Some((size * 3).clamp(100, 16_000)), None)),
        (_, None) => Ok((None, None)),
    }
}

impl Service {
    /// Where a volume's overlay and dirty list live.
    fn volume_dir(&self, volume_id: &str) -> std::path::PathBuf {
        self.data_dir.join("volumes").join(volume_id)
    }

    /// The bytes of a volume, opened once per process and shared: the source map comes
    /// from the store, the overlay from the volume's directory (created on first use).
    pub fn volume_data(&self, volume_id: &str) -> Result<Arc<Mutex<CowVolume>>> {
        let mut open = self
            .open_volumes
            .lock()
            .map_err(|_| Error::InternalError("volume table poisoned".into()))?;
        if let Some(v) = open.get(volume_id) {
            return Ok(v.clone());
        }
        let volume = self
            .read()?
            .volumes
            .get(volume_id)
            .cloned()
            .ok_or_else(|| Error::InvalidVolumeNotFound(volume_id.to_string()))?;
        let base = self.block_map(volume.base_snapshot_id.as_deref())?;
        let data = CowVolume::open(
            &self.volume_dir(volume_id),
            volume.size as u64 * GIB,
            base,
            self.shared_blocks(),
        )?;
        let data = Arc::new(Mutex::new(data));
        open.insert(volume_id.to_string(), data.clone());
        Ok(data)
    }

    /// A completed snapshot's whole block map (none for no snapshot).
    fn block_map(&self, snapshot_id: Option<&str>) -> Result<HashMap<u64, BlockHash>> {
        let Some(id) = snapshot_id else {
            return Ok(HashMap::new());
        };
        Ok(self
            .store()
            .snapshot_blocks(id, 0, i64::MAX)?
            .into_iter()
            .map(|b| (b.index as u64, b.hash))
            .collect())
    }

    /// The volume's data if this process has it open or it was written before a restart
    /// (its directory exists); `None` for a volume that was never written.
    fn written_volume_data(&self, volume_id: &str) -> Result<Option<Arc<Mutex<CowVolume>>>> {
        let is_open = self
            .open_volumes
            .lock()
            .map_err(|_| Error::InternalError("volume table poisoned".into()))?
            .contains_key(volume_id);
        if is_open || self.volume_dir(volume_id).exists() {
            self.volume_data(volume_id).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Forgets a deleted volume's data: closes it and removes its directory.
    pub(crate) fn drop_volume_data(&self, volume_id: &str) {
        if let Ok(mut open) = self.open_volumes.lock() {
            open.remove(volume_id);
        }
        let dir = self.volume_dir(volume_id);
        if dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!("could not remove {}: {e}", dir.display());
            }
        }
    }

    /// CreateVolume: a volume from a snapshot (no data copied) or an empty one.
    pub fn create_volume(
        &self,
        ctx: &RequestContext,
        req: &CreateVolumeRequest,
    ) -> Result<Arc<Volume>> {
        let zone = req
            .availability_zone
            .clone()
            .ok_or_else(|| Error::MissingParameter("AvailabilityZone".into()))?;
        if !zones_of(&ctx.region).iter().any(|z| z.zone_name == zone) {
            return Err(Error::InvalidAvailabilityZone(zone));
        }
        if req.size.is_none() && req.snapshot_id.is_none() {
            return Err(Error::MissingParameter("size or snapshotId".into()));
        }
        let tags = tags_for_new_resource(ctx, &req.tag_specifications, "volume", &["volume"])?;
        let volume_type = req.volume_type.clone().unwrap_or_else(|| "gp2".into());
        if req.multi_attach_enabled && !matches!(volume_type.as_str(), "io1" | "io2") {
            return Err(Error::InvalidParameterCombination(
                "Multi-attach is supported only for io1 and io2 volumes".into(),
            ));
        }
        // The token itself is not part of what must match on a retry.
        let fingerprint = format!(
            "{:?}",
            CreateVolumeRequest {
                client_token: None,
                ..req.clone()
            }
        );
        let token_key = req.client_token.as_ref().map(|token| {
            (
                ctx.account_id().to_string(),
                ctx.region.clone(),
                "CreateVolume".to_string(),
                token.clone(),
            )
        });
        let id = self.write(|state, issuer| {
            if let Some(record) = token_key.as_ref().and_then(|k| state.client_tokens.get(k)) {
                if record.fingerprint != fingerprint {
                    return Err(Error::IdempotentParameterMismatch(format!(
                        "The client token {} was already used with different parameters",
                        record.token
                    )));
                }
                ctx.finish_dry_run()?;
                return Ok((Vec::new(), record.resource_id.clone()));
            }
            let snapshot = match &req.snapshot_id {
                Some(sid) => {
                    let s = visible_snapshot(state, ctx, sid)?;
                    if s.state != SnapshotState::Completed {
                        return Err(Error::IncorrectState(format!(
                            "Snapshot is in invalid state - {}",
                            s.state.as_str()
                        )));
                    }
                    Some(s.clone())
                }
                None => None,
            };
            let size = req
                .size
                .or(snapshot.as_ref().map(|s| s.volume_size))
                .unwrap_or(0);
            if let Some(s) = &snapshot {
                if size < s.volume_size {
                    return Err(Error::InvalidParameterValue(format!(
                        "Volume of {size}GiB is too small; minimum is {}GiB.",
                        s.volume_size
                    )));
                }
            }
            let (iops, throughput) =
                settle_performance(&volume_type, size, req.iops, req.throughput)?;
            ctx.finish_dry_run()?;
            let volume_id = issuer.issue("vol")?;
            let volume = Volume {
                volume_id: volume_id.clone(),
                region: ctx.region.clone(),
                availability_zone: zone.clone(),
                owner_id: ctx.account_id().to_string(),
                size,
                snapshot_id: snapshot.as_ref().map(|s| s.snapshot_id.clone()),
                base_snapshot_id: snapshot.as_ref().map(|s| s.snapshot_id.clone()),
                volume_type: volume_type.clone(),
                iops,
                throughput,
                encrypted: req.encrypted || snapshot.as_ref().is_some_and(|s| s.encrypted),
                kms_key_id: req
                    .kms_key_id
                    .clone()
                    .or_else(|| snapshot.as_ref().and_then(|s| s.kms_key_id.clone())),
                multi_attach_enabled: req.multi_attach_enabled,
                state: VolumeState::Creating,
                create_time: time::now_string(),
                modification: None,
                tags: tags.clone(),
                attachment: None,
            };
            let mut changes = vec![Change::PutVolume(volume)];
            if let Some((account_id, region, action, token)) = token_key.clone() {
                changes.push(Change::PutClientToken(ClientTokenRecord {
                    account_id,
                    region,
                    action,
                    token,
                    fingerprint: fingerprint.clone(),
                    resource_id: volume_id.clone(),
                }));
            }
            Ok((changes, volume_id))
        })?;
        let state = self.read()?;
        state
            .volumes
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::InternalError(format!("volume {id} vanished")))
    }

    /// DescribeVolumes: the caller's volumes in the region that match, one page of them.
    pub fn describe_volumes(
        &self,
        ctx: &RequestContext,
        req: &DescribeVolumesRequest,
    ) -> Result<(Vec<Arc<Volume>>, Option<String>)> {
        let page = PageRequest::parse(
            req.max_results,
            req.next_token.as_deref(),
            !req.volume_ids.is_empty(),
            5,
        )?;
        let filters = Filters::compile(&req.filters, VOLUME_FILTERS, true)?;
        for id in &req.volume_ids {
            check_volume_id(id)?;
        }
        ctx.finish_dry_run()?;
        let state = self.read()?;
        let selected = |v: &Volume| -> bool {
            v.region == ctx.region
                && v.owner_id == ctx.account_id()
                && filters.matches(|f| volume_filter_values(v, f, ctx))
        };
        if !req.volume_ids.is_empty() {
            let wanted: BTreeSet<&String> = req.volume_ids.iter().collect();
            let mut found = Vec::new();
            for id in wanted {
                let v = owned_volume(&state, ctx, id)?;
                if selected(v) {
                    found.push(v.clone());
                }
            }
            return Ok((found, None));
        }
        Ok(page.take_from(&state.volumes, |v| selected(v)))
    }

    /// DeleteVolume: only an available volume; its block map reference goes with it.
    pub fn delete_volume(&self, ctx: &RequestContext, volume_id: &str) -> Result<()> {
        self.write(|state, _| {
            let v = owned_volume(state, ctx, volume_id)?;
            match v.state {
                VolumeState::Available | VolumeState::Error | VolumeState::Creating => {}
                VolumeState::InUse => {
                    return Err(Error::VolumeInUse(
                        volume_id.to_string(),
                        "an instance".to_string(),
                    ))
                }
                VolumeState::Deleting => {
                    return Err(Error::IncorrectState(format!(
                        "The volume '{volume_id}' is already being deleted"
                    )))
                }
            }
            ctx.finish_dry_run()?;
            Ok((vec![Change::DeleteVolume(volume_id.to_string())], ()))
        })?;
        self.drop_volume_data(volume_id);
        Ok(())
    }

    /// ModifyVolume: grow, change type or performance; the modification completes in the
    /// background (DescribeVolumesModifications follows it).
    pub fn modify_volume(
        &self,
        ctx: &RequestContext,
        req: &ModifyVolumeRequest,
    ) -> Result<(String, VolumeModification)> {
        self.write(|state, _| {
            let v = owned_volume(state, ctx, &req.volume_id)?;
            if v.state != VolumeState::Available && v.state != VolumeState::InUse {
                return Err(Error::IncorrectState(format!(
                    "Volume {} is in state {} and cannot be modified",
                    v.volume_id,
                    v.state.as_str()
                )));
            }
            if v.modification
                .as_ref()
                .is_some_and(|m| m.state != "completed" && m.state != "failed")
            {
                return Err(Error::IncorrectModificationState(format!(
                    "Volume {} cannot be modified in modification state {}",
                    v.volume_id,
                    v.modification
                        .as_ref()
                        .map_or("", |m| m.state.as_str())
                        .to_uppercase()
                )));
            }
            if req.size.is_none()
                && req.volume_type.is_none()
                && req.iops.is_none()
                && req.throughput.is_none()
            {
                return Err(Error::MissingParameter(
                    "Size, VolumeType, Iops or Throughput".into(),
                ));
            }
            let size = req.size.unwrap_or(v.size);
            if size < v.size {
                return Err(Error::InvalidParameterValue(format!(
                    "New size ({size}GiB) cannot be smaller than the existing size ({}GiB)",
                    v.size
                )));
            }
            let volume_type = req
                .volume_type
                .clone()
                .unwrap_or_else(|| v.volume_type.clone());
            let keep_performance = volume_type == v.volume_type;
            let (iops, throughput) = settle_performance(
                &volume_type,
                size,
                req.iops.or(if keep_performance && volume_type != "gp2" {
                    v.iops
                } else {
                    None
                }),
                req.throughput
                    .or(if keep_performance { v.throughput } else { None }),
            )?;
            ctx.finish_dry_run()?;
            let modification = VolumeModification {
                state: "modifying".into(),
                original_size: v.size,
                target_size: size,
                original_volume_type: v.volume_type.clone(),
                target_volume_type: volume_type.clone(),
                original_iops: v.iops,
                target_iops: iops,
                original_throughput: v.throughput,
                target_throughput: throughput,
                progress: 0,
                start_time: time::now_string(),
                end_time: None,
            };
            let mut changed = (**v).clone();
            changed.size = size;
            changed.volume_type = volume_type;
            changed.iops = iops;
            changed.throughput = throughput;
            changed.modification = Some(modification.clone());
            Ok((
                vec![Change::PutVolume(changed)],
                (req.volume_id.clone(), modification),
            ))
        })
    }

    /// DescribeVolumesModifications: the latest modification of each of the caller's volumes.
    pub fn describe_volumes_modifications(
        &self,
        ctx: &RequestContext,
        volume_ids: &[String],
        filters: &[RawFilter],
        max_results: Option<i64>,
        next_token: Option<&str>,
    ) -> Result<(Vec<VolumeModificationRow>, Option<String>)> {
        let page = PageRequest::parse(max_results, next_token, false, 5)?;
        let filters = Filters::compile(filters, MODIFICATION_FILTERS, false)?;
        for id in volume_ids {
            check_volume_id(id)?;
        }
        ctx.finish_dry_run()?;
        let state = self.read()?;
        for id in volume_ids {
            if owned_volume(&state, ctx, id)?.modification.is_none() {
                return Err(Error::InvalidVolumeModificationNotFound(id.clone()));
            }
        }
        let rows = state.volumes.values().filter_map(|v| {
            let m = v.modification.as_ref()?;
            let wanted = (volume_ids.is_empty() || volume_ids.contains(&v.volume_id))
                && v.region == ctx.region
                && v.owner_id == ctx.account_id()
                && filters.matches(|f| modification_filter_values(&v.volume_id, m, f));
            wanted.then(|| (v.volume_id.clone(), (v.volume_id.clone(), m.clone())))
        });
        let after = page.after.clone();
        Ok(page.take(rows.filter(|(k, _)| after.as_ref().is_none_or(|a| k > a))))
    }

    /// CreateSnapshot of a volume: a pending snapshot of the volume's current blocks that
    /// completes in the background. A volume never written shares its source map (no block
    /// is read or hashed); otherwise only the blocks written since the volume's source are
    /// hashed and stored, and the snapshot is its source's map overlaid with them. The volume
    /// is held still while its written blocks are read, so the snapshot is crash-consistent;
    /// afterwards the volume reads through the new snapshot.
    pub fn create_snapshot(
        &self,
        ctx: &RequestContext,
        volume_id: &str,
        description: Option<&str>,
        tag_specifications: &[TagSpecification],
    ) -> Result<Arc<Snapshot>> {
        let tags = tags_for_new_resource(ctx, tag_specifications, "snapshot", &["snapshot"])?;
        if description.is_some_and(|d| d.chars().count() > 255) {
            return Err(Error::InvalidParameterValue(
                "The description may be at most 255 characters".into(),
            ));
        }
        // Checked again under the gate below; this only decides which path to take.
        owned_volume(&*self.read()?, ctx, volume_id)?;
        let written = self
            .written_volume_data(volume_id)?
            .filter(|d| d.lock().is_ok_and(|d| d.dirty_blocks().next().is_some()));
        let id = self.write(|state, issuer| {
            let v = owned_volume(state, ctx, volume_id)?;
            if v.state != VolumeState::Available && v.state != VolumeState::InUse {
                return Err(Error::IncorrectState(format!(
                    "Volume {volume_id} is in state {} and cannot be snapshotted",
                    v.state.as_str()
                )));
            }
            ctx.finish_dry_run()?;
            let snapshot_id = issuer.issue("snap")?;
            let snapshot = Snapshot {
                volume_id: v.volume_id.clone(),
                description: description.unwrap_or_default().to_string(),
                encrypted: v.encrypted,
                kms_key_id: v.kms_key_id.clone(),
                tags: tags.clone(),
                taken_from_volume: true,
                ..Snapshot::new_pending(
                    snapshot_id.clone(),
                    ctx.region.clone(),
                    ctx.account_id().to_string(),
                    v.size,
                    time::now_string(),
                )
            };
            let mut changes = Vec::new();
            match &written {
                // Written blocks are stored below, outside the writer gate; until the map
                // is sealed the snapshot counts as an unfinished import (a restart drops it).
                Some(_) => {
                    let mut snapshot = snapshot;
                    snapshot.importing = true;
                    changes.push(Change::PutSnapshot(snapshot));
                }
                None => {
                    changes.push(Change::PutSnapshot(snapshot));
                    if let Some(base) = &v.base_snapshot_id {
                        changes.push(Change::CopySnapshotBlocks {
                            from: base.clone(),
                            to: snapshot_id.clone(),
                        });
                    }
                }
            }
            Ok((changes, snapshot_id))
        })?;
        if let Some(data) = written {
            self.store_written_blocks(volume_id, &id, &data)?;
        }
        let state = self.read()?;
        state
            .snapshots
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::InternalError(format!("snapshot {id} vanished")))
    }

    /// Fills a `pending` snapshot record (marked `importing`) with the volume's current
    /// contents: the written blocks are stored over the volume's source, or, if nothing was
    /// written, the snapshot shares the source's map. CreateImage uses it for each volume.
    pub(crate) fn fill_volume_snapshot(&self, volume_id: &str, snapshot_id: &str) -> Result<()> {
        let written = self
            .written_volume_data(volume_id)?
            .filter(|d| d.lock().is_ok_and(|d| d.dirty_blocks().next().is_some()));
        if let Some(data) = written {
            return self.store_written_blocks(volume_id, snapshot_id, &data);
        }
        self.write(|state, _| {
            let volume = state
                .volumes
                .get(volume_id)
                .ok_or_else(|| Error::InvalidVolumeNotFound(volume_id.to_string()))?;
            let mut snapshot = state
                .snapshots
                .get(snapshot_id)
                .map(|s| (**s).clone())
                .ok_or_else(|| Error::InternalError(format!("snapshot {snapshot_id} vanished")))?;
            snapshot.parent_snapshot_id = volume.base_snapshot_id.clone();
            snapshot.importing = false;
            let mut changes = Vec::new();
            if let Some(base) = &volume.base_snapshot_id {
                changes.push(Change::CopySnapshotBlocks {
                    from: base.clone(),
                    to: snapshot_id.to_string(),
                });
            }
            changes.push(Change::PutSnapshot(snapshot));
            Ok((changes, ()))
        })
    }

    /// Stores a volume's written blocks as the pending blocks of `snapshot_id`, seals the
    /// snapshot over the volume's source, and makes it the volume's new source. On failure
    /// the snapshot goes to `error` and its pending blocks are dropped.
    fn store_written_blocks(
        &self,
        volume_id: &str,
        snapshot_id: &str,
        data: &Mutex<CowVolume>,
    ) -> Result<()> {
        let mut data = data
            .lock()
            .map_err(|_| Error::InternalError("volume lock poisoned".into()))?;
        let outcome = self.seal_volume_snapshot(volume_id, snapshot_id, &mut data);
        if let Err(e) = &outcome {
            tracing::warn!("snapshot {snapshot_id} of {volume_id} failed: {e}");
            self.fail_snapshot(snapshot_id, e);
        }
        outcome
    }

    /// Puts a snapshot that could not be filled in `error` and drops its pending blocks (an image using it then fails).
    pub(crate) fn fail_snapshot(&self, snapshot_id: &str, error: &Error) {
        let outcome = self.write(|state, _| {
            let Some(s) = state.snapshots.get(snapshot_id) else {
                return Ok((Vec::new(), ()));
            };
            let mut failed = (**s).clone();
            failed.state = SnapshotState::Error;
            failed.state_message = Some(error.to_string());
            failed.importing = false;
            Ok((
                vec![
                    Change::DropPendingBlocks(snapshot_id.to_string()),
                    Change::PutSnapshot(failed),
                ],
                (),
            ))
        });
        if let Err(e) = outcome {
            tracing::warn!("recording the failure of {snapshot_id}: {e}");
        }
    }

    /// The work of [`Self::store_written_blocks`], with the volume held still.
    fn seal_volume_snapshot(
        &self,
        volume_id: &str,
        snapshot_id: &str,
        data: &mut CowVolume,
    ) -> Result<()> {
        // Flushed first: the snapshot must not hold bytes the volume could still lose.
        data.flush()?;
        let written: Vec<u64> = data.dirty_blocks().collect();
        {
            // Held from "block stored" to "pending row committed", as every writer does.
            let _writer = self.blocks().writer_guard()?;
            let mut rows = Vec::with_capacity(written.len());
            for &index in &written {
                let block = data.read_block(index)?;
                let (hash, _) = self.blocks().put(&block)?;
                let stored = (&hash != zero_block_hash()).then_some(block.len() as u64);
                rows.push((index as i64, hash, stored));
            }
            self.store().add_pending_blocks(snapshot_id, &rows)?;
        }
        self.write(|state, _| {
            let volume = state
                .volumes
                .get(volume_id)
                .ok_or_else(|| Error::InvalidVolumeNotFound(volume_id.to_string()))?;
            let mut snapshot = state
                .snapshots
                .get(snapshot_id)
                .map(|s| (**s).clone())
                .ok_or_else(|| Error::InternalError(format!("snapshot {snapshot_id} vanished")))?;
            // The volume's source now, not when the call began: a snapshot taken meanwhile
            // already holds (and rebased away) the blocks written before it.
            snapshot.parent_snapshot_id = volume.base_snapshot_id.clone();
            snapshot.importing = false;
            let mut rebased = (**volume).clone();
            rebased.base_snapshot_id = Some(snapshot_id.to_string());
            Ok((
                vec![
                    Change::SealSnapshotBlocks {
                        snapshot_id: snapshot_id.to_string(),
                        parent: snapshot.parent_snapshot_id.clone(),
                    },
                    Change::PutSnapshot(snapshot),
                    Change::PutVolume(rebased),
                ],
                (),
            ))
        })?;
        let map = self.block_map(Some(snapshot_id))?;
        data.rebase(map, &written)
    }

    /// Background work of volumes: `creating` → `available` and modifications →
    /// `completed`, after the configured delay. Returns how many records changed.
    pub fn complete_volume_work(&self) -> Result<usize> {
        let now = time::now_ms();
        let delay = self.config().copy_delay_ms;
        let due = |since: &str| time::parse_ms(since).map_or(true, |t| now - t >= delay);
        self.write(|state, _| {
            let mut changes = Vec::new();
            for v in state.volumes.values() {
                let creating = v.state == VolumeState::Creating && due(&v.create_time);
                let modifying = v
                    .modification
                    .as_ref()
                    .is_some_and(|m| m.state == "modifying" && due(&m.start_time));
                if !creating && !modifying {
                    continue;
                }
                let mut done = (**v).clone();
                if creating {
                    done.state = VolumeState::Available;
                }
                if let Some(m) = done.modification.as_mut().filter(|_| modifying) {
                    m.state = "completed".into();
                    m.progress = 100;
                    m.end_time = Some(time::format_ms(now));
                }
                changes.push(Change::PutVolume(done));
            }
            let n = changes.len();
            Ok((changes, n))
        })
    }
}

fn volume_filter_values(v: &Volume, f: &Filter, ctx: &RequestContext) -> Vec<String> {
    if let Some(values) = tag_filter_values(f, v.tags.of(ctx.account_id())) {
        return values;
    }
    match f.name.as_str() {
        "availability-zone" => vec![v.availability_zone.clone()],
        "create-time" => vec![v.create_time.clone()],
        "encrypted" => vec![bool_value(v.encrypted)],
        "fast-restored" => vec![bool_value(false)],
        "multi-attach-enabled" => vec![bool_value(v.multi_attach_enabled)],
        "size" => vec![v.size.to_string()],
        "snapshot-id" => v.snapshot_id.iter().cloned().collect(),
        "status" => vec![v.state.as_str().to_string()],
        "volume-id" => vec![v.volume_id.clone()],
        "volume-type" => vec![v.volume_type.clone()],
        "attachment.attach-time" => v.attachment.iter().map(|a| a.attach_time.clone()).collect(),
        "attachment.delete-on-termination" => v
            .attachment
            .iter()
            .map(|a| bool_value(a.delete_on_termination))
            .collect(),
        "attachment.device" => v.attachment.iter().map(|a| a.device.clone()).collect(),
        "attachment.instance-id" => v.attachment.iter().map(|a| a.instance_id.clone()).collect(),
        "attachment.status" => v.attachment.iter().map(|a| a.state.clone()).collect(),
        _ => Vec::new(),
    }
}

fn modification_filter_values(volume_id: &str, m: &VolumeModification, f: &Filter) -> Vec<String> {
    let opt = |v: Option<i64>| v.map(|n| n.to_string()).into_iter().collect();
    match f.name.as_str() {
        "modification-state" => vec![m.state.clone()],
        "original-size" => vec![m.original_size.to_string()],
        "original-volume-type" => vec![m.original_volume_type.clone()],
        "original-iops" => opt(m.original_iops),
        "original-throughput" => opt(m.original_throughput),
        "start-time" => vec![m.start_time.clone()],
        "target-size" => vec![m.target_size.to_string()],
        "target-volume-type" => vec![m.target_volume_type.clone()],
        "target-iops" => opt(m.target_iops),
        "target-throughput" => opt(m.target_throughput),
        "volume-id" => vec![volume_id.to_string()],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::BLOCK_SIZE;
    use crate::service::model::Account;
    use crate::service::ServiceConfig;

    fn service() -> (tempfile::TempDir, Service) {
        let dir = tempfile::tempdir().unwrap();
        let config = ServiceConfig {
            copy_delay_ms: 0,
            ..ServiceConfig::default()
        };
        let svc = Service::open(dir.path(), config).unwrap();
        (dir, svc)
    }

    fn ctx() -> RequestContext {
        RequestContext {
            account: Account {
                account_id: "123456789012".into(),
                name: "t".into(),
                alias: None,
                organization_arn: None,
                organizational_unit_arn: None,
            },
            region: "us-east-1".into(),
            dry_run: false,
        }
    }

    fn available_volume(svc: &Service, snapshot_id: Option<&str>) -> String {
        let v = svc
            .create_volume(
                &ctx(),
                &CreateVolumeRequest {
                    availability_zone: Some("us-east-1a".into()),
                    size: Some(1),
                    snapshot_id: snapshot_id.map(str::to_string),
                    ..CreateVolumeRequest::default()
                },
            )
            .unwrap();
        svc.complete_volume_work().unwrap();
        v.volume_id.clone()
    }

    fn completed_snapshot(svc: &Service, volume_id: &str) -> Arc<Snapshot> {
        let s = svc.create_snapshot(&ctx(), volume_id, None, &[]).unwrap();
        svc.complete_pending_work().unwrap();
        svc.read()
            .unwrap()
            .snapshots
            .get(&s.snapshot_id)
            .unwrap()
            .clone()
    }

    fn write(svc: &Service, volume_id: &str, offset: u64, byte: u8) {
        let data = svc.volume_data(volume_id).unwrap();
        data.lock()
            .unwrap()
            .write_at(offset, &[byte; 4096])
            .unwrap();
    }

    #[test]
    fn create_snapshot_of_written_volume_stores_only_written_blocks_incrementally() {
        let (_dir, svc) = service();
        let vol = available_volume(&svc, None);
        write(&svc, &vol, 0, 0xA1);
        write(&svc, &vol, 5 * BLOCK_SIZE as u64 + 7, 0xB2);
        let first = completed_snapshot(&svc, &vol);
        assert_eq!(first.state, SnapshotState::Completed);
        let map = svc.block_map(Some(&first.snapshot_id)).unwrap();
        assert_eq!(
            map.keys().copied().collect::<BTreeSet<_>>(),
            BTreeSet::from([0, 5])
        );
        // The volume now reads through the snapshot and has nothing left to store.
        assert_eq!(
            svc.volume_data(&vol)
                .unwrap()
                .lock()
                .unwrap()
                .dirty_blocks()
                .count(),
            0
        );

        write(&svc, &vol, 9 * BLOCK_SIZE as u64, 0xC3);
        let second = completed_snapshot(&svc, &vol);
        assert_eq!(
            second.parent_snapshot_id.as_deref(),
            Some(first.snapshot_id.as_str())
        );
        let map2 = svc.block_map(Some(&second.snapshot_id)).unwrap();
        assert_eq!(
            map2.keys().copied().collect::<BTreeSet<_>>(),
            BTreeSet::from([0, 5, 9])
        );
        assert_eq!(
            map2[&0], map[&0],
            "unchanged blocks are shared, not stored again"
        );
    }

    #[test]
    fn volume_from_snapshot_of_written_volume_reads_written_bytes_after_source_deleted() {
        let (_dir, svc) = service();
        let vol = available_volume(&svc, None);
        write(&svc, &vol, 3 * BLOCK_SIZE as u64 + 100, 0x5A);
        let snap = completed_snapshot(&svc, &vol);
        let copy = available_volume(&svc, Some(&snap.snapshot_id));
        svc.delete_snapshot(&ctx(), &snap.snapshot_id).unwrap();
        svc.delete_volume(&ctx(), &vol).unwrap();
        svc.collect_garbage(false).unwrap();
        let data = svc.volume_data(&copy).unwrap();
        let mut buf = [0u8; 4];
        data.lock()
            .unwrap()
            .read_at(3 * BLOCK_SIZE as u64 + 100, &mut buf)
            .unwrap();
        assert_eq!(buf, [0x5A; 4]);
    }

    #[test]
    fn create_snapshot_twice_after_one_write_second_equals_first() {
        let (_dir, svc) = service();
        let vol = available_volume(&svc, None);
        write(&svc, &vol, 2 * BLOCK_SIZE as u64, 0x44);
        let first = completed_snapshot(&svc, &vol);
        let second = completed_snapshot(&svc, &vol);
        assert_eq!(
            svc.block_map(Some(&second.snapshot_id)).unwrap(),
            svc.block_map(Some(&first.snapshot_id)).unwrap()
        );
        assert_eq!(
            second.parent_snapshot_id, None,
            "nothing written: shares the map"
        );
    }

    #[test]
    fn delete_written_volume_removes_its_directory() {
        let (dir, svc) = service();
        let vol = available_volume(&svc, None);
        write(&svc, &vol, 0, 1);
        let vol_dir = dir.path().join("volumes").join(&vol);
        assert!(vol_dir.exists());
        svc.delete_volume(&ctx(), &vol).unwrap();
        assert!(!vol_dir.exists());
    }

    #[test]
    fn settle_performance_gp2_defaults_to_three_iops_per_gib() {
        assert_eq!(
            settle_performance("gp2", 10, None, None).unwrap(),
            (Some(100), None)
        );
        assert_eq!(
            settle_performance("gp2", 100, None, None).unwrap(),
            (Some(300), None)
        );
    }

    #[test]
    fn settle_performance_io1_without_iops_fails_with_missing_parameter() {
        let e = settle_performance("io1", 10, None, None).unwrap_err();
        assert_eq!(e.code(), "MissingParameter");
    }

    #[test]
    fn settle_performance_throughput_on_gp2_fails_with_combination_error() {
        let e = settle_performance("gp2", 10, None, Some(200)).unwrap_err();
        assert_eq!(e.code(), "InvalidParameterCombination");
    }

    #[test]
    fn settle_performance_st1_below_minimum_size_fails() {
        assert!(settle_performance("st1", 100, None, None).is_err());
        assert!(settle_performance("st1", 125, None, None).is_ok());
    }
}
