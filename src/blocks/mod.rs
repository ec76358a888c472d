//! Snapshot data: fixed 512 KiB blocks, addressed by their SHA-256, shared by every snapshot
//! that contains them.
//!
//! The [`BlockStore`] writes and reads block bytes through a [`BlockBackend`] (a local
//! directory now; object storage later) and verifies every block against its hash on read.
//! Which snapshot holds which block, and how many references a block has, lives in the
//! metadata store, changed in the same transactions as the snapshot records.
//!
//! All-zero blocks are never stored: their hash is recognized and reads synthesize zeros.

pub mod disk;
mod local;

pub use local::LocalDir;

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Size of every block (the EBS direct APIs' block size).
pub const BLOCK_SIZE: usize = 524_288;

/// SHA-256 of a block's bytes.
pub type BlockHash = [u8; 32];

/// Hash of a block's bytes.
pub fn hash_block(data: &[u8]) -> BlockHash {
    Sha256::digest(data).into()
}

/// Hash of the all-zero block.
pub fn zero_block_hash() -> &'static BlockHash {
    static ZERO: OnceLock<BlockHash> = OnceLock::new();
    ZERO.get_or_init(|| hash_block(&vec![0u8; BLOCK_SIZE]))
}

/// How a block's bytes are stored; recorded with the block (in its name, for files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The 512 KiB as they are.
    Raw,
    /// Compressed with zstd (only when that saves at least a tenth).
    Zstd,
}

/// Where block bytes live. Implementations store opaque bytes under a hash; they do not
/// verify (the [`BlockStore`] does).
pub trait BlockBackend: Send + Sync {
    /// Stores `data` (encoded as `encoding`) under `hash` durably: on return it survives a
    /// crash. Returns bytes used.
    fn put(&self, hash: &BlockHash, encoding: Encoding, data: &[u8]) -> Result<u64>;
    /// Stores without making it durable yet; [`BlockBackend::sync`] does that for a whole
    /// batch (bulk imports).
    fn put_unsynced(&self, hash: &BlockHash, encoding: Encoding, data: &[u8]) -> Result<u64> {
        self.put(hash, encoding, data)
    }
    /// Makes every block stored so far durable.
    fn sync(&self) -> Result<()> {
        Ok(())
    }
    /// Removes leftovers of writes a crash interrupted (only the serving process calls this).
    fn clean_interrupted(&self) -> Result<()> {
        Ok(())
    }
    /// Reads the bytes stored under `hash` and how they are encoded.
    fn get(&self, hash: &BlockHash) -> Result<(Encoding, Vec<u8>)>;
    /// True if bytes are stored under `hash`.
    fn contains(&self, hash: &BlockHash) -> Result<bool>;
    /// Removes the bytes under `hash` (no error if absent).
    fn delete(&self, hash: &BlockHash) -> Result<()>;
    /// Every stored hash (scrub and orphan collection).
    fn list(&self) -> Result<Vec<BlockHash>>;
    /// Bytes used by everything stored.
    fn used_bytes(&self) -> Result<u64>;
}

/// Verified block I/O, plus the lock that keeps garbage collection from deleting a block
/// that a writer has just found or written but not yet referenced.
pub struct BlockStore {
    backend: Box<dyn BlockBackend>,
    /// Try zstd on every new block and keep it when it saves at least a tenth.
    compress: bool,
    /// Writers hold it shared from "block is stored" until "block is referenced in the
    /// metadata store"; the collector holds it exclusively while it deletes.
    gc_lock: RwLock<()>,
}

impl BlockStore {
    /// A block store over a backend; `compress` stores blocks with zstd where it pays.
    pub fn new(backend: Box<dyn BlockBackend>, compress: bool) -> BlockStore {
        BlockStore {
            backend,
            compress,
            gc_lock: RwLock::new(()),
        }
    }

    /// Held by writers while they store a block and record a reference to it.
    pub fn writer_guard(&self) -> Result<RwLockReadGuard<'_, ()>> {
        self.gc_lock
            .read()
            .map_err(|_| Error::InternalError("block store lock poisoned".into()))
    }

    /// Held by the collector while it decides and deletes.
    pub fn collector_guard(&self) -> Result<RwLockWriteGuard<'_, ()>> {
        self.gc_lock
            .write()
            .map_err(|_| Error::InternalError("block store lock poisoned".into()))
    }

    /// Stores a full block unless it is all zeros or already present. Returns its hash and
    /// the bytes newly used (0 when deduplicated). Call with a [`Self::writer_guard`] held.
    pub fn put(&self, data: &[u8]) -> Result<(BlockHash, u64)> {
        if data.len() != BLOCK_SIZE {
            return Err(Error::InternalError(format!(
                "block of {} bytes, expected {BLOCK_SIZE}",
                data.len()
            )));
        }
        let hash = hash_block(data);
        let used = self.put_hashed(&hash, data)?;
        Ok((hash, used))
    }

    /// The encoding and bytes a block is stored as.
    fn encode<'a>(&self, data: &'a [u8]) -> (Encoding, std::borrow::Cow<'a, [u8]>) {
        if self.compress {
            if let Ok(packed) = zstd::bulk::compress(data, 1) {
                if packed.len() < data.len() - data.len() / 10 {
                    return (Encoding::Zstd, std::borrow::Cow::Owned(packed));
                }
            }
        }
        (Encoding::Raw, std::borrow::Cow::Borrowed(data))
    }

    fn decode(encoding: Encoding, bytes: Vec<u8>) -> Result<Vec<u8>> {
        match encoding {
            Encoding::Raw => Ok(bytes),
            Encoding::Zstd => zstd::bulk::decompress(&bytes, BLOCK_SIZE)
                .map_err(|e| Error::InternalError(format!("block does not decompress: {e}"))),
        }
    }

    /// Stores a block whose hash the caller already computed and checked; returns the bytes
    /// newly used (0 when the block is all zeros or already stored).
    pub fn put_hashed(&self, hash: &BlockHash, data: &[u8]) -> Result<u64> {
        if hash == zero_block_hash() || self.backend.contains(hash)? {
            return Ok(0);
        }
        let (encoding, bytes) = self.encode(data);
        self.backend.put(hash, encoding, &bytes)
    }

    /// Like [`Self::put_hashed`] without syncing; call [`Self::sync`] before referencing.
    pub fn put_hashed_unsynced(&self, hash: &BlockHash, data: &[u8]) -> Result<u64> {
        if hash == zero_block_hash() || self.backend.contains(hash)? {
            return Ok(0);
        }
        let (encoding, bytes) = self.encode(data);
        self.backend.put_unsynced(hash, encoding, &bytes)
    }

    /// Makes every unsynced block durable.
    pub fn sync(&self) -> Result<()> {
        self.backend.sync()
    }

    /// Like [`Self::collector_guard`], but `None` instead of waiting while writers are active.
    pub fn try_collector_guard(&self) -> Option<RwLockWriteGuard<'_, ()>> {
        self.gc_lock.try_write().ok()
    }

    /// Reads a block and verifies it against its hash: corruption is an error, never data.
    pub fn get(&self, hash: &BlockHash) -> Result<Vec<u8>> {
        if hash == zero_block_hash() {
            return Ok(vec![0u8; BLOCK_SIZE]);
        }
        let (encoding, bytes) = self.backend.get(hash)?;
        let data = Self::decode(encoding, bytes)?;
        if hash_block(&data) != *hash {
            return Err(Error::InternalError(format!(
                "block {} is corrupt: its content does not match its hash",
                hex::encode(hash)
            )));
        }
        Ok(data)
    }

    /// Checks one stored block; `Ok(false)` when missing or damaged.
    pub fn verify(&self, hash: &BlockHash) -> Result<bool> {
        if hash == zero_block_hash() {
            return Ok(true);
        }
        match self.backend.get(hash).and_then(|(e, b)| Self::decode(e, b)) {
            Ok(data) => Ok(hash_block(&data) == *hash),
            Err(_) => Ok(false),
        }
    }

    /// The backend (for deletion by the collector, listing by scrub).
    pub fn backend(&self) -> &dyn BlockBackend {
        self.backend.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, BlockStore) {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalDir::open(dir.path()).unwrap();
        (dir, BlockStore::new(Box::new(backend), false))
    }

    fn compressing_store() -> (tempfile::TempDir, BlockStore) {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalDir::open(dir.path()).unwrap();
        (dir, BlockStore::new(Box::new(backend), true))
    }

    #[test]
    fn put_compressible_block_with_compression_stores_fewer_bytes_and_reads_back() {
        let (_dir, s) = compressing_store();
        let data: Vec<u8> = (0..BLOCK_SIZE).map(|i| (i % 7) as u8).collect();
        let (hash, used) = s.put(&data).unwrap();
        assert!(used < (BLOCK_SIZE / 10) as u64, "stored {used} bytes");
        assert_eq!(s.get(&hash).unwrap(), data);
        assert!(s.verify(&hash).unwrap());
    }

    #[test]
    fn put_random_block_with_compression_stays_raw() {
        let (_dir, s) = compressing_store();
        let mut data = vec![0u8; BLOCK_SIZE];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut data);
        let (hash, used) = s.put(&data).unwrap();
        assert_eq!(used, BLOCK_SIZE as u64);
        assert_eq!(s.get(&hash).unwrap(), data);
    }

    #[test]
    fn put_zero_block_stores_nothing() {
        let (_dir, s) = store();
        let (hash, used) = s.put(&vec![0u8; BLOCK_SIZE]).unwrap();
        assert_eq!(&hash, zero_block_hash());
        assert_eq!(used, 0);
        assert!(s.backend().list().unwrap().is_empty());
    }

    #[test]
    fn put_same_block_twice_stores_it_once() {
        let (_dir, s) = store();
        let data = vec![7u8; BLOCK_SIZE];
        let (h1, used1) = s.put(&data).unwrap();
        let (h2, used2) = s.put(&data).unwrap();
        assert_eq!(h1, h2);
        assert!(used1 > 0);
        assert_eq!(used2, 0);
        assert_eq!(s.get(&h1).unwrap(), data);
    }

    #[test]
    fn get_corrupted_block_fails_instead_of_returning_data() {
        let (dir, s) = store();
        let (hash, _) = s.put(&vec![9u8; BLOCK_SIZE]).unwrap();
        let path = local::block_path(&dir.path().join("blocks"), &hash);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[100] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(s.get(&hash).unwrap_err().code(), "InternalError");
        assert!(!s.verify(&hash).unwrap());
    }
}
