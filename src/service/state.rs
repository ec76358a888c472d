//! The in-memory view of everything stored, with the indexes the service needs.
//!
//! It is rebuilt from the store at start-up and changed only by [`State::apply`], with
//! the same [`Change`]s that were just committed to the store.

use super::model::{ExportTask, Image, ImportTask, Instance, Snapshot, Volume};
use crate::store::{Change, ClientTokenRecord, LoadedRecord, Store};
use compact_str::CompactString;
use hashbrown::hash_table::{Entry, HashTable};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

/// Key of a client-token record: (account, region, action, token).
pub type TokenKey = (String, String, String, String);

/// Images found by (region, owner, name).
///
/// Holds only pointers to the images (8 bytes each) and hashes the key out of them, instead
/// of a map from three copied strings to a copied id: at 100,000 images that is 10 MB.
#[derive(Default)]
pub struct NameIndex {
    table: HashTable<Arc<Image>>,
    hasher: RandomState,
}

impl NameIndex {
    fn hash(&self, region: &str, owner_id: &str, name: &str) -> u64 {
        self.hasher.hash_one((region, owner_id, name))
    }

    fn hash_of(&self, image: &Image) -> u64 {
        self.hash(&image.region, &image.owner_id, &image.name)
    }

    /// The image of `owner_id` named `name` in `region`.
    pub fn get(&self, region: &str, owner_id: &str, name: &str) -> Option<&Arc<Image>> {
        self.table.find(self.hash(region, owner_id, name), |i| {
            i.region == region && i.owner_id == owner_id && i.name == name
        })
    }

    /// Indexes an image, replacing whatever had its key.
    fn insert(&mut self, image: Arc<Image>) {
        let hash = self.hash_of(&image);
        let hasher = &self.hasher;
        match self.table.entry(
            hash,
            |i| i.region == image.region && i.owner_id == image.owner_id && i.name == image.name,
            |i| hasher.hash_one((i.region.as_str(), i.owner_id.as_str(), i.name.as_str())),
        ) {
            Entry::Occupied(mut slot) => *slot.get_mut() = image,
            Entry::Vacant(slot) => {
                slot.insert(image);
            }
        }
    }

    /// Forgets an image, if the index points at it.
    fn remove(&mut self, image: &Image) {
        let hash = self.hash_of(image);
        if let Ok(slot) = self
            .table
            .find_entry(hash, |i| i.image_id == image.image_id)
        {
            slot.remove();
        }
    }
}

/// Everything the service reads, indexed.
#[derive(Default)]
pub struct State {
    /// Images by id (ordered: pagination walks this order).
    pub images: BTreeMap<CompactString, Arc<Image>>,
    /// Snapshots by id (ordered).
    pub snapshots: BTreeMap<String, Arc<Snapshot>>,
    /// Volumes by id (ordered).
    pub volumes: BTreeMap<String, Arc<Volume>>,
    /// Instances by id (ordered).
    pub instances: BTreeMap<String, Arc<Instance>>,
    /// Images by (region, owner, name): names are unique per account and region.
    pub image_names: NameIndex,
    /// snapshot id → ids of images whose block device mappings use it.
    pub snapshot_users: HashMap<String, BTreeSet<CompactString>>,
    /// Idempotency records.
    pub client_tokens: HashMap<TokenKey, ClientTokenRecord>,
    /// (account, region) pairs with image block public access on.
    pub block_public_access: HashSet<(String, String)>,
    /// Import tasks by id.
    pub import_tasks: BTreeMap<String, ImportTask>,
    /// Export tasks by id.
    pub export_tasks: BTreeMap<String, ExportTask>,
}

impl State {
    /// Builds the state from everything in the store.
    pub fn load(store: &Store) -> crate::error::Result<State> {
        let mut state = State::default();
        let loaded = store.load_all(|record| match record {
            LoadedRecord::Snapshot(snapshot) => state.put_snapshot(snapshot),
            LoadedRecord::Image(image) => state.put_image(image),
            LoadedRecord::Volume(volume) => {
                state
                    .volumes
                    .insert(volume.volume_id.clone(), Arc::new(volume));
            }
            LoadedRecord::Instance(instance) => {
                state
                    .instances
                    .insert(instance.instance_id.clone(), Arc::new(instance));
            }
        })?;
        for token in loaded.client_tokens {
            state.apply(&Change::PutClientToken(token));
        }
        for task in loaded.export_tasks {
            state.apply(&Change::PutExportTask(task));
        }
        for task in loaded.import_tasks {
            state.apply(&Change::PutImportTask(task));
        }
        for (account_id, region) in loaded.block_public_access {
            state.block_public_access.insert((account_id, region));
        }
        Ok(state)
    }

    /// True if a live resource has this id.
    pub fn contains_id(&self, id: &str) -> bool {
        self.images.contains_key(id)
            || self.snapshots.contains_key(id)
            || self.volumes.contains_key(id)
            || self.instances.contains_key(id)
    }

    /// Applies one committed change.
    pub fn apply(&mut self, change: &Change) {
        match change {
            // Ids and block maps live only in the store.
            Change::IssueId(_)
            | Change::SealSnapshotBlocks { .. }
            | Change::CopySnapshotBlocks { .. }
            | Change::DropPendingBlocks(_) => {}
            Change::PutImage(image) => self.put_image(image.clone()),
            Change::DeleteImage(id) => self.remove_image(id),
            Change::PutSnapshot(snapshot) => self.put_snapshot(snapshot.clone()),
            Change::PutVolume(volume) => {
                self.volumes
                    .insert(volume.volume_id.clone(), Arc::new(volume.clone()));
            }
            Change::DeleteVolume(id) => {
                self.volumes.remove(id);
            }
            Change::PutInstance(instance) => {
                self.instances
                    .insert(instance.instance_id.clone(), Arc::new(instance.clone()));
            }
            Change::DeleteInstance(id) => {
                self.instances.remove(id);
            }
            Change::DeleteSnapshot(id) => {
                self.snapshots.remove(id);
            }
            Change::PutImportTask(task) => {
                self.import_tasks.insert(task.task_id.clone(), task.clone());
            }
            Change::PutExportTask(task) => {
                self.export_tasks.insert(task.task_id.clone(), task.clone());
            }
            Change::PutClientToken(t) => {
                self.client_tokens.insert(
                    (
                        t.account_id.clone(),
                        t.region.clone(),
                        t.action.clone(),
                        t.token.clone(),
                    ),
                    t.clone(),
                );
            }
            Change::SetImageBlockPublicAccess {
                account_id,
                region,
                enabled,
            } => {
                let key = (account_id.clone(), region.clone());
                if *enabled {
                    self.block_public_access.insert(key);
                } else {
                    self.block_public_access.remove(&key);
                }
            }
        }
    }

    fn put_snapshot(&mut self, mut snapshot: Snapshot) {
        snapshot.create_volume_permissions.shrink_to_fit();
        self.snapshots
            .insert(snapshot.snapshot_id.clone(), Arc::new(snapshot));
    }

    fn put_image(&mut self, mut image: Image) {
        // Deserialized vectors keep spare capacity; 100,000 images make it count.
        image.block_device_mappings.shrink_to_fit();
        image.launch_permissions.shrink_to_fit();
        self.remove_image(&image.image_id);
        let image = Arc::new(image);
        self.image_names.insert(image.clone());
        for snap in image.snapshot_ids() {
            self.snapshot_users
                .entry(snap.to_string())
                .or_default()
                .insert(image.image_id.clone());
        }
        self.images.insert(image.image_id.clone(), image);
    }

    fn remove_image(&mut self, id: &str) {
        let Some(old) = self.images.remove(id) else {
            return;
        };
        self.image_names.remove(&old);
        for snap in old.snapshot_ids() {
            if let Some(users) = self.snapshot_users.get_mut(snap) {
                users.remove(id);
                if users.is_empty() {
                    self.snapshot_users.remove(snap);
                }
            }
        }
    }

    /// Ids of images that use the snapshot.
    pub fn images_using_snapshot(&self, snapshot_id: &str) -> Vec<String> {
        self.snapshot_users
            .get(snapshot_id)
            .map(|s| s.iter().map(|id| id.to_string()).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str, owner: &str, name: &str) -> Image {
        let doc = serde_json::json!({
            "image_id": id, "region": "us-east-1", "owner_id": owner, "name": name,
            "description": null, "architecture": "x86_64", "image_type": "machine",
            "virtualization_type": "hvm", "root_device_name": "/dev/xvda",
            "root_device_type": "ebs", "block_device_mappings": [], "kernel_id": "aki-12345678",
            "ramdisk_id": null, "boot_mode": null, "ena_support": true,
            "sriov_net_support": null, "tpm_support": null, "imds_support": null,
            "uefi_data": null, "creation_date": "2026-11-24T00:00:00.000Z",
            "state": "available", "state_reason": null, "deprecation_time": null,
            "deregistration_protection": "Disabled", "last_launched_time": null,
            "launch_permissions": [], "source_image_id": null, "source_image_region": null,
            "pending_work": null, "tags": {}
        });
        serde_json::from_value(doc).unwrap()
    }

    #[test]
    fn put_image_then_name_lookup_finds_it_until_removed() {
        let mut state = State::default();
        let a = image("ami-0000000000000000a", "111111111111", "web");
        state.apply(&Change::PutImage(a.clone()));
        state.apply(&Change::PutImage(image(
            "ami-0000000000000000b",
            "222222222222",
            "web",
        )));
        let found = state.image_names.get("us-east-1", "111111111111", "web");
        assert_eq!(
            found.map(|i| i.image_id.as_str()),
            Some("ami-0000000000000000a")
        );
        assert!(state
            .image_names
            .get("us-west-2", "111111111111", "web")
            .is_none());
        state.apply(&Change::DeleteImage("ami-0000000000000000a".into()));
        assert!(state
            .image_names
            .get("us-east-1", "111111111111", "web")
            .is_none());
        assert!(state
            .image_names
            .get("us-east-1", "222222222222", "web")
            .is_some());
    }

    #[test]
    fn image_roundtrip_through_store_document_keeps_details_and_location() {
        let a = image("ami-0000000000000000a", "111111111111", "web");
        assert_eq!(a.details().kernel_id.as_deref(), Some("aki-12345678"));
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["image_location"], "111111111111/web");
        assert_eq!(json["kernel_id"], "aki-12345678");
        let back: Image = serde_json::from_value(json).unwrap();
        assert_eq!(back, a);
    }
}
