//! Instances as the API sees them: RunInstances, DescribeInstances, DescribeInstanceStatus,
//! Start/Stop/Reboot/TerminateInstances, GetConsoleOutput and instance attributes.
//!
//! These calls validate, record the new state (`pending`, `stopping`, `shutting-down`) and
//! queue the work on the instance's machine; [`super::machines`] does that work with QEMU
//! and records where it ends (`running`, `stopped`, `terminated`). A client therefore sees
//! each transition as EC2 reports it, and a state is only ever what the VM really did.

use super::filters::{bool_value, tag_filter_values, Filter, Filters, RawFilter};
use super::images::visible_image;
use super::instance_types::instance_type;
use super::machines::MachineOp;
use super::model::{
    BlockDeviceMapping, ImageState, Instance, InstanceBlockDevice, InstanceState, StateReason,
    Volume, VolumeAttachment, VolumeState,
};
use super::pagination::PageRequest;
use super::regions::zones_of;
use super::state::State;
use super::tags::{tags_for_new_resource, TagSpecification};
use super::volumes::settle_performance;
use super::{ids, time, RequestContext, Service};
use crate::error::{Error, Result};
use crate::store::{Change, ClientTokenRecord};
use base64::Engine;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Most instances one RunInstances call may start.
pub const MAX_INSTANCES_PER_LAUNCH: i64 = 20;
/// How long a terminated instance stays visible.
pub const TERMINATED_VISIBLE_MS: i64 = 60 * 60 * 1000;
/// Largest user data, decoded (as EC2).
const MAX_USER_DATA_BYTES: usize = 16 * 1024;
/// GetConsoleOutput returns at most this much of the end of the console.
const CONSOLE_OUTPUT_BYTES: usize = 64 * 1024;

/// Parameters of RunInstances.
#[derive(Debug, Clone, Default)]
pub struct RunInstancesRequest {
    /// Image to launch.
    pub image_id: Option<String>,
    /// Instance type (default `t3.micro`).
    pub instance_type: Option<String>,
    /// Fewest instances to start.
    pub min_count: Option<i64>,
    /// Most instances to start.
    pub max_count: Option<i64>,
    /// User data, base64.
    pub user_data: Option<String>,
    /// Block device mappings overriding or adding to the image's.
    pub block_device_mappings: Vec<BlockDeviceMapping>,
    /// Tags for the instances and their volumes.
    pub tag_specifications: Vec<TagSpecification>,
    /// Idempotency token.
    pub client_token: Option<String>,
    /// `stop` (default) or `terminate`.
    pub shutdown_behavior: Option<String>,
    /// Refuse TerminateInstances.
    pub disable_api_termination: bool,
    /// Placement zone (default: the region's first).
    pub availability_zone: Option<String>,
    /// Kernel overriding the image's.
    pub kernel_id: Option<String>,
    /// Ramdisk overriding the image's.
    pub ramdisk_id: Option<String>,
}

/// Parameters of DescribeInstances and DescribeInstanceStatus.
#[derive(Debug, Clone, Default)]
pub struct DescribeInstancesRequest {
    /// Explicit instance ids.
    pub instance_ids: Vec<String>,
    /// Filters.
    pub filters: Vec<RawFilter>,
    /// Page size.
    pub max_results: Option<i64>,
    /// Continuation token.
    pub next_token: Option<String>,
    /// DescribeInstanceStatus: include instances that are not running.
    pub include_all_instances: bool,
}

/// One reservation of DescribeInstances: the instances of one RunInstances call.
#[derive(Debug, Clone)]
pub struct Reservation {
    /// `r-...`.
    pub reservation_id: String,
    /// Owning account.
    pub owner_id: String,
    /// Its instances (those selected).
    pub instances: Vec<Arc<Instance>>,
}

/// A state change reported by Start/Stop/TerminateInstances.
#[derive(Debug, Clone)]
pub struct StateChange {
    /// The instance.
    pub instance_id: String,
    /// State before the call.
    pub previous: InstanceState,
    /// State after the call.
    pub current: InstanceState,
}

/// An instance attribute, as DescribeInstanceAttribute returns it.
#[derive(Debug, Clone, PartialEq)]
pub enum InstanceAttribute {
    /// `instanceType`.
    InstanceType(String),
    /// `userData` (base64), if any.
    UserData(Option<String>),
    /// `disableApiTermination`.
    DisableApiTermination(bool),
    /// `instanceInitiatedShutdownBehavior`.
    ShutdownBehavior(String),
    /// `rootDeviceName`.
    RootDeviceName(String),
    /// `kernel`.
    Kernel(Option<String>),
    /// `ramdisk`.
    Ramdisk(Option<String>),
    /// `blockDeviceMapping`.
    BlockDeviceMapping(Vec<InstanceBlockDevice>),
}

/// A change of ModifyInstanceAttribute.
#[derive(Debug, Clone, PartialEq)]
pub enum InstanceAttributeChange {
    /// New instance type (stopped instances only).
    InstanceType(String),
    /// New user data, base64 (stopped instances only).
    UserData(String),
    /// Protect from (or allow) TerminateInstances.
    DisableApiTermination(bool),
    /// `stop` or `terminate`.
    ShutdownBehavior(String),
}

const INSTANCE_FILTERS: &[&str] = &[
    "ami-launch-index",
    "architecture",
    "availability-zone",
    "block-device-mapping.attach-time",
    "block-device-mapping.delete-on-termination",
    "block-device-mapping.device-name",
    "block-device-mapping.status",
    "block-device-mapping.volume-id",
    "client-token",
    "hypervisor",
    "image-id",
    "instance-id",
    "instance-lifecycle",
    "instance-state-code",
    "instance-state-name",
    "instance-type",
    "kernel-id",
    "launch-time",
    "owner-id",
    "placement-group-name",
    "ramdisk-id",
    "reason",
    "reservation-id",
    "root-device-name",
    "root-device-type",
    "state-reason-code",
    "state-reason-message",
    "tenancy",
    "virtualization-type",
    // Networking and key pairs come later: these match nothing yet, as on an instance
    // without them.
    "dns-name",
    "group-id",
    "group-name",
    "ip-address",
    "key-name",
    "private-dns-name",
    "private-ip-address",
    "subnet-id",
    "vpc-id",
];

const STATUS_FILTERS: &[&str] = &[
    "availability-zone",
    "instance-state-code",
    "instance-state-name",
    "instance-status.reachability",
    "instance-status.status",
    "system-status.reachability",
    "system-status.status",
];

/// Validates an instance id's shape.
pub fn check_instance_id(id: &str) -> Result<()> {
    if ids::is_well_formed(id, "i") {
        Ok(())
    } else {
        Err(Error::InvalidInstanceIdMalformed(id.to_string()))
    }
}

/// The instance, if the caller owns it in this region (instances are never shared).
pub(crate) fn owned_instance<'s>(
    state: &'s State,
    ctx: &RequestContext,
    id: &str,
) -> Result<&'s Arc<Instance>> {
    check_instance_id(id)?;
    state
        .instances
        .get(id)
        .filter(|i| i.region == ctx.region && i.owner_id == ctx.account_id())
        .ok_or_else(|| Error::InvalidInstanceIdNotFound(id.to_string()))
}

/// `User initiated (2026-11-24 10:00:00 GMT)`, as EC2 words `stateTransitionReason`.
pub(crate) fn transition_reason(what: &str) -> String {
    let now = time::now_string();
    let stamp = now.get(..19).unwrap_or(&now).replace('T', " ");
    format!("{what} ({stamp} GMT)")
}

/// Decodes and bounds user data.
fn check_user_data(user_data: &str) -> Result<()> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(user_data.trim())
        .map_err(|_| {
            Error::InvalidParameterValue("Invalid BASE64 encoding of user data.".into())
        })?;
    if decoded.len() > MAX_USER_DATA_BYTES {
        return Err(Error::InvalidParameterValue(format!(
            "User data is limited to {MAX_USER_DATA_BYTES} bytes."
        )));
    }
    Ok(())
}

fn check_shutdown_behavior(value: &str) -> Result<()> {
    match value {
        "stop" | "terminate" => Ok(()),
        other => Err(Error::InvalidParameterValue(format!(
            "Value ({other}) for parameter instanceInitiatedShutdownBehavior is invalid. Expected 'stop' or 'terminate'."
        ))),
    }
}

/// A volume an instance will get at launch.
struct PlannedVolume {
    device_name: String,
    snapshot_id: Option<String>,
    size: i64,
    volume_type: String,
    iops: Option<i64>,
    throughput: Option<i64>,
    delete_on_termination: bool,
    encrypted: bool,
    kms_key_id: Option<String>,
}

/// The image's mappings with the request's applied: `NoDevice` drops one, an `Ebs` entry
/// overrides size, type and DeleteOnTermination of the image's device or adds a volume.
fn plan_volumes(
    state: &State,
    ctx: &RequestContext,
    image_mappings: &[BlockDeviceMapping],
    root_device: &str,
    overrides: &[BlockDeviceMapping],
) -> Result<Vec<PlannedVolume>> {
    let mut merged: Vec<BlockDeviceMapping> = image_mappings.to_vec();
    let mut seen = BTreeSet::new();
    for o in overrides {
        if o.device_name.is_empty() {
            return Err(Error::InvalidBlockDeviceMapping(
                "A block device mapping needs a DeviceName".into(),
            ));
        }
        if !seen.insert(o.device_name.clone()) {
            return Err(Error::InvalidBlockDeviceMapping(format!(
                "The device name {} is used more than once",
                o.device_name
            )));
        }
        let existing = merged.iter().position(|m| m.device_name == o.device_name);
        if o.no_device {
            if o.device_name == root_device {
                return Err(Error::InvalidBlockDeviceMapping(
                    "The root device cannot be suppressed with NoDevice".into(),
                ));
            }
            if let Some(i) = existing {
                merged.remove(i);
            }
            continue;
        }
        let Some(ebs) = &o.ebs else {
            // Instance-store (`ephemeralN`) devices: Kiln has no instance store.
            continue;
        };
        match existing {
            Some(i) => {
                let base = merged[i].ebs.get_or_insert_with(Default::default);
                if ebs.snapshot_id.is_some() && o.device_name == root_device {
                    return Err(Error::InvalidBlockDeviceMapping(
                        "The snapshot of the root device cannot be replaced at launch".into(),
                    ));
                }
                if ebs.snapshot_id.is_some() {
                    base.snapshot_id = ebs.snapshot_id.clone();
                }
                base.volume_size = ebs.volume_size.or(base.volume_size);
                base.volume_type = ebs.volume_type.clone().or(base.volume_type.clone());
                base.iops = ebs.iops.or(base.iops);
                base.throughput = ebs.throughput.or(base.throughput);
                base.delete_on_termination =
                    ebs.delete_on_termination.or(base.delete_on_termination);
                base.encrypted = ebs.encrypted.or(base.encrypted);
            }
            None => merged.push(o.clone()),
        }
    }
    let mut planned = Vec::new();
    for m in &merged {
        let Some(ebs) = &m.ebs else { continue };
        if m.no_device {
            continue;
        }
        // The image's own snapshots come with its launch permission; a snapshot the
        // request names must be visible to the caller.
        let from_request = overrides.iter().any(|o| {
            o.device_name == m.device_name
                && o.ebs.as_ref().is_some_and(|e| e.snapshot_id.is_some())
        });
        let snapshot = match &ebs.snapshot_id {
            Some(sid) if from_request => {
                Some(super::snapshots::visible_snapshot(state, ctx, sid)?.clone())
            }
            Some(sid) => Some(
                state
                    .snapshots
                    .get(sid.as_str())
                    .cloned()
                    .ok_or_else(|| Error::InvalidSnapshotNotFound(sid.to_string()))?,
            ),
            None => None,
        };
        let size = match (ebs.volume_size, &snapshot) {
            (Some(size), Some(s)) if size < s.volume_size => {
                return Err(Error::InvalidBlockDeviceMapping(format!(
                    "Volume of size {size}GiB for {} is smaller than its snapshot ({}GiB)",
                    m.device_name, s.volume_size
                )))
            }
            (Some(size), _) => size,
            (None, Some(s)) => s.volume_size,
            (None, None) => {
                return Err(Error::InvalidBlockDeviceMapping(format!(
                    "The device {} needs a VolumeSize or a SnapshotId",
                    m.device_name
                )))
            }
        };
        let volume_type = ebs.volume_type.as_deref().unwrap_or("gp2").to_string();
        // An image records the IOPS a gp2 volume had; only types that take them get them.
        let iops = ebs
            .iops
            .filter(|_| matches!(volume_type.as_str(), "io1" | "io2" | "gp3"));
        let throughput = ebs.throughput.filter(|_| volume_type == "gp3");
        let (iops, throughput) = settle_performance(&volume_type, size, iops, throughput)?;
        planned.push(PlannedVolume {
            device_name: m.device_name.to_string(),
            snapshot_id: snapshot.as_ref().map(|s| s.snapshot_id.clone()),
            size,
            volume_type,
            iops,
            throughput,
            delete_on_termination: ebs.delete_on_termination.unwrap_or(true),
            encrypted: ebs.encrypted.unwrap_or(false)
                || snapshot.as_ref().is_some_and(|s| s.encrypted),
            kms_key_id: ebs
                .kms_key_id
                .as_deref()
                .map(str::to_string)
                .or_else(|| snapshot.as_ref().and_then(|s| s.kms_key_id.clone())),
        });
    }
    // Root first, then the rest by device name: the guest sees them in this order.
    planned.sort_by(|a, b| {
        (a.device_name != root_device, &a.device_name)
            .cmp(&(b.device_name != root_device, &b.device_name))
    });
    if planned.first().is_none_or(|p| p.device_name != root_device) {
        return Err(Error::InvalidBlockDeviceMapping(format!(
            "The image has no EBS volume for its root device {root_device}"
        )));
    }
    Ok(planned)
}

impl Service {
    /// RunInstances: records the instances `pending` with their volumes attached, and
    /// queues their boot.
    pub fn run_instances(
        &self,
        ctx: &RequestContext,
        req: &RunInstancesRequest,
    ) -> Result<Reservation> {
        let image_id = req
            .image_id
            .clone()
            .ok_or_else(|| Error::MissingParameter("ImageId".into()))?;
        let min = req
            .min_count
            .ok_or_else(|| Error::MissingParameter("MinCount".into()))?;
        let max = req
            .max_count
            .ok_or_else(|| Error::MissingParameter("MaxCount".into()))?;
        if min < 1 || max < min {
            return Err(Error::InvalidParameterValue(format!(
                "MinCount ({min}) must be at least 1 and at most MaxCount ({max})"
            )));
        }
        if min > MAX_INSTANCES_PER_LAUNCH {
            return Err(Error::InvalidParameterValue(format!(
                "At most {MAX_INSTANCES_PER_LAUNCH} instances can be launched at once; MinCount is {min}"
            )));
        }
        let count = max.min(MAX_INSTANCES_PER_LAUNCH);
        let type_name = req
            .instance_type
            .clone()
            .unwrap_or_else(|| "t3.micro".into());
        if instance_type(&type_name).is_none() {
            return Err(Error::InvalidParameterValue(format!(
                "Invalid value '{type_name}' for InstanceType."
            )));
        }
        if let Some(user_data) = &req.user_data {
            check_user_data(user_data)?;
        }
        let shutdown_behavior = req
            .shutdown_behavior
            .clone()
            .unwrap_or_else(|| "stop".into());
        check_shutdown_behavior(&shutdown_behavior)?;
        let zone = match &req.availability_zone {
            Some(z) => {
                if !zones_of(&ctx.region)
                    .iter()
                    .any(|info| &info.zone_name == z)
                {
                    return Err(Error::InvalidAvailabilityZone(z.clone()));
                }
                z.clone()
            }
            None => zones_of(&ctx.region)
                .first()
                .map(|z| z.zone_name.clone())
                .ok_or_else(|| Error::InternalError("region without zones".into()))?,
        };
        let allowed = ["instance", "volume"];
        let instance_tags =
            tags_for_new_resource(ctx, &req.tag_specifications, "instance", &allowed)?;
        let volume_tags = tags_for_new_resource(ctx, &req.tag_specifications, "volume", &allowed)?;
        let fingerprint = format!(
            "{:?}",
            RunInstancesRequest {
                client_token: None,
                ..req.clone()
            }
        );
        let token_key = req.client_token.as_ref().map(|token| {
            (
                ctx.account_id().to_string(),
                ctx.region.clone(),
                "RunInstances".to_string(),
                token.clone(),
            )
        });
        let (reservation_id, launched) = self.write(|state, issuer| {
            if let Some(record) = token_key.as_ref().and_then(|k| state.client_tokens.get(k)) {
                if record.fingerprint != fingerprint {
                    return Err(Error::IdempotentParameterMismatch(format!(
                        "The client token {} was already used with different parameters",
                        record.token
                    )));
                }
                ctx.finish_dry_run()?;
                return Ok((Vec::new(), (record.resource_id.clone(), Vec::new())));
            }
            let image = visible_image(state, ctx, &image_id)?;
            if image.image_type != "machine" {
                return Err(Error::InvalidParameterValue(format!(
                    "The image {image_id} is a {} image and cannot be launched",
                    image.image_type
                )));
            }
            let kind = instance_type(&type_name)
                .ok_or_else(|| Error::InternalError(format!("instance type {type_name} vanished")))?;
            if !kind.architectures().contains(&image.architecture.as_str()) {
                return Err(Error::InvalidParameterValue(format!(
                    "The architecture '{}' of the specified instance type does not match the architecture '{}' of the specified AMI. Specify an instance type and an AMI that have matching architectures, and try again.",
                    kind.architectures().join(", "),
                    image.architecture
                )));
            }
            if image.state != ImageState::Available {
                return Err(Error::InvalidAmiIdUnavailable(format!(
                    "The image {image_id} is {} and cannot be launched",
                    image.state.as_str()
                )));
            }
            let kernel_id = req
                .kernel_id
                .clone()
                .or_else(|| image.details().kernel_id.as_deref().map(str::to_string));
            let ramdisk_id = req
                .ramdisk_id
                .clone()
                .or_else(|| image.details().ramdisk_id.as_deref().map(str::to_string));
            for (what, id) in [("kernel", &kernel_id), ("ramdisk", &ramdisk_id)] {
                if let Some(id) = id {
                    check_boot_file_image(state, ctx, what, id)?;
                }
            }
            let planned = plan_volumes(
                state,
                ctx,
                &image.block_device_mappings,
                &image.root_device_name,
                &req.block_device_mappings,
            )?;
            ctx.finish_dry_run()?;
            let reservation_id = issuer.issue("r")?;
            let now = time::now_string();
            let mut changes = Vec::new();
            let mut launched = Vec::new();
            for index in 0..count {
                let instance_id = issuer.issue("i")?;
                let mut block_devices = Vec::new();
                for p in &planned {
                    let volume_id = issuer.issue("vol")?;
                    changes.push(Change::PutVolume(Volume {
                        volume_id: volume_id.clone(),
                        region: ctx.region.clone(),
                        availability_zone: zone.clone(),
                        owner_id: ctx.account_id().to_string(),
                        size: p.size,
                        snapshot_id: p.snapshot_id.clone(),
                        base_snapshot_id: p.snapshot_id.clone(),
                        volume_type: p.volume_type.clone(),
                        iops: p.iops,
                        throughput: p.throughput,
                        encrypted: p.encrypted,
                        kms_key_id: p.kms_key_id.clone(),
                        multi_attach_enabled: false,
                        state: VolumeState::InUse,
                        create_time: now.clone(),
                        modification: None,
                        tags: volume_tags.clone(),
                        attachment: Some(VolumeAttachment {
                            instance_id: instance_id.clone(),
                            device: p.device_name.clone(),
                            state: "attached".into(),
                            attach_time: now.clone(),
                            delete_on_termination: p.delete_on_termination,
                        }),
                    }));
                    block_devices.push(InstanceBlockDevice {
                        device_name: p.device_name.clone(),
                        volume_id,
                        attach_time: now.clone(),
                        delete_on_termination: p.delete_on_termination,
                    });
                }
                changes.push(Change::PutInstance(Instance {
                    instance_id: instance_id.clone(),
                    reservation_id: reservation_id.clone(),
                    region: ctx.region.clone(),
                    availability_zone: zone.clone(),
                    owner_id: ctx.account_id().to_string(),
                    image_id: image_id.clone(),
                    instance_type: type_name.clone(),
                    state: InstanceState::Pending,
                    state_transition_reason: String::new(),
                    state_reason: Some(StateReason {
                        code: "pending".into(),
                        message: "pending".into(),
                    }),
                    launch_time: now.clone(),
                    ami_launch_index: index,
                    client_token: req.client_token.clone(),
                    user_data: req.user_data.clone(),
                    shutdown_behavior: shutdown_behavior.clone(),
                    disable_api_termination: req.disable_api_termination,
                    architecture: image.architecture.to_string(),
                    virtualization_type: image.virtualization_type.to_string(),
                    root_device_name: image.root_device_name.to_string(),
                    kernel_id: kernel_id.clone(),
                    ramdisk_id: ramdisk_id.clone(),
                    block_devices,
                    tags: instance_tags.clone(),
                    terminated_at: None,
                    vm: None,
                }));
                launched.push(instance_id);
            }
            if let Some((account_id, region, action, token)) = token_key.clone() {
                changes.push(Change::PutClientToken(ClientTokenRecord {
                    account_id,
                    region,
                    action,
                    token,
                    fingerprint: fingerprint.clone(),
                    resource_id: reservation_id.clone(),
                }));
            }
            Ok((changes, (reservation_id, launched)))
        })?;
        for id in &launched {
            self.queue_machine_op(id, MachineOp::Boot);
        }
        let state = self.read()?;
        let instances = state
            .instances
            .values()
            .filter(|i| i.reservation_id == reservation_id)
            .cloned()
            .collect();
        Ok(Reservation {
            reservation_id,
            owner_id: ctx.account_id().to_string(),
            instances,
        })
    }

    /// DescribeInstances: the caller's instances that match, grouped by reservation.
    pub fn describe_instances(
        &self,
        ctx: &RequestContext,
        req: &DescribeInstancesRequest,
    ) -> Result<(Vec<Reservation>, Option<String>)> {
        let filters = Filters::compile(&req.filters, INSTANCE_FILTERS, true)?;
        let (instances, next) = self.select_instances(ctx, req, |i| {
            filters.matches(|f| instance_filter_values(i, f, ctx))
        })?;
        let mut reservations: Vec<Reservation> = Vec::new();
        for instance in instances {
            match reservations
                .iter_mut()
                .find(|r| r.reservation_id == instance.reservation_id)
            {
                Some(r) => r.instances.push(instance),
                None => reservations.push(Reservation {
                    reservation_id: instance.reservation_id.clone(),
                    owner_id: instance.owner_id.clone(),
                    instances: vec![instance],
                }),
            }
        }
        Ok((reservations, next))
    }

    /// DescribeInstanceStatus: running instances (all with `IncludeAllInstances`).
    pub fn describe_instance_status(
        &self,
        ctx: &RequestContext,
        req: &DescribeInstancesRequest,
    ) -> Result<(Vec<Arc<Instance>>, Option<String>)> {
        let filters = Filters::compile(&req.filters, STATUS_FILTERS, false)?;
        self.select_instances(ctx, req, |i| {
            (req.include_all_instances || i.state == InstanceState::Running)
                && filters.matches(|f| status_filter_values(i, f))
        })
    }

    fn select_instances(
        &self,
        ctx: &RequestContext,
        req: &DescribeInstancesRequest,
        selected: impl Fn(&Instance) -> bool,
    ) -> Result<(Vec<Arc<Instance>>, Option<String>)> {
        let page = PageRequest::parse(
            req.max_results,
            req.next_token.as_deref(),
            !req.instance_ids.is_empty(),
            5,
        )?;
        for id in &req.instance_ids {
            check_instance_id(id)?;
        }
        ctx.finish_dry_run()?;
        let state = self.read()?;
        let mine = |i: &Instance| i.region == ctx.region && i.owner_id == ctx.account_id();
        if !req.instance_ids.is_empty() {
            let wanted: BTreeSet<&String> = req.instance_ids.iter().collect();
            let mut found = Vec::new();
            for id in wanted {
                let i = owned_instance(&state, ctx, id)?;
                if selected(i) {
                    found.push(i.clone());
                }
            }
            return Ok((found, None));
        }
        Ok(page.take_from(&state.instances, |i| mine(i) && selected(i)))
    }

    /// StopInstances: running or pending instances go `stopping`; the VM is powered down
    /// (at once with `force`).
    pub fn stop_instances(
        &self,
        ctx: &RequestContext,
        instance_ids: &[String],
        force: bool,
    ) -> Result<Vec<StateChange>> {
        self.transition(ctx, instance_ids, |i| match i.state {
            InstanceState::Pending | InstanceState::Running => {
                Ok(Some((InstanceState::Stopping, MachineOp::Stop { force })))
            }
            InstanceState::Stopping | InstanceState::Stopped => Ok(None),
            InstanceState::ShuttingDown | InstanceState::Terminated => {
                Err(Error::IncorrectInstanceState(format!(
                    "This instance '{}' is not in a state from which it can be stopped.",
                    i.instance_id
                )))
            }
        })
    }

    /// StartInstances: stopped instances go `pending` and boot again.
    pub fn start_instances(
        &self,
        ctx: &RequestContext,
        instance_ids: &[String],
    ) -> Result<Vec<StateChange>> {
        self.transition(ctx, instance_ids, |i| match i.state {
            InstanceState::Stopped
                if !i
                    .block_devices
                    .iter()
                    .any(|d| d.device_name == i.root_device_name) =>
            {
                Err(Error::InvalidParameterValue(format!(
                    "Invalid value '{}' for instanceId. Instance does not have a volume attached at root ({})",
                    i.instance_id, i.root_device_name
                )))
            }
            InstanceState::Stopped => Ok(Some((InstanceState::Pending, MachineOp::Boot))),
            InstanceState::Pending | InstanceState::Running => Ok(None),
            _ => Err(Error::IncorrectInstanceState(format!(
                "The instance '{}' is not in a state from which it can be started.",
                i.instance_id
            ))),
        })
    }

    /// TerminateInstances: instances go `shutting-down`, then `terminated`; volumes marked
    /// DeleteOnTermination go with them.
    pub fn terminate_instances(
        &self,
        ctx: &RequestContext,
        instance_ids: &[String],
    ) -> Result<Vec<StateChange>> {
        self.transition(ctx, instance_ids, |i| {
            if i.disable_api_termination && i.state != InstanceState::Terminated {
                return Err(Error::OperationNotPermitted(format!(
                    "The instance '{}' may not be terminated. Modify its 'disableApiTermination' instance attribute and try again.",
                    i.instance_id
                )));
            }
            match i.state {
                InstanceState::ShuttingDown | InstanceState::Terminated => Ok(None),
                _ => Ok(Some((InstanceState::ShuttingDown, MachineOp::Terminate))),
            }
        })
    }

    /// RebootInstances: running instances are rebooted (cleanly if the guest answers the
    /// power button, else reset).
    pub fn reboot_instances(&self, ctx: &RequestContext, instance_ids: &[String]) -> Result<()> {
        let targets = {
            let state = self.read()?;
            let mut targets = Vec::new();
            for id in instance_ids {
                let i = owned_instance(&state, ctx, id)?;
                match i.state {
                    InstanceState::Running => targets.push(id.clone()),
                    InstanceState::Pending => {}
                    _ => {
                        return Err(Error::IncorrectInstanceState(format!(
                            "The instance '{id}' is not in a state from which it can be rebooted."
                        )))
                    }
                }
            }
            targets
        };
        if instance_ids.is_empty() {
            return Err(Error::MissingParameter("InstanceId".into()));
        }
        ctx.finish_dry_run()?;
        for id in targets {
            self.queue_machine_op(&id, MachineOp::Reboot);
        }
        Ok(())
    }

    /// Applies one state transition to every named instance, all or nothing, then queues
    /// the machine work.
    fn transition(
        &self,
        ctx: &RequestContext,
        instance_ids: &[String],
        next: impl Fn(&Instance) -> Result<Option<(InstanceState, MachineOp)>>,
    ) -> Result<Vec<StateChange>> {
        if instance_ids.is_empty() {
            return Err(Error::MissingParameter("InstanceId".into()));
        }
        let (changes, ops) = self.write(|state, _| {
            let mut records = Vec::new();
            let mut reported = Vec::new();
            let mut ops = Vec::new();
            for id in instance_ids {
                let i = owned_instance(state, ctx, id)?;
                let previous = i.state;
                let current = match next(i)? {
                    Some((to, op)) => {
                        let mut changed = (**i).clone();
                        changed.state = to;
                        changed.state_transition_reason = transition_reason("User initiated");
                        changed.state_reason = Some(match to {
                            InstanceState::Pending => StateReason {
                                code: "pending".into(),
                                message: "pending".into(),
                            },
                            _ => StateReason {
                                code: "Client.UserInitiatedShutdown".into(),
                                message: "Client.UserInitiatedShutdown: User initiated shutdown"
                                    .into(),
                            },
                        });
                        if to == InstanceState::Pending {
                            changed.launch_time = time::now_string();
                        }
                        records.push(Change::PutInstance(changed));
                        ops.push((id.clone(), op));
                        to
                    }
                    None => previous,
                };
                reported.push(StateChange {
                    instance_id: id.clone(),
                    previous,
                    current,
                });
            }
            ctx.finish_dry_run()?;
            Ok((records, (reported, ops)))
        })?;
        for (id, op) in ops {
            self.queue_machine_op(&id, op);
        }
        Ok(changes)
    }

    /// GetConsoleOutput: the end of the serial console (also after the instance stopped).
    pub fn get_console_output(
        &self,
        ctx: &RequestContext,
        instance_id: &str,
    ) -> Result<(String, String)> {
        owned_instance(&*self.read()?, ctx, instance_id)?;
        ctx.finish_dry_run()?;
        let bytes = std::fs::read(self.console_log_path(instance_id)).unwrap_or_default();
        let tail = &bytes[bytes.len().saturating_sub(CONSOLE_OUTPUT_BYTES)..];
        Ok((
            base64::engine::general_purpose::STANDARD.encode(tail),
            time::now_string(),
        ))
    }

    /// DescribeInstanceAttribute.
    pub fn describe_instance_attribute(
        &self,
        ctx: &RequestContext,
        instance_id: &str,
        attribute: &str,
    ) -> Result<InstanceAttribute> {
        let state = self.read()?;
        let i = owned_instance(&state, ctx, instance_id)?;
        let value = match attribute {
            "instanceType" => InstanceAttribute::InstanceType(i.instance_type.clone()),
            "userData" => InstanceAttribute::UserData(i.user_data.clone()),
            "disableApiTermination" => {
                InstanceAttribute::DisableApiTermination(i.disable_api_termination)
            }
            "instanceInitiatedShutdownBehavior" => {
                InstanceAttribute::ShutdownBehavior(i.shutdown_behavior.clone())
            }
            "rootDeviceName" => InstanceAttribute::RootDeviceName(i.root_device_name.clone()),
            "kernel" => InstanceAttribute::Kernel(i.kernel_id.clone()),
            "ramdisk" => InstanceAttribute::Ramdisk(i.ramdisk_id.clone()),
            "blockDeviceMapping" => InstanceAttribute::BlockDeviceMapping(i.block_devices.clone()),
            other => {
                return Err(Error::InvalidParameterValue(format!(
                    "Value ({other}) for parameter attribute is invalid. Kiln supports instanceType, userData, disableApiTermination, instanceInitiatedShutdownBehavior, rootDeviceName, kernel, ramdisk and blockDeviceMapping."
                )))
            }
        };
        ctx.finish_dry_run()?;
        Ok(value)
    }

    /// ModifyInstanceAttribute: instance type and user data only while stopped.
    pub fn modify_instance_attribute(
        &self,
        ctx: &RequestContext,
        instance_id: &str,
        change: InstanceAttributeChange,
    ) -> Result<()> {
        self.write(|state, _| {
            let i = owned_instance(state, ctx, instance_id)?;
            let mut changed = (**i).clone();
            let must_be_stopped = |what: &str| {
                if i.state == InstanceState::Stopped {
                    Ok(())
                } else {
                    Err(Error::IncorrectInstanceState(format!(
                        "The instance '{instance_id}' is not in the 'stopped' state; its {what} can only be changed while stopped."
                    )))
                }
            };
            match &change {
                InstanceAttributeChange::InstanceType(t) => {
                    if instance_type(t).is_none() {
                        return Err(Error::InvalidParameterValue(format!(
                            "Invalid value '{t}' for InstanceType."
                        )));
                    }
                    must_be_stopped("instance type")?;
                    changed.instance_type = t.clone();
                }
                InstanceAttributeChange::UserData(data) => {
                    check_user_data(data)?;
                    must_be_stopped("user data")?;
                    changed.user_data = Some(data.clone()).filter(|d| !d.is_empty());
                }
                InstanceAttributeChange::DisableApiTermination(on) => {
                    changed.disable_api_termination = *on;
                }
                InstanceAttributeChange::ShutdownBehavior(b) => {
                    check_shutdown_behavior(b)?;
                    changed.shutdown_behavior = b.clone();
                }
            }
            if i.state == InstanceState::Terminated {
                return Err(Error::IncorrectInstanceState(format!(
                    "The instance '{instance_id}' is terminated."
                )));
            }
            ctx.finish_dry_run()?;
            Ok((vec![Change::PutInstance(changed)], ()))
        })
    }
}

/// A kernel or ramdisk image named by a PV image must exist and be visible.
fn check_boot_file_image(state: &State, ctx: &RequestContext, what: &str, id: &str) -> Result<()> {
    let image = state
        .images
        .get(id)
        .filter(|i| i.region == ctx.region && super::images::can_launch(i, &ctx.account))
        .ok_or_else(|| {
            Error::InvalidAkiIdNotFound(format!("The {what} image '{id}' does not exist"))
        })?;
    if image.image_type != what {
        return Err(Error::InvalidParameterValue(format!(
            "The image {id} is not a {what} image"
        )));
    }
    Ok(())
}

fn instance_filter_values(i: &Instance, f: &Filter, ctx: &RequestContext) -> Vec<String> {
    if let Some(values) = tag_filter_values(f, i.tags.of(ctx.account_id())) {
        return values;
    }
    let opt = |v: &Option<String>| v.iter().cloned().collect::<Vec<_>>();
    let devices = |each: &dyn Fn(&InstanceBlockDevice) -> String| {
        i.block_devices.iter().map(each).collect::<Vec<_>>()
    };
    match f.name.as_str() {
        "ami-launch-index" => vec![i.ami_launch_index.to_string()],
        "architecture" => vec![i.architecture.clone()],
        "availability-zone" => vec![i.availability_zone.clone()],
        "block-device-mapping.attach-time" => devices(&|d| d.attach_time.clone()),
        "block-device-mapping.delete-on-termination" => {
            devices(&|d| bool_value(d.delete_on_termination))
        }
        "block-device-mapping.device-name" => devices(&|d| d.device_name.clone()),
        "block-device-mapping.status" => devices(&|_| "attached".to_string()),
        "block-device-mapping.volume-id" => devices(&|d| d.volume_id.clone()),
        "client-token" => opt(&i.client_token),
        "hypervisor" => vec!["xen".into()],
        "image-id" => vec![i.image_id.clone()],
        "instance-id" => vec![i.instance_id.clone()],
        "instance-state-code" => vec![i.state.code().to_string()],
        "instance-state-name" => vec![i.state.as_str().to_string()],
        "instance-type" => vec![i.instance_type.clone()],
        "kernel-id" => opt(&i.kernel_id),
        "launch-time" => vec![i.launch_time.clone()],
        "owner-id" => vec![i.owner_id.clone()],
        "ramdisk-id" => opt(&i.ramdisk_id),
        "reason" => vec![i.state_transition_reason.clone()],
        "reservation-id" => vec![i.reservation_id.clone()],
        "root-device-name" => vec![i.root_device_name.clone()],
        "root-device-type" => vec!["ebs".into()],
        "state-reason-code" => i.state_reason.iter().map(|r| r.code.clone()).collect(),
        "state-reason-message" => i.state_reason.iter().map(|r| r.message.clone()).collect(),
        "tenancy" => vec!["default".into()],
        "virtualization-type" => vec![i.virtualization_type.clone()],
        // Spot and scheduled instances, placement groups: Kiln has none.
        _ => Vec::new(),
    }
}

/// `ok` for a running instance, `not-applicable` otherwise (as EC2 reports status checks).
pub fn status_check(i: &Instance) -> &'static str {
    if i.state == InstanceState::Running {
        "ok"
    } else {
        "not-applicable"
    }
}

fn status_filter_values(i: &Instance, f: &Filter) -> Vec<String> {
    let reachability = if i.state == InstanceState::Running {
        "passed"
    } else {
        "not-applicable"
    };
    match f.name.as_str() {
        "availability-zone" => vec![i.availability_zone.clone()],
        "instance-state-code" => vec![i.state.code().to_string()],
        "instance-state-name" => vec![i.state.as_str().to_string()],
        "instance-status.status" | "system-status.status" => vec![status_check(i).to_string()],
        "instance-status.reachability" | "system-status.reachability" => {
            vec![reachability.to_string()]
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::images::RegisterImageRequest;
    use crate::service::model::{Account, EbsBlockDevice};
    use crate::service::volumes::CreateVolumeRequest;
    use crate::service::ServiceConfig;

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

    /// A service with one image whose root (`/dev/xvda`) is a snapshot of an empty volume.
    fn service_with_image() -> (tempfile::TempDir, Service, String) {
        let dir = tempfile::tempdir().unwrap();
        let config = ServiceConfig {
            copy_delay_ms: 0,
            ..ServiceConfig::default()
        };
        let svc = Service::open(dir.path(), config).unwrap();
        let volume = svc
            .create_volume(
                &ctx(),
                &CreateVolumeRequest {
                    availability_zone: Some("us-east-1a".into()),
                    size: Some(1),
                    ..CreateVolumeRequest::default()
                },
            )
            .unwrap();
        svc.complete_volume_work().unwrap();
        let snapshot = svc
            .create_snapshot(&ctx(), &volume.volume_id, None, &[])
            .unwrap();
        svc.complete_pending_work().unwrap();
        let image = svc
            .register_image(
                &ctx(),
                RegisterImageRequest {
                    name: Some("root-image".into()),
                    architecture: Some("x86_64".into()),
                    root_device_name: Some("/dev/xvda".into()),
                    block_device_mappings: vec![BlockDeviceMapping {
                        device_name: "/dev/xvda".into(),
                        ebs: Some(EbsBlockDevice {
                            snapshot_id: Some(snapshot.snapshot_id.as_str().into()),
                            ..EbsBlockDevice::default()
                        }),
                        ..BlockDeviceMapping::default()
                    }],
                    ..RegisterImageRequest::default()
                },
            )
            .unwrap();
        (dir, svc, image)
    }

    fn launch(image_id: &str, count: i64) -> RunInstancesRequest {
        RunInstancesRequest {
            image_id: Some(image_id.into()),
            min_count: Some(count),
            max_count: Some(count),
            ..RunInstancesRequest::default()
        }
    }

    #[test]
    fn run_instances_two_records_pending_instances_with_attached_volumes_and_queues_boots() {
        let (_dir, svc, image) = service_with_image();

        let reservation = svc.run_instances(&ctx(), &launch(&image, 2)).unwrap();

        assert_eq!(reservation.instances.len(), 2);
        let state = svc.read().unwrap();
        for i in &reservation.instances {
            assert_eq!(i.state, InstanceState::Pending);
            assert_eq!(i.block_devices.len(), 1);
            let v = &state.volumes[&i.block_devices[0].volume_id];
            assert_eq!(v.state, VolumeState::InUse);
            let a = v.attachment.as_ref().unwrap();
            assert_eq!(
                (a.instance_id.as_str(), a.device.as_str()),
                (i.instance_id.as_str(), "/dev/xvda")
            );
            assert!(a.delete_on_termination);
        }
        drop(state);
        let ops = svc.take_machine_ops();
        assert_eq!(ops.len(), 2);
        assert!(ops.iter().all(|(_, op)| *op == MachineOp::Boot));
    }

    #[test]
    fn run_instances_no_device_on_root_fails_and_creates_nothing() {
        let (_dir, svc, image) = service_with_image();
        let mut req = launch(&image, 1);
        req.block_device_mappings = vec![BlockDeviceMapping {
            device_name: "/dev/xvda".into(),
            no_device: true,
            ..BlockDeviceMapping::default()
        }];
        let volumes_before = svc.read().unwrap().volumes.len();

        let err = svc.run_instances(&ctx(), &req).unwrap_err();

        assert_eq!(err.code(), "InvalidBlockDeviceMapping");
        assert!(svc.read().unwrap().instances.is_empty());
        assert_eq!(svc.read().unwrap().volumes.len(), volumes_before);
    }

    #[test]
    fn terminate_instances_with_api_termination_disabled_fails_with_operation_not_permitted() {
        let (_dir, svc, image) = service_with_image();
        let mut req = launch(&image, 1);
        req.disable_api_termination = true;
        let id = svc.run_instances(&ctx(), &req).unwrap().instances[0]
            .instance_id
            .clone();

        let err = svc
            .terminate_instances(&ctx(), std::slice::from_ref(&id))
            .unwrap_err();

        assert_eq!(err.code(), "OperationNotPermitted");
        assert_eq!(
            svc.read().unwrap().instances[&id].state,
            InstanceState::Pending
        );
    }

    #[test]
    fn stop_instances_of_terminated_fails_with_incorrect_instance_state() {
        let (_dir, svc, image) = service_with_image();
        let id = svc
            .run_instances(&ctx(), &launch(&image, 1))
            .unwrap()
            .instances[0]
            .instance_id
            .clone();
        svc.terminate_instances(&ctx(), std::slice::from_ref(&id))
            .unwrap();

        let err = svc.stop_instances(&ctx(), &[id], false).unwrap_err();

        assert_eq!(err.code(), "IncorrectInstanceState");
    }

    #[test]
    fn check_user_data_invalid_base64_fails_with_invalid_parameter_value() {
        let err = check_user_data("not base64!").unwrap_err();
        assert_eq!(err.code(), "InvalidParameterValue");
    }

    #[test]
    fn check_user_data_too_large_fails() {
        let big = base64::engine::general_purpose::STANDARD.encode(vec![b'x'; 16 * 1024 + 1]);
        assert!(check_user_data(&big).is_err());
        let fits = base64::engine::general_purpose::STANDARD.encode(vec![b'x'; 16 * 1024]);
        assert!(check_user_data(&fits).is_ok());
    }

    #[test]
    fn transition_reason_names_time_in_gmt() {
        let reason = transition_reason("User initiated");
        assert!(reason.starts_with("User initiated (20"), "{reason}");
        assert!(reason.ends_with(" GMT)"), "{reason}");
    }

    #[test]
    fn instance_state_codes_match_ec2() {
        let codes: Vec<i64> = [
            InstanceState::Pending,
            InstanceState::Running,
            InstanceState::ShuttingDown,
            InstanceState::Terminated,
            InstanceState::Stopping,
            InstanceState::Stopped,
        ]
        .iter()
        .map(|s| s.code())
        .collect();
        assert_eq!(codes, vec![0, 16, 32, 48, 64, 80]);
    }
}
