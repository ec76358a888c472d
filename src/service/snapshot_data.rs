//! Snapshot data through the EBS direct APIs: PutSnapshotBlock, CompleteSnapshot,
//! ListSnapshotBlocks, ListChangedBlocks, GetSnapshotBlock; block tokens; garbage collection
//! and scrubbing of the block store.

use super::model::{Snapshot, SnapshotState};
use super::snapshots::can_restore;
use super::state::State;
use super::{time, RequestContext, Service};
use crate::blocks::{hash_block, zero_block_hash, BlockHash, BLOCK_SIZE};
use crate::error::{Error, Result};
use crate::store::{BlockRef, Change};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;

/// How long block tokens from a listing stay valid.
const BLOCK_TOKEN_LIFETIME_MS: i64 = 6 * 3600 * 1000;
/// Blocks per GiB of volume.
const BLOCKS_PER_GIB: i64 = (1 << 30) / BLOCK_SIZE as i64;

/// What a listing answers besides its entries.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockListing<T> {
    /// The entries of this page.
    pub entries: Vec<T>,
    /// When the block tokens expire (unix ms).
    pub expiry_ms: i64,
    /// Volume size in GiB.
    pub volume_size: i64,
    /// Token of the next page.
    pub next_token: Option<String>,
}

/// One entry of ListSnapshotBlocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedBlock {
    /// Block index.
    pub index: i64,
    /// Token for GetSnapshotBlock.
    pub token: String,
}

/// One entry of ListChangedBlocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedBlock {
    /// Block index.
    pub index: i64,
    /// Token of the block in the first snapshot, if it has one there.
    pub first_token: Option<String>,
    /// Token of the block in the second snapshot, if it has one there.
    pub second_token: Option<String>,
}

/// One PutSnapshotBlock call.
#[derive(Debug, Clone)]
pub struct PutBlock<'a> {
    /// Pending snapshot written to.
    pub snapshot_id: &'a str,
    /// Block index.
    pub index: i64,
    /// The block's bytes.
    pub data: &'a [u8],
    /// `x-amz-Data-Length`.
    pub data_length: Option<i64>,
    /// `x-amz-Checksum` (base64 SHA-256).
    pub checksum: Option<&'a str>,
    /// `x-amz-Checksum-Algorithm`.
    pub algorithm: Option<&'a str>,
}

/// Paging of a block listing.
#[derive(Debug, Clone, Default)]
pub struct BlockPage {
    /// First index to list.
    pub starting_index: Option<i64>,
    /// Page size (100..=10000, default 10000).
    pub max_results: Option<i64>,
    /// Token from the previous page.
    pub page_token: Option<String>,
}

/// What garbage collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Unreferenced blocks deleted.
    pub blocks_deleted: usize,
    /// Files that no record knew (left by a crash), deleted.
    pub orphans_deleted: usize,
}

/// What a scrub found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// Blocks checked.
    pub blocks_checked: usize,
    /// Damaged or missing blocks and the snapshots that contain them.
    pub damaged: Vec<(String, Vec<String>)>,
}

fn validation(reason: &'static str, message: impl Into<String>) -> Error {
    Error::EbsValidation {
        reason,
        message: message.into(),
    }
}

/// A pending snapshot the caller owns and may write to.
fn writable_snapshot<'s>(
    state: &'s State,
    ctx: &RequestContext,
    id: &str,
) -> Result<&'s Arc<Snapshot>> {
    let snapshot = state
        .snapshots
        .get(id)
        .filter(|s| s.region == ctx.region && s.owner_id == ctx.account_id())
        .ok_or_else(|| {
            Error::EbsResourceNotFound(format!("The snapshot '{id}' does not exist."))
        })?;
    if snapshot.state != SnapshotState::Pending
        || snapshot.copy_source.is_some()
        || snapshot.taken_from_volume
    {
        return Err(validation(
            "INVALID_SNAPSHOT_ID",
            format!("The snapshot {id} is not a pending snapshot that accepts blocks"),
        ));
    }
    Ok(snapshot)
}

/// A completed snapshot the caller may read.
fn readable_snapshot(state: &State, ctx: &RequestContext, id: &str) -> Result<Arc<Snapshot>> {
    let snapshot = state
        .snapshots
        .get(id)
        .filter(|s| s.region == ctx.region)
        .ok_or_else(|| {
            Error::EbsResourceNotFound(format!("The snapshot '{id}' does not exist."))
        })?;
    if !can_restore(snapshot, ctx.account_id()) {
        return Err(Error::AuthFailure(format!(
            "You do not have access to the data of snapshot {id}"
        )));
    }
    if snapshot.state != SnapshotState::Completed {
        return Err(validation(
            "INVALID_SNAPSHOT_ID",
            format!("The snapshot {id} is not completed"),
        ));
    }
    Ok(snapshot.clone())
}

fn decode_checksum(checksum: &str) -> Result<BlockHash> {
    let bytes = STANDARD
        .decode(checksum.trim())
        .map_err(|_| validation("INVALID_BLOCK", "The checksum is not valid base64"))?;
    bytes
        .try_into()
        .map_err(|_| validation("INVALID_BLOCK", "The checksum is not a SHA256 digest"))
}

fn check_algorithm(algorithm: Option<&str>) -> Result<()> {
    match algorithm {
        None | Some("SHA256") => Ok(()),
        Some(other) => Err(validation(
            "INVALID_PARAMETER_VALUE",
            format!("Checksum algorithm {other} is not supported; use SHA256"),
        )),
    }
}

/// The LINEAR aggregate checksum: SHA-256 over the block digests in index order.
pub fn linear_checksum(blocks: &[BlockRef]) -> BlockHash {
    let mut h = Sha256::new();
    for b in blocks {
        h.update(b.hash);
    }
    h.finalize().into()
}

fn page_start(page: &BlockPage) -> Result<(i64, i64)> {
    let max = page.max_results.unwrap_or(10_000);
    if !(100..=10_000).contains(&max) {
        return Err(validation(
            "INVALID_PARAMETER_VALUE",
            format!("MaxResults {max} is out of range (100..10000)"),
        ));
    }
    let start = match &page.page_token {
        Some(token) => {
            let bytes = STANDARD
                .decode(token.replace(' ', "+"))
                .map_err(|_| validation("INVALID_PAGE_TOKEN", "The page token is not valid"))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| validation("INVALID_PAGE_TOKEN", "The page token is not valid"))?;
            text.strip_prefix("blocks:")
                .and_then(|n| n.parse::<i64>().ok())
                .ok_or_else(|| validation("INVALID_PAGE_TOKEN", "The page token is not valid"))?
        }
        None => page.starting_index.unwrap_or(0),
    };
    if start < 0 {
        return Err(validation(
            "INVALID_PARAMETER_VALUE",
            "StartingBlockIndex must not be negative",
        ));
    }
    Ok((start, max))
}

fn page_token(next_index: i64) -> String {
    STANDARD.encode(format!("blocks:{next_index}"))
}

impl Service {
    /// The MAC of a block token: it binds the caller's account, the snapshot, the block index
    /// and the expiry. The key is read from the store once per process.
    fn token_mac(
        &self,
        ctx: &RequestContext,
        snapshot_id: &str,
        index: i64,
        expiry_ms: i64,
    ) -> Result<Hmac<Sha256>> {
        let secret = match self.block_token_secret.get() {
            Some(secret) => secret,
            None => {
                let loaded = self.store().secret("block-token")?;
                self.block_token_secret.get_or_init(|| loaded)
            }
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(secret)
            .map_err(|_| Error::InternalError("block token key".into()))?;
        mac.update(format!("{}\n{snapshot_id}\n{index}\n{expiry_ms}", ctx.account_id()).as_bytes());
        Ok(mac)
    }

    fn block_token(
        &self,
        ctx: &RequestContext,
        snapshot_id: &str,
        index: i64,
        expiry_ms: i64,
    ) -> Result<String> {
        let mac = self.token_mac(ctx, snapshot_id, index, expiry_ms)?;
        let mut token = expiry_ms.to_be_bytes().to_vec();
        token.extend_from_slice(&mac.finalize().into_bytes());
        // Standard base64: the ebs model's BlockToken pattern is [A-Za-z0-9+/=]+.
        Ok(STANDARD.encode(token))
    }

    fn check_block_token(
        &self,
        ctx: &RequestContext,
        snapshot_id: &str,
        index: i64,
        token: &str,
    ) -> Result<()> {
        let invalid = || {
            validation(
                "INVALID_BLOCK_TOKEN",
                "The block token is not valid for this block",
            )
        };
        // A '+' that reached us unescaped in a query string was decoded as a space.
        let bytes = STANDARD
            .decode(token.replace(' ', "+"))
            .map_err(|_| invalid())?;
        if bytes.len() != 40 {
            return Err(invalid());
        }
        let mut expiry = [0u8; 8];
        expiry.copy_from_slice(&bytes[..8]);
        let expiry_ms = i64::from_be_bytes(expiry);
        self.token_mac(ctx, snapshot_id, index, expiry_ms)?
            .verify_slice(&bytes[8..])
            .map_err(|_| invalid())?;
        if expiry_ms < time::now_ms() {
            return Err(validation(
                "INVALID_BLOCK_TOKEN",
                "The block token has expired",
            ));
        }
        Ok(())
    }

    /// PutSnapshotBlock: stores one 512 KiB block of a pending snapshot after checking its
    /// length and checksum. Returns the block's checksum (base64 SHA-256).
    pub fn put_snapshot_block(&self, ctx: &RequestContext, put: PutBlock<'_>) -> Result<String> {
        let PutBlock {
            snapshot_id,
            index,
            data,
            data_length,
            checksum,
            algorithm,
        } = put;
        let volume_size = {
            let state = self.read()?;
            writable_snapshot(&state, ctx, snapshot_id)?.volume_size
        };
        if index < 0 || index >= volume_size * BLOCKS_PER_GIB {
            return Err(validation(
                "INVALID_BLOCK",
                format!("Block index {index} is outside the volume of {volume_size} GiB"),
            ));
        }
        match data_length {
            Some(n) if n as usize == data.len() => {}
            Some(n) => {
                return Err(validation(
                    "INVALID_BLOCK",
                    format!(
                        "x-amz-Data-Length is {n} but the body has {} bytes",
                        data.len()
                    ),
                ))
            }
            None => {
                return Err(validation(
                    "INVALID_BLOCK",
                    "The x-amz-Data-Length header is required",
                ))
            }
        }
        if data.len() != BLOCK_SIZE {
            return Err(validation(
                "INVALID_BLOCK",
                format!(
                    "A block must be exactly {BLOCK_SIZE} bytes, got {}",
                    data.len()
                ),
            ));
        }
        check_algorithm(algorithm)?;
        let hash = hash_block(data);
        let claimed = checksum
            .ok_or_else(|| validation("INVALID_BLOCK", "The x-amz-Checksum header is required"))?;
        if decode_checksum(claimed)? != hash {
            return Err(validation(
                "INVALID_BLOCK",
                "The block's checksum does not match its data",
            ));
        }
        // Hold the writer side of the GC lock from "bytes stored" to "reference recorded".
        let _writer = self.blocks().writer_guard()?;
        let used = self.blocks().put_hashed(&hash, data)?;
        let stored_len = match used {
            _ if &hash == zero_block_hash() => None,
            // Already stored: its row keeps the real size (this covers a file without a row).
            0 => Some(data.len() as u64),
            n => Some(n),
        };
        self.gated(|state| {
            writable_snapshot(state, ctx, snapshot_id)?;
            self.store()
                .add_pending_block(snapshot_id, index, &hash, stored_len)
        })?;
        Ok(STANDARD.encode(hash))
    }

    /// CompleteSnapshot: checks the block count and the LINEAR checksum, then seals the
    /// snapshot's block map (`completed`), or moves it to `error` when they do not match.
    pub fn complete_snapshot(
        &self,
        ctx: &RequestContext,
        snapshot_id: &str,
        changed_blocks: i64,
        checksum: Option<&str>,
        algorithm: Option<&str>,
        aggregation: Option<&str>,
    ) -> Result<SnapshotState> {
        check_algorithm(algorithm)?;
        match aggregation {
            None | Some("LINEAR") => {}
            Some(other) => {
                return Err(validation(
                    "INVALID_PARAMETER_VALUE",
                    format!("Checksum aggregation method {other} is not supported; use LINEAR"),
                ))
            }
        }
        let expected = checksum.map(decode_checksum).transpose()?;
        self.write(|state, _| {
            let snapshot = writable_snapshot(state, ctx, snapshot_id)?;
            let pending = self.store().pending_blocks(snapshot_id)?;
            let mut problem = None;
            if pending.len() as i64 != changed_blocks {
                problem = Some(format!(
                    "ChangedBlocksCount is {changed_blocks} but the snapshot received {} blocks",
                    pending.len()
                ));
            } else if expected.is_some_and(|e| e != linear_checksum(&pending)) {
                problem = Some("The aggregated checksum does not match the blocks received".into());
            }
            let parent_ok = snapshot.parent_snapshot_id.as_ref().is_none_or(|p| {
                state
                    .snapshots
                    .get(p)
                    .is_some_and(|s| s.state == SnapshotState::Completed)
            });
            if !parent_ok {
                problem = Some("The parent snapshot no longer exists".into());
            }
            let mut done = (**snapshot).clone();
            done.expires_at_ms = None;
            let outcome = if problem.is_some() {
                SnapshotState::Error
            } else {
                SnapshotState::Completed
            };
            let changes = match problem {
                Some(message) => {
                    done.state = SnapshotState::Error;
                    done.state_message = Some(message);
                    vec![
                        Change::DropPendingBlocks(snapshot_id.to_string()),
                        Change::PutSnapshot(done),
                    ]
                }
                None => {
                    done.state = SnapshotState::Completed;
                    done.progress = "100%".into();
                    done.completion_time = Some(time::now_string());
                    vec![
                        Change::SealSnapshotBlocks {
                            snapshot_id: snapshot_id.to_string(),
                            parent: snapshot.parent_snapshot_id.clone(),
                        },
                        Change::PutSnapshot(done),
                    ]
                }
            };
            Ok((changes, outcome))
        })
    }

    /// ListSnapshotBlocks: the blocks holding data, with tokens to read them.
    pub fn list_snapshot_blocks(
        &self,
        ctx: &RequestContext,
        snapshot_id: &str,
        page: &BlockPage,
    ) -> Result<BlockListing<ListedBlock>> {
        let snapshot = readable_snapshot(&*self.read()?, ctx, snapshot_id)?;
        let (start, max) = page_start(page)?;
        let expiry_ms = time::now_ms() + BLOCK_TOKEN_LIFETIME_MS;
        let mut entries = Vec::new();
        let mut next = start;
        // Zero blocks are not listed: readers see zeros wherever no block is listed.
        'pages: loop {
            let batch = self.store().snapshot_blocks(snapshot_id, next, max + 1)?;
            let exhausted = (batch.len() as i64) < max + 1;
            for b in batch {
                if entries.len() as i64 == max {
                    let next_token = Some(page_token(b.index));
                    return Ok(BlockListing {
                        entries,
                        expiry_ms,
                        volume_size: snapshot.volume_size,
                        next_token,
                    });
                }
                next = b.index + 1;
                if &b.hash != zero_block_hash() {
                    entries.push(ListedBlock {
                        index: b.index,
                        token: self.block_token(ctx, snapshot_id, b.index, expiry_ms)?,
                    });
                }
            }
            if exhausted {
                break 'pages;
            }
        }
        Ok(BlockListing {
            entries,
            expiry_ms,
            volume_size: snapshot.volume_size,
            next_token: None,
        })
    }

    /// ListChangedBlocks: blocks that differ between two snapshots of one lineage (or every
    /// block of the second when no first is given).
    pub fn list_changed_blocks(
        &self,
        ctx: &RequestContext,
        first_id: Option<&str>,
        second_id: &str,
        page: &BlockPage,
    ) -> Result<BlockListing<ChangedBlock>> {
        let (second, first) = {
            let state = self.read()?;
            let second = readable_snapshot(&state, ctx, second_id)?;
            let first = match first_id {
                Some(first_id) => {
                    let first = readable_snapshot(&state, ctx, first_id)?;
                    if !is_ancestor(&state, first_id, second_id) {
                        return Err(validation(
                            "UNRELATED_SNAPSHOTS",
                            format!("{first_id} is not an ancestor of {second_id}"),
                        ));
                    }
                    Some(first)
                }
                None => None,
            };
            (second, first)
        };
        let (start, max) = page_start(page)?;
        let load = |id: &str| -> Result<BTreeMap<i64, BlockHash>> {
            Ok(self
                .store()
                .snapshot_blocks(id, start, i64::MAX)?
                .into_iter()
                // A zero block reads like no block: neither is listed nor counts as a change.
                .filter(|b| &b.hash != zero_block_hash())
                .map(|b| (b.index, b.hash))
                .collect())
        };
        let second_map = load(second_id)?;
        let first_map = match &first {
            Some(f) => load(&f.snapshot_id)?,
            None => BTreeMap::new(),
        };
        let mut indexes: Vec<i64> = second_map.keys().chain(first_map.keys()).copied().collect();
        indexes.sort_unstable();
        indexes.dedup();
        let expiry_ms = time::now_ms() + BLOCK_TOKEN_LIFETIME_MS;
        let mut entries = Vec::new();
        for index in indexes {
            let (a, b) = (first_map.get(&index), second_map.get(&index));
            if a == b {
                continue;
            }
            if entries.len() as i64 == max {
                return Ok(BlockListing {
                    entries,
                    expiry_ms,
                    volume_size: second.volume_size,
                    next_token: Some(page_token(index)),
                });
            }
            let token = |id: &str, present: Option<&BlockHash>| -> Result<Option<String>> {
                present
                    .map(|_| self.block_token(ctx, id, index, expiry_ms))
                    .transpose()
            };
            entries.push(ChangedBlock {
                index,
                first_token: match first_id {
                    Some(f) => token(f, a)?,
                    None => None,
                },
                second_token: token(second_id, b)?,
            });
        }
        Ok(BlockListing {
            entries,
            expiry_ms,
            volume_size: second.volume_size,
            next_token: None,
        })
    }

    /// GetSnapshotBlock: one block's data (verified) and checksum, for a valid token.
    pub fn get_snapshot_block(
        &self,
        ctx: &RequestContext,
        snapshot_id: &str,
        index: i64,
        token: &str,
    ) -> Result<(Vec<u8>, String)> {
        readable_snapshot(&*self.read()?, ctx, snapshot_id)?;
        self.check_block_token(ctx, snapshot_id, index, token)?;
        let hash = self.store().block_at(snapshot_id, index)?.ok_or_else(|| {
            validation(
                "INVALID_BLOCK",
                format!("Snapshot {snapshot_id} has no block {index}"),
            )
        })?;
        let data = self.blocks().get(&hash)?;
        Ok((data, STANDARD.encode(hash)))
    }

    /// Deletes unreferenced blocks; with `orphans` (start-up of the server only), also files
    /// that no record knows and temporary files of interrupted writes.
    /// Waits for active writers (imports, uploads) to finish.
    pub fn collect_garbage(&self, orphans: bool) -> Result<GcReport> {
        let _collector = self.blocks().collector_guard()?;
        self.collect_locked(orphans)
    }

    /// Like [`Self::collect_garbage`] without orphans, but skipped while writers are active
    /// (the periodic collector must not stall behind a long import).
    pub fn try_collect_garbage(&self) -> Result<Option<GcReport>> {
        let Some(_collector) = self.blocks().try_collector_guard() else {
            return Ok(None);
        };
        self.collect_locked(false).map(Some)
    }

    fn collect_locked(&self, orphans: bool) -> Result<GcReport> {
        let mut report = GcReport::default();
        let dead = self.store().collectable_blocks()?;
        for hash in &dead {
            self.blocks().backend().delete(hash)?;
        }
        self.store().forget_blocks(&dead)?;
        report.blocks_deleted = dead.len();
        if orphans {
            self.blocks().backend().clean_interrupted()?;
            for hash in self.blocks().backend().list()? {
                if !self.store().block_known(&hash)? {
                    self.blocks().backend().delete(&hash)?;
                    report.orphans_deleted += 1;
                }
            }
        }
        Ok(report)
    }

    /// Verifies every referenced block against its hash.
    pub fn scrub(&self) -> Result<ScrubReport> {
        let mut report = ScrubReport::default();
        for hash in self.store().referenced_blocks()? {
            report.blocks_checked += 1;
            if !self.blocks().verify(&hash)? {
                report
                    .damaged
                    .push((hex::encode(hash), self.store().snapshots_containing(&hash)?));
            }
        }
        Ok(report)
    }
}

/// True if `ancestor` is `descendant` or on its parent chain.
fn is_ancestor(state: &State, ancestor: &str, descendant: &str) -> bool {
    let mut current = Some(descendant.to_string());
    let mut steps = 0;
    while let Some(id) = current {
        if id == ancestor {
            return true;
        }
        steps += 1;
        if steps > 10_000 {
            return false;
        }
        current = state
            .snapshots
            .get(&id)
            .and_then(|s| s.parent_snapshot_id.clone());
    }
    false
}
