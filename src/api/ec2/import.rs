//! Disk import actions: ImportSnapshot, ImportImage, their Describe actions, CancelImportTask.

use super::Call;
use crate::api::query::Params;
use crate::api::xml::XmlWriter;
use crate::error::{Error, Result};
use crate::service::import::ImportRequest;
use crate::service::model::{ImportKind, ImportTask};

fn tags_for(p: &Params, resource_type: &str) -> Result<Vec<(String, String)>> {
    Ok(p.tag_specifications()?
        .into_iter()
        .filter(|s| s.resource_type == resource_type)
        .flat_map(|s| s.tags)
        .collect())
}

fn write_snapshot_detail(w: &mut XmlWriter, t: &ImportTask) {
    w.opt_leaf("description", t.description.as_deref());
    if let Some(size) = t.disk_image_size {
        w.leaf("diskImageSize", &format!("{size}.0"));
    }
    w.opt_leaf(
        "format",
        t.format
            .as_deref()
            .or(t.declared_format.as_deref())
            .map(|f| f.to_ascii_uppercase())
            .as_deref(),
    )
    .opt_leaf("progress", t.progress.as_deref())
    .opt_leaf("snapshotId", t.snapshot_id.as_deref())
    .leaf("status", &t.status)
    .opt_leaf("statusMessage", t.status_message.as_deref())
    .leaf("url", &t.url)
    .bool_leaf("encrypted", false);
}

fn write_tags(w: &mut XmlWriter, t: &ImportTask) {
    if t.tags.is_empty() {
        return;
    }
    w.open("tagSet");
    for (k, v) in &t.tags {
        w.open("item").leaf("key", k).leaf("value", v).close("item");
    }
    w.close("tagSet");
}

fn write_snapshot_task(w: &mut XmlWriter, t: &ImportTask) {
    w.opt_leaf("description", t.description.as_deref())
        .leaf("importTaskId", &t.task_id);
    w.open("snapshotTaskDetail");
    write_snapshot_detail(w, t);
    w.close("snapshotTaskDetail");
    write_tags(w, t);
}

fn write_image_task(w: &mut XmlWriter, t: &ImportTask) {
    w.leaf(
        "architecture",
        t.architecture.as_deref().unwrap_or("x86_64"),
    )
    .opt_leaf("description", t.description.as_deref())
    .bool_leaf("encrypted", false)
    .leaf("hypervisor", "xen")
    .opt_leaf("imageId", t.image_id.as_deref())
    .leaf("importTaskId", &t.task_id)
    .leaf("platform", "Linux")
    .opt_leaf("progress", t.progress.as_deref())
    .leaf("status", &t.status)
    .opt_leaf("statusMessage", t.status_message.as_deref())
    .opt_leaf("bootMode", t.boot_mode.as_deref());
    w.open("snapshotDetailSet")
        .open("item")
        .leaf("deviceName", "/dev/sda1");
    write_snapshot_detail(w, t);
    w.close("item").close("snapshotDetailSet");
    write_tags(w, t);
}

/// ImportSnapshot.
pub fn import_snapshot(call: &Call<'_>) -> Result<String> {
    let p = call.params;
    let disk = p.nested("DiskContainer");
    let url = disk
        .string("Url")
        .ok_or_else(|| Error::MissingParameter("DiskContainer.Url".into()))?;
    let task = call.service.start_import(
        call.ctx,
        ImportKind::Snapshot,
        ImportRequest {
            url,
            format: disk.string("Format"),
            description: p
                .string("Description")
                .or_else(|| disk.string("Description")),
            architecture: None,
            boot_mode: None,
            tags: tags_for(p, "import-snapshot-task")?,
        },
    )?;
    let mut w = call.response();
    write_snapshot_task(&mut w, &task);
    Ok(call.finish(w))
}

/// ImportImage (one disk container: the root volume).
pub fn import_image(call: &Call<'_>) -> Result<String> {
    let p = call.params;
    let disks = p.structs("DiskContainer")?;
    let disk = match disks.as_slice() {
        [one] => one,
        [] => return Err(Error::MissingParameter("DiskContainer".into())),
        _ => {
            return Err(Error::InvalidParameterValue(
                "Kiln imports one disk per image: give exactly one DiskContainer".into(),
            ))
        }
    };
    let url = disk
        .string("Url")
        .ok_or_else(|| Error::MissingParameter("DiskContainer.1.Url".into()))?;
    let architecture = p.string("Architecture");
    if let Some(a) = &architecture {
        if !["i386", "x86_64", "arm64"].contains(&a.as_str()) {
            return Err(Error::InvalidParameterValue(format!(
                "Unsupported architecture '{a}'"
            )));
        }
    }
    let task = call.service.start_import(
        call.ctx,
        ImportKind::Image,
        ImportRequest {
            url,
            format: disk.string("Format"),
            description: p.string("Description"),
            architecture,
            boot_mode: p.string("BootMode"),
            tags: tags_for(p, "import-image-task")?,
        },
    )?;
    let mut w = call.response();
    write_image_task(&mut w, &task);
    Ok(call.finish(w))
}

/// DescribeImportSnapshotTasks.
pub fn describe_import_snapshot_tasks(call: &Call<'_>) -> Result<String> {
    let tasks = call.service.describe_import_tasks(
        call.ctx,
        ImportKind::Snapshot,
        &call.params.list("ImportTaskId")?,
    )?;
    let mut w = call.response();
    w.open("importSnapshotTaskSet");
    for t in &tasks {
        w.open("item");
        write_snapshot_task(&mut w, t);
        w.close("item");
    }
    w.close("importSnapshotTaskSet");
    Ok(call.finish(w))
}

/// DescribeImportImageTasks.
pub fn describe_import_image_tasks(call: &Call<'_>) -> Result<String> {
    let tasks = call.service.describe_import_tasks(
        call.ctx,
        ImportKind::Image,
        &call.params.list("ImportTaskId")?,
    )?;
    let mut w = call.response();
    w.open("importImageTaskSet");
    for t in &tasks {
        w.open("item");
        write_image_task(&mut w, t);
        w.close("item");
    }
    w.close("importImageTaskSet");
    Ok(call.finish(w))
}

/// CancelImportTask.
pub fn cancel_import_task(call: &Call<'_>) -> Result<String> {
    let task_id = call.params.required("ImportTaskId")?;
    let previous = call.service.cancel_import_task(call.ctx, task_id)?;
    let mut w = call.response();
    w.leaf("importTaskId", task_id)
        .leaf("previousState", &previous)
        .leaf("state", "deleting");
    Ok(call.finish(w))
}

fn write_export_task(w: &mut XmlWriter, t: &crate::service::model::ExportTask) {
    w.opt_leaf("description", t.description.as_deref())
        .leaf("exportImageTaskId", &t.task_id)
        .leaf("imageId", &t.image_id)
        .leaf("diskImageFormat", &t.format.to_ascii_uppercase())
        .opt_leaf("progress", t.progress.as_deref());
    w.open("s3ExportLocation")
        .leaf("s3Bucket", &t.bucket)
        .leaf("s3Prefix", &t.prefix)
        .close("s3ExportLocation");
    w.leaf("status", &t.status)
        .opt_leaf("statusMessage", t.status_message.as_deref());
    if !t.tags.is_empty() {
        w.open("tagSet");
        for (k, v) in &t.tags {
            w.open("item").leaf("key", k).leaf("value", v).close("item");
        }
        w.close("tagSet");
    }
}

/// ExportImage.
pub fn export_image(call: &Call<'_>) -> Result<String> {
    let p = call.params;
    let location = p.nested("S3ExportLocation");
    let task = call.service.start_export(
        call.ctx,
        crate::service::export::ExportRequest {
            image_id: p.required("ImageId")?.to_string(),
            format: p.required("DiskImageFormat")?.to_string(),
            bucket: location
                .string("S3Bucket")
                .ok_or_else(|| Error::MissingParameter("S3ExportLocation.S3Bucket".into()))?,
            prefix: location.string("S3Prefix").unwrap_or_default(),
            description: p.string("Description"),
            tags: tags_for(p, "export-image-task")?,
        },
    )?;
    let mut w = call.response();
    write_export_task(&mut w, &task);
    Ok(call.finish(w))
}

/// DescribeExportImageTasks.
pub fn describe_export_image_tasks(call: &Call<'_>) -> Result<String> {
    let tasks = call
        .service
        .describe_export_tasks(call.ctx, &call.params.list("ExportImageTaskId")?)?;
    let mut w = call.response();
    w.open("exportImageTaskSet");
    for t in &tasks {
        w.open("item");
        write_export_task(&mut w, t);
        w.close("item");
    }
    w.close("exportImageTaskSet");
    Ok(call.finish(w))
}
