//! Disk import: ImportSnapshot and ImportImage tasks.
//!
//! A task is recorded `active`, then run on a worker thread: the file is inspected and, if
//! not raw, converted to raw with `qemu-img`; its 512 KiB blocks are hashed and stored on both
//! cores (zero blocks skipped, duplicates stored once), synced with one `syncfs`, and sealed
//! into a completed snapshot in one transaction — with the image, for image tasks. Any
//! failure marks the task `deleted` with a message, deletes the half-made snapshot (its
//! blocks become garbage) and registers nothing.

use super::model::{
    BlockDeviceMapping, EbsBlockDevice, Image, ImageState, ImportKind, ImportTask, Snapshot,
    SnapshotState, Tags,
};
use super::{time, RequestContext, Service};
use crate::blocks::{disk, hash_block, zero_block_hash, BlockHash, BLOCK_SIZE};
use crate::error::{Error, Result};
use crate::store::Change;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Mutex;

/// Parameters of ImportSnapshot / ImportImage.
#[derive(Debug, Clone, Default)]
pub struct ImportRequest {
    /// `file:///path` on the Kiln host.
    pub url: String,
    /// Declared format (`raw`, `qcow2`, `vmdk`, `vhd`, `vhdx`), any case.
    pub format: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Architecture of the image (image tasks).
    pub architecture: Option<String>,
    /// Boot mode of the image (image tasks).
    pub boot_mode: Option<String>,
    /// Tags for the created snapshot or image.
    pub tags: Vec<(String, String)>,
}

/// Progress callback: (bytes done, bytes total).
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

/// Blocks recorded per metadata transaction during an import.
const BATCH: usize = 256;
/// Hashing threads.
const WORKERS: usize = 2;

/// Where an import reads from.
enum Source {
    /// A file on the Kiln host.
    File(PathBuf),
    /// An http URL on a loopback address.
    Http(String),
}

fn parse_source(url: &str) -> Result<Source> {
    if let Some(path) = url.strip_prefix("file://") {
        if path.starts_with('/') {
            return Ok(Source::File(PathBuf::from(path)));
        }
    }
    if url.starts_with("http://") {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| Error::InvalidParameterValue(format!("Invalid Url '{url}': {e}")))?;
        let host = parsed.host_str().unwrap_or("");
        let loopback = host == "localhost"
            || host
                .trim_matches(|c| c == '[' || c == ']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if loopback {
            return Ok(Source::Http(url.to_string()));
        }
    }
    Err(Error::InvalidParameterValue(format!(
        "Unsupported Url '{url}': Kiln imports from file:///absolute/path on its host or from http:// on a loopback address"
    )))
}

/// Downloads an http source into `out`.
fn download(url: &str, out: &Path) -> Result<()> {
    let mut response = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .and_then(|c| c.get(url).send())
        .map_err(|e| Error::InvalidParameterValue(format!("cannot download {url}: {e}")))?;
    if !response.status().is_success() {
        return Err(Error::InvalidParameterValue(format!(
            "cannot download {url}: HTTP {}",
            response.status()
        )));
    }
    let mut file = std::fs::File::create(out)
        .map_err(|e| Error::InternalError(format!("creating {}: {e}", out.display())))?;
    response
        .copy_to(&mut file)
        .map_err(|e| Error::InvalidParameterValue(format!("downloading {url}: {e}")))?;
    Ok(())
}

impl Service {
    /// Records an import task and queues it for a worker.
    pub fn start_import(
        &self,
        ctx: &RequestContext,
        kind: ImportKind,
        req: ImportRequest,
    ) -> Result<ImportTask> {
        parse_source(&req.url)?;
        if let Some(f) = &req.format {
            let f = f.to_ascii_lowercase();
            if !disk::IMPORT_FORMATS.iter().any(|(ec2, _)| *ec2 == f) {
                return Err(Error::InvalidParameterValue(format!(
                    "Unsupported disk format '{f}': use raw, qcow2, vmdk, vhd or vhdx"
                )));
            }
        }
        for (k, v) in &req.tags {
            super::tags::check_tag(k, v)?;
        }
        let task = self.write(|_, issuer| {
            ctx.finish_dry_run()?;
            let prefix = match kind {
                ImportKind::Snapshot => "import-snap",
                ImportKind::Image => "import-ami",
            };
            let task = ImportTask {
                task_id: issuer.issue(prefix)?,
                kind,
                region: ctx.region.clone(),
                owner_id: ctx.account_id().to_string(),
                description: req.description.clone(),
                url: req.url.clone(),
                declared_format: req.format.as_ref().map(|f| f.to_ascii_lowercase()),
                format: None,
                disk_image_size: None,
                status: "active".into(),
                status_message: Some("pending".into()),
                progress: Some("0".into()),
                snapshot_id: None,
                image_id: None,
                architecture: req.architecture.clone(),
                boot_mode: req.boot_mode.clone(),
                tags: req.tags.clone(),
            };
            Ok((vec![Change::PutImportTask(task.clone())], task))
        })?;
        self.import_queue
            .lock()
            .map_err(|_| Error::InternalError("import queue poisoned".into()))?
            .push(task.task_id.clone());
        Ok(task)
    }

    /// Takes the queued import tasks (the server runs each on a worker thread).
    pub fn take_queued_imports(&self) -> Vec<String> {
        self.import_queue
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default()
    }

    /// The caller's import tasks of one kind in its region, optionally only these ids.
    pub fn describe_import_tasks(
        &self,
        ctx: &RequestContext,
        kind: ImportKind,
        task_ids: &[String],
    ) -> Result<Vec<ImportTask>> {
        ctx.finish_dry_run()?;
        let state = self.read()?;
        let mine = |t: &&ImportTask| {
            t.kind == kind && t.owner_id == ctx.account_id() && t.region == ctx.region
        };
        if task_ids.is_empty() {
            return Ok(state.import_tasks.values().filter(mine).cloned().collect());
        }
        task_ids
            .iter()
            .map(|id| {
                state
                    .import_tasks
                    .get(id)
                    .filter(mine)
                    .cloned()
                    .ok_or_else(|| {
                        Error::InvalidParameterValue(format!("The import task {id} does not exist"))
                    })
            })
            .collect()
    }

    /// CancelImportTask: an active task stops at its next block; returns the previous state.
    pub fn cancel_import_task(&self, ctx: &RequestContext, task_id: &str) -> Result<String> {
        self.write(|state, _| {
            let task = state
                .import_tasks
                .get(task_id)
                .filter(|t| t.owner_id == ctx.account_id() && t.region == ctx.region)
                .ok_or_else(|| {
                    Error::InvalidParameterValue(format!(
                        "The import task {task_id} does not exist"
                    ))
                })?;
            if task.status != "active" {
                return Err(Error::IncorrectState(format!(
                    "The import task {task_id} is {} and cannot be cancelled",
                    task.status
                )));
            }
            ctx.finish_dry_run()?;
            let mut cancelled = task.clone();
            cancelled.status = "deleting".into();
            cancelled.status_message = Some("cancelling".into());
            Ok((vec![Change::PutImportTask(cancelled)], task.status.clone()))
        })
    }

    /// Fails import and export tasks that a restart interrupted, and half-made snapshots.
    pub fn fail_interrupted_imports(&self) -> Result<usize> {
        self.write(|state, _| {
            let mut changes = Vec::new();
            for task in state.import_tasks.values() {
                if task.status == "active" || task.status == "deleting" {
                    let mut failed = task.clone();
                    failed.status = "deleted".into();
                    failed.status_message =
                        Some("The import was interrupted by a restart of Kiln".into());
                    failed.progress = None;
                    changes.push(Change::PutImportTask(failed));
                }
            }
            for task in state.export_tasks.values() {
                if task.status == "active" {
                    let mut failed = task.clone();
                    failed.status = "deleted".into();
                    failed.status_message =
                        Some("The export was interrupted by a restart of Kiln".into());
                    failed.progress = None;
                    changes.push(Change::PutExportTask(failed));
                }
            }
            for snapshot in state.snapshots.values() {
                if !snapshot.importing || snapshot.state != SnapshotState::Pending {
                    continue;
                }
                if snapshot.taken_from_volume {
                    // The caller was given its id: it stays visible, in `error`.
                    let mut failed = (**snapshot).clone();
                    failed.state = SnapshotState::Error;
                    failed.importing = false;
                    failed.state_message =
                        Some("The snapshot was interrupted by a restart of Kiln".into());
                    changes.push(Change::DropPendingBlocks(snapshot.snapshot_id.clone()));
                    changes.push(Change::PutSnapshot(failed));
                } else {
                    changes.push(Change::DeleteSnapshot(snapshot.snapshot_id.clone()));
                }
            }
            let n = changes.len();
            Ok((changes, n))
        })
    }

    fn task(&self, task_id: &str) -> Result<ImportTask> {
        self.read()?
            .import_tasks
            .get(task_id)
            .cloned()
            .ok_or_else(|| Error::InternalError(format!("import task {task_id} vanished")))
    }

    fn update_task(&self, task_id: &str, edit: impl FnOnce(&mut ImportTask)) -> Result<()> {
        self.write(|state, _| {
            let mut task =
                state.import_tasks.get(task_id).cloned().ok_or_else(|| {
                    Error::InternalError(format!("import task {task_id} vanished"))
                })?;
            edit(&mut task);
            Ok((vec![Change::PutImportTask(task)], ()))
        })
    }

    fn is_cancelled(&self, task_id: &str) -> bool {
        self.read()
            .map(|s| {
                s.import_tasks
                    .get(task_id)
                    .is_none_or(|t| t.status != "active")
            })
            .unwrap_or(true)
    }

    /// Runs one queued task to its end (on a worker thread).
    pub fn run_import(&self, task_id: &str) {
        let outcome = self.run_import_inner(task_id);
        if let Err(e) = outcome {
            tracing::warn!(task_id, "import failed: {e}");
            let snapshot = self.task(task_id).ok().and_then(|t| t.snapshot_id);
            let _ = self.write(|state, _| {
                let mut changes = Vec::new();
                if let Some(id) = &snapshot {
                    if state.snapshots.contains_key(id) {
                        changes.push(Change::DeleteSnapshot(id.clone()));
                    }
                }
                if let Some(task) = state.import_tasks.get(task_id) {
                    let mut failed = task.clone();
                    let cancelled = task.status == "deleting";
                    failed.status = "deleted".into();
                    failed.progress = None;
                    failed.status_message = Some(if cancelled {
                        "The import task was cancelled".into()
                    } else {
                        format!("ClientError: {e}")
                    });
                    changes.push(Change::PutImportTask(failed));
                }
                Ok((changes, ()))
            });
        }
    }

    fn run_import_inner(&self, task_id: &str) -> Result<()> {
        let task = self.task(task_id)?;
        let tmp_dir = self.data_dir.join("tmp");
        std::fs::create_dir_all(&tmp_dir)
            .map_err(|e| Error::InternalError(format!("creating {}: {e}", tmp_dir.display())))?;
        let downloaded = tmp_dir.join(format!("{task_id}.download"));
        let source = match parse_source(&task.url)? {
            Source::File(path) => self.allowed_import_path(&path)?,
            Source::Http(url) => {
                self.update_task(task_id, |t| t.status_message = Some("downloading".into()))?;
                download(&url, &downloaded)?;
                downloaded.clone()
            }
        };
        let result = self.import_file(&task, &source, &tmp_dir);
        let _ = std::fs::remove_file(&downloaded);
        result
    }

    /// The canonical path of a `file://` import if it lies under an import root and outside
    /// the data directory (symlinks resolved first).
    fn allowed_import_path(&self, path: &Path) -> Result<PathBuf> {
        let real = std::fs::canonicalize(path)
            .map_err(|e| Error::InvalidParameterValue(format!("{}: {e}", path.display())))?;
        let data_dir =
            std::fs::canonicalize(&self.data_dir).unwrap_or_else(|_| self.data_dir.clone());
        let under_root = self
            .config()
            .import_roots
            .iter()
            .filter_map(|r| std::fs::canonicalize(r).ok())
            .any(|root| real.starts_with(root));
        if !under_root || real.starts_with(&data_dir) {
            return Err(Error::InvalidParameterValue(format!(
                "{} is outside the directories this Kiln imports from (kiln serve --import-root)",
                path.display()
            )));
        }
        Ok(real)
    }

    fn import_file(&self, task: &ImportTask, source: &Path, tmp_dir: &Path) -> Result<()> {
        let task_id = task.task_id.as_str();
        let info = disk::inspect(source)?;
        if let Some(declared) = &task.declared_format {
            if *declared != info.format {
                return Err(Error::InvalidParameterValue(format!(
                    "The disk image is {} but its format was given as {declared}",
                    info.format
                )));
            }
        }
        let file_size = std::fs::metadata(source).map(|m| m.len()).unwrap_or(0);
        self.update_task(task_id, |t| {
            t.format = Some(info.format.clone());
            t.disk_image_size = Some(file_size);
            t.status_message = Some("converting".into());
        })?;
        let converted = tmp_dir.join(format!("{task_id}.raw"));
        let raw_path = if info.format == "raw" {
            source.to_path_buf()
        } else {
            disk::convert_to_raw(source, &info.format, &converted)?;
            converted.clone()
        };
        let result = self.import_raw_for_task(task, &raw_path, info.virtual_size);
        let _ = std::fs::remove_file(&converted);
        result
    }

    fn import_raw_for_task(&self, task: &ImportTask, raw: &Path, virtual_size: u64) -> Result<()> {
        let ctx = RequestContext {
            account: self.store().find_account(&task.owner_id)?.ok_or_else(|| {
                Error::InternalError(format!("account {} vanished", task.owner_id))
            })?,
            region: task.region.clone(),
            dry_run: false,
        };
        let volume_size = virtual_size.div_ceil(1 << 30).max(1) as i64;
        let description = task.description.clone().unwrap_or_default();
        let snapshot_id = self.write(|_, issuer| {
            let id = issuer.issue("snap")?;
            let snapshot = new_import_snapshot(&ctx, id.clone(), volume_size, description.clone());
            Ok((vec![Change::PutSnapshot(snapshot)], id))
        })?;
        self.update_task(&task.task_id, |t| {
            t.snapshot_id = Some(snapshot_id.clone());
            t.status_message = Some("importing".into());
        })?;
        let task_id = task.task_id.clone();
        let last_percent = Mutex::new(0u64);
        let progress = |done: u64, total: u64| {
            let percent = (done * 100).checked_div(total).unwrap_or(100);
            let Ok(mut last) = last_percent.lock() else {
                return;
            };
            if percent >= *last + 5 {
                *last = percent;
                let _ = self.update_task(&task_id, |t| t.progress = Some(percent.to_string()));
            }
        };
        let cancelled = || self.is_cancelled(&task.task_id);
        self.store_raw_blocks(&snapshot_id, raw, virtual_size, &progress, &cancelled)?;
        // Seal the snapshot, register the image (image tasks) and finish the task together.
        self.write(|state, issuer| {
            let snapshot = state
                .snapshots
                .get(&snapshot_id)
                .ok_or_else(|| Error::InternalError(format!("snapshot {snapshot_id} vanished")))?;
            let current = state
                .import_tasks
                .get(&task.task_id)
                .ok_or_else(|| Error::InternalError("import task vanished".into()))?;
            if current.status != "active" {
                return Err(Error::IncorrectState(
                    "The import task was cancelled".into(),
                ));
            }
            let mut done = (**snapshot).clone();
            done.state = SnapshotState::Completed;
            done.progress = "100%".into();
            done.completion_time = Some(time::now_string());
            done.importing = false;
            if task.kind == ImportKind::Snapshot && !task.tags.is_empty() {
                done.tags = task_tags(&ctx, task);
            }
            let mut finished = current.clone();
            finished.status = "completed".into();
            finished.status_message = None;
            finished.progress = None;
            let mut changes = vec![
                Change::SealSnapshotBlocks {
                    snapshot_id: snapshot_id.clone(),
                    parent: None,
                },
                Change::PutSnapshot(done),
            ];
            if task.kind == ImportKind::Image {
                let image_id = issuer.issue("ami")?;
                changes.push(Change::PutImage(imported_image(
                    &ctx,
                    task,
                    &image_id,
                    &snapshot_id,
                    volume_size,
                )));
                finished.image_id = Some(image_id);
            }
            changes.push(Change::PutImportTask(finished));
            Ok((changes, ()))
        })
    }

    /// A completed snapshot of a local raw file, owned by the context's account (used by the
    /// Quick Start builder; the file is read directly, not through an import task).
    pub fn snapshot_from_file(
        &self,
        ctx: &RequestContext,
        raw: &Path,
        description: &str,
    ) -> Result<String> {
        let size = std::fs::metadata(raw)
            .map_err(|e| Error::InvalidParameterValue(format!("{}: {e}", raw.display())))?
            .len();
        let volume_size = size.div_ceil(1 << 30).max(1) as i64;
        let snapshot_id = self.write(|_, issuer| {
            let id = issuer.issue("snap")?;
            let snapshot =
                new_import_snapshot(ctx, id.clone(), volume_size, description.to_string());
            Ok((vec![Change::PutSnapshot(snapshot)], id))
        })?;
        self.store_raw_blocks(&snapshot_id, raw, size, &|_, _| {}, &|| false)?;
        self.write(|state, _| {
            let snapshot = state
                .snapshots
                .get(&snapshot_id)
                .ok_or_else(|| Error::InternalError(format!("snapshot {snapshot_id} vanished")))?;
            let mut done = (**snapshot).clone();
            done.state = SnapshotState::Completed;
            done.progress = "100%".into();
            done.completion_time = Some(time::now_string());
            done.importing = false;
            Ok((
                vec![
                    Change::SealSnapshotBlocks {
                        snapshot_id: snapshot_id.clone(),
                        parent: None,
                    },
                    Change::PutSnapshot(done),
                ],
                (),
            ))
        })?;
        Ok(snapshot_id)
    }

    /// Hashes and stores the blocks of a raw disk into a pending snapshot, on `WORKERS`
    /// threads, recording them in batches; syncs the block store before returning.
    pub fn store_raw_blocks(
        &self,
        snapshot_id: &str,
        raw: &Path,
        virtual_size: u64,
        progress: Progress<'_>,
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> Result<()> {
        let mut file = std::fs::File::open(raw)
            .map_err(|e| Error::InvalidParameterValue(format!("{}: {e}", raw.display())))?;
        let total_blocks = virtual_size.div_ceil(BLOCK_SIZE as u64);
        // Writers hold the GC lock shared until every stored block is recorded as pending.
        let _writer = self.blocks().writer_guard()?;
        let (work_tx, work_rx) = mpsc::sync_channel::<(i64, Vec<u8>)>(WORKERS * 4);
        let work_rx = Mutex::new(work_rx);
        let (done_tx, done_rx) = mpsc::channel::<Result<(i64, BlockHash, u64)>>();
        let failed = AtomicBool::new(false);
        std::thread::scope(|scope| -> Result<()> {
            for _ in 0..WORKERS {
                let done_tx = done_tx.clone();
                let work_rx = &work_rx;
                scope.spawn(move || loop {
                    let next = work_rx.lock().ok().and_then(|rx| rx.recv().ok());
                    let Some((index, data)) = next else { break };
                    let hash = hash_block(&data);
                    let stored = if &hash == zero_block_hash() {
                        Ok(0)
                    } else {
                        self.blocks().put_hashed_unsynced(&hash, &data)
                    };
                    if done_tx.send(stored.map(|len| (index, hash, len))).is_err() {
                        break;
                    }
                });
            }
            drop(done_tx);
            let failed = &failed;
            let reader = scope.spawn(move || -> Result<()> {
                for index in 0..total_blocks {
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                    if index % 64 == 0 && cancelled() {
                        return Err(Error::IncorrectState(
                            "The import task was cancelled".into(),
                        ));
                    }
                    let mut data = vec![0u8; BLOCK_SIZE];
                    read_full(&mut file, &mut data).map_err(|e| {
                        Error::InvalidParameterValue(format!("reading {}: {e}", raw.display()))
                    })?;
                    if work_tx.send((index as i64, data)).is_err() {
                        break;
                    }
                }
                Ok(())
            });
            let mut batch: Vec<(i64, BlockHash, Option<u64>)> = Vec::with_capacity(BATCH);
            let mut done = 0u64;
            let mut first_error = None;
            for result in done_rx {
                match result {
                    Ok((index, hash, len)) => {
                        done += 1;
                        if &hash != zero_block_hash() {
                            // `len` is 0 when the block was already stored: its row already exists and
                            // keeps its size; BLOCK_SIZE only covers a file left without a row.
                            let stored = if len == 0 { BLOCK_SIZE as u64 } else { len };
                            batch.push((index, hash, Some(stored)));
                        }
                        if batch.len() >= BATCH {
                            self.store().add_pending_blocks(snapshot_id, &batch)?;
                            batch.clear();
                        }
                        if done.is_multiple_of(32) {
                            progress(done * BLOCK_SIZE as u64, virtual_size);
                        }
                    }
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        first_error.get_or_insert(e);
                    }
                }
            }
            // Record what was stored even when failing: the snapshot's deletion then makes
            // those blocks ordinary garbage instead of orphans found only at restart.
            self.store().add_pending_blocks(snapshot_id, &batch)?;
            reader
                .join()
                .map_err(|_| Error::InternalError("import reader panicked".into()))??;
            if let Some(e) = first_error {
                return Err(e);
            }
            progress(virtual_size, virtual_size);
            Ok(())
        })?;
        self.blocks().sync()
    }
}

/// Reads as much of `buf` as the file has; the rest stays zero (the last block is padded).
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = file.read(&mut buf[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(())
}

fn new_import_snapshot(
    ctx: &RequestContext,
    snapshot_id: String,
    volume_size: i64,
    description: String,
) -> Snapshot {
    Snapshot {
        description,
        importing: true,
        ..Snapshot::new_pending(
            snapshot_id,
            ctx.region.clone(),
            ctx.account_id().to_string(),
            volume_size,
            time::now_string(),
        )
    }
}

/// The task's tags, as the caller's tags on what the task creates.
fn task_tags(ctx: &RequestContext, task: &ImportTask) -> Tags {
    Tags::from_pairs(
        ctx.account_id(),
        task.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    )
}

fn imported_image(
    ctx: &RequestContext,
    task: &ImportTask,
    image_id: &str,
    snapshot_id: &str,
    volume_size: i64,
) -> Image {
    let tags = task_tags(ctx, task);
    Image {
        image_id: image_id.into(),
        region: ctx.region.as_str().into(),
        owner_id: ctx.account_id().into(),
        // Imported images are named after their task, as on AWS.
        name: task.task_id.as_str().into(),
        description: task.description.as_deref().map(Into::into),
        architecture: task
            .architecture
            .clone()
            .unwrap_or_else(|| "x86_64".into())
            .into(),
        image_type: "machine".into(),
        virtualization_type: "hvm".into(),
        root_device_name: "/dev/sda1".into(),
        root_device_type: "ebs".into(),
        block_device_mappings: vec![BlockDeviceMapping {
            device_name: "/dev/sda1".into(),
            virtual_name: None,
            ebs: Some(EbsBlockDevice {
                snapshot_id: Some(snapshot_id.into()),
                volume_size: Some(volume_size),
                volume_type: Some("gp2".into()),
                delete_on_termination: Some(true),
                encrypted: Some(false),
                ..Default::default()
            }),
            no_device: false,
        }],
        boot_mode: task.boot_mode.as_deref().map(Into::into),
        ena_support: Some(true),
        imds_support: None,
        creation_date: time::now_string().into(),
        state: ImageState::Available,
        launch_permissions: Vec::new(),
        pending_work: None,
        tags,
        details: None,
    }
}
