//! The records Kiln keeps: images, snapshots, accounts and their parts.
//!
//! These are plain data. They are stored as JSON documents in the metadata store and held in
//! memory by [`crate::service::state::State`]; the service layer is the only code that changes them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Tags on one resource, per account: account id → (key → value).
///
/// Tags are private to the account that set them, as on AWS: tags that another account
/// puts on a shared image are visible only to that account.
pub type TagsByAccount = BTreeMap<String, BTreeMap<String, String>>;

/// An account known to Kiln.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Account {
    /// Twelve-digit account id.
    pub account_id: String,
    /// Unique human name (`default`, `kiln`, ...).
    pub name: String,
    /// Owner alias shown as `imageOwnerAlias` (`kiln` for the built-in owner).
    pub alias: Option<String>,
    /// Organization the account belongs to, for launch permissions by organization.
    pub organization_arn: Option<String>,
    /// Organizational unit the account belongs to.
    pub organizational_unit_arn: Option<String>,
}

/// An access key and the account it authenticates as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKey {
    /// The public half (`AKIA...`).
    pub access_key_id: String,
    /// The secret used to sign requests.
    pub secret_access_key: String,
    /// Owning account.
    pub account_id: String,
}

/// One entry of an image's launch permission list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub enum LaunchPermission {
    /// Shared with one account.
    UserId(String),
    /// Shared with everyone (`group=all`): the image is public.
    Public,
    /// Shared with every account of an organization.
    OrganizationArn(String),
    /// Shared with every account of an organizational unit.
    OrganizationalUnitArn(String),
}

/// One entry of a snapshot's createVolumePermission list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub enum VolumePermission {
    /// Shared with one account.
    UserId(String),
    /// Shared with everyone.
    Public,
}

/// The EBS part of a block device mapping.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct EbsBlockDevice {
    /// Snapshot the volume is created from.
    pub snapshot_id: Option<String>,
    /// Size in GiB.
    pub volume_size: Option<i64>,
    /// gp2, gp3, io1, io2, st1, sc1, standard.
    pub volume_type: Option<String>,
    /// Provisioned IOPS.
    pub iops: Option<i64>,
    /// Throughput in MiB/s (gp3).
    pub throughput: Option<i64>,
    /// Whether the volume is deleted when the instance terminates.
    pub delete_on_termination: Option<bool>,
    /// Whether the volume is encrypted.
    pub encrypted: Option<bool>,
    /// KMS key recorded for encrypted volumes.
    pub kms_key_id: Option<String>,
}

/// One block device mapping of an image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct BlockDeviceMapping {
    /// `/dev/xvda`, `/dev/sdb`, ...
    pub device_name: String,
    /// `ephemeralN` for instance-store volumes.
    pub virtual_name: Option<String>,
    /// An EBS volume.
    pub ebs: Option<EbsBlockDevice>,
    /// Suppresses a device of the image (`NoDevice=""`).
    pub no_device: bool,
}

/// Lifecycle state of an image.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ImageState {
    /// Being created or copied.
    Pending,
    /// Ready to launch.
    Available,
    /// Made unusable by its owner (DisableImage).
    Disabled,
    /// Creation failed.
    Failed,
}

impl ImageState {
    /// The wire name of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageState::Pending => "pending",
            ImageState::Available => "available",
            ImageState::Disabled => "disabled",
            ImageState::Failed => "failed",
        }
    }
}

/// Deregistration protection of an image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub enum DeregistrationProtection {
    /// The image can be deregistered.
    #[default]
    Disabled,
    /// Protected; disabling takes effect at once.
    Enabled,
    /// Protected; after disabling, protection lasts 24 more hours.
    EnabledWithCooldown,
    /// Protection was disabled but the cooldown lasts until this time (RFC 3339).
    DisabledUntil(String),
}

/// How an image came to be, for the `pending → available` background work.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum PendingWork {
    /// A copy of another image whose snapshot copies must complete.
    Copy,
}

/// An Amazon Machine Image record. Immutable after registration except for the attributes
/// AWS allows to change (description, launch permissions, deprecation, state, protection,
/// tags, imdsSupport).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Image {
    /// `ami-` + 17 hex digits.
    pub image_id: String,
    /// Region the image lives in.
    pub region: String,
    /// Owning account id.
    pub owner_id: String,
    /// Name, unique per account and region.
    pub name: String,
    /// Free-form description.
    pub description: Option<String>,
    /// `owner_id/name`, as AWS reports for EBS-backed images.
    pub image_location: String,
    /// i386, x86_64, arm64.
    pub architecture: String,
    /// machine, kernel, ramdisk.
    pub image_type: String,
    /// hvm or paravirtual.
    pub virtualization_type: String,
    /// Device name of the root volume.
    pub root_device_name: String,
    /// ebs or instance-store.
    pub root_device_type: String,
    /// The block device mappings as registered.
    pub block_device_mappings: Vec<BlockDeviceMapping>,
    /// Kernel image for paravirtual images.
    pub kernel_id: Option<String>,
    /// Ramdisk image for paravirtual images.
    pub ramdisk_id: Option<String>,
    /// legacy-bios, uefi, uefi-preferred.
    pub boot_mode: Option<String>,
    /// Whether ENA is enabled.
    pub ena_support: Option<bool>,
    /// `simple` when SR-IOV is enabled.
    pub sriov_net_support: Option<String>,
    /// `v2.0` when NitroTPM is enabled.
    pub tpm_support: Option<String>,
    /// `v2.0` when IMDSv2 is required for instances of this image.
    pub imds_support: Option<String>,
    /// UEFI variable store, opaque.
    pub uefi_data: Option<String>,
    /// Creation time, RFC 3339 with milliseconds.
    pub creation_date: String,
    /// Current state.
    pub state: ImageState,
    /// Why the image is in its state (failures).
    pub state_reason: Option<(String, String)>,
    /// When the image becomes deprecated (RFC 3339), if scheduled.
    pub deprecation_time: Option<String>,
    /// Deregistration protection.
    pub deregistration_protection: DeregistrationProtection,
    /// Last time an instance was launched from this image.
    pub last_launched_time: Option<String>,
    /// Who may launch it besides the owner.
    pub launch_permissions: Vec<LaunchPermission>,
    /// Source image of a copy.
    pub source_image_id: Option<String>,
    /// Region of the source image of a copy.
    pub source_image_region: Option<String>,
    /// Background work still to do before the image is available.
    pub pending_work: Option<PendingWork>,
    /// Tags, per account.
    pub tags: TagsByAccount,
}

impl Image {
    /// True when anyone may launch the image.
    pub fn is_public(&self) -> bool {
        self.launch_permissions.contains(&LaunchPermission::Public)
    }

    /// Snapshot ids referenced by the image's block device mappings.
    pub fn snapshot_ids(&self) -> impl Iterator<Item = &str> {
        self.block_device_mappings
            .iter()
            .filter_map(|m| m.ebs.as_ref())
            .filter_map(|e| e.snapshot_id.as_deref())
    }
}

/// Lifecycle state of a snapshot.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotState {
    /// Data still arriving or being copied.
    Pending,
    /// Complete and usable.
    Completed,
    /// Failed.
    Error,
}

impl SnapshotState {
    /// The wire name of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotState::Pending => "pending",
            SnapshotState::Completed => "completed",
            SnapshotState::Error => "error",
        }
    }
}

/// A snapshot record (its block data arrives with the block store).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Snapshot {
    /// `snap-` + 17 hex digits.
    pub snapshot_id: String,
    /// Region the snapshot lives in.
    pub region: String,
    /// Owning account id.
    pub owner_id: String,
    /// Volume the snapshot was taken from (`vol-ffffffff` when none, as AWS reports for copies).
    pub volume_id: String,
    /// Size of the volume in GiB.
    pub volume_size: i64,
    /// Free-form description.
    pub description: String,
    /// Current state.
    pub state: SnapshotState,
    /// Message for the error state.
    pub state_message: Option<String>,
    /// Start time, RFC 3339 with milliseconds.
    pub start_time: String,
    /// Completion time, once completed.
    pub completion_time: Option<String>,
    /// Progress, `0%`..`100%`.
    pub progress: String,
    /// Whether the snapshot is encrypted.
    pub encrypted: bool,
    /// KMS key recorded for encrypted snapshots.
    pub kms_key_id: Option<String>,
    /// Parent snapshot of an incremental snapshot.
    pub parent_snapshot_id: Option<String>,
    /// Source of a copy: (region, snapshot id), completed in the background.
    pub copy_source: Option<(String, String)>,
    /// Who may create volumes from it besides the owner.
    pub create_volume_permissions: Vec<VolumePermission>,
    /// Tags, per account.
    pub tags: TagsByAccount,
    /// A pending EBS direct snapshot goes to `error` at this time (unix ms).
    #[serde(default)]
    pub expires_at_ms: Option<i64>,
    /// Filled by an import task (a restart fails it rather than leave it pending).
    #[serde(default)]
    pub importing: bool,
}

impl Snapshot {
    /// True when anyone may create volumes from the snapshot.
    pub fn is_public(&self) -> bool {
        self.create_volume_permissions
            .contains(&VolumePermission::Public)
    }
}

/// What an import task produces.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum ImportKind {
    /// ImportSnapshot: a snapshot.
    Snapshot,
    /// ImportImage: a snapshot and an image registered over it.
    Image,
}

/// An ImportSnapshot or ImportImage task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImportTask {
    /// `import-snap-...` or `import-ami-...`.
    pub task_id: String,
    /// Snapshot or image.
    pub kind: ImportKind,
    /// Region of the task and its results.
    pub region: String,
    /// Account that started it.
    pub owner_id: String,
    /// Description of the task (and of what it creates).
    pub description: Option<String>,
    /// Where the disk comes from (`file://...` or a loopback `http://...`).
    pub url: String,
    /// Format the caller declared.
    pub declared_format: Option<String>,
    /// Format found in the file.
    pub format: Option<String>,
    /// Size of the disk image file, bytes.
    pub disk_image_size: Option<u64>,
    /// `active`, `completed`, `deleting`, `deleted`.
    pub status: String,
    /// Detail of the status (the reason of a failure).
    pub status_message: Option<String>,
    /// Percent done while active.
    pub progress: Option<String>,
    /// Snapshot created.
    pub snapshot_id: Option<String>,
    /// Image registered (image tasks).
    pub image_id: Option<String>,
    /// Architecture of the image (image tasks).
    pub architecture: Option<String>,
    /// Boot mode of the image (image tasks).
    pub boot_mode: Option<String>,
    /// Tags for the task's results.
    pub tags: Vec<(String, String)>,
}

/// An ExportImage task: an image's root volume written as a disk file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExportTask {
    /// `export-ami-...`.
    pub task_id: String,
    /// Region of the task.
    pub region: String,
    /// Account that started it.
    pub owner_id: String,
    /// The exported image.
    pub image_id: String,
    /// Snapshot of its root volume.
    pub snapshot_id: String,
    /// `raw`, `vmdk` or `vhd`.
    pub format: String,
    /// Description.
    pub description: Option<String>,
    /// "Bucket": a directory under the export directory.
    pub bucket: String,
    /// Prefix of the file name.
    pub prefix: String,
    /// `active`, `completed`, `deleted`.
    pub status: String,
    /// Detail of the status.
    pub status_message: Option<String>,
    /// Percent done while active.
    pub progress: Option<String>,
    /// Tags of the task.
    pub tags: Vec<(String, String)>,
}
