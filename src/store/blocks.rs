//! Block maps and reference counts in the metadata store.
//!
//! `blocks` has one row per stored block with the number of snapshot-map entries that
//! reference it; `snapshot_blocks` is the full block map of every completed snapshot;
//! `pending_blocks` holds what was written to snapshots still being uploaded. A block with
//! no references and no pending writer may be collected.

use super::Store;
use crate::blocks::BlockHash;
use crate::error::{Error, Result};
use rusqlite::{params, OptionalExtension, Transaction};

/// One entry of a block map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRef {
    /// Index of the block in the volume.
    pub index: i64,
    /// SHA-256 of its content.
    pub hash: BlockHash,
}

fn to_hash(bytes: Vec<u8>) -> rusqlite::Result<BlockHash> {
    bytes.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Blob,
            "block hash is not 32 bytes".into(),
        )
    })
}

fn row_to_ref(r: &rusqlite::Row<'_>) -> rusqlite::Result<BlockRef> {
    Ok(BlockRef {
        index: r.get(0)?,
        hash: to_hash(r.get(1)?)?,
    })
}

/// Adds one reference per map entry of `snapshot_id` to the blocks it holds.
pub(super) fn add_references(tx: &Transaction<'_>, snapshot_id: &str) -> Result<()> {
    adjust_references(tx, snapshot_id, 1)
}

/// Removes a snapshot's map and the references it held.
pub(super) fn release_map(tx: &Transaction<'_>, snapshot_id: &str) -> Result<()> {
    adjust_references(tx, snapshot_id, -1)?;
    tx.execute(
        "DELETE FROM snapshot_blocks WHERE snapshot_id = ?1",
        [snapshot_id],
    )?;
    Ok(())
}

fn adjust_references(tx: &Transaction<'_>, snapshot_id: &str, sign: i64) -> Result<()> {
    let mut counts = tx.prepare(
        "SELECT hash, count(*) FROM snapshot_blocks WHERE snapshot_id = ?1 GROUP BY hash",
    )?;
    let mut update = tx.prepare("UPDATE blocks SET refcount = refcount + ?2 WHERE hash = ?1")?;
    let rows = counts.query_map([snapshot_id], |r| {
        Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?))
    })?;
    for row in rows {
        let (hash, n) = row?;
        update.execute(params![hash, sign * n])?;
    }
    Ok(())
}

/// Completes a snapshot's map: the parent's entries not overwritten, plus the pending ones.
pub(super) fn seal(tx: &Transaction<'_>, snapshot_id: &str, parent: Option<&str>) -> Result<()> {
    if let Some(parent) = parent {
        tx.execute(
            "INSERT INTO snapshot_blocks (snapshot_id, block_index, hash)
             SELECT ?1, p.block_index, p.hash FROM snapshot_blocks p
             WHERE p.snapshot_id = ?2 AND NOT EXISTS (
                 SELECT 1 FROM pending_blocks n
                 WHERE n.snapshot_id = ?1 AND n.block_index = p.block_index)",
            params![snapshot_id, parent],
        )?;
    }
    tx.execute(
        "INSERT INTO snapshot_blocks (snapshot_id, block_index, hash)
         SELECT snapshot_id, block_index, hash FROM pending_blocks WHERE snapshot_id = ?1",
        [snapshot_id],
    )?;
    tx.execute(
        "DELETE FROM pending_blocks WHERE snapshot_id = ?1",
        [snapshot_id],
    )?;
    add_references(tx, snapshot_id)
}

impl Store {
    /// Records a block written to a pending snapshot (after its bytes are durable).
    /// `stored_len` is `None` for the all-zero block, which has no stored bytes.
    pub fn add_pending_block(
        &self,
        snapshot_id: &str,
        index: i64,
        hash: &BlockHash,
        stored_len: Option<u64>,
    ) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        if let Some(len) = stored_len {
            tx.execute(
                "INSERT OR IGNORE INTO blocks (hash, refcount, stored_len) VALUES (?1, 0, ?2)",
                params![hash.as_slice(), len as i64],
            )?;
        }
        tx.execute(
            "INSERT OR REPLACE INTO pending_blocks (snapshot_id, block_index, hash) VALUES (?1, ?2, ?3)",
            params![snapshot_id, index, hash.as_slice()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records a batch of blocks written to a pending snapshot, in one transaction.
    pub fn add_pending_blocks(
        &self,
        snapshot_id: &str,
        blocks: &[(i64, BlockHash, Option<u64>)],
    ) -> Result<()> {
        if blocks.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        {
            let mut known = tx.prepare(
                "INSERT OR IGNORE INTO blocks (hash, refcount, stored_len) VALUES (?1, 0, ?2)",
            )?;
            let mut pending = tx.prepare(
                "INSERT OR REPLACE INTO pending_blocks (snapshot_id, block_index, hash) VALUES (?1, ?2, ?3)",
            )?;
            for (index, hash, len) in blocks {
                if let Some(len) = len {
                    known.execute(params![hash.as_slice(), *len as i64])?;
                }
                pending.execute(params![snapshot_id, index, hash.as_slice()])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The blocks written so far to a pending snapshot, by index.
    pub fn pending_blocks(&self, snapshot_id: &str) -> Result<Vec<BlockRef>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT block_index, hash FROM pending_blocks WHERE snapshot_id = ?1 ORDER BY block_index",
        )?;
        let rows = stmt.query_map([snapshot_id], row_to_ref)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(Error::from)
    }

    /// Up to `limit` entries of a completed snapshot's map, from `start` on.
    pub fn snapshot_blocks(
        &self,
        snapshot_id: &str,
        start: i64,
        limit: i64,
    ) -> Result<Vec<BlockRef>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT block_index, hash FROM snapshot_blocks
             WHERE snapshot_id = ?1 AND block_index >= ?2 ORDER BY block_index LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![snapshot_id, start, limit], row_to_ref)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(Error::from)
    }

    /// The block at `index` of a completed snapshot, if it has one.
    pub fn block_at(&self, snapshot_id: &str, index: i64) -> Result<Option<BlockHash>> {
        let conn = self.conn()?;
        let hash: Option<Vec<u8>> = conn
            .query_row(
                "SELECT hash FROM snapshot_blocks WHERE snapshot_id = ?1 AND block_index = ?2",
                params![snapshot_id, index],
                |r| r.get(0),
            )
            .optional()?;
        hash.map(to_hash).transpose().map_err(Error::from)
    }

    /// Blocks nothing references and no upload is writing: safe to delete (with the
    /// collector lock held).
    pub fn collectable_blocks(&self) -> Result<Vec<BlockHash>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT b.hash FROM blocks b WHERE b.refcount <= 0
             AND NOT EXISTS (SELECT 1 FROM pending_blocks p WHERE p.hash = b.hash)",
        )?;
        let rows = stmt.query_map([], |r| to_hash(r.get(0)?))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(Error::from)
    }

    /// Forgets block rows (after their bytes were deleted).
    pub fn forget_blocks(&self, hashes: &[BlockHash]) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare("DELETE FROM blocks WHERE hash = ?1 AND refcount <= 0")?;
            for h in hashes {
                stmt.execute([h.as_slice()])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// True if the metadata store knows the block.
    pub fn block_known(&self, hash: &BlockHash) -> Result<bool> {
        let conn = self.conn()?;
        let found: Option<i64> = conn
            .query_row(
                "SELECT 1 FROM blocks WHERE hash = ?1",
                [hash.as_slice()],
                |r| r.get(0),
            )
            .optional()?;
        Ok(found.is_some())
    }

    /// Every referenced block (scrub).
    pub fn referenced_blocks(&self) -> Result<Vec<BlockHash>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT DISTINCT hash FROM snapshot_blocks UNION SELECT DISTINCT hash FROM pending_blocks",
        )?;
        let rows = stmt.query_map([], |r| to_hash(r.get(0)?))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(Error::from)
    }

    /// Snapshots whose maps contain the block (scrub reports).
    pub fn snapshots_containing(&self, hash: &BlockHash) -> Result<Vec<String>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT DISTINCT snapshot_id FROM snapshot_blocks WHERE hash = ?1
             UNION SELECT DISTINCT snapshot_id FROM pending_blocks WHERE hash = ?1",
        )?;
        let rows = stmt.query_map([hash.as_slice()], |r| r.get(0))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(Error::from)
    }

    /// A server secret, created on first use (block tokens are signed with it).
    pub fn secret(&self, name: &str) -> Result<Vec<u8>> {
        let conn = self.conn()?;
        let existing: Option<Vec<u8>> = conn
            .query_row("SELECT value FROM secrets WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?;
        if let Some(value) = existing {
            return Ok(value);
        }
        let value: [u8; 32] = rand::random();
        conn.execute(
            "INSERT OR IGNORE INTO secrets (name, value) VALUES (?1, ?2)",
            params![name, value.as_slice()],
        )?;
        Ok(
            conn.query_row("SELECT value FROM secrets WHERE name = ?1", [name], |r| {
                r.get(0)
            })?,
        )
    }
}

/// Storage used by a set of snapshots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockUsage {
    /// Bytes of the distinct stored blocks the set references.
    pub referenced_bytes: u64,
    /// Bytes referenced only by the set: what deleting all of it would free.
    pub unique_bytes: u64,
}

impl Store {
    /// Referenced and unique bytes of a set of snapshots. A block is unique to the set when
    /// every reference it has comes from the set's maps.
    pub fn block_usage(&self, snapshot_ids: &[String]) -> Result<BlockUsage> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        tx.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS usage_set (snapshot_id TEXT PRIMARY KEY);
             DELETE FROM usage_set;",
        )?;
        {
            let mut insert =
                tx.prepare("INSERT OR IGNORE INTO usage_set (snapshot_id) VALUES (?1)")?;
            for id in snapshot_ids {
                insert.execute([id])?;
            }
        }
        let usage = tx.query_row(
            "SELECT coalesce(sum(b.stored_len), 0),
                    coalesce(sum(CASE WHEN b.refcount <= r.n THEN b.stored_len ELSE 0 END), 0)
             FROM (SELECT sb.hash AS hash, count(*) AS n FROM snapshot_blocks sb
                   JOIN usage_set u ON u.snapshot_id = sb.snapshot_id GROUP BY sb.hash) r
             JOIN blocks b ON b.hash = r.hash",
            [],
            |r| {
                Ok(BlockUsage {
                    referenced_bytes: r.get::<_, i64>(0)? as u64,
                    unique_bytes: r.get::<_, i64>(1)? as u64,
                })
            },
        )?;
        tx.execute("DELETE FROM usage_set", [])?;
        tx.commit()?;
        Ok(usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Change;

    fn h(n: u8) -> BlockHash {
        [n; 32]
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    fn seal(store: &Store, id: &str, parent: Option<&str>) {
        store
            .apply(&[Change::SealSnapshotBlocks {
                snapshot_id: id.into(),
                parent: parent.map(str::to_string),
            }])
            .unwrap();
    }

    #[test]
    fn seal_child_inherits_parent_blocks_not_overwritten() {
        let (_d, s) = store();
        s.add_pending_blocks("p", &[(0, h(1), Some(10)), (1, h(2), Some(10))])
            .unwrap();
        seal(&s, "p", None);
        s.add_pending_block("c", 1, &h(3), Some(10)).unwrap();
        seal(&s, "c", Some("p"));
        let map = s.snapshot_blocks("c", 0, 100).unwrap();
        assert_eq!(
            map,
            vec![
                BlockRef {
                    index: 0,
                    hash: h(1)
                },
                BlockRef {
                    index: 1,
                    hash: h(3)
                }
            ]
        );
        assert!(s.pending_blocks("c").unwrap().is_empty());
    }

    #[test]
    fn delete_snapshot_makes_its_unique_blocks_collectable_only() {
        let (_d, s) = store();
        s.add_pending_blocks("a", &[(0, h(1), Some(10)), (1, h(2), Some(10))])
            .unwrap();
        seal(&s, "a", None);
        s.add_pending_blocks("b", &[(0, h(1), Some(10))]).unwrap();
        seal(&s, "b", None);
        assert!(s.collectable_blocks().unwrap().is_empty());
        s.apply(&[Change::DeleteSnapshot("a".into())]).unwrap();
        assert_eq!(s.collectable_blocks().unwrap(), vec![h(2)]);
    }

    #[test]
    fn collectable_blocks_pending_reference_protects_block() {
        let (_d, s) = store();
        s.add_pending_block("x", 0, &h(9), Some(10)).unwrap();
        assert!(s.collectable_blocks().unwrap().is_empty());
        s.apply(&[Change::DropPendingBlocks("x".into())]).unwrap();
        assert_eq!(s.collectable_blocks().unwrap(), vec![h(9)]);
    }

    #[test]
    fn block_usage_shared_block_is_not_unique() {
        let (_d, s) = store();
        s.add_pending_blocks("a", &[(0, h(1), Some(100)), (1, h(2), Some(50))])
            .unwrap();
        seal(&s, "a", None);
        s.apply(&[Change::CopySnapshotBlocks {
            from: "a".into(),
            to: "b".into(),
        }])
        .unwrap();
        s.add_pending_blocks("c", &[(0, h(3), Some(7))]).unwrap();
        seal(&s, "c", None);
        let a = s.block_usage(&["a".into()]).unwrap();
        assert_eq!(
            a,
            BlockUsage {
                referenced_bytes: 150,
                unique_bytes: 0
            }
        );
        let ab = s.block_usage(&["a".into(), "b".into()]).unwrap();
        assert_eq!(
            ab,
            BlockUsage {
                referenced_bytes: 150,
                unique_bytes: 150
            }
        );
        let c = s.block_usage(&["c".into()]).unwrap();
        assert_eq!(
            c,
            BlockUsage {
                referenced_bytes: 7,
                unique_bytes: 7
            }
        );
    }

    fn volume(id: &str, base: &str) -> crate::service::model::Volume {
        serde_json::from_value(serde_json::json!({
            "volume_id": id, "region": "us-east-1", "availability_zone": "us-east-1a",
            "owner_id": "111111111111", "size": 1, "snapshot_id": base,
            "base_snapshot_id": base, "volume_type": "gp2", "iops": 100, "throughput": null,
            "encrypted": false, "kms_key_id": null, "multi_attach_enabled": false,
            "state": "available", "create_time": "2026-11-24T00:00:00.000Z",
            "modification": null, "tags": {}
        }))
        .unwrap()
    }

    #[test]
    fn delete_snapshot_used_by_volume_keeps_blocks_until_volume_deleted() {
        let (_d, s) = store();
        s.add_pending_blocks("snap-a", &[(0, h(1), Some(10))])
            .unwrap();
        seal(&s, "snap-a", None);
        s.apply(&[Change::PutVolume(volume("vol-1", "snap-a"))])
            .unwrap();
        s.apply(&[Change::DeleteSnapshot("snap-a".into())]).unwrap();
        assert!(s.collectable_blocks().unwrap().is_empty());
        assert_eq!(s.block_at("snap-a", 0).unwrap(), Some(h(1)));
        s.apply(&[Change::DeleteVolume("vol-1".into())]).unwrap();
        assert_eq!(s.collectable_blocks().unwrap(), vec![h(1)]);
        assert_eq!(s.block_at("snap-a", 0).unwrap(), None);
    }

    #[test]
    fn delete_volume_of_live_snapshot_keeps_snapshot_blocks() {
        let (_d, s) = store();
        s.add_pending_blocks("snap-a", &[(0, h(1), Some(10))])
            .unwrap();
        seal(&s, "snap-a", None);
        let snapshot: crate::service::model::Snapshot = serde_json::from_value(serde_json::json!({
            "snapshot_id": "snap-a", "region": "us-east-1", "owner_id": "111111111111",
            "volume_id": "vol-ffffffff", "volume_size": 1, "description": "",
            "state": "completed", "state_message": null,
            "start_time": "2026-11-24T00:00:00.000Z", "completion_time": null,
            "progress": "100%", "encrypted": false, "kms_key_id": null,
            "parent_snapshot_id": null, "copy_source": null,
            "create_volume_permissions": [], "tags": {}
        }))
        .unwrap();
        s.apply(&[
            Change::PutSnapshot(snapshot),
            Change::PutVolume(volume("vol-1", "snap-a")),
        ])
        .unwrap();
        s.apply(&[Change::DeleteVolume("vol-1".into())]).unwrap();
        assert!(s.collectable_blocks().unwrap().is_empty());
        assert_eq!(s.block_at("snap-a", 0).unwrap(), Some(h(1)));
    }
}
