//! Schema migrations, applied in order and recorded in SQLite's `user_version`.
//!
//! A migration is never edited once released: add a new one at the end instead.

use crate::error::Result;
use rusqlite::Connection;

/// The migrations; index + 1 is the schema version each one produces.
const MIGRATIONS: &[&str] = &[
    // 1: accounts, keys, issued ids, images, snapshots, client tokens, per-region settings.
    "CREATE TABLE accounts (
        account_id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        alias TEXT,
        organization_arn TEXT,
        organizational_unit_arn TEXT,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    );
    CREATE TABLE access_keys (
        access_key_id TEXT PRIMARY KEY,
        secret_access_key TEXT NOT NULL,
        account_id TEXT NOT NULL REFERENCES accounts(account_id),
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    );
    CREATE TABLE issued_ids (id TEXT PRIMARY KEY) WITHOUT ROWID;
    CREATE TABLE images (
        image_id TEXT PRIMARY KEY,
        region TEXT NOT NULL,
        owner_id TEXT NOT NULL,
        doc TEXT NOT NULL
    );
    CREATE TABLE snapshots (
        snapshot_id TEXT PRIMARY KEY,
        region TEXT NOT NULL,
        owner_id TEXT NOT NULL,
        doc TEXT NOT NULL
    );
    CREATE TABLE client_tokens (
        account_id TEXT NOT NULL,
        region TEXT NOT NULL,
        action TEXT NOT NULL,
        token TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        resource_id TEXT NOT NULL,
        PRIMARY KEY (account_id, region, action, token)
    );
    CREATE TABLE region_settings (
        account_id TEXT NOT NULL,
        region TEXT NOT NULL,
        image_block_public_access INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (account_id, region)
    );",
    // 2: snapshot data: content-addressed blocks with reference counts, each completed
    // snapshot's full block map, blocks written to pending snapshots, and server secrets.
    "CREATE TABLE blocks (
        hash BLOB PRIMARY KEY,
        refcount INTEGER NOT NULL DEFAULT 0,
        stored_len INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX blocks_by_refcount ON blocks (refcount);
    CREATE TABLE snapshot_blocks (
        snapshot_id TEXT NOT NULL,
        block_index INTEGER NOT NULL,
        hash BLOB NOT NULL,
        PRIMARY KEY (snapshot_id, block_index)
    ) WITHOUT ROWID;
    CREATE INDEX snapshot_blocks_by_hash ON snapshot_blocks (hash);
    CREATE TABLE pending_blocks (
        snapshot_id TEXT NOT NULL,
        block_index INTEGER NOT NULL,
        hash BLOB NOT NULL,
        PRIMARY KEY (snapshot_id, block_index)
    ) WITHOUT ROWID;
    CREATE INDEX pending_blocks_by_hash ON pending_blocks (hash);
    CREATE TABLE secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL);",
    // 3: disk import tasks.
    "CREATE TABLE import_tasks (
        task_id TEXT PRIMARY KEY,
        owner_id TEXT NOT NULL,
        doc TEXT NOT NULL
    );",
    // 4: image export tasks.
    "CREATE TABLE export_tasks (
        task_id TEXT PRIMARY KEY,
        owner_id TEXT NOT NULL,
        doc TEXT NOT NULL
    );",
    // 5: volumes. `base_snapshot_id` is a column so that deleting a snapshot can tell
    // whether a volume still reads through its block map.
    "CREATE TABLE volumes (
        volume_id TEXT PRIMARY KEY,
        region TEXT NOT NULL,
        owner_id TEXT NOT NULL,
        base_snapshot_id TEXT,
        doc TEXT NOT NULL
    );
    CREATE INDEX volumes_by_base ON volumes (base_snapshot_id);",
    // 6: instances.
    "CREATE TABLE instances (
        instance_id TEXT PRIMARY KEY,
        region TEXT NOT NULL,
        owner_id TEXT NOT NULL,
        doc TEXT NOT NULL
    );",
];

/// Brings the database to the newest schema version, each step in its own transaction.
pub fn migrate(conn: &Connection) -> Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let version = index as i64 + 1;
        if version <= current {
            continue;
        }
        conn.execute_batch(&format!(
            "BEGIN; {sql}; PRAGMA user_version = {version}; COMMIT;"
        ))?;
    }
    Ok(())
}

/// The schema version this build writes.
#[cfg(test)]
pub fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrate_twice_is_a_no_op() {
        let conn = Connection::open_in_memory().unwrap();
        migrate(&conn).unwrap();
        migrate(&conn).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, latest_version());
    }
}
