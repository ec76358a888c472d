//! CreateImage: an image from an instance's volumes.
//!
//! The image and one snapshot per included volume are recorded `pending` at once (a waiter
//! sees the image immediately); the instance's machine then powers the guest down cleanly
//! (unless NoReboot), fills each snapshot with only the blocks written since the volume's
//! source (so the root snapshot is incremental over the source image's), and starts the
//! guest again. The background work completes the snapshots and then the image.

use super::images::{check_description, check_name, check_unique_name};
use super::instances::owned_instance;
use super::machines::MachineOp;
use super::model::{
    BlockDeviceMapping, EbsBlockDevice, Image, ImageDetails, ImageState, InstanceState,
    PendingWork, Snapshot,
};
use super::tags::{tags_for_new_resource, TagSpecification};
use super::{time, RequestContext, Service};
use crate::error::{Error, Result};
use crate::store::Change;

/// Parameters of CreateImage.
#[derive(Debug, Clone, Default)]
pub struct CreateImageRequest {
    /// The instance.
    pub instance_id: String,
    /// Name of the new image.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Snapshot the volumes live instead of powering the guest down first.
    pub no_reboot: bool,
    /// Mappings that drop (`NoDevice`) or adjust the instance's volumes in the image.
    pub block_device_mappings: Vec<BlockDeviceMapping>,
    /// Tags for the image and its snapshots.
    pub tag_specifications: Vec<TagSpecification>,
}

/// Parameters of CreateSnapshots.
#[derive(Debug, Clone, Default)]
pub struct CreateSnapshotsRequest {
    /// The instance whose volumes are snapshotted.
    pub instance_id: String,
    /// Leave out the root volume.
    pub exclude_boot_volume: bool,
    /// Leave out these data volumes.
    pub exclude_data_volume_ids: Vec<String>,
    /// Description of every snapshot.
    pub description: Option<String>,
    /// Tags for the snapshots.
    pub tag_specifications: Vec<TagSpecification>,
}

impl Service {
    /// CreateSnapshots: one snapshot per attached volume of an instance (each incremental
    /// over its volume's source, taken as CreateSnapshot takes it).
    pub fn create_snapshots(
        &self,
        ctx: &RequestContext,
        req: &CreateSnapshotsRequest,
    ) -> Result<Vec<std::sync::Arc<Snapshot>>> {
        let volumes: Vec<String> = {
            let state = self.read()?;
            let instance = owned_instance(&state, ctx, &req.instance_id)?;
            if instance.state == InstanceState::Terminated {
                return Err(Error::IncorrectInstanceState(format!(
                    "The instance '{}' is terminated.",
                    req.instance_id
                )));
            }
            instance
                .block_devices
                .iter()
                .filter(|d| {
                    !(req.exclude_boot_volume && d.device_name == instance.root_device_name)
                })
                .filter(|d| !req.exclude_data_volume_ids.contains(&d.volume_id))
                .map(|d| d.volume_id.clone())
                .collect()
        };
        ctx.finish_dry_run()?;
        volumes
            .iter()
            .map(|v| {
                self.create_snapshot(ctx, v, req.description.as_deref(), &req.tag_specifications)
            })
            .collect()
    }

    /// CreateImage: records the image and its snapshots `pending` and queues the work.
    pub fn create_image(&self, ctx: &RequestContext, req: &CreateImageRequest) -> Result<String> {
        let name = req
            .name
            .clone()
            .ok_or_else(|| Error::MissingParameter("Name".into()))?;
        check_name(&name)?;
        check_description(&req.description)?;
        let allowed = ["image", "snapshot"];
        let image_tags = tags_for_new_resource(ctx, &req.tag_specifications, "image", &allowed)?;
        let snapshot_tags =
            tags_for_new_resource(ctx, &req.tag_specifications, "snapshot", &allowed)?;
        let image_id = self.write(|state, issuer| {
            let instance = owned_instance(state, ctx, &req.instance_id)?;
            if !matches!(
                instance.state,
                InstanceState::Running | InstanceState::Stopped
            ) {
                return Err(Error::IncorrectInstanceState(format!(
                    "The instance '{}' is not in a state from which an image can be created ({}).",
                    instance.instance_id,
                    instance.state.as_str()
                )));
            }
            check_unique_name(state, ctx, &name)?;
            let source = state.images.get(instance.image_id.as_str());
            ctx.finish_dry_run()?;
            let image_id = issuer.issue("ami")?;
            let now = time::now_string();
            let mut changes = Vec::new();
            let mut mappings = Vec::new();
            for device in &instance.block_devices {
                let adjust = req
                    .block_device_mappings
                    .iter()
                    .find(|m| m.device_name == device.device_name.as_str());
                if adjust.is_some_and(|m| m.no_device) {
                    if device.device_name == instance.root_device_name {
                        return Err(Error::InvalidBlockDeviceMapping(
                            "The root device cannot be dropped from the image".into(),
                        ));
                    }
                    continue;
                }
                let volume = state.volumes.get(&device.volume_id).ok_or_else(|| {
                    Error::InternalError(format!("volume {} vanished", device.volume_id))
                })?;
                let adjust_ebs = adjust.and_then(|m| m.ebs.as_ref());
                let snapshot_id = issuer.issue("snap")?;
                changes.push(Change::PutSnapshot(Snapshot {
                    volume_id: volume.volume_id.clone(),
                    description: format!(
                        "Created by CreateImage({}) for {image_id}",
                        instance.instance_id
                    ),
                    encrypted: volume.encrypted,
                    kms_key_id: volume.kms_key_id.clone(),
                    tags: snapshot_tags.clone(),
                    taken_from_volume: true,
                    // Filled by the machine; a restart before then fails it (and the image).
                    importing: true,
                    ..Snapshot::new_pending(
                        snapshot_id.clone(),
                        ctx.region.clone(),
                        ctx.account_id().to_string(),
                        volume.size,
                        now.clone(),
                    )
                }));
                mappings.push(BlockDeviceMapping {
                    device_name: device.device_name.as_str().into(),
                    virtual_name: None,
                    ebs: Some(EbsBlockDevice {
                        snapshot_id: Some(snapshot_id.as_str().into()),
                        volume_size: Some(
                            adjust_ebs
                                .and_then(|e| e.volume_size)
                                .unwrap_or(volume.size)
                                .max(volume.size),
                        ),
                        volume_type: Some(
                            adjust_ebs
                                .and_then(|e| e.volume_type.clone())
                                .unwrap_or_else(|| volume.volume_type.as_str().into()),
                        ),
                        iops: volume.iops,
                        throughput: volume.throughput,
                        delete_on_termination: Some(
                            adjust_ebs
                                .and_then(|e| e.delete_on_termination)
                                .unwrap_or(device.delete_on_termination),
                        ),
                        encrypted: Some(volume.encrypted),
                        kms_key_id: None,
                    }),
                    no_device: false,
                });
            }
            changes.push(Change::PutImage(Image {
                image_id: image_id.as_str().into(),
                region: ctx.region.as_str().into(),
                owner_id: ctx.account_id().into(),
                name: name.as_str().into(),
                description: req.description.as_deref().map(Into::into),
                architecture: instance.architecture.as_str().into(),
                image_type: "machine".into(),
                virtualization_type: instance.virtualization_type.as_str().into(),
                root_device_name: instance.root_device_name.as_str().into(),
                root_device_type: "ebs".into(),
                block_device_mappings: mappings,
                boot_mode: source.and_then(|s| s.boot_mode.clone()),
                ena_support: source.and_then(|s| s.ena_support),
                imds_support: source.and_then(|s| s.imds_support.clone()),
                creation_date: now.as_str().into(),
                state: ImageState::Pending,
                launch_permissions: Vec::new(),
                pending_work: Some(PendingWork::FromInstance),
                tags: image_tags.clone(),
                details: ImageDetails {
                    kernel_id: instance.kernel_id.as_deref().map(Into::into),
                    ramdisk_id: instance.ramdisk_id.as_deref().map(Into::into),
                    ..ImageDetails::default()
                }
                .boxed(),
            }));
            Ok((changes, image_id))
        })?;
        self.queue_machine_op(
            &req.instance_id,
            MachineOp::CreateImage {
                image_id: image_id.clone(),
                no_reboot: req.no_reboot,
            },
        );
        Ok(image_id)
    }

    /// The machine's part of CreateImage: quiet the guest (unless `no_reboot`), fill each
    /// snapshot from its volume, resume the guest.
    pub(crate) fn image_from_machine(
        &self,
        machine: &mut super::machines::Machine,
        image_id: &str,
        no_reboot: bool,
    ) -> Result<()> {
        let work: Vec<(String, String)> = {
            let state = self.read()?;
            let Some(image) = state.images.get(image_id) else {
                return Ok(());
            };
            image
                .snapshot_ids()
                .filter_map(|s| state.snapshots.get(s))
                .map(|s| (s.volume_id.clone(), s.snapshot_id.clone()))
                .collect()
        };
        self.with_guest_quiet(machine, no_reboot, || {
            for (volume_id, snapshot_id) in &work {
                if let Err(e) = self.fill_volume_snapshot(volume_id, snapshot_id) {
                    self.fail_snapshot(snapshot_id, &e);
                    return Err(e);
                }
            }
            Ok(())
        })
    }
}
