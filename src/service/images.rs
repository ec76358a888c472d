//! Images: register, describe, copy, deregister, attributes, deprecation, disabling,
//! deregistration protection and image block public access.

use super::filters::{bool_value, tag_filter_values, Filters, RawFilter};
use super::model::{
    Account, BlockDeviceMapping, DeregistrationProtection, Image, ImageDetails, ImageState,
    LaunchPermission, PendingWork, Snapshot, SnapshotState,
};
use super::pagination::PageRequest;
use super::snapshots::{can_restore, copy_snapshot_record};
use super::state::State;
use super::tags::{tags_for_new_resource, TagSpecification};
use super::{ids, time, RequestContext, Service};
use crate::error::{Error, Result};
use crate::store::{Change, ClientTokenRecord};
use compact_str::CompactString;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Parameters of RegisterImage.
#[derive(Debug, Clone, Default)]
pub struct RegisterImageRequest {
    /// Image name (required).
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Architecture (default i386, as AWS documents for EBS-backed images).
    pub architecture: Option<String>,
    /// Root device name (required for EBS-backed images).
    pub root_device_name: Option<String>,
    /// Block device mappings.
    pub block_device_mappings: Vec<BlockDeviceMapping>,
    /// hvm or paravirtual (default paravirtual, as AWS).
    pub virtualization_type: Option<String>,
    /// Kernel image (`aki-`).
    pub kernel_id: Option<String>,
    /// Ramdisk image (`ari-`).
    pub ramdisk_id: Option<String>,
    /// Boot mode.
    pub boot_mode: Option<String>,
    /// ENA support.
    pub ena_support: Option<bool>,
    /// SR-IOV support (`simple`).
    pub sriov_net_support: Option<String>,
    /// NitroTPM (`v2.0`).
    pub tpm_support: Option<String>,
    /// IMDS support (`v2.0`).
    pub imds_support: Option<String>,
    /// UEFI data blob.
    pub uefi_data: Option<String>,
    /// S3 manifest location (instance-store images; not supported).
    pub image_location: Option<String>,
    /// Tags for the new image.
    pub tag_specifications: Vec<TagSpecification>,
}

/// Parameters of DescribeImages.
#[derive(Debug, Clone, Default)]
pub struct DescribeImagesRequest {
    /// Explicit image ids.
    pub image_ids: Vec<String>,
    /// `self`, account ids, aliases.
    pub owners: Vec<String>,
    /// `self`, `all`, account ids.
    pub executable_users: Vec<String>,
    /// Filters.
    pub filters: Vec<RawFilter>,
    /// Include deprecated images.
    pub include_deprecated: bool,
    /// Include disabled images.
    pub include_disabled: bool,
    /// Page size.
    pub max_results: Option<i64>,
    /// Continuation token.
    pub next_token: Option<String>,
}

/// Parameters of CopyImage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CopyImageRequest {
    /// Source region.
    pub source_region: String,
    /// Source image.
    pub source_image_id: String,
    /// Name of the copy (required).
    pub name: String,
    /// Description of the copy.
    pub description: Option<String>,
    /// Idempotency token.
    pub client_token: Option<String>,
    /// Copy the caller's tags of the source image.
    pub copy_image_tags: bool,
    /// Encrypt the copy's snapshots.
    pub encrypted: bool,
    /// KMS key for encryption.
    pub kms_key_id: Option<String>,
    /// Tags for the new image and snapshots.
    pub tag_specifications: Vec<TagSpecification>,
}

/// A change requested by ModifyImageAttribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageAttributeChange {
    /// New description.
    Description(String),
    /// Launch permissions to add and remove.
    LaunchPermission {
        /// Added entries.
        add: Vec<LaunchPermission>,
        /// Removed entries.
        remove: Vec<LaunchPermission>,
    },
    /// IMDS support (`v2.0` only).
    ImdsSupport(String),
    /// Product codes (marketplace only; refused).
    ProductCodes,
}

/// An answer of DescribeImageAttribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageAttribute {
    /// `description`.
    Description(Option<String>),
    /// `kernel`.
    Kernel(Option<String>),
    /// `ramdisk`.
    Ramdisk(Option<String>),
    /// `launchPermission`.
    LaunchPermission(Vec<LaunchPermission>),
    /// `productCodes` (always empty).
    ProductCodes,
    /// `sriovNetSupport`.
    SriovNetSupport(Option<String>),
    /// `bootMode`.
    BootMode(Option<String>),
    /// `tpmSupport`.
    TpmSupport(Option<String>),
    /// `uefiData`.
    UefiData(Option<String>),
    /// `lastLaunchedTime`.
    LastLaunchedTime(Option<String>),
    /// `imdsSupport`.
    ImdsSupport(Option<String>),
    /// `deregistrationProtection`.
    DeregistrationProtection(String),
}

/// What happened to one snapshot during DeregisterImage with DeleteAssociatedSnapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotDeleteResult {
    /// The snapshot.
    pub snapshot_id: String,
    /// `success`, `skipped`, ...
    pub return_code: &'static str,
}

const IMAGE_FILTERS: &[&str] = &[
    "architecture",
    "block-device-mapping.delete-on-termination",
    "block-device-mapping.device-name",
    "block-device-mapping.snapshot-id",
    "block-device-mapping.volume-size",
    "block-device-mapping.volume-type",
    "block-device-mapping.encrypted",
    "boot-mode",
    "creation-date",
    "deprecation-time",
    "description",
    "ena-support",
    "free-tier-eligible",
    "hypervisor",
    "image-allowed",
    "image-id",
    "image-type",
    "imds-support",
    "is-public",
    "kernel-id",
    "manifest-location",
    "name",
    "owner-alias",
    "owner-id",
    "platform",
    "platform-details",
    "product-code",
    "product-code.type",
    "ramdisk-id",
    "root-device-name",
    "root-device-type",
    "source-image-id",
    "source-image-region",
    "source-instance-id",
    "sriov-net-support",
    "state",
    "state-reason-code",
    "state-reason-message",
    "tpm-support",
    "usage-operation",
    "virtualization-type",
];

/// RegisterImage's `ImageLocation` that makes a kernel image (`aki-`): its root snapshot
/// holds the kernel file, which PV instances boot directly.
pub const KERNEL_IMAGE_LOCATION: &str = "kiln:kernel";
/// RegisterImage's `ImageLocation` that makes a ramdisk image (`ari-`).
pub const RAMDISK_IMAGE_LOCATION: &str = "kiln:ramdisk";

const ARCHITECTURES: &[&str] = &["i386", "x86_64", "arm64", "x86_64_mac", "arm64_mac"];
pub(crate) const VOLUME_TYPES: &[&str] = &["standard", "io1", "io2", "gp2", "sc1", "st1", "gp3"];
const BOOT_MODES: &[&str] = &["legacy-bios", "uefi", "uefi-preferred"];

/// True if `account` may launch (and so see) the image.
pub fn can_launch(image: &Image, account: &Account) -> bool {
    image.owner_id == account.account_id
        || image.launch_permissions.iter().any(|p| match p {
            LaunchPermission::Public => true,
            LaunchPermission::UserId(u) => *u == account.account_id,
            LaunchPermission::OrganizationArn(a) => account.organization_arn.as_ref() == Some(a),
            LaunchPermission::OrganizationalUnitArn(a) => {
                account.organizational_unit_arn.as_ref() == Some(a)
            }
        })
}

/// Shared with the account explicitly (by id, organization or OU), as `ExecutableBy=self` means.
fn shared_explicitly(image: &Image, account: &Account) -> bool {
    image.launch_permissions.iter().any(|p| match p {
        LaunchPermission::Public => false,
        LaunchPermission::UserId(u) => *u == account.account_id,
        LaunchPermission::OrganizationArn(a) => account.organization_arn.as_ref() == Some(a),
        LaunchPermission::OrganizationalUnitArn(a) => {
            account.organizational_unit_arn.as_ref() == Some(a)
        }
    })
}

fn is_deprecated(image: &Image, now_ms: i64) -> bool {
    image
        .details()
        .deprecation_time
        .as_deref()
        .and_then(|t| time::parse_ms(t).ok())
        .is_some_and(|t| t <= now_ms)
}

/// Validates an image id's shape.
pub fn check_image_id(id: &str) -> Result<()> {
    if ["ami", "aki", "ari"]
        .iter()
        .any(|prefix| ids::is_well_formed(id, prefix))
    {
        Ok(())
    } else {
        Err(Error::InvalidAmiIdMalformed(id.to_string()))
    }
}

/// The image, if it exists in the caller's region and the caller may see it.
pub fn visible_image<'s>(
    state: &'s State,
    ctx: &RequestContext,
    id: &str,
) -> Result<&'s Arc<Image>> {
    check_image_id(id)?;
    match state.images.get(id) {
        Some(image) if image.region == ctx.region && can_launch(image, &ctx.account) => Ok(image),
        _ => Err(Error::InvalidAmiIdNotFound(id.to_string())),
    }
}

/// The image, if the caller owns it (a visible image of another owner is `AuthFailure`).
pub fn owned_image<'s>(state: &'s State, ctx: &RequestContext, id: &str) -> Result<&'s Arc<Image>> {
    let image = visible_image(state, ctx, id)?;
    if image.owner_id != ctx.account.account_id {
        return Err(Error::AuthFailure(format!(
            "Not authorized for image:{id}: only its owner may change it"
        )));
    }
    Ok(image)
}

pub(crate) fn check_name(name: &str) -> Result<()> {
    let ok_len = (3..=128).contains(&name.chars().count());
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(c));
    if ok_len && ok_chars {
        Ok(())
    } else {
        Err(Error::InvalidAmiNameMalformed(format!(
            "AMI names must be between 3 and 128 characters long, and may contain letters, numbers, '(', ')', '.', '-', '/', '_', '[', ']', ' ', '@' and '''; got '{name}'"
        )))
    }
}

pub(crate) fn check_description(description: &Option<String>) -> Result<()> {
    match description {
        Some(d) if d.chars().count() > 255 => Err(Error::InvalidParameterValue(
            "Descriptions must be at most 255 characters".into(),
        )),
        _ => Ok(()),
    }
}

fn check_one_of(param: &str, value: Option<&str>, allowed: &[&str]) -> Result<()> {
    match value {
        Some(v) if !allowed.contains(&v) => Err(Error::InvalidParameterValue(format!(
            "Value ({v}) for parameter {param} is invalid. Expected one of: {}",
            allowed.join(", ")
        ))),
        _ => Ok(()),
    }
}

pub(crate) fn check_unique_name(state: &State, ctx: &RequestContext, name: &str) -> Result<()> {
    match state.image_names.get(&ctx.region, ctx.account_id(), name) {
        Some(existing) => Err(Error::InvalidAmiNameDuplicate(
            name.to_string(),
            existing.image_id.to_string(),
        )),
        None => Ok(()),
    }
}

/// Validates and completes one block device mapping against the snapshots it names.
fn resolve_mapping(
    state: &State,
    ctx: &RequestContext,
    mapping: &BlockDeviceMapping,
) -> Result<BlockDeviceMapping> {
    if mapping.device_name.is_empty() {
        return Err(Error::MissingParameter(
            "BlockDeviceMapping.N.DeviceName".into(),
        ));
    }
    let mut out = mapping.clone();
    if let Some(virtual_name) = &mapping.virtual_name {
        let n = virtual_name
            .strip_prefix("ephemeral")
            .and_then(|n| n.parse::<u8>().ok());
        if n.is_none_or(|n| n > 23) || mapping.ebs.is_some() {
            return Err(Error::InvalidBlockDeviceMapping(format!(
                "Invalid virtual name {virtual_name} for device {}: expected ephemeral0..ephemeral23 without Ebs",
                mapping.device_name
            )));
        }
    }
    let Some(ebs) = &mapping.ebs else {
        return Ok(out);
    };
    let mut ebs = ebs.clone();
    check_one_of("VolumeType", ebs.volume_type.as_deref(), VOLUME_TYPES)?;
    let volume_type = ebs.volume_type.clone().unwrap_or_else(|| "gp2".into());
    match (volume_type.as_str(), ebs.iops) {
        ("io1" | "io2", None) => {
            return Err(Error::InvalidParameterCombination(format!(
                "The parameter iops must be specified for {volume_type} volumes."
            )))
        }
        ("gp2" | "standard" | "st1" | "sc1", Some(_)) => {
            return Err(Error::InvalidParameterCombination(format!(
                "The parameter iops is not supported for {volume_type} volumes."
            )))
        }
        (_, Some(iops)) if !(100..=256_000).contains(&iops) => {
            return Err(Error::InvalidParameterValue(format!(
                "Value ({iops}) for parameter iops is invalid."
            )))
        }
        _ => {}
    }
    if volume_type == "gp3" {
        ebs.iops = Some(ebs.iops.unwrap_or(3000));
        ebs.throughput = Some(ebs.throughput.unwrap_or(125));
    }
    ebs.volume_type = Some(volume_type);
    ebs.delete_on_termination = Some(ebs.delete_on_termination.unwrap_or(true));
    match &ebs.snapshot_id {
        Some(snapshot_id) => {
            let snapshot = usable_snapshot(state, ctx, snapshot_id)?;
            let size = ebs.volume_size.unwrap_or(snapshot.volume_size);
            if size < snapshot.volume_size {
                return Err(Error::InvalidBlockDeviceMapping(format!(
                    "Volume of size {size}GB is smaller than snapshot '{snapshot_id}', expect size >= {}GB",
                    snapshot.volume_size
                )));
            }
            ebs.volume_size = Some(size);
            if snapshot.encrypted && ebs.encrypted == Some(false) {
                return Err(Error::InvalidParameterCombination(format!(
                    "Snapshot {snapshot_id} is encrypted; the volume must be encrypted too"
                )));
            }
            ebs.encrypted = Some(ebs.encrypted.unwrap_or(snapshot.encrypted));
        }
        None => {
            let size = ebs.volume_size.ok_or_else(|| {
                Error::MissingParameter(format!(
                    "BlockDeviceMapping.N.Ebs.VolumeSize (device {} has no snapshot)",
                    mapping.device_name
                ))
            })?;
            ebs.encrypted = Some(ebs.encrypted.unwrap_or(false));
            ebs.volume_size = Some(size);
        }
    }
    if let Some(size) = ebs.volume_size {
        if !(1..=65_536).contains(&size) {
            return Err(Error::InvalidParameterValue(format!(
                "Volume size {size} GiB is out of range (1..65536)"
            )));
        }
    }
    out.ebs = Some(ebs);
    Ok(out)
}

/// A completed snapshot the caller may create volumes from.
fn usable_snapshot<'s>(
    state: &'s State,
    ctx: &RequestContext,
    snapshot_id: &str,
) -> Result<&'s Arc<Snapshot>> {
    if !ids::is_well_formed(snapshot_id, "snap") {
        return Err(Error::InvalidSnapshotIdMalformed(snapshot_id.to_string()));
    }
    let snapshot = state
        .snapshots
        .get(snapshot_id)
        .filter(|s| s.region == ctx.region && can_restore(s, ctx.account_id()))
        .ok_or_else(|| Error::InvalidSnapshotNotFound(snapshot_id.to_string()))?;
    if snapshot.state != SnapshotState::Completed {
        return Err(Error::IncorrectState(format!(
            "Snapshot {snapshot_id} is in state {} and cannot be used until it is completed",
            snapshot.state.as_str()
        )));
    }
    Ok(snapshot)
}

fn check_kernel_or_ramdisk(param: &str, value: &Option<String>, prefix: &str) -> Result<()> {
    match value {
        Some(v) if !ids::is_well_formed(v, prefix) => Err(Error::InvalidParameterValue(format!(
            "Value ({v}) for parameter {param} is invalid. Expected '{prefix}-...'"
        ))),
        _ => Ok(()),
    }
}

impl Service {
    /// The id of the caller's image of this name in the region, if there is one.
    pub fn image_named(&self, ctx: &RequestContext, name: &str) -> Result<Option<String>> {
        Ok(self
            .read()?
            .image_names
            .get(&ctx.region, ctx.account_id(), name)
            .map(|i| i.image_id.to_string()))
    }

    /// Makes an image (and nothing else) launchable by every account.
    pub fn publish_image(&self, image_id: &str) -> Result<()> {
        self.write(|state, _| {
            let image = state
                .images
                .get(image_id)
                .ok_or_else(|| Error::InvalidAmiIdNotFound(image_id.to_string()))?;
            let mut public = (**image).clone();
            if !public
                .launch_permissions
                .contains(&LaunchPermission::Public)
            {
                public.launch_permissions.push(LaunchPermission::Public);
            }
            Ok((vec![Change::PutImage(public)], ()))
        })
    }

    /// RegisterImage: records a new EBS-backed image over existing snapshots.
    pub fn register_image(
        &self,
        ctx: &RequestContext,
        req: RegisterImageRequest,
    ) -> Result<String> {
        self.write(|state, issuer| {
            let name = req.name.clone().ok_or_else(|| Error::MissingParameter("Name".into()))?;
            check_name(&name)?;
            check_description(&req.description)?;
            check_one_of("Architecture", req.architecture.as_deref(), ARCHITECTURES)?;
            check_one_of(
                "VirtualizationType",
                req.virtualization_type.as_deref(),
                &["hvm", "paravirtual"],
            )?;
            check_one_of("BootMode", req.boot_mode.as_deref(), BOOT_MODES)?;
            check_one_of("TpmSupport", req.tpm_support.as_deref(), &["v2.0"])?;
            check_one_of("ImdsSupport", req.imds_support.as_deref(), &["v2.0"])?;
            check_one_of("SriovNetSupport", req.sriov_net_support.as_deref(), &["simple"])?;
            check_kernel_or_ramdisk("KernelId", &req.kernel_id, "aki")?;
            check_kernel_or_ramdisk("RamdiskId", &req.ramdisk_id, "ari")?;
            if req.tpm_support.is_some() && req.boot_mode.as_deref() != Some("uefi") {
                return Err(Error::InvalidParameterCombination(
                    "TpmSupport requires BootMode uefi".into(),
                ));
            }
            if req.block_device_mappings.is_empty() {
                return Err(match req.image_location {
                    Some(_) => Error::InvalidParameterValue(
                        "Instance-store images (ImageLocation of an S3 manifest) are not supported; register an EBS-backed image with BlockDeviceMappings".into(),
                    ),
                    None => Error::MissingParameter("BlockDeviceMapping".into()),
                });
            }
            let root_device_name = req
                .root_device_name
                .clone()
                .ok_or_else(|| Error::MissingParameter("RootDeviceName".into()))?;
            let mut devices = BTreeSet::new();
            let mut mappings = Vec::with_capacity(req.block_device_mappings.len());
            for mapping in &req.block_device_mappings {
                if !devices.insert(mapping.device_name.clone()) {
                    return Err(Error::InvalidBlockDeviceMapping(format!(
                        "The device name {} is used more than once",
                        mapping.device_name
                    )));
                }
                mappings.push(resolve_mapping(state, ctx, mapping)?);
            }
            let root_has_snapshot = mappings.iter().any(|m| {
                m.device_name == root_device_name
                    && m.ebs.as_ref().is_some_and(|e| e.snapshot_id.is_some())
            });
            if !root_has_snapshot {
                return Err(Error::InvalidParameterValue(format!(
                    "The root device {root_device_name} must have a block device mapping with an EBS snapshot"
                )));
            }
            let tags = tags_for_new_resource(ctx, &req.tag_specifications, "image", &["image"])?;
            check_unique_name(state, ctx, &name)?;
            // Kernel and ramdisk images for PV instances: the root snapshot holds the file.
            let (image_type, prefix) = match req.image_location.as_deref() {
                Some(KERNEL_IMAGE_LOCATION) => ("kernel", "aki"),
                Some(RAMDISK_IMAGE_LOCATION) => ("ramdisk", "ari"),
                _ => ("machine", "ami"),
            };
            ctx.finish_dry_run()?;
            let image_id = issuer.issue(prefix)?;
            let image = Image {
                image_id: image_id.as_str().into(),
                region: ctx.region.as_str().into(),
                owner_id: ctx.account_id().into(),
                name: name.into(),
                description: req.description.as_deref().map(Into::into),
                // AWS's documented default for EBS-backed images.
                architecture: req.architecture.clone().unwrap_or_else(|| "i386".into()).into(),
                image_type: image_type.into(),
                virtualization_type: req
                    .virtualization_type
                    .clone()
                    .unwrap_or_else(|| "paravirtual".into()).into(),
                root_device_name: root_device_name.into(),
                root_device_type: "ebs".into(),
                block_device_mappings: mappings,
                boot_mode: req.boot_mode.as_deref().map(Into::into),
                ena_support: req.ena_support,
                imds_support: req.imds_support.as_deref().map(Into::into),
                creation_date: time::now_string().into(),
                state: ImageState::Available,
                launch_permissions: Vec::new(),
                pending_work: None,
                tags,
                details: ImageDetails {
                    kernel_id: req.kernel_id.as_deref().map(Into::into),
                    ramdisk_id: req.ramdisk_id.as_deref().map(Into::into),
                    sriov_net_support: req.sriov_net_support.as_deref().map(Into::into),
                    tpm_support: req.tpm_support.as_deref().map(Into::into),
                    uefi_data: req.uefi_data.as_deref().map(Into::into),
                    ..ImageDetails::default()
                }
                .boxed(),
            };
            Ok((vec![Change::PutImage(image)], image_id))
        })
    }

    /// DescribeImages: the images visible to the caller that match, one page of them.
    pub fn describe_images(
        &self,
        ctx: &RequestContext,
        req: &DescribeImagesRequest,
    ) -> Result<(Vec<Arc<Image>>, Option<String>)> {
        let page = PageRequest::parse(
            req.max_results,
            req.next_token.as_deref(),
            !req.image_ids.is_empty(),
            5,
        )?;
        let filters = Filters::compile(&req.filters, IMAGE_FILTERS, true)?;
        let owners = self.resolve_owners(ctx, &req.owners)?;
        let executable = resolve_executable_users(ctx, &req.executable_users)?;
        for id in &req.image_ids {
            check_image_id(id)?;
        }
        ctx.finish_dry_run()?;
        let state = self.read()?;
        let now = time::now_ms();
        let explicit = !req.image_ids.is_empty();
        let selected = |image: &Image| -> bool {
            image.region == ctx.region
                && can_launch(image, &ctx.account)
                && (owners.is_empty() || owners.contains(image.owner_id.as_str()))
                && executable_matches(&executable, image, &ctx.account)
                && (req.include_deprecated
                    || explicit
                    || image.owner_id == ctx.account.account_id
                    || !is_deprecated(image, now))
                && (req.include_disabled || image.state != ImageState::Disabled)
                && filters.matches(|f| self.image_filter_values(image, f, ctx))
        };
        if explicit {
            let wanted: BTreeSet<&String> = req.image_ids.iter().collect();
            let mut missing = Vec::new();
            let mut found = Vec::new();
            for id in wanted {
                match state.images.get(id.as_str()) {
                    Some(image)
                        if image.region == ctx.region && can_launch(image, &ctx.account) =>
                    {
                        if selected(image) {
                            found.push(image.clone());
                        }
                    }
                    // A deregistered image answers with an empty result, as AWS documents.
                    _ if self.store().id_was_issued(id)?
                        && !state.images.contains_key(id.as_str()) => {}
                    _ => missing.push(id.clone()),
                }
            }
            if !missing.is_empty() {
                return Err(Error::InvalidAmiIdNotFound(missing.join(", ")));
            }
            return Ok((found, None));
        }
        Ok(page.take_from(&state.images, |image| selected(image)))
    }

    fn image_filter_values(
        &self,
        image: &Image,
        f: &super::filters::Filter,
        ctx: &RequestContext,
    ) -> Vec<String> {
        if let Some(values) = tag_filter_values(f, image.tags.of(ctx.account_id())) {
            return values;
        }
        let ebs = || {
            image
                .block_device_mappings
                .iter()
                .filter_map(|m| m.ebs.as_ref())
        };
        let opt = |v: &Option<CompactString>| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        match f.name.as_str() {
            "architecture" => vec![image.architecture.to_string()],
            "block-device-mapping.delete-on-termination" => ebs()
                .filter_map(|e| e.delete_on_termination.map(bool_value))
                .collect(),
            "block-device-mapping.device-name" => image
                .block_device_mappings
                .iter()
                .map(|m| m.device_name.to_string())
                .collect(),
            "block-device-mapping.snapshot-id" => ebs()
                .filter_map(|e| e.snapshot_id.as_deref().map(str::to_string))
                .collect(),
            "block-device-mapping.volume-size" => ebs()
                .filter_map(|e| e.volume_size.map(|s| s.to_string()))
                .collect(),
            "block-device-mapping.volume-type" => ebs()
                .filter_map(|e| e.volume_type.as_deref().map(str::to_string))
                .collect(),
            "block-device-mapping.encrypted" => {
                ebs().filter_map(|e| e.encrypted.map(bool_value)).collect()
            }
            "boot-mode" => opt(&image.boot_mode),
            "creation-date" => vec![image.creation_date.to_string()],
            "deprecation-time" => opt(&image.details().deprecation_time),
            "description" => opt(&image.description),
            "ena-support" => vec![bool_value(image.ena_support.unwrap_or(false))],
            "free-tier-eligible" => vec![bool_value(false)],
            "hypervisor" => vec!["xen".into()],
            "image-allowed" => vec![bool_value(true)],
            "image-id" => vec![image.image_id.to_string()],
            "image-type" => vec![image.image_type.to_string()],
            "imds-support" => opt(&image.imds_support),
            "is-public" => vec![bool_value(image.is_public())],
            "kernel-id" => opt(&image.details().kernel_id),
            "manifest-location" => vec![image.image_location()],
            "name" => vec![image.name.to_string()],
            "owner-alias" => self
                .owner_alias(&image.owner_id)
                .map(|a| vec![a.to_string()])
                .unwrap_or_default(),
            "owner-id" => vec![image.owner_id.to_string()],
            "platform" => Vec::new(),
            "platform-details" => vec!["Linux/UNIX".into()],
            "product-code" | "product-code.type" => Vec::new(),
            "ramdisk-id" => opt(&image.details().ramdisk_id),
            "root-device-name" => vec![image.root_device_name.to_string()],
            "root-device-type" => vec![image.root_device_type.to_string()],
            "source-image-id" => opt(&image.details().source_image_id),
            "source-image-region" => opt(&image.details().source_image_region),
            "source-instance-id" => Vec::new(),
            "sriov-net-support" => opt(&image.details().sriov_net_support),
            "state" => vec![image.state.as_str().to_string()],
            "state-reason-code" => image
                .details()
                .state_reason
                .iter()
                .map(|r| r.0.to_string())
                .collect(),
            "state-reason-message" => image
                .details()
                .state_reason
                .iter()
                .map(|r| r.1.to_string())
                .collect(),
            "tpm-support" => opt(&image.details().tpm_support),
            "usage-operation" => vec!["RunInstances".into()],
            "virtualization-type" => vec![image.virtualization_type.to_string()],
            _ => Vec::new(),
        }
    }

    /// DeregisterImage: removes the image; with `delete_snapshots`, also its snapshots that
    /// no other image uses.
    pub fn deregister_image(
        &self,
        ctx: &RequestContext,
        image_id: &str,
        delete_snapshots: bool,
    ) -> Result<Vec<SnapshotDeleteResult>> {
        self.write(|state, _| {
            let image = owned_image(state, ctx, image_id)?;
            let now = time::now_ms();
            let protected = match &image.details().deregistration_protection {
                DeregistrationProtection::Disabled => false,
                DeregistrationProtection::Enabled
                | DeregistrationProtection::EnabledWithCooldown => true,
                DeregistrationProtection::DisabledUntil(until) => {
                    time::parse_ms(until).map(|u| u > now).unwrap_or(false)
                }
            };
            if protected {
                return Err(Error::OperationNotPermitted(format!(
                    "Image {image_id} has deregistration protection enabled; disable it first"
                )));
            }
            ctx.finish_dry_run()?;
            let mut changes = vec![Change::DeleteImage(image_id.to_string())];
            let mut results = Vec::new();
            if delete_snapshots {
                let snaps: BTreeSet<&str> = image.snapshot_ids().collect();
                for snap in snaps {
                    let other_users = state
                        .images_using_snapshot(snap)
                        .into_iter()
                        .any(|user| user != image_id);
                    let owned = state
                        .snapshots
                        .get(snap)
                        .is_some_and(|s| s.owner_id == ctx.account.account_id);
                    let return_code = if !owned {
                        "missing-permissions"
                    } else if other_users {
                        "skipped"
                    } else {
                        changes.push(Change::DeleteSnapshot(snap.to_string()));
                        "success"
                    };
                    results.push(SnapshotDeleteResult {
                        snapshot_id: snap.to_string(),
                        return_code,
                    });
                }
            }
            Ok((changes, results))
        })
    }

    /// CopyImage: a new `pending` image in the caller's region whose snapshots are copies of
    /// the source image's; it becomes `available` when the copies complete.
    pub fn copy_image(&self, ctx: &RequestContext, req: CopyImageRequest) -> Result<String> {
        self.write(|state, issuer| {
            if req.name.is_empty() {
                return Err(Error::MissingParameter("Name".into()));
            }
            check_name(&req.name)?;
            check_description(&req.description)?;
            if !self.serves_region(&req.source_region) {
                return Err(Error::InvalidParameterValue(format!(
                    "Invalid source region '{}'",
                    req.source_region
                )));
            }
            let fingerprint = fingerprint(&format!("{req:?}"));
            if let Some(token) = &req.client_token {
                let key = (
                    ctx.account_id().to_string(),
                    ctx.region.clone(),
                    "CopyImage".to_string(),
                    token.clone(),
                );
                if let Some(record) = state.client_tokens.get(&key) {
                    if record.fingerprint != fingerprint {
                        return Err(Error::IdempotentParameterMismatch(format!(
                            "Client token {token} was already used with different parameters"
                        )));
                    }
                    ctx.finish_dry_run()?;
                    return Ok((Vec::new(), record.resource_id.clone()));
                }
            }
            check_image_id(&req.source_image_id)?;
            let source = state
                .images
                .get(req.source_image_id.as_str())
                .filter(|i| i.region == req.source_region && can_launch(i, &ctx.account))
                .ok_or_else(|| Error::InvalidAmiIdNotFound(req.source_image_id.clone()))?;
            if source.state != ImageState::Available {
                return Err(Error::InvalidAmiIdUnavailable(format!(
                    "Image {} is in state {} and cannot be copied",
                    source.image_id,
                    source.state.as_str()
                )));
            }
            let mut image_tags = tags_for_new_resource(ctx, &req.tag_specifications, "image", &["image", "snapshot"])?;
            let snapshot_tags = tags_for_new_resource(ctx, &req.tag_specifications, "snapshot", &["image", "snapshot"])?;
            if req.copy_image_tags {
                // Tags given in TagSpecifications win over the copied ones.
                let me = ctx.account_id();
                for (k, v) in source.tags.of(me).iter() {
                    if image_tags.of(me).get(k).is_none() {
                        image_tags.set(me, k, v);
                    }
                }
            }
            check_unique_name(state, ctx, &req.name)?;
            ctx.finish_dry_run()?;
            let image_id = issuer.issue("ami")?;
            let mut changes = Vec::new();
            let mut mappings = Vec::new();
            for mapping in &source.block_device_mappings {
                let mut mapping = mapping.clone();
                if let Some(ebs) = mapping.ebs.as_mut() {
                    if let Some(source_snapshot) = ebs.snapshot_id.as_deref().and_then(|s| state.snapshots.get(s)) {
                        let copy_id = issuer.issue("snap")?;
                        let description = format!(
                            "Copied for DestinationAmi {image_id} from SourceAmi {} for SourceSnapshot {}. Task created on {}.",
                            source.image_id,
                            source_snapshot.snapshot_id,
                            time::now_string()
                        );
                        let copy = copy_snapshot_record(
                            source_snapshot,
                            ctx,
                            copy_id.clone(),
                            description,
                            req.encrypted,
                            req.kms_key_id.clone(),
                            snapshot_tags.clone(),
                        );
                        ebs.encrypted = Some(copy.encrypted);
                        changes.push(Change::PutSnapshot(copy));
                        changes.push(Change::CopySnapshotBlocks {
                            from: source_snapshot.snapshot_id.clone(),
                            to: copy_id.clone(),
                        });
                        ebs.snapshot_id = Some(copy_id.into());
                    }
                }
                mappings.push(mapping);
            }
            let image = Image {
                image_id: image_id.as_str().into(),
                region: ctx.region.as_str().into(),
                owner_id: ctx.account_id().into(),
                name: req.name.as_str().into(),
                description: req.description.clone().or_else(|| source.description.as_deref().map(str::to_string)).map(Into::into),
                block_device_mappings: mappings,
                creation_date: time::now_string().into(),
                state: ImageState::Pending,
                launch_permissions: Vec::new(),
                pending_work: Some(PendingWork::Copy),
                tags: image_tags,
                // A copy keeps the source's attributes, not its state, history or protection.
                details: ImageDetails {
                    kernel_id: source.details().kernel_id.clone(),
                    ramdisk_id: source.details().ramdisk_id.clone(),
                    sriov_net_support: source.details().sriov_net_support.clone(),
                    tpm_support: source.details().tpm_support.clone(),
                    uefi_data: source.details().uefi_data.clone(),
                    source_image_id: Some(source.image_id.clone()),
                    source_image_region: Some(source.region.clone()),
                    ..ImageDetails::default()
                }
                .boxed(),
                ..(**source).clone()
            };
            changes.push(Change::PutImage(image));
            if let Some(token) = &req.client_token {
                changes.push(Change::PutClientToken(ClientTokenRecord {
                    account_id: ctx.account_id().to_string(),
                    region: ctx.region.clone(),
                    action: "CopyImage".into(),
                    token: token.clone(),
                    fingerprint,
                    resource_id: image_id.clone(),
                }));
            }
            Ok((changes, image_id))
        })
    }

    /// Moves copies forward: snapshot copies older than the copy delay complete, and images
    /// whose snapshots are all complete become available. Runs periodically and after a restart.
    pub fn complete_pending_work(&self) -> Result<usize> {
        let now = time::now_ms();
        let delay = self.config().copy_delay_ms;
        self.write(|state, _| {
            let mut changes = Vec::new();
            let mut completed_snapshots = BTreeSet::new();
            for snapshot in state.snapshots.values() {
                // A snapshot of a volume whose blocks are still being stored is not done.
                let background = snapshot.copy_source.is_some()
                    || (snapshot.taken_from_volume && !snapshot.importing);
                if snapshot.state != SnapshotState::Pending || !background {
                    continue;
                }
                let started = time::parse_ms(&snapshot.start_time).unwrap_or(0);
                if now - started < delay {
                    continue;
                }
                let mut done = (**snapshot).clone();
                done.state = SnapshotState::Completed;
                done.progress = "100%".into();
                done.completion_time = Some(time::format_ms(now));
                completed_snapshots.insert(done.snapshot_id.clone());
                changes.push(Change::PutSnapshot(done));
            }
            for image in state.images.values() {
                if image.pending_work.is_none() {
                    continue;
                }
                let all_done = image.snapshot_ids().all(|s| {
                    completed_snapshots.contains(s)
                        || state
                            .snapshots
                            .get(s)
                            .is_some_and(|snap| snap.state == SnapshotState::Completed)
                });
                // A snapshot that failed (or vanished in a restart) fails the image.
                let failed = image.snapshot_ids().find(|s| {
                    !completed_snapshots.contains(*s)
                        && state
                            .snapshots
                            .get(*s)
                            .is_none_or(|snap| snap.state == SnapshotState::Error)
                });
                if all_done {
                    let mut done = (**image).clone();
                    done.state = ImageState::Available;
                    done.pending_work = None;
                    changes.push(Change::PutImage(done));
                } else if let Some(snapshot_id) = failed {
                    let mut done = (**image).clone();
                    done.state = ImageState::Failed;
                    done.pending_work = None;
                    done.details_mut().state_reason = Some((
                        "Server.InternalError".into(),
                        format!("The snapshot {snapshot_id} of the image failed").into(),
                    ));
                    changes.push(Change::PutImage(done));
                }
            }
            let n = changes.len();
            Ok((changes, n))
        })
    }

    /// DescribeImageAttribute (owner only).
    pub fn describe_image_attribute(
        &self,
        ctx: &RequestContext,
        image_id: &str,
        attribute: &str,
    ) -> Result<ImageAttribute> {
        let state = self.read()?;
        let image = owned_image(&state, ctx, image_id)?;
        let answer = match attribute {
            "description" => ImageAttribute::Description(image.description.clone().map(|s| s.to_string())),
            "kernel" => ImageAttribute::Kernel(image.details().kernel_id.clone().map(|s| s.to_string())),
            "ramdisk" => ImageAttribute::Ramdisk(image.details().ramdisk_id.clone().map(|s| s.to_string())),
            "launchPermission" => ImageAttribute::LaunchPermission(image.launch_permissions.clone()),
            "productCodes" => ImageAttribute::ProductCodes,
            "blockDeviceMapping" => {
                return Err(Error::AuthFailure(
                    "The blockDeviceMapping attribute is deprecated; use DescribeImages to get the block device mappings of an AMI".into(),
                ))
            }
            "sriovNetSupport" => ImageAttribute::SriovNetSupport(image.details().sriov_net_support.clone().map(|s| s.to_string())),
            "bootMode" => ImageAttribute::BootMode(image.boot_mode.clone().map(|s| s.to_string())),
            "tpmSupport" => ImageAttribute::TpmSupport(image.details().tpm_support.clone().map(|s| s.to_string())),
            "uefiData" => ImageAttribute::UefiData(image.details().uefi_data.clone().map(|s| s.to_string())),
            "lastLaunchedTime" => ImageAttribute::LastLaunchedTime(image.details().last_launched_time.clone().map(|s| s.to_string())),
            "imdsSupport" => ImageAttribute::ImdsSupport(image.imds_support.clone().map(|s| s.to_string())),
            "deregistrationProtection" => ImageAttribute::DeregistrationProtection(
                protection_string(&image.details().deregistration_protection),
            ),
            other => {
                return Err(Error::InvalidParameterValue(format!(
                    "Value ({other}) for parameter attribute is invalid. Unknown attribute."
                )))
            }
        };
        ctx.finish_dry_run()?;
        Ok(answer)
    }

    /// ModifyImageAttribute (owner only).
    pub fn modify_image_attribute(
        &self,
        ctx: &RequestContext,
        image_id: &str,
        change: ImageAttributeChange,
    ) -> Result<()> {
        self.write(|state, _| {
            let image = owned_image(state, ctx, image_id)?;
            let mut updated = (**image).clone();
            match change {
                ImageAttributeChange::Description(d) => {
                    check_description(&Some(d.clone()))?;
                    updated.description = Some(d.into());
                }
                ImageAttributeChange::ImdsSupport(v) => {
                    if v != "v2.0" {
                        return Err(Error::InvalidParameterValue(format!(
                            "Value ({v}) for parameter ImdsSupport is invalid. The only valid value is v2.0, and it cannot be removed once set"
                        )));
                    }
                    updated.imds_support = Some(v.into());
                }
                ImageAttributeChange::ProductCodes => {
                    return Err(Error::InvalidParameterValue(
                        "Product codes can only be attached to AWS Marketplace images".into(),
                    ))
                }
                ImageAttributeChange::LaunchPermission { add, remove } => {
                    for p in add.iter().chain(remove.iter()) {
                        check_launch_permission(p)?;
                    }
                    if add.contains(&LaunchPermission::Public) {
                        let key = (ctx.account_id().to_string(), ctx.region.clone());
                        if state.block_public_access.contains(&key) {
                            return Err(Error::OperationNotPermitted(format!(
                                "Image block public access is enabled for this account in {}: image {image_id} cannot be made public",
                                ctx.region
                            )));
                        }
                        let encrypted = image
                            .block_device_mappings
                            .iter()
                            .any(|m| m.ebs.as_ref().and_then(|e| e.encrypted) == Some(true));
                        if encrypted {
                            return Err(Error::InvalidParameterValue(format!(
                                "Image {image_id} has encrypted snapshots and cannot be made public"
                            )));
                        }
                    }
                    if !add.is_empty() && updated.state == ImageState::Disabled {
                        return Err(Error::IncorrectState(format!(
                            "Image {image_id} is disabled and cannot be shared"
                        )));
                    }
                    updated.launch_permissions.retain(|p| !remove.contains(p));
                    for p in add {
                        if !updated.launch_permissions.contains(&p) {
                            updated.launch_permissions.push(p);
                        }
                    }
                    updated.launch_permissions.sort();
                }
            }
            ctx.finish_dry_run()?;
            Ok((vec![Change::PutImage(updated)], ()))
        })
    }

    /// ResetImageAttribute (`launchPermission` only): the image becomes private.
    pub fn reset_image_attribute(
        &self,
        ctx: &RequestContext,
        image_id: &str,
        attribute: &str,
    ) -> Result<()> {
        self.update_owned_image(ctx, image_id, |image| {
            if attribute != "launchPermission" {
                return Err(Error::InvalidParameterValue(format!(
                    "Value ({attribute}) for parameter attribute is invalid. Only launchPermission can be reset"
                )));
            }
            image.launch_permissions.clear();
            Ok(())
        })
    }

    /// EnableImageDeprecation: schedules deprecation (rounded up to the minute).
    pub fn enable_image_deprecation(
        &self,
        ctx: &RequestContext,
        image_id: &str,
        deprecate_at: &str,
    ) -> Result<()> {
        let at = time::parse_ms(deprecate_at)?;
        let now = time::now_ms();
        const TEN_YEARS_MS: i64 = 10 * 366 * 24 * 3600 * 1000;
        if at > now + TEN_YEARS_MS {
            return Err(Error::InvalidParameterValue(
                "DeprecateAt must be at most 10 years in the future".into(),
            ));
        }
        let rounded = (at + 59_999) / 60_000 * 60_000;
        if rounded < now {
            return Err(Error::InvalidParameterValue(format!(
                "DeprecateAt {deprecate_at} is in the past; a deprecation time must be in the future"
            )));
        }
        self.update_owned_image(ctx, image_id, |image| {
            image.details_mut().deprecation_time = Some(time::format_ms(rounded).into());
            Ok(())
        })
    }

    /// DisableImageDeprecation: cancels the scheduled deprecation.
    pub fn disable_image_deprecation(&self, ctx: &RequestContext, image_id: &str) -> Result<()> {
        self.update_owned_image(ctx, image_id, |image| {
            image.details_mut().deprecation_time = None;
            Ok(())
        })
    }

    /// DisableImage: the image becomes `disabled` and private.
    pub fn disable_image(&self, ctx: &RequestContext, image_id: &str) -> Result<()> {
        self.update_owned_image(ctx, image_id, |image| {
            if image.state != ImageState::Available {
                return Err(Error::IncorrectState(format!(
                    "Image {image_id} is in state {} and cannot be disabled",
                    image.state.as_str()
                )));
            }
            image.state = ImageState::Disabled;
            image.launch_permissions.clear();
            Ok(())
        })
    }

    /// EnableImage: a disabled image becomes `available` again (still private).
    pub fn enable_image(&self, ctx: &RequestContext, image_id: &str) -> Result<()> {
        self.update_owned_image(ctx, image_id, |image| {
            if image.state != ImageState::Disabled {
                return Err(Error::IncorrectState(format!(
                    "Image {image_id} is in state {} and is not disabled",
                    image.state.as_str()
                )));
            }
            image.state = ImageState::Available;
            Ok(())
        })
    }

    /// EnableImageDeregistrationProtection.
    pub fn enable_deregistration_protection(
        &self,
        ctx: &RequestContext,
        image_id: &str,
        with_cooldown: bool,
    ) -> Result<String> {
        self.update_owned_image(ctx, image_id, |image| {
            image.details_mut().deregistration_protection = if with_cooldown {
                DeregistrationProtection::EnabledWithCooldown
            } else {
                DeregistrationProtection::Enabled
            };
            Ok(())
        })?;
        Ok(if with_cooldown {
            "enabled-with-cooldown"
        } else {
            "enabled-without-cooldown"
        }
        .into())
    }

    /// DisableImageDeregistrationProtection; a cooldown keeps the image protected 24 hours more.
    pub fn disable_deregistration_protection(
        &self,
        ctx: &RequestContext,
        image_id: &str,
    ) -> Result<String> {
        let mut answer = String::new();
        self.update_owned_image(ctx, image_id, |image| {
            image.details_mut().deregistration_protection =
                match image.details().deregistration_protection {
                    DeregistrationProtection::EnabledWithCooldown => {
                        DeregistrationProtection::DisabledUntil(time::format_ms(
                            time::now_ms() + 24 * 3600 * 1000,
                        ))
                    }
                    ref other @ DeregistrationProtection::DisabledUntil(_) => other.clone(),
                    _ => DeregistrationProtection::Disabled,
                };
            answer = protection_string(&image.details().deregistration_protection);
            Ok(())
        })?;
        Ok(answer)
    }

    /// GetImageBlockPublicAccessState for the caller's account and region.
    pub fn image_block_public_access(&self, ctx: &RequestContext) -> Result<bool> {
        ctx.finish_dry_run()?;
        let state = self.read()?;
        Ok(state
            .block_public_access
            .contains(&(ctx.account_id().to_string(), ctx.region.clone())))
    }

    /// Enable/DisableImageBlockPublicAccess for the caller's account and region.
    pub fn set_image_block_public_access(&self, ctx: &RequestContext, enabled: bool) -> Result<()> {
        self.write(|_, _| {
            ctx.finish_dry_run()?;
            Ok((
                vec![Change::SetImageBlockPublicAccess {
                    account_id: ctx.account_id().to_string(),
                    region: ctx.region.clone(),
                    enabled,
                }],
                (),
            ))
        })
    }

    /// Applies `edit` to an image the caller owns and stores the result.
    fn update_owned_image(
        &self,
        ctx: &RequestContext,
        image_id: &str,
        edit: impl FnOnce(&mut Image) -> Result<()>,
    ) -> Result<()> {
        self.write(|state, _| {
            let image = owned_image(state, ctx, image_id)?;
            let mut updated = (**image).clone();
            edit(&mut updated)?;
            ctx.finish_dry_run()?;
            Ok((vec![Change::PutImage(updated)], ()))
        })
    }
}

/// The wire string of deregistration protection.
pub fn protection_string(p: &DeregistrationProtection) -> String {
    match p {
        DeregistrationProtection::Disabled => "disabled".into(),
        DeregistrationProtection::Enabled => "enabled-without-cooldown".into(),
        DeregistrationProtection::EnabledWithCooldown => "enabled-with-cooldown".into(),
        DeregistrationProtection::DisabledUntil(t) => format!("disabled-until-{t}"),
    }
}

fn check_launch_permission(p: &LaunchPermission) -> Result<()> {
    match p {
        LaunchPermission::UserId(u) if !(ids::is_account_id(u)) => {
            Err(Error::InvalidAmiAttributeItemValue(format!(
                "Invalid attribute item value \"{u}\" for userId item type."
            )))
        }
        LaunchPermission::OrganizationArn(a) if !a.starts_with("arn:aws:organizations::") => Err(
            Error::InvalidAmiAttributeItemValue(format!("Invalid organization ARN \"{a}\"")),
        ),
        LaunchPermission::OrganizationalUnitArn(a) if !a.starts_with("arn:aws:organizations::") => {
            Err(Error::InvalidAmiAttributeItemValue(format!(
                "Invalid organizational unit ARN \"{a}\""
            )))
        }
        _ => Ok(()),
    }
}

/// How `ExecutableBy` constrains the result.
#[derive(Debug, Default)]
struct ExecutableUsers {
    /// `all`: public images.
    public: bool,
    /// `self` or own id: images shared with the caller (account, organization or OU).
    caller: bool,
    /// Other account ids: images shared with that account id.
    accounts: Vec<String>,
}

fn resolve_executable_users(
    ctx: &RequestContext,
    users: &[String],
) -> Result<Option<ExecutableUsers>> {
    if users.is_empty() {
        return Ok(None);
    }
    let mut out = ExecutableUsers::default();
    for user in users {
        match user.as_str() {
            "all" => out.public = true,
            "self" => out.caller = true,
            id if id == ctx.account_id() => out.caller = true,
            id if ids::is_account_id(id) => out.accounts.push(id.to_string()),
            other => {
                return Err(Error::InvalidParameterValue(format!(
                    "Invalid ExecutableBy value '{other}': expected 'self', 'all' or an account id"
                )))
            }
        }
    }
    Ok(Some(out))
}

fn executable_matches(users: &Option<ExecutableUsers>, image: &Image, caller: &Account) -> bool {
    let Some(users) = users else {
        return true;
    };
    (users.public && image.is_public())
        || (users.caller && shared_explicitly(image, caller))
        || users.accounts.iter().any(|a| {
            image
                .launch_permissions
                .contains(&LaunchPermission::UserId(a.clone()))
        })
}

fn fingerprint(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}
