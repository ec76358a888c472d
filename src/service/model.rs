//! The records Kiln keeps: images, snapshots, accounts and their parts.
//!
//! These are plain data. They are stored as JSON documents in the metadata store and held in
//! memory by [`crate::service::state::State`]; the service layer is the only code that changes them.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Tags on one resource as stored: account id → (key → value).
///
/// Tags are private to the account that set them, as on AWS: tags that another account
/// puts on a shared image are visible only to that account. This is the on-disk JSON shape;
/// in memory the same tags are held as [`Tags`].
pub type TagsByAccount = BTreeMap<String, BTreeMap<String, String>>;

/// One tag of one account on one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    /// The account that set it (only that account sees it).
    pub account_id: CompactString,
    /// Tag key.
    pub key: CompactString,
    /// Tag value.
    pub value: CompactString,
}

/// Tags on one resource, for every account, in memory.
///
/// A flat vector sorted by (account, key) rather than nested maps: a resource has a handful
/// of tags, and 100,000 images must fit in little memory. Serialized as [`TagsByAccount`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "TagsByAccount", into = "TagsByAccount")]
pub struct Tags(Vec<Tag>);

/// The tags one account has on one resource, sorted by key.
#[derive(Debug, Clone, Copy)]
pub struct AccountTags<'a>(&'a [Tag]);

impl<'a> AccountTags<'a> {
    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.0
            .binary_search_by(|t| t.key.as_str().cmp(key))
            .ok()
            .map(|i| self.0[i].value.as_str())
    }

    /// (key, value) pairs in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.0.iter().map(|t| (t.key.as_str(), t.value.as_str()))
    }

    /// Number of tags.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the account has no tag here.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Tags {
    /// Tags set by one account from (key, value) pairs (later pairs win).
    pub fn from_pairs<'p>(
        account_id: &str,
        pairs: impl IntoIterator<Item = (&'p str, &'p str)>,
    ) -> Tags {
        let mut tags = Tags::default();
        for (k, v) in pairs {
            tags.set(account_id, k, v);
        }
        tags
    }

    /// The tags `account_id` has set.
    pub fn of(&self, account_id: &str) -> AccountTags<'_> {
        let start = self
            .0
            .partition_point(|t| t.account_id.as_str() < account_id);
        let end = start
            + self.0[start..]
                .iter()
                .take_while(|t| t.account_id == account_id)
                .count();
        AccountTags(&self.0[start..end])
    }

    fn position(&self, account_id: &str, key: &str) -> Result<usize, usize> {
        self.0
            .binary_search_by(|t| (t.account_id.as_str(), t.key.as_str()).cmp(&(account_id, key)))
    }

    /// Sets (adds or overwrites) one tag of `account_id`.
    pub fn set(&mut self, account_id: &str, key: &str, value: &str) {
        match self.position(account_id, key) {
            Ok(i) => self.0[i].value = value.into(),
            Err(i) => {
                self.0.insert(
                    i,
                    Tag {
                        account_id: account_id.into(),
                        key: key.into(),
                        value: value.into(),
                    },
                );
                self.0.shrink_to_fit();
            }
        }
    }

    /// Removes one tag of `account_id`; with `only_if_value`, only when it has that value.
    pub fn remove(&mut self, account_id: &str, key: &str, only_if_value: Option<&str>) {
        if let Ok(i) = self.position(account_id, key) {
            if only_if_value.is_none_or(|v| self.0[i].value == v) {
                self.0.remove(i);
                self.0.shrink_to_fit();
            }
        }
    }

    /// Removes every tag of `account_id`.
    pub fn clear(&mut self, account_id: &str) {
        self.0.retain(|t| t.account_id != account_id);
        self.0.shrink_to_fit();
    }

    /// True when no account has a tag here.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<TagsByAccount> for Tags {
    fn from(stored: TagsByAccount) -> Tags {
        // BTreeMap iteration is already in (account, key) order.
        let tags: Vec<Tag> = stored
            .into_iter()
            .flat_map(|(account_id, pairs)| {
                pairs.into_iter().map(move |(key, value)| Tag {
                    account_id: account_id.as_str().into(),
                    key: key.into(),
                    value: value.into(),
                })
            })
            .collect();
        let mut tags = tags;
        tags.shrink_to_fit();
        Tags(tags)
    }
}

impl From<Tags> for TagsByAccount {
    fn from(tags: Tags) -> TagsByAccount {
        let mut out = TagsByAccount::new();
        for t in tags.0 {
            out.entry(t.account_id.into())
                .or_default()
                .insert(t.key.into(), t.value.into());
        }
        out
    }
}

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
    pub snapshot_id: Option<CompactString>,
    /// Size in GiB.
    pub volume_size: Option<i64>,
    /// gp2, gp3, io1, io2, st1, sc1, standard.
    pub volume_type: Option<CompactString>,
    /// Provisioned IOPS.
    pub iops: Option<i64>,
    /// Throughput in MiB/s (gp3).
    pub throughput: Option<i64>,
    /// Whether the volume is deleted when the instance terminates.
    pub delete_on_termination: Option<bool>,
    /// Whether the volume is encrypted.
    pub encrypted: Option<bool>,
    /// KMS key recorded for encrypted volumes.
    pub kms_key_id: Option<CompactString>,
}

/// One block device mapping of an image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct BlockDeviceMapping {
    /// `/dev/xvda`, `/dev/sdb`, ...
    pub device_name: CompactString,
    /// `ephemeralN` for instance-store volumes.
    pub virtual_name: Option<CompactString>,
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
    /// CreateImage: the snapshots of the instance's volumes must complete.
    FromInstance,
}

/// An Amazon Machine Image record. Immutable after registration except for the attributes
/// AWS allows to change (description, launch permissions, deprecation, state, protection,
/// tags, imdsSupport).
///
/// Held in memory for every image, so it is kept small: strings of up to 24 bytes are
/// inline, and the attributes most images never have live in [`ImageDetails`], allocated
/// only when one is set. It is stored as an [`ImageDoc`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(from = "ImageDoc", into = "ImageDoc")]
pub struct Image {
    /// `ami-` + 17 hex digits.
    pub image_id: CompactString,
    /// Region the image lives in.
    pub region: CompactString,
    /// Owning account id.
    pub owner_id: CompactString,
    /// Name, unique per account and region.
    pub name: CompactString,
    /// Free-form description.
    pub description: Option<CompactString>,
    /// i386, x86_64, arm64.
    pub architecture: CompactString,
    /// machine, kernel, ramdisk.
    pub image_type: CompactString,
    /// hvm or paravirtual.
    pub virtualization_type: CompactString,
    /// Device name of the root volume.
    pub root_device_name: CompactString,
    /// ebs or instance-store.
    pub root_device_type: CompactString,
    /// The block device mappings as registered.
    pub block_device_mappings: Vec<BlockDeviceMapping>,
    /// legacy-bios, uefi, uefi-preferred.
    pub boot_mode: Option<CompactString>,
    /// Whether ENA is enabled.
    pub ena_support: Option<bool>,
    /// `v2.0` when IMDSv2 is required for instances of this image.
    pub imds_support: Option<CompactString>,
    /// Creation time, RFC 3339 with milliseconds.
    pub creation_date: CompactString,
    /// Current state.
    pub state: ImageState,
    /// Who may launch it besides the owner.
    pub launch_permissions: Vec<LaunchPermission>,
    /// Background work still to do before the image is available.
    pub pending_work: Option<PendingWork>,
    /// Tags, per account.
    pub tags: Tags,
    /// The rarely set attributes; `None` when all are unset (read them with
    /// [`Image::details`], which never fails).
    pub details: Option<Box<ImageDetails>>,
}

/// Attributes of an image that most images never have.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageDetails {
    /// Kernel image for paravirtual images.
    pub kernel_id: Option<CompactString>,
    /// Ramdisk image for paravirtual images.
    pub ramdisk_id: Option<CompactString>,
    /// `simple` when SR-IOV is enabled.
    pub sriov_net_support: Option<CompactString>,
    /// `v2.0` when NitroTPM is enabled.
    pub tpm_support: Option<CompactString>,
    /// UEFI variable store, opaque.
    pub uefi_data: Option<CompactString>,
    /// Why the image is in its state (failures): (code, message).
    pub state_reason: Option<(CompactString, CompactString)>,
    /// When the image becomes deprecated (RFC 3339), if scheduled.
    pub deprecation_time: Option<CompactString>,
    /// Deregistration protection.
    pub deregistration_protection: DeregistrationProtection,
    /// Last time an instance was launched from this image.
    pub last_launched_time: Option<CompactString>,
    /// Source image of a copy.
    pub source_image_id: Option<CompactString>,
    /// Region of the source image of a copy.
    pub source_image_region: Option<CompactString>,
}

impl ImageDetails {
    /// The details as an image holds them: `None` when all are unset.
    pub fn boxed(self) -> Option<Box<ImageDetails>> {
        (self != NO_DETAILS).then(|| Box::new(self))
    }
}

/// Details of an image that has none set.
const NO_DETAILS: ImageDetails = ImageDetails {
    kernel_id: None,
    ramdisk_id: None,
    sriov_net_support: None,
    tpm_support: None,
    uefi_data: None,
    state_reason: None,
    deprecation_time: None,
    deregistration_protection: DeregistrationProtection::Disabled,
    last_launched_time: None,
    source_image_id: None,
    source_image_region: None,
};

impl Image {
    /// The rarely set attributes (all unset for most images).
    pub fn details(&self) -> &ImageDetails {
        self.details.as_deref().unwrap_or(&NO_DETAILS)
    }

    /// The rarely set attributes, to change them.
    pub fn details_mut(&mut self) -> &mut ImageDetails {
        self.details.get_or_insert_with(Default::default)
    }

    /// Replaces the rarely set attributes, allocating only if one is set.
    pub fn set_details(&mut self, details: ImageDetails) {
        self.details = details.boxed();
    }

    /// `owner_id/name`, as AWS reports for EBS-backed images.
    pub fn image_location(&self) -> String {
        format!("{}/{}", self.owner_id, self.name)
    }
}

/// An image as stored in the metadata store (one JSON document): every attribute flat.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ImageDoc {
    image_id: CompactString,
    region: CompactString,
    owner_id: CompactString,
    name: CompactString,
    description: Option<CompactString>,
    // Written for readers of the store; derived from owner and name when read.
    #[serde(skip_deserializing)]
    image_location: String,
    architecture: CompactString,
    image_type: CompactString,
    virtualization_type: CompactString,
    root_device_name: CompactString,
    root_device_type: CompactString,
    block_device_mappings: Vec<BlockDeviceMapping>,
    kernel_id: Option<CompactString>,
    ramdisk_id: Option<CompactString>,
    boot_mode: Option<CompactString>,
    ena_support: Option<bool>,
    sriov_net_support: Option<CompactString>,
    tpm_support: Option<CompactString>,
    imds_support: Option<CompactString>,
    uefi_data: Option<CompactString>,
    creation_date: CompactString,
    state: ImageState,
    state_reason: Option<(CompactString, CompactString)>,
    deprecation_time: Option<CompactString>,
    deregistration_protection: DeregistrationProtection,
    last_launched_time: Option<CompactString>,
    launch_permissions: Vec<LaunchPermission>,
    source_image_id: Option<CompactString>,
    source_image_region: Option<CompactString>,
    pending_work: Option<PendingWork>,
    tags: Tags,
}

impl From<ImageDoc> for Image {
    fn from(d: ImageDoc) -> Image {
        let mut block_device_mappings = d.block_device_mappings;
        let mut launch_permissions = d.launch_permissions;
        // Deserialized vectors keep spare capacity; 100,000 images make it count.
        block_device_mappings.shrink_to_fit();
        launch_permissions.shrink_to_fit();
        let mut image = Image {
            image_id: d.image_id,
            region: d.region,
            owner_id: d.owner_id,
            name: d.name,
            description: d.description,
            architecture: d.architecture,
            image_type: d.image_type,
            virtualization_type: d.virtualization_type,
            root_device_name: d.root_device_name,
            root_device_type: d.root_device_type,
            block_device_mappings,
            boot_mode: d.boot_mode,
            ena_support: d.ena_support,
            imds_support: d.imds_support,
            creation_date: d.creation_date,
            state: d.state,
            launch_permissions,
            pending_work: d.pending_work,
            tags: d.tags,
            details: None,
        };
        image.set_details(ImageDetails {
            kernel_id: d.kernel_id,
            ramdisk_id: d.ramdisk_id,
            sriov_net_support: d.sriov_net_support,
            tpm_support: d.tpm_support,
            uefi_data: d.uefi_data,
            state_reason: d.state_reason,
            deprecation_time: d.deprecation_time,
            deregistration_protection: d.deregistration_protection,
            last_launched_time: d.last_launched_time,
            source_image_id: d.source_image_id,
            source_image_region: d.source_image_region,
        });
        image
    }
}

impl From<Image> for ImageDoc {
    fn from(i: Image) -> ImageDoc {
        let image_location = i.image_location();
        let x = i.details.map(|b| *b).unwrap_or_default();
        ImageDoc {
            image_id: i.image_id,
            region: i.region,
            owner_id: i.owner_id,
            name: i.name,
            description: i.description,
            image_location,
            architecture: i.architecture,
            image_type: i.image_type,
            virtualization_type: i.virtualization_type,
            root_device_name: i.root_device_name,
            root_device_type: i.root_device_type,
            block_device_mappings: i.block_device_mappings,
            kernel_id: x.kernel_id,
            ramdisk_id: x.ramdisk_id,
            boot_mode: i.boot_mode,
            ena_support: i.ena_support,
            sriov_net_support: x.sriov_net_support,
            tpm_support: x.tpm_support,
            imds_support: i.imds_support,
            uefi_data: x.uefi_data,
            creation_date: i.creation_date,
            state: i.state,
            state_reason: x.state_reason,
            deprecation_time: x.deprecation_time,
            deregistration_protection: x.deregistration_protection,
            last_launched_time: x.last_launched_time,
            launch_permissions: i.launch_permissions,
            source_image_id: x.source_image_id,
            source_image_region: x.source_image_region,
            pending_work: i.pending_work,
            tags: i.tags,
        }
    }
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
    pub tags: Tags,
    /// A pending EBS direct snapshot goes to `error` at this time (unix ms).
    #[serde(default)]
    pub expires_at_ms: Option<i64>,
    /// Filled by an import task (a restart fails it rather than leave it pending).
    #[serde(default)]
    pub importing: bool,
    /// Taken from a volume by CreateSnapshot; completed by the background work.
    #[serde(default)]
    pub taken_from_volume: bool,
}

impl Snapshot {
    /// A new snapshot starting now: `pending`, 0%, unencrypted, untagged, shared with
    /// nobody, from no particular volume (`vol-ffffffff`, as AWS reports for snapshots not
    /// taken from a volume). Callers set what differs.
    pub fn new_pending(
        snapshot_id: String,
        region: String,
        owner_id: String,
        volume_size: i64,
        start_time: String,
    ) -> Snapshot {
        Snapshot {
            snapshot_id,
            region,
            owner_id,
            volume_id: "vol-ffffffff".into(),
            volume_size,
            description: String::new(),
            state: SnapshotState::Pending,
            state_message: None,
            start_time,
            completion_time: None,
            progress: "0%".into(),
            encrypted: false,
            kms_key_id: None,
            parent_snapshot_id: None,
            copy_source: None,
            create_volume_permissions: Vec::new(),
            tags: Tags::default(),
            expires_at_ms: None,
            importing: false,
            taken_from_volume: false,
        }
    }

    /// True when anyone may create volumes from the snapshot.
    pub fn is_public(&self) -> bool {
        self.create_volume_permissions
            .contains(&VolumePermission::Public)
    }
}

/// Lifecycle state of a volume.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum VolumeState {
    /// Just created; becomes available in the background.
    Creating,
    /// Ready to attach.
    Available,
    /// Attached to an instance.
    InUse,
    /// Being deleted.
    Deleting,
    /// Creation failed.
    Error,
}

impl VolumeState {
    /// The wire name of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeState::Creating => "creating",
            VolumeState::Available => "available",
            VolumeState::InUse => "in-use",
            VolumeState::Deleting => "deleting",
            VolumeState::Error => "error",
        }
    }
}

/// A ModifyVolume request and how far it got.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeModification {
    /// `modifying`, `optimizing`, `completed` or `failed`.
    pub state: String,
    /// Size before, GiB.
    pub original_size: i64,
    /// Size asked for, GiB.
    pub target_size: i64,
    /// Type before.
    pub original_volume_type: String,
    /// Type asked for.
    pub target_volume_type: String,
    /// IOPS before.
    pub original_iops: Option<i64>,
    /// IOPS asked for.
    pub target_iops: Option<i64>,
    /// Throughput before (gp3).
    pub original_throughput: Option<i64>,
    /// Throughput asked for (gp3).
    pub target_throughput: Option<i64>,
    /// Percent done.
    pub progress: i64,
    /// Start time, RFC 3339 with milliseconds.
    pub start_time: String,
    /// End time, once completed.
    pub end_time: Option<String>,
}

/// An EBS volume record. Its bytes are its source snapshot's blocks plus what was written to
/// it (see [`crate::volumes::cow::CowVolume`]); the snapshot's block map stays in the store
/// while a volume reads through it, even after the snapshot itself is deleted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Volume {
    /// `vol-` + 17 hex digits.
    pub volume_id: String,
    /// Region of the volume.
    pub region: String,
    /// Availability zone (a zone of the region).
    pub availability_zone: String,
    /// Owning account id.
    pub owner_id: String,
    /// Size in GiB.
    pub size: i64,
    /// Snapshot the volume was created from, as reported (`snapshotId`).
    pub snapshot_id: Option<String>,
    /// Snapshot whose block map the volume reads through (its source, or the latest
    /// snapshot taken of it).
    pub base_snapshot_id: Option<String>,
    /// gp2, gp3, io1, io2, st1, sc1, standard.
    pub volume_type: String,
    /// Provisioned or baseline IOPS.
    pub iops: Option<i64>,
    /// Throughput in MiB/s (gp3).
    pub throughput: Option<i64>,
    /// Whether the volume is encrypted.
    pub encrypted: bool,
    /// KMS key recorded for encrypted volumes.
    pub kms_key_id: Option<String>,
    /// Whether several instances may attach it.
    pub multi_attach_enabled: bool,
    /// Current state.
    pub state: VolumeState,
    /// Creation time, RFC 3339 with milliseconds.
    pub create_time: String,
    /// The latest ModifyVolume.
    pub modification: Option<VolumeModification>,
    /// Tags, per account.
    pub tags: Tags,
    /// The instance it is attached to (at most one: multi-attach is recorded, not served).
    #[serde(default)]
    pub attachment: Option<VolumeAttachment>,
}

/// A volume's attachment to an instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeAttachment {
    /// The instance.
    pub instance_id: String,
    /// Device name the instance sees it under (`/dev/sdf`).
    pub device: String,
    /// `attaching`, `attached`, `detaching`.
    pub state: String,
    /// When it was attached, RFC 3339 with milliseconds.
    pub attach_time: String,
    /// Deleted when the instance terminates.
    pub delete_on_termination: bool,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_set_twice_keeps_one_value_per_key_and_account() {
        let mut tags = Tags::default();
        tags.set("111111111111", "Env", "dev");
        tags.set("222222222222", "Env", "prod");
        tags.set("111111111111", "Env", "test");
        tags.set("111111111111", "App", "web");
        let mine: Vec<_> = tags.of("111111111111").iter().collect();
        assert_eq!(mine, vec![("App", "web"), ("Env", "test")]);
        assert_eq!(tags.of("222222222222").get("Env"), Some("prod"));
        assert!(tags.of("333333333333").is_empty());
    }

    #[test]
    fn tags_remove_with_other_value_keeps_tag() {
        let mut tags = Tags::from_pairs("111111111111", [("Env", "dev"), ("App", "web")]);
        tags.remove("111111111111", "Env", Some("prod"));
        assert_eq!(tags.of("111111111111").get("Env"), Some("dev"));
        tags.remove("111111111111", "Env", Some("dev"));
        assert_eq!(tags.of("111111111111").get("Env"), None);
        tags.clear("111111111111");
        assert!(tags.is_empty());
    }

    #[test]
    fn tags_serialize_as_nested_maps_and_back() {
        let mut tags = Tags::from_pairs("222222222222", [("b", "2"), ("a", "1")]);
        tags.set("111111111111", "z", "26");
        let json = serde_json::to_string(&tags).unwrap();
        assert_eq!(
            json,
            r#"{"111111111111":{"z":"26"},"222222222222":{"a":"1","b":"2"}}"#
        );
        let back: Tags = serde_json::from_str(&json).unwrap();
        assert_eq!(back, tags);
    }

    #[test]
    fn image_details_unset_allocate_nothing() {
        assert_eq!(ImageDetails::default().boxed(), None);
        let set = ImageDetails {
            kernel_id: Some("aki-12345678".into()),
            ..ImageDetails::default()
        };
        assert!(set.boxed().is_some());
    }
}

/// Lifecycle state of an instance, as EC2 names and numbers them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    /// Being started: volumes ready, QEMU starting.
    Pending,
    /// QEMU runs the guest.
    Running,
    /// Powering down towards `stopped`.
    Stopping,
    /// No VM; volumes kept.
    Stopped,
    /// Powering down towards `terminated`.
    ShuttingDown,
    /// Gone; stays visible for a while.
    Terminated,
}

impl InstanceState {
    /// The wire name of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Running => "running",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
            InstanceState::ShuttingDown => "shutting-down",
            InstanceState::Terminated => "terminated",
        }
    }

    /// The state code EC2 reports beside the name.
    pub fn code(self) -> i64 {
        match self {
            InstanceState::Pending => 0,
            InstanceState::Running => 16,
            InstanceState::ShuttingDown => 32,
            InstanceState::Terminated => 48,
            InstanceState::Stopping => 64,
            InstanceState::Stopped => 80,
        }
    }
}

/// Why an instance made its last transition (`stateReason`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StateReason {
    /// EC2's reason code (`Client.UserInitiatedShutdown`, `Server.InternalError`, ...).
    pub code: String,
    /// What happened, in words.
    pub message: String,
}

/// A volume as an instance sees it (`blockDeviceMapping` of DescribeInstances).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceBlockDevice {
    /// Device name (`/dev/xvda`).
    pub device_name: String,
    /// The volume.
    pub volume_id: String,
    /// When it was attached.
    pub attach_time: String,
    /// Deleted with the instance.
    pub delete_on_termination: bool,
}

/// The QEMU process of a running instance, recorded so a restarted Kiln can adopt it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VmProcess {
    /// Process id.
    pub pid: u32,
    /// Start time of the process in clock ticks since boot (`/proc/PID/stat` field 22), so
    /// a reused pid is never taken for the instance's QEMU.
    pub start_ticks: u64,
    /// Accelerator it runs under (`kvm` or `tcg`).
    pub accelerator: String,
}

/// An EC2 instance: a QEMU virtual machine over Kiln volumes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Instance {
    /// `i-` + 17 hex digits.
    pub instance_id: String,
    /// `r-` + 17 hex digits, shared by the instances of one RunInstances call.
    pub reservation_id: String,
    /// Region.
    pub region: String,
    /// Availability zone.
    pub availability_zone: String,
    /// Owning account.
    pub owner_id: String,
    /// Image it was launched from.
    pub image_id: String,
    /// Instance type (`t3.micro`).
    pub instance_type: String,
    /// Current state.
    pub state: InstanceState,
    /// `stateTransitionReason`: free text of the last user or system transition.
    pub state_transition_reason: String,
    /// `stateReason`, when there is one.
    pub state_reason: Option<StateReason>,
    /// Launch time (of the last start, as EC2).
    pub launch_time: String,
    /// Position within its launch request.
    pub ami_launch_index: i64,
    /// ClientToken of the launch.
    pub client_token: Option<String>,
    /// User data, base64 as given.
    pub user_data: Option<String>,
    /// `stop` or `terminate`: what a guest-initiated power-off does.
    pub shutdown_behavior: String,
    /// TerminateInstances refuses while set.
    pub disable_api_termination: bool,
    /// Architecture of the image.
    pub architecture: String,
    /// `hvm` or `paravirtual`.
    pub virtualization_type: String,
    /// Root device name.
    pub root_device_name: String,
    /// Kernel image (PV).
    pub kernel_id: Option<String>,
    /// Ramdisk image (PV).
    pub ramdisk_id: Option<String>,
    /// Attached volumes, root first.
    pub block_devices: Vec<InstanceBlockDevice>,
    /// Tags, per account.
    pub tags: Tags,
    /// When it reached `terminated` (it is forgotten an hour later).
    pub terminated_at: Option<String>,
    /// Its QEMU process while it has one.
    pub vm: Option<VmProcess>,
}
