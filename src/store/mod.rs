//! The metadata store: an embedded SQLite database in the data directory.
//!
//! SQLite is the source of truth. Every change the service makes is a [`ChangeSet`] applied in
//! one transaction ([`Store::apply`]) and committed durably (WAL, `synchronous=FULL`) before the
//! client gets an answer. Images and snapshots are stored as JSON documents beside the columns
//! that identify them; accounts and access keys have columns of their own because the CLI
//! manages them while the server runs.

mod blocks;
mod schema;

pub use blocks::{BlockRef, BlockUsage};

use crate::error::{Error, Result};
use crate::service::model::{
    AccessKey, Account, ExportTask, Image, ImportTask, Instance, Snapshot, Volume,
};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::path::Path;
use std::sync::Mutex;

/// One change to the stored state; a [`ChangeSet`] of them commits atomically.
// Records are carried by value: change sets are short-lived and small in number.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Change {
    /// Reserve an id forever, so it is never issued again.
    IssueId(String),
    /// Insert or replace an image.
    PutImage(Image),
    /// Remove an image (its id stays issued).
    DeleteImage(String),
    /// Insert or replace a snapshot.
    PutSnapshot(Snapshot),
    /// Remove a snapshot (its id stays issued) and its pending blocks; its block map and
    /// block references go too, unless a volume still reads through the map (then they go
    /// with the last such volume).
    DeleteSnapshot(String),
    /// Insert or replace a volume.
    PutVolume(Volume),
    /// Remove a volume; the block map it read through is released if its snapshot is gone
    /// and no other volume uses it.
    DeleteVolume(String),
    /// Insert or replace an instance.
    PutInstance(Instance),
    /// Forget an instance (terminated long enough ago).
    DeleteInstance(String),
    /// Seal a pending snapshot's blocks: its map becomes the parent's map overlaid with the
    /// blocks written to it, and every block it holds gains a reference.
    SealSnapshotBlocks {
        /// The snapshot being completed.
        snapshot_id: String,
        /// Its parent, whose blocks it inherits.
        parent: Option<String>,
    },
    /// Give `to` the same block map as `from` (a copy that shares every block).
    CopySnapshotBlocks {
        /// Source snapshot.
        from: String,
        /// New snapshot.
        to: String,
    },
    /// Forget the blocks written to a pending snapshot that will never complete.
    DropPendingBlocks(String),
    /// Insert or replace an import task.
    PutImportTask(ImportTask),
    /// Insert or replace an export task.
    PutExportTask(ExportTask),
    /// Remember the resource a ClientToken produced.
    PutClientToken(ClientTokenRecord),
    /// Turn image block public access on or off for an account in a region.
    SetImageBlockPublicAccess {
        /// Account the setting belongs to.
        account_id: String,
        /// Region the setting applies to.
        region: String,
        /// New value.
        enabled: bool,
    },
}

/// A list of changes that commit together or not at all.
pub type ChangeSet = Vec<Change>;

/// What an idempotent call with a ClientToken produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTokenRecord {
    /// Caller.
    pub account_id: String,
    /// Region of the call.
    pub region: String,
    /// Action name (`CopyImage`, `StartSnapshot`).
    pub action: String,
    /// The token.
    pub token: String,
    /// Digest of the call's parameters, to detect reuse with different parameters.
    pub fingerprint: String,
    /// The resource the first call created.
    pub resource_id: String,
}

/// An image or snapshot record read at start-up.
#[derive(Debug)]
pub enum LoadedRecord {
    /// An image.
    Image(Image),
    /// A snapshot.
    Snapshot(Snapshot),
    /// A volume.
    Volume(Volume),
    /// An instance.
    Instance(Instance),
}

/// Everything loaded at start-up besides images and snapshots (see [`Store::load_all`]).
#[derive(Debug, Default)]
pub struct Snapshotted {
    /// All client tokens.
    pub client_tokens: Vec<ClientTokenRecord>,
    /// (account, region) pairs with image block public access on.
    pub block_public_access: Vec<(String, String)>,
    /// All import tasks.
    pub import_tasks: Vec<ImportTask>,
    /// All export tasks.
    pub export_tasks: Vec<ExportTask>,
}

/// Handle on the SQLite database. Cheap operations only; callers serialize writes.
pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) `DIR/kiln.db` and brings its schema up to date.
    pub fn open(data_dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            Error::InternalError(format!("cannot create {}: {e}", data_dir.display()))
        })?;
        let conn = Connection::open(data_dir.join("kiln.db"))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit is on disk before the client hears about it.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        schema::migrate(&conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>> {
        self.conn
            .lock()
            .map_err(|_| Error::InternalError("metadata store lock poisoned".into()))
    }

    /// Applies a change set in one transaction.
    pub fn apply(&self, changes: &[Change]) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        for change in changes {
            apply_one(&tx, change)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// True if the id was ever issued (used to tell "deregistered" from "never existed").
    pub fn id_was_issued(&self, id: &str) -> Result<bool> {
        let conn = self.conn()?;
        let found: Option<i64> = conn
            .query_row("SELECT 1 FROM issued_ids WHERE id = ?1", [id], |r| r.get(0))
            .optional()?;
        Ok(found.is_some())
    }

    /// Loads every image, snapshot, token and setting (start-up).
    pub fn load_all(&self, mut record: impl FnMut(LoadedRecord)) -> Result<Snapshotted> {
        let conn = self.conn()?;
        let mut out = Snapshotted::default();
        // Snapshots first: images refer to them. Records go to the caller one at a time so
        // that a large store is never held twice while loading.
        for_each_doc(&conn, "snapshots", |s| record(LoadedRecord::Snapshot(s)))?;
        for_each_doc(&conn, "images", |i| record(LoadedRecord::Image(i)))?;
        for_each_doc(&conn, "volumes", |v| record(LoadedRecord::Volume(v)))?;
        for_each_doc(&conn, "instances", |i| record(LoadedRecord::Instance(i)))?;
        for_each_doc(&conn, "export_tasks", |t| out.export_tasks.push(t))?;
        for_each_doc(&conn, "import_tasks", |t| out.import_tasks.push(t))?;
        let mut stmt = conn.prepare(
            "SELECT account_id, region, action, token, fingerprint, resource_id FROM client_tokens",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(ClientTokenRecord {
                account_id: r.get(0)?,
                region: r.get(1)?,
                action: r.get(2)?,
                token: r.get(3)?,
                fingerprint: r.get(4)?,
                resource_id: r.get(5)?,
            })
        })?;
        for row in rows {
            out.client_tokens.push(row?);
        }
        let mut stmt = conn.prepare(
            "SELECT account_id, region FROM region_settings WHERE image_block_public_access = 1",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        for row in rows {
            out.block_public_access.push(row?);
        }
        Ok(out)
    }

    /// Creates an account, with an access key if one is given.
    pub fn create_account(&self, account: &Account, key: Option<&AccessKey>) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let exists: Option<String> = tx
            .query_row(
                "SELECT account_id FROM accounts WHERE account_id = ?1 OR name = ?2",
                params![account.account_id, account.name],
                |r| r.get(0),
            )
            .optional()?;
        if exists.is_some() {
            return Err(Error::InvalidParameterValue(format!(
                "an account with id {} or name {} already exists",
                account.account_id, account.name
            )));
        }
        tx.execute(
            "INSERT INTO accounts (account_id, name, alias, organization_arn, organizational_unit_arn)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                account.account_id,
                account.name,
                account.alias,
                account.organization_arn,
                account.organizational_unit_arn
            ],
        )?;
        if let Some(key) = key {
            insert_key(&tx, key)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Adds an access key to an existing account.
    pub fn add_access_key(&self, key: &AccessKey) -> Result<()> {
        let conn = self.conn()?;
        insert_key(&conn, key)
    }

    /// Looks an account up by id or name.
    pub fn find_account(&self, id_or_name: &str) -> Result<Option<Account>> {
        let conn = self.conn()?;
        Ok(conn
            .query_row(
                "SELECT account_id, name, alias, organization_arn, organizational_unit_arn
                 FROM accounts WHERE account_id = ?1 OR name = ?1",
                [id_or_name],
                row_to_account,
            )
            .optional()?)
    }

    /// Every account, ordered by id.
    pub fn list_accounts(&self) -> Result<Vec<Account>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT account_id, name, alias, organization_arn, organizational_unit_arn
             FROM accounts ORDER BY account_id",
        )?;
        let rows = stmt.query_map([], row_to_account)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(Error::from)
    }

    /// Looks an access key up (authentication).
    pub fn find_access_key(&self, access_key_id: &str) -> Result<Option<AccessKey>> {
        let conn = self.conn()?;
        Ok(conn
            .query_row(
                "SELECT access_key_id, secret_access_key, account_id FROM access_keys
                 WHERE access_key_id = ?1",
                [access_key_id],
                |r| {
                    Ok(AccessKey {
                        access_key_id: r.get(0)?,
                        secret_access_key: r.get(1)?,
                        account_id: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }
}

fn row_to_account(r: &rusqlite::Row<'_>) -> rusqlite::Result<Account> {
    Ok(Account {
        account_id: r.get(0)?,
        name: r.get(1)?,
        alias: r.get(2)?,
        organization_arn: r.get(3)?,
        organizational_unit_arn: r.get(4)?,
    })
}

fn insert_key(conn: &Connection, key: &AccessKey) -> Result<()> {
    let taken: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM access_keys WHERE access_key_id = ?1",
            [&key.access_key_id],
            |r| r.get(0),
        )
        .optional()?;
    if taken.is_some() {
        return Err(Error::InvalidParameterValue(format!(
            "access key {} already exists",
            key.access_key_id
        )));
    }
    conn.execute(
        "INSERT INTO access_keys (access_key_id, secret_access_key, account_id) VALUES (?1, ?2, ?3)",
        params![key.access_key_id, key.secret_access_key, key.account_id],
    )?;
    Ok(())
}

fn apply_one(tx: &rusqlite::Transaction<'_>, change: &Change) -> Result<()> {
    match change {
        Change::IssueId(id) => {
            tx.execute("INSERT INTO issued_ids (id) VALUES (?1)", [id])?;
        }
        Change::PutImage(image) => {
            tx.execute(
                "INSERT OR REPLACE INTO images (image_id, region, owner_id, doc) VALUES (?1, ?2, ?3, ?4)",
                params![
                    image.image_id.as_str(),
                    image.region.as_str(),
                    image.owner_id.as_str(),
                    serde_json::to_string(image)?
                ],
            )?;
        }
        Change::DeleteImage(id) => {
            tx.execute("DELETE FROM images WHERE image_id = ?1", [id])?;
        }
        Change::PutSnapshot(snapshot) => {
            tx.execute(
                "INSERT OR REPLACE INTO snapshots (snapshot_id, region, owner_id, doc) VALUES (?1, ?2, ?3, ?4)",
                params![
                    snapshot.snapshot_id,
                    snapshot.region,
                    snapshot.owner_id,
                    serde_json::to_string(snapshot)?
                ],
            )?;
        }
        Change::DeleteSnapshot(id) => {
            tx.execute("DELETE FROM snapshots WHERE snapshot_id = ?1", [id])?;
            if !map_in_use_by_volume(tx, id)? {
                blocks::release_map(tx, id)?;
            }
            tx.execute("DELETE FROM pending_blocks WHERE snapshot_id = ?1", [id])?;
        }
        Change::PutVolume(volume) => {
            let previous_base = volume_base(tx, &volume.volume_id)?;
            tx.execute(
                "INSERT OR REPLACE INTO volumes (volume_id, region, owner_id, base_snapshot_id, doc)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    volume.volume_id,
                    volume.region,
                    volume.owner_id,
                    volume.base_snapshot_id,
                    serde_json::to_string(volume)?
                ],
            )?;
            if let Some(old) = previous_base.filter(|b| Some(b) != volume.base_snapshot_id.as_ref())
            {
                release_orphaned_map(tx, &old)?;
            }
        }
        Change::DeleteVolume(id) => {
            let base = volume_base(tx, id)?;
            tx.execute("DELETE FROM volumes WHERE volume_id = ?1", [id])?;
            if let Some(base) = base {
                release_orphaned_map(tx, &base)?;
            }
        }
        Change::PutInstance(instance) => {
            tx.execute(
                "INSERT OR REPLACE INTO instances (instance_id, region, owner_id, doc)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    instance.instance_id,
                    instance.region,
                    instance.owner_id,
                    serde_json::to_string(instance)?
                ],
            )?;
        }
        Change::DeleteInstance(id) => {
            tx.execute("DELETE FROM instances WHERE instance_id = ?1", [id])?;
        }
        Change::SealSnapshotBlocks {
            snapshot_id,
            parent,
        } => {
            blocks::seal(tx, snapshot_id, parent.as_deref())?;
        }
        Change::CopySnapshotBlocks { from, to } => {
            tx.execute(
                "INSERT INTO snapshot_blocks (snapshot_id, block_index, hash)
                 SELECT ?2, block_index, hash FROM snapshot_blocks WHERE snapshot_id = ?1",
                params![from, to],
            )?;
            blocks::add_references(tx, to)?;
        }
        Change::DropPendingBlocks(id) => {
            tx.execute("DELETE FROM pending_blocks WHERE snapshot_id = ?1", [id])?;
        }
        Change::PutImportTask(task) => {
            tx.execute(
                "INSERT OR REPLACE INTO import_tasks (task_id, owner_id, doc) VALUES (?1, ?2, ?3)",
                params![task.task_id, task.owner_id, serde_json::to_string(task)?],
            )?;
        }
        Change::PutExportTask(task) => {
            tx.execute(
                "INSERT OR REPLACE INTO export_tasks (task_id, owner_id, doc) VALUES (?1, ?2, ?3)",
                params![task.task_id, task.owner_id, serde_json::to_string(task)?],
            )?;
        }
        Change::PutClientToken(t) => {
            tx.execute(
                "INSERT INTO client_tokens (account_id, region, action, token, fingerprint, resource_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![t.account_id, t.region, t.action, t.token, t.fingerprint, t.resource_id],
            )?;
        }
        Change::SetImageBlockPublicAccess {
            account_id,
            region,
            enabled,
        } => {
            tx.execute(
                "INSERT INTO region_settings (account_id, region, image_block_public_access)
                 VALUES (?1, ?2, ?3)
                 ON CONFLICT (account_id, region) DO UPDATE SET image_block_public_access = ?3",
                params![account_id, region, *enabled as i64],
            )?;
        }
    }
    Ok(())
}

/// Reads every JSON document of `table` (its `doc` column), one at a time, without copying
/// the text out of SQLite first.
fn for_each_doc<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    table: &str,
    mut each: impl FnMut(T),
) -> Result<()> {
    let mut stmt = conn.prepare(&format!("SELECT doc FROM {table}"))?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let doc = row.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?;
        each(serde_json::from_str(doc)?);
    }
    Ok(())
}

/// True if a volume reads through the block map of `snapshot_id`.
fn map_in_use_by_volume(tx: &Transaction<'_>, snapshot_id: &str) -> Result<bool> {
    let n: i64 = tx.query_row(
        "SELECT COUNT(*) FROM volumes WHERE base_snapshot_id = ?1",
        [snapshot_id],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

/// The snapshot whose map a stored volume reads through.
fn volume_base(tx: &Transaction<'_>, volume_id: &str) -> Result<Option<String>> {
    Ok(tx
        .query_row(
            "SELECT base_snapshot_id FROM volumes WHERE volume_id = ?1",
            [volume_id],
            |r| r.get::<_, Option<String>>(0),
        )
        .optional()?
        .flatten())
}

/// Releases the block map of a deleted snapshot once no volume reads through it.
fn release_orphaned_map(tx: &Transaction<'_>, snapshot_id: &str) -> Result<()> {
    let snapshot_exists: i64 = tx.query_row(
        "SELECT COUNT(*) FROM snapshots WHERE snapshot_id = ?1",
        [snapshot_id],
        |r| r.get(0),
    )?;
    if snapshot_exists == 0 && !map_in_use_by_volume(tx, snapshot_id)? {
        blocks::release_map(tx, snapshot_id)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(id: &str, name: &str) -> Account {
        Account {
            account_id: id.into(),
            name: name.into(),
            alias: None,
            organization_arn: None,
            organizational_unit_arn: None,
        }
    }

    #[test]
    fn create_account_twice_fails_with_invalid_parameter_value() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .create_account(&account("123456789012", "a"), None)
            .unwrap();
        let again = store.create_account(&account("123456789012", "b"), None);
        assert_eq!(again.unwrap_err().code(), "InvalidParameterValue");
    }

    #[test]
    fn apply_failed_change_set_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.apply(&[Change::IssueId("ami-1".into())]).unwrap();
        // The second IssueId of the same id violates the primary key: the whole set rolls back.
        let result = store.apply(&[
            Change::IssueId("ami-2".into()),
            Change::IssueId("ami-1".into()),
        ]);
        assert!(result.is_err());
        assert!(!store.id_was_issued("ami-2").unwrap());
    }

    #[test]
    fn reopen_after_writes_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.apply(&[Change::IssueId("snap-1".into())]).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert!(store.id_was_issued("snap-1").unwrap());
    }
}
