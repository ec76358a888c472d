//! The local-directory block backend: `DIR/blocks/ab/abcdef...` (hex hash, two-character
//! fan-out). A block is written to a temporary file, synced, and renamed into place, so a
//! crash leaves either the whole block or nothing under its name.

use super::{BlockBackend, BlockHash, Encoding};
use crate::error::{Error, Result};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Blocks in files under a directory.
pub struct LocalDir {
    root: PathBuf,
    tmp: PathBuf,
    counter: AtomicU64,
}

/// Path of a raw block's file under `root`.
pub fn block_path(root: &Path, hash: &BlockHash) -> PathBuf {
    let name = hex::encode(hash);
    root.join(&name[0..2]).join(name)
}

/// Path of a block's file in an encoding: `<hex>` raw, `<hex>.zst` compressed.
fn encoded_path(root: &Path, hash: &BlockHash, encoding: Encoding) -> PathBuf {
    let raw = block_path(root, hash);
    match encoding {
        Encoding::Raw => raw,
        Encoding::Zstd => raw.with_extension("zst"),
    }
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    if e.raw_os_error() == Some(28) {
        return Error::InternalError(format!(
            "no space left on the device holding {}: {what} failed",
            path.display()
        ));
    }
    Error::InternalError(format!("{what} {}: {e}", path.display()))
}

impl LocalDir {
    /// Opens (creating) `data_dir/blocks`. Other processes (`kiln scrub`, `kiln usage`) open
    /// it too while the server writes, so opening never removes anything.
    pub fn open(data_dir: &Path) -> Result<LocalDir> {
        let root = data_dir.join("blocks");
        let tmp = root.join("tmp");
        fs::create_dir_all(&tmp).map_err(|e| io_error("creating", &tmp, e))?;
        Ok(LocalDir {
            root,
            tmp,
            counter: AtomicU64::new(0),
        })
    }
}

impl LocalDir {
    fn write(
        &self,
        hash: &BlockHash,
        encoding: Encoding,
        data: &[u8],
        durable: bool,
    ) -> Result<u64> {
        let path = encoded_path(&self.root, hash, encoding);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| io_error("creating", &dir, e))?;
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self.tmp.join(format!(
            "{}-{}-{n}",
            hex::encode(&hash[..8]),
            std::process::id()
        ));
        let written = (|| -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(data)?;
            if durable {
                f.sync_all()?;
            }
            fs::rename(&tmp, &path)?;
            if durable {
                fs::File::open(&dir)?.sync_all()?;
            }
            Ok(())
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_error("writing block", &path, e));
        }
        Ok(data.len() as u64)
    }
}

impl BlockBackend for LocalDir {
    fn put(&self, hash: &BlockHash, encoding: Encoding, data: &[u8]) -> Result<u64> {
        self.write(hash, encoding, data, true)
    }

    fn put_unsynced(&self, hash: &BlockHash, encoding: Encoding, data: &[u8]) -> Result<u64> {
        self.write(hash, encoding, data, false)
    }

    fn clean_interrupted(&self) -> Result<()> {
        for entry in fs::read_dir(&self.tmp).map_err(|e| io_error("reading", &self.tmp, e))? {
            let entry = entry.map_err(|e| io_error("reading", &self.tmp, e))?;
            let _ = fs::remove_file(entry.path());
        }
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        // One syncfs for the file system holding the blocks: cheaper than a sync per block.
        let dir = fs::File::open(&self.root).map_err(|e| io_error("opening", &self.root, e))?;
        let rc = unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) };
        if rc != 0 {
            return Err(io_error(
                "syncing",
                &self.root,
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    fn get(&self, hash: &BlockHash) -> Result<(Encoding, Vec<u8>)> {
        let packed = encoded_path(&self.root, hash, Encoding::Zstd);
        if packed.exists() {
            let bytes = fs::read(&packed).map_err(|e| io_error("reading block", &packed, e))?;
            return Ok((Encoding::Zstd, bytes));
        }
        let path = block_path(&self.root, hash);
        let bytes = fs::read(&path).map_err(|e| io_error("reading block", &path, e))?;
        Ok((Encoding::Raw, bytes))
    }

    fn contains(&self, hash: &BlockHash) -> Result<bool> {
        Ok(block_path(&self.root, hash).exists()
            || encoded_path(&self.root, hash, Encoding::Zstd).exists())
    }

    fn delete(&self, hash: &BlockHash) -> Result<()> {
        for encoding in [Encoding::Raw, Encoding::Zstd] {
            let path = encoded_path(&self.root, hash, encoding);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("deleting block", &path, e)),
            }
        }
        Ok(())
    }

    fn list(&self) -> Result<Vec<BlockHash>> {
        let mut out = Vec::new();
        for fan in fs::read_dir(&self.root).map_err(|e| io_error("reading", &self.root, e))? {
            let fan = fan.map_err(|e| io_error("reading", &self.root, e))?;
            if fan.path() == self.tmp || !fan.path().is_dir() {
                continue;
            }
            for entry in
                fs::read_dir(fan.path()).map_err(|e| io_error("reading", &fan.path(), e))?
            {
                let entry = entry.map_err(|e| io_error("reading", &fan.path(), e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let name = name.strip_suffix(".zst").unwrap_or(&name);
                let mut hash = [0u8; 32];
                if hex::decode_to_slice(name.as_bytes(), &mut hash).is_ok() {
                    out.push(hash);
                }
            }
        }
        Ok(out)
    }

    fn used_bytes(&self) -> Result<u64> {
        let mut total = 0;
        for hash in self.list()? {
            for encoding in [Encoding::Raw, Encoding::Zstd] {
                let path = encoded_path(&self.root, &hash, encoding);
                total += fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            }
        }
        Ok(total)
    }
}
