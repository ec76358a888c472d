//! `kiln image import` and `kiln image export`: disk files in and out of a running Kiln,
//! through its public API, with a progress bar.

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use kiln::blocks::{disk, BLOCK_SIZE};
use kiln::client::{xml_all, xml_text, Client};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Options of `kiln image import`.
pub struct ImportOptions {
    /// Disk image file.
    pub file: PathBuf,
    /// Image name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Architecture.
    pub architecture: String,
    /// Boot mode, if any.
    pub boot_mode: Option<String>,
    /// Root device name.
    pub root_device_name: String,
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(&format!(
        "{what} [{{bar:40}}] {{percent:>3}}% {{elapsed_precise}} eta {{eta}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar
}

/// Imports a disk file as a snapshot, registers an HVM image over it, prints the image id.
pub fn import(client: &Client, opts: ImportOptions) -> anyhow::Result<()> {
    let path = std::fs::canonicalize(&opts.file)
        .with_context(|| format!("{} cannot be read", opts.file.display()))?;
    let url = format!("file://{}", path.display());
    let description = opts.description.clone().unwrap_or_default();
    let started = client.ec2(&[
        ("Action", "ImportSnapshot"),
        ("DiskContainer.Url", &url),
        ("Description", &description),
    ])?;
    let task_id = xml_text(&started, "importTaskId").context("no importTaskId in the answer")?;
    let progress = bar(100, "importing");
    let snapshot_id = loop {
        std::thread::sleep(Duration::from_millis(200));
        let answer = client.ec2(&[
            ("Action", "DescribeImportSnapshotTasks"),
            ("ImportTaskId.1", &task_id),
        ])?;
        let status = xml_text(&answer, "status").unwrap_or_default();
        if let Some(p) = xml_text(&answer, "progress").and_then(|p| p.parse::<u64>().ok()) {
            progress.set_position(p);
        }
        match status.as_str() {
            "completed" => break xml_text(&answer, "snapshotId").context("no snapshotId")?,
            "active" | "deleting" => continue,
            _ => {
                progress.abandon();
                bail!(
                    "import failed: {}",
                    xml_text(&answer, "statusMessage").unwrap_or(status)
                );
            }
        }
    };
    progress.finish();
    let mut params = vec![
        ("Action", "RegisterImage"),
        ("Name", opts.name.as_str()),
        ("Architecture", opts.architecture.as_str()),
        ("VirtualizationType", "hvm"),
        ("EnaSupport", "true"),
        ("RootDeviceName", opts.root_device_name.as_str()),
        (
            "BlockDeviceMapping.1.DeviceName",
            opts.root_device_name.as_str(),
        ),
        ("BlockDeviceMapping.1.Ebs.SnapshotId", snapshot_id.as_str()),
        ("BlockDeviceMapping.1.Ebs.DeleteOnTermination", "true"),
    ];
    if let Some(d) = &opts.description {
        params.push(("Description", d));
    }
    if let Some(b) = &opts.boot_mode {
        params.push(("BootMode", b));
    }
    let registered = client.ec2(&params)?;
    let image_id = xml_text(&registered, "imageId").context("no imageId in the answer")?;
    eprintln!("imported {} as snapshot {snapshot_id}", path.display());
    println!("{image_id}");
    Ok(())
}

/// The root snapshot of an image, from DescribeImages.
fn root_snapshot(client: &Client, image_id: &str) -> anyhow::Result<String> {
    let answer = client.ec2(&[("Action", "DescribeImages"), ("ImageId.1", image_id)])?;
    let root = xml_text(&answer, "rootDeviceName")
        .with_context(|| format!("image {image_id} not found"))?;
    // Find the mapping of the root device, then its snapshot.
    let marker = format!("<deviceName>{root}</deviceName>");
    let mapping = answer
        .split("<item>")
        .find(|item| item.contains(&marker))
        .with_context(|| format!("image {image_id} has no mapping for its root device {root}"))?;
    xml_all(&format!("<item>{mapping}"), "snapshotId")
        .into_iter()
        .next()
        .with_context(|| format!("the root device of {image_id} has no snapshot"))
}

/// Writes an image's root volume to `file` in `format` (raw, vmdk or vhd).
pub fn export(client: &Client, image_id: &str, file: &Path, format: &str) -> anyhow::Result<()> {
    if !disk::EXPORT_FORMATS.iter().any(|(f, _)| *f == format) {
        bail!("unsupported format {format}: use raw, vmdk or vhd");
    }
    let snapshot_id = root_snapshot(client, image_id)?;
    let raw_path = if format == "raw" {
        file.to_path_buf()
    } else {
        file.with_extension("kiln-export.raw")
    };
    let mut out = std::fs::File::create(&raw_path)
        .with_context(|| format!("creating {}", raw_path.display()))?;
    let mut token: Option<String> = None;
    let mut progress: Option<ProgressBar> = None;
    loop {
        let mut path = format!("/snapshots/{snapshot_id}/blocks?maxResults=10000");
        if let Some(t) = &token {
            path.push_str(&format!("&pageToken={t}"));
        }
        let page: serde_json::Value = serde_json::from_slice(&client.ebs_get(&path)?)?;
        let volume_bytes = page["VolumeSize"].as_u64().unwrap_or(0) << 30;
        if progress.is_none() {
            out.set_len(volume_bytes)?;
            progress = Some(bar(volume_bytes / BLOCK_SIZE as u64, "exporting"));
        }
        for block in page["Blocks"].as_array().into_iter().flatten() {
            let index = block["BlockIndex"].as_u64().context("BlockIndex")?;
            let block_token = block["BlockToken"].as_str().context("BlockToken")?;
            let data = client.ebs_get(&format!(
                "/snapshots/{snapshot_id}/blocks/{index}?blockToken={block_token}"
            ))?;
            out.seek(SeekFrom::Start(index * BLOCK_SIZE as u64))?;
            out.write_all(&data)?;
            if let Some(p) = &progress {
                p.set_position(index + 1);
            }
        }
        token = page["NextToken"].as_str().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    out.sync_all()?;
    drop(out);
    if let Some(p) = progress {
        p.finish();
    }
    if format != "raw" {
        let converted = disk::convert_from_raw(&raw_path, format, file);
        let _ = std::fs::remove_file(&raw_path);
        converted?;
    }
    eprintln!(
        "exported {image_id} (snapshot {snapshot_id}) to {}",
        file.display()
    );
    Ok(())
}
