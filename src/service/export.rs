//! Image export: ExportImage and DescribeExportImageTasks.
//!
//! Kiln has no S3: the export location's bucket is a directory under the data directory's
//! `exports/`, and the file is `exports/BUCKET/PREFIX<task id>.<format>`. The root volume's
//! blocks are read (verified) from the block store, written to a sparse raw file, and
//! converted with `qemu-img` for vmdk and vhd.

use super::images::owned_image;
use super::model::ExportTask;
use super::{RequestContext, Service};
use crate::blocks::{disk, BLOCK_SIZE};
use crate::error::{Error, Result};
use crate::store::Change;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;

/// Parameters of ExportImage.
#[derive(Debug, Clone, Default)]
pub struct ExportRequest {
    /// Image to export.
    pub image_id: String,
    /// `RAW`, `VMDK` or `VHD` (any case).
    pub format: String,
    /// Directory under `exports/`.
    pub bucket: String,
    /// File name prefix.
    pub prefix: String,
    /// Description.
    pub description: Option<String>,
    /// Tags of the task.
    pub tags: Vec<(String, String)>,
}

fn safe_component(name: &str, what: &str) -> Result<()> {
    let ok = !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        && !name.starts_with('/');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidParameterValue(format!(
            "{what} '{name}' may use letters, digits, '-', '_', '.', '/' and no '..'"
        )))
    }
}

impl Service {
    /// Where an export task's file goes.
    pub fn export_path(&self, task: &ExportTask) -> PathBuf {
        self.data_dir
            .join("exports")
            .join(&task.bucket)
            .join(format!("{}{}.{}", task.prefix, task.task_id, task.format))
    }

    /// ExportImage: records the task and queues it.
    pub fn start_export(&self, ctx: &RequestContext, req: ExportRequest) -> Result<ExportTask> {
        let format = req.format.to_ascii_lowercase();
        if !disk::EXPORT_FORMATS.iter().any(|(f, _)| *f == format) {
            return Err(Error::InvalidParameterValue(format!(
                "Value ({}) for parameter DiskImageFormat is invalid. Expected one of: VMDK, RAW, VHD",
                req.format
            )));
        }
        if req.bucket.is_empty() {
            return Err(Error::MissingParameter("S3ExportLocation.S3Bucket".into()));
        }
        safe_component(&req.bucket, "S3Bucket")?;
        if !req.prefix.is_empty() {
            safe_component(&req.prefix, "S3Prefix")?;
        }
        let task = self.write(|state, issuer| {
            let image = owned_image(state, ctx, &req.image_id)?;
            let root = image
                .block_device_mappings
                .iter()
                .find(|m| m.device_name == image.root_device_name)
                .and_then(|m| m.ebs.as_ref()?.snapshot_id.clone())
                .ok_or_else(|| {
                    Error::InvalidParameterValue(format!(
                        "Image {} has no root snapshot",
                        req.image_id
                    ))
                })?;
            ctx.finish_dry_run()?;
            let task = ExportTask {
                task_id: issuer.issue("export-ami")?,
                region: ctx.region.clone(),
                owner_id: ctx.account_id().to_string(),
                image_id: req.image_id.clone(),
                snapshot_id: root.to_string(),
                format: format.clone(),
                description: req.description.clone(),
                bucket: req.bucket.clone(),
                prefix: req.prefix.clone(),
                status: "active".into(),
                status_message: None,
                progress: Some("0".into()),
                tags: req.tags.clone(),
            };
            Ok((vec![Change::PutExportTask(task.clone())], task))
        })?;
        self.export_queue
            .lock()
            .map_err(|_| Error::InternalError("export queue poisoned".into()))?
            .push(task.task_id.clone());
        Ok(task)
    }

    /// Takes the queued export tasks.
    pub fn take_queued_exports(&self) -> Vec<String> {
        self.export_queue
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default()
    }

    /// DescribeExportImageTasks: the caller's tasks in the region.
    pub fn describe_export_tasks(
        &self,
        ctx: &RequestContext,
        ids: &[String],
    ) -> Result<Vec<ExportTask>> {
        ctx.finish_dry_run()?;
        let state = self.read()?;
        let mine = |t: &&ExportTask| t.owner_id == ctx.account_id() && t.region == ctx.region;
        if ids.is_empty() {
            return Ok(state.export_tasks.values().filter(mine).cloned().collect());
        }
        ids.iter()
            .map(|id| {
                state
                    .export_tasks
                    .get(id)
                    .filter(mine)
                    .cloned()
                    .ok_or_else(|| {
                        Error::InvalidParameterValue(format!("The export task {id} does not exist"))
                    })
            })
            .collect()
    }

    fn finish_export(&self, task_id: &str, outcome: Result<()>) {
        let _ = self.write(|state, _| {
            let Some(task) = state.export_tasks.get(task_id) else {
                return Ok((Vec::new(), ()));
            };
            let mut done = task.clone();
            done.progress = None;
            match &outcome {
                Ok(()) => {
                    done.status = "completed".into();
                    done.status_message = None;
                }
                Err(e) => {
                    done.status = "deleted".into();
                    done.status_message = Some(format!("ClientError: {e}"));
                }
            }
            Ok((vec![Change::PutExportTask(done)], ()))
        });
    }

    /// Runs one queued export to its end (on a worker thread).
    pub fn run_export(&self, task_id: &str) {
        let outcome = self.run_export_inner(task_id);
        if let Err(e) = &outcome {
            tracing::warn!(task_id, "export failed: {e}");
        }
        self.finish_export(task_id, outcome);
    }

    fn run_export_inner(&self, task_id: &str) -> Result<()> {
        let (task, volume_size) = {
            let state = self.read()?;
            let task =
                state.export_tasks.get(task_id).cloned().ok_or_else(|| {
                    Error::InternalError(format!("export task {task_id} vanished"))
                })?;
            let size = state
                .snapshots
                .get(&task.snapshot_id)
                .map(|s| s.volume_size)
                .ok_or_else(|| {
                    Error::InvalidParameterValue(format!(
                        "snapshot {} no longer exists",
                        task.snapshot_id
                    ))
                })?;
            (task, size)
        };
        let target = self.export_path(&task);
        let dir = target.parent().map(PathBuf::from).unwrap_or_default();
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::InternalError(format!("creating {}: {e}", dir.display())))?;
        let raw = if task.format == "raw" {
            target.clone()
        } else {
            dir.join(format!(".{task_id}.raw"))
        };
        let written = (|| -> Result<()> {
            let io =
                |e: std::io::Error| Error::InternalError(format!("writing {}: {e}", raw.display()));
            let mut out = std::fs::File::create(&raw).map_err(io)?;
            out.set_len(volume_size as u64 * (1 << 30)).map_err(io)?;
            let mut start = 0;
            loop {
                let page = self
                    .store()
                    .snapshot_blocks(&task.snapshot_id, start, 1024)?;
                let Some(last) = page.last() else { break };
                start = last.index + 1;
                for block in &page {
                    let data = self.blocks().get(&block.hash)?;
                    out.seek(SeekFrom::Start(block.index as u64 * BLOCK_SIZE as u64))
                        .map_err(io)?;
                    out.write_all(&data).map_err(io)?;
                }
            }
            out.sync_all().map_err(io)
        })();
        let converted = written.and_then(|()| {
            if task.format == "raw" {
                Ok(())
            } else {
                disk::convert_from_raw(&raw, &task.format, &target)
            }
        });
        if task.format != "raw" {
            let _ = std::fs::remove_file(&raw);
        }
        if converted.is_err() {
            let _ = std::fs::remove_file(&target);
        }
        converted
    }
}
