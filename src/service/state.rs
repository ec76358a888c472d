//! The in-memory view of everything stored, with the indexes the service needs.
//!
//! It is rebuilt from the store at start-up and changed only by [`State::apply`], with
//! the same [`Change`]s that were just committed to the store.

use super::model::{ExportTask, Image, ImportTask, Snapshot};
use crate::store::{Change, ClientTokenRecord, LoadedRecord, Store};
use compact_str::CompactString;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// Key of a client-token record: (account, region, action, token).
pub type TokenKey = (String, String, String, String);

/// Everything the service reads, indexed.
#[derive(Default)]
pub struct State {
    /// Images by id (ordered: pagination walks this order).
    pub images: BTreeMap<CompactString, Arc<Image>>,
    /// Snapshots by id (ordered).
    pub snapshots: BTreeMap<String, Arc<Snapshot>>,
    /// (region, owner, name) → image id: names are unique per account and region.
    pub image_names: HashMap<(CompactString, CompactString, CompactString), CompactString>,
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
        self.images.contains_key(id) || self.snapshots.contains_key(id)
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
        self.image_names.insert(
            (
                image.region.clone(),
                image.owner_id.clone(),
                image.name.clone(),
            ),
            image.image_id.clone(),
        );
        for snap in image.snapshot_ids() {
            self.snapshot_users
                .entry(snap.to_string())
                .or_default()
                .insert(image.image_id.clone());
        }
        self.images.insert(image.image_id.clone(), Arc::new(image));
    }

    fn remove_image(&mut self, id: &str) {
        let Some(old) = self.images.remove(id) else {
            return;
        };
        let name_key = (old.region.clone(), old.owner_id.clone(), old.name.clone());
        if self.image_names.get(&name_key).map(CompactString::as_str) == Some(id) {
            self.image_names.remove(&name_key);
        }
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
