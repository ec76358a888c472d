//! A copy-on-write volume: reads fall through to the source snapshot's blocks, writes land
//! in the volume's own overlay file, one 512 KiB block at a time.
//!
//! Creating a volume copies nothing: a new volume is its source snapshot's block map and an
//! empty, sparse overlay. The first write to a block copies that block up (its snapshot
//! bytes, or zeros) into the overlay and marks it dirty; later reads of the block come from
//! the overlay. The dirty set is exactly what a snapshot of the volume must hash and store.
//!
//! Durability follows disk semantics: what was written before the last [`CowVolume::flush`]
//! survives a crash; later writes may or may not. A flush syncs the overlay, then replaces
//! the persisted dirty list, so a block is never listed before its bytes are on disk.

use crate::blocks::{BlockHash, BlockStore, BLOCK_SIZE};
use crate::error::{Error, Result};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How many source blocks a volume keeps decoded: guests read in small pieces, and each
/// source block is verified against its hash once per visit to the cache, not per read.
const CACHED_BLOCKS: usize = 8;

/// One block of zeros, to copy up a zero source block.
static ZEROS: [u8; BLOCK_SIZE] = [0u8; BLOCK_SIZE];

/// The overlay file inside a volume's directory.
const OVERLAY_FILE: &str = "overlay";
/// The persisted dirty list inside a volume's directory.
const DIRTY_FILE: &str = "dirty";

/// A volume's bytes: a source block map, an overlay, and which blocks the overlay holds.
pub struct CowVolume {
    dir: PathBuf,
    size: u64,
    blocks: Arc<BlockStore>,
    /// Non-zero blocks of the source snapshot, by index.
    base: HashMap<u64, BlockHash>,
    overlay: File,
    dirty: BTreeSet<u64>,
    cache: VecDeque<(u64, Arc<Vec<u8>>)>,
}

impl CowVolume {
    /// Opens (or creates) the volume kept in `dir`, of `size` bytes, over the source blocks
    /// `base` (index → hash; absent indexes read as zeros).
    pub fn open(
        dir: &Path,
        size: u64,
        base: HashMap<u64, BlockHash>,
        blocks: Arc<BlockStore>,
    ) -> Result<CowVolume> {
        std::fs::create_dir_all(dir).map_err(|e| io_error("creating the volume directory", e))?;
        let overlay = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(OVERLAY_FILE))
            .map_err(|e| io_error("opening the volume overlay", e))?;
        if overlay
            .metadata()
            .map_err(|e| io_error("reading the volume overlay", e))?
            .len()
            < size
        {
            // Sparse: only written blocks take space.
            overlay
                .set_len(size)
                .map_err(|e| io_error("sizing the volume overlay", e))?;
        }
        let dirty = read_dirty_list(&dir.join(DIRTY_FILE))?;
        Ok(CowVolume {
            dir: dir.to_path_buf(),
            size,
            blocks,
            base,
            overlay,
            dirty,
            cache: VecDeque::new(),
        })
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Blocks written since the volume's source (the blocks a snapshot must store).
    pub fn dirty_blocks(&self) -> impl Iterator<Item = u64> + '_ {
        self.dirty.iter().copied()
    }

    /// Reads `buf.len()` bytes at `offset`.
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len())?;
        let mut done = 0;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (index, within) = split(pos);
            let n = (BLOCK_SIZE - within).min(buf.len() - done);
            let out = &mut buf[done..done + n];
            if self.dirty.contains(&index) {
                self.overlay
                    .read_exact_at(out, pos)
                    .map_err(|e| io_error("reading the volume overlay", e))?;
            } else {
                match self.source_block(index)? {
                    Some(block) => out.copy_from_slice(&block[within..within + n]),
                    None => out.fill(0),
                }
            }
            done += n;
        }
        Ok(())
    }

    /// Writes `data` at `offset`, copying up every block it touches for the first time.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.check_range(offset, data.len())?;
        let mut done = 0;
        while done < data.len() {
            let pos = offset + done as u64;
            let (index, within) = split(pos);
            let n = (BLOCK_SIZE - within).min(data.len() - done);
            if !self.dirty.contains(&index) {
                self.copy_up(index, within, n)?;
            }
            self.overlay
                .write_all_at(&data[done..done + n], pos)
                .map_err(|e| io_error("writing the volume overlay", e))?;
            done += n;
        }
        Ok(())
    }

    /// Makes every write so far durable, and the dirty list with it.
    pub fn flush(&mut self) -> Result<()> {
        self.overlay
            .sync_data()
            .map_err(|e| io_error("syncing the volume overlay", e))?;
        write_dirty_list(&self.dir, &self.dirty)
    }

    /// The whole block `index` as the volume holds it now.
    pub fn read_block(&mut self, index: u64) -> Result<Vec<u8>> {
        let mut block = vec![0u8; BLOCK_SIZE];
        let start = index * BLOCK_SIZE as u64;
        let len = (self.size.saturating_sub(start)).min(BLOCK_SIZE as u64) as usize;
        self.read_at(start, &mut block[..len])?;
        Ok(block)
    }

    /// Makes `base` the volume's source and forgets the overlay's copies of `stored`: after a
    /// snapshot of the volume, those blocks live in the block store. Blocks written while the
    /// snapshot was taken stay dirty.
    pub fn rebase(&mut self, base: HashMap<u64, BlockHash>, stored: &[u64]) -> Result<()> {
        self.base = base;
        self.cache.clear();
        for index in stored {
            self.dirty.remove(index);
        }
        write_dirty_list(&self.dir, &self.dirty)?;
        for index in stored {
            punch_hole(&self.overlay, index * BLOCK_SIZE as u64, BLOCK_SIZE as u64);
        }
        Ok(())
    }

    /// Grows the volume to `size` bytes (ModifyVolume); the new space reads as zeros.
    pub fn grow(&mut self, size: u64) -> Result<()> {
        if size < self.size {
            return Err(Error::InvalidParameterValue(
                "A volume can only grow".to_string(),
            ));
        }
        self.overlay
            .set_len(size)
            .map_err(|e| io_error("growing the volume overlay", e))?;
        self.size = size;
        Ok(())
    }

    fn check_range(&self, offset: u64, len: usize) -> Result<()> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(Error::InvalidParameterValue(format!(
                "{len} bytes at offset {offset} are outside the volume of {} bytes",
                self.size
            ))),
        }
    }

    /// Copies block `index` into the overlay before a write of `n` bytes at `within`
    /// changes part of it; a write that covers the whole block needs no copy.
    fn copy_up(&mut self, index: u64, within: usize, n: usize) -> Result<()> {
        let covers_block = within == 0 && n == BLOCK_SIZE;
        if !covers_block {
            let start = index * BLOCK_SIZE as u64;
            let len = (self.size - start).min(BLOCK_SIZE as u64) as usize;
            // A zero source block is copied too: the overlay range of a clean block may hold
            // bytes of a write that a crash lost before it was flushed.
            let source = self.source_block(index)?;
            let bytes = match &source {
                Some(block) => &block[..len],
                None => &ZEROS[..len],
            };
            self.overlay
                .write_all_at(bytes, start)
                .map_err(|e| io_error("copying a block into the volume overlay", e))?;
        }
        self.dirty.insert(index);
        Ok(())
    }

    /// The source snapshot's block `index` (verified), or `None` for a zero block.
    fn source_block(&mut self, index: u64) -> Result<Option<Arc<Vec<u8>>>> {
        let Some(hash) = self.base.get(&index) else {
            return Ok(None);
        };
        if let Some(pos) = self.cache.iter().position(|(i, _)| *i == index) {
            let entry = self.cache.remove(pos).expect("position is in range");
            let block = entry.1.clone();
            self.cache.push_front(entry);
            return Ok(Some(block));
        }
        let block = Arc::new(self.blocks.get(hash)?);
        self.cache.push_front((index, block.clone()));
        self.cache.truncate(CACHED_BLOCKS);
        Ok(Some(block))
    }
}

/// (block index, offset within the block) of a byte position.
fn split(pos: u64) -> (u64, usize) {
    (pos / BLOCK_SIZE as u64, (pos % BLOCK_SIZE as u64) as usize)
}

fn io_error(what: &str, e: std::io::Error) -> Error {
    Error::InternalError(format!("{what}: {e}"))
}

/// Frees the overlay's copy of a range; a failure only costs space, never correctness.
fn punch_hole(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: fallocate on an open descriptor with plain integer arguments.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if rc != 0 {
        tracing::debug!(
            "could not free overlay space: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Reads the dirty list: little-endian u64 block indexes.
fn read_dirty_list(path: &Path) -> Result<BTreeSet<u64>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(io_error("reading the volume's dirty list", e)),
    };
    if bytes.len() % 8 != 0 {
        return Err(Error::InternalError(format!(
            "the dirty list {} is damaged ({} bytes)",
            path.display(),
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("chunks of 8 bytes")))
        .collect())
}

/// Replaces the dirty list atomically and durably.
fn write_dirty_list(dir: &Path, dirty: &BTreeSet<u64>) -> Result<()> {
    let tmp = dir.join(format!("{DIRTY_FILE}.tmp"));
    let mut bytes = Vec::with_capacity(dirty.len() * 8);
    for index in dirty {
        bytes.extend_from_slice(&index.to_le_bytes());
    }
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(DIRTY_FILE))?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| io_error("writing the volume's dirty list", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::LocalDir;

    fn store(dir: &Path) -> Arc<BlockStore> {
        Arc::new(BlockStore::new(
            Box::new(LocalDir::open(dir).unwrap()),
            false,
        ))
    }

    fn block_of(byte: u8) -> Vec<u8> {
        vec![byte; BLOCK_SIZE]
    }

    /// A volume of three blocks whose source has block 1 = 0xAA.., blocks 0 and 2 zero.
    fn volume(dir: &Path) -> CowVolume {
        let blocks = store(&dir.join("store"));
        let _w = blocks.writer_guard().unwrap();
        let (hash, _) = blocks.put(&block_of(0xAA)).unwrap();
        drop(_w);
        let base = HashMap::from([(1u64, hash)]);
        CowVolume::open(&dir.join("vol"), 3 * BLOCK_SIZE as u64, base, blocks).unwrap()
    }

    #[test]
    fn read_unwritten_volume_returns_source_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let mut v = volume(tmp.path());
        let mut buf = vec![1u8; 16];
        v.read_at(BLOCK_SIZE as u64 - 8, &mut buf).unwrap();
        assert_eq!(&buf[..8], &[0u8; 8]);
        assert_eq!(&buf[8..], &[0xAAu8; 8]);
        assert_eq!(v.dirty_blocks().count(), 0);
    }

    #[test]
    fn write_partial_block_copies_up_source_and_marks_dirty() {
        let tmp = tempfile::tempdir().unwrap();
        let mut v = volume(tmp.path());
        v.write_at(BLOCK_SIZE as u64 + 100, b"kiln").unwrap();
        let block = v.read_block(1).unwrap();
        assert_eq!(&block[100..104], b"kiln");
        assert_eq!(block[99], 0xAA);
        assert_eq!(block[104], 0xAA);
        assert_eq!(v.dirty_blocks().collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn write_across_blocks_dirties_each_block_it_touches() {
        let tmp = tempfile::tempdir().unwrap();
        let mut v = volume(tmp.path());
        let data = vec![7u8; BLOCK_SIZE + 10];
        v.write_at(BLOCK_SIZE as u64 - 5, &data).unwrap();
        assert_eq!(v.dirty_blocks().collect::<Vec<_>>(), vec![0, 1, 2]);
        let mut buf = vec![0u8; 3];
        v.read_at(2 * BLOCK_SIZE as u64 + 4, &mut buf).unwrap();
        assert_eq!(buf, vec![7, 0, 0]);
    }

    #[test]
    fn write_past_end_fails_and_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let mut v = volume(tmp.path());
        assert!(v.write_at(3 * BLOCK_SIZE as u64 - 2, b"abc").is_err());
        assert_eq!(v.dirty_blocks().count(), 0);
    }

    #[test]
    fn reopen_after_flush_keeps_flushed_writes() {
        let tmp = tempfile::tempdir().unwrap();
        let mut v = volume(tmp.path());
        v.write_at(10, b"durable").unwrap();
        v.flush().unwrap();
        let base = v.base.clone();
        let blocks = v.blocks.clone();
        drop(v);
        let mut again =
            CowVolume::open(&tmp.path().join("vol"), 3 * BLOCK_SIZE as u64, base, blocks).unwrap();
        let mut buf = vec![0u8; 7];
        again.read_at(10, &mut buf).unwrap();
        assert_eq!(&buf, b"durable");
        assert_eq!(again.dirty_blocks().collect::<Vec<_>>(), vec![0]);
    }

    #[test]
    fn rebase_forgets_stored_blocks_and_reads_new_source() {
        let tmp = tempfile::tempdir().unwrap();
        let mut v = volume(tmp.path());
        v.write_at(0, &block_of(0x55)).unwrap();
        let blocks = v.blocks.clone();
        let (hash, _) = blocks.put(&block_of(0x55)).unwrap();
        let mut base = v.base.clone();
        base.insert(0, hash);
        v.rebase(base, &[0]).unwrap();
        assert_eq!(v.dirty_blocks().count(), 0);
        assert_eq!(v.read_block(0).unwrap(), block_of(0x55));
    }

    #[test]
    fn grow_then_read_new_space_returns_zeros() {
        let tmp = tempfile::tempdir().unwrap();
        let mut v = volume(tmp.path());
        v.grow(4 * BLOCK_SIZE as u64).unwrap();
        assert_eq!(v.read_block(3).unwrap(), block_of(0));
        assert!(v.grow(BLOCK_SIZE as u64).is_err());
    }
}
