//! Disk image files: recognizing their format and turning them into raw bytes, with
//! `qemu-img` (from qemu-utils) doing the format work.
//!
//! Raw images are read in place; qcow2, vmdk, vhd (qemu's `vpc`) and vhdx are converted to a
//! sparse raw file first. Exports go the other way.

use crate::error::{Error, Result};
use std::path::Path;
use std::process::Command;

/// Formats Kiln imports and the name `qemu-img` uses for each.
pub const IMPORT_FORMATS: &[(&str, &str)] = &[
    ("raw", "raw"),
    ("qcow2", "qcow2"),
    ("vmdk", "vmdk"),
    ("vhd", "vpc"),
    ("vhdx", "vhdx"),
];

/// Formats Kiln exports (EC2 ExportImage's set) and the `qemu-img` name of each.
pub const EXPORT_FORMATS: &[(&str, &str)] = &[("raw", "raw"), ("vmdk", "vmdk"), ("vhd", "vpc")];

/// What `qemu-img info` says about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskInfo {
    /// EC2 format name (`raw`, `qcow2`, `vmdk`, `vhd`, `vhdx`).
    pub format: String,
    /// Size of the disk the file holds, in bytes.
    pub virtual_size: u64,
}

fn failed(path: &Path, what: &str) -> Error {
    Error::InvalidParameterValue(format!("{}: {what}", path.display()))
}

/// Inspects a disk image file. Unsupported formats and unreadable files are errors that
/// say what is wrong.
pub fn inspect(path: &Path) -> Result<DiskInfo> {
    if !path.is_file() {
        return Err(failed(path, "no such file"));
    }
    let output = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(path)
        .output()
        .map_err(|e| {
            Error::InternalError(format!("cannot run qemu-img (install qemu-utils): {e}"))
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(failed(
            path,
            &format!("not a readable disk image: {}", stderr.trim()),
        ));
    }
    let info: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| Error::InternalError(format!("qemu-img info output: {e}")))?;
    let qemu_format = info["format"].as_str().unwrap_or("unknown");
    let format = IMPORT_FORMATS
        .iter()
        .find(|(_, q)| *q == qemu_format)
        .map(|(ec2, _)| ec2.to_string())
        .ok_or_else(|| {
            failed(
                path,
                &format!("unsupported disk image format '{qemu_format}'"),
            )
        })?;
    let virtual_size = info["virtual-size"]
        .as_u64()
        .ok_or_else(|| failed(path, "qemu-img reported no virtual size"))?;
    refuse_external_files(path, &info)?;
    Ok(DiskInfo {
        format,
        virtual_size,
    })
}

/// Checks a structured image's consistency (a truncated or corrupt qcow2, vmdk or vhdx
/// fails here; `qemu-img convert` alone would read the missing clusters as zeros).
pub fn check(source: &Path, qemu_format: &str) -> Result<()> {
    if !["qcow2", "vmdk", "vhdx"].contains(&qemu_format) {
        return Ok(());
    }
    let output = Command::new("qemu-img")
        .args(["check", "-q", "-f", qemu_format])
        .arg(source)
        .output()
        .map_err(|e| {
            Error::InternalError(format!("cannot run qemu-img (install qemu-utils): {e}"))
        })?;
    // 0: clean; 3: leaked clusters only (harmless); 63: checks not supported for the file.
    match output.status.code() {
        Some(0) | Some(3) | Some(63) => Ok(()),
        _ => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let first = stderr
                .lines()
                .chain(String::from_utf8_lossy(&output.stdout).lines())
                .find(|l| !l.trim().is_empty())
                .unwrap_or("consistency check failed")
                .to_string();
            Err(failed(
                source,
                &format!("the {qemu_format} image is corrupt or truncated: {first}"),
            ))
        }
    }
}

/// Refuses images that make qemu read other files: a backing file, an external data file, or
/// VMDK extents outside the image file. Importing one would copy a host file the caller may
/// not read (Kiln's database, another account's data) into the caller's snapshot.
fn refuse_external_files(path: &Path, info: &serde_json::Value) -> Result<()> {
    if let Some(backing) = info["backing-filename"].as_str() {
        return Err(failed(
            path,
            &format!("images with a backing file are not accepted (backing file '{backing}')"),
        ));
    }
    let data = &info["format-specific"]["data"];
    if let Some(data_file) = data["data-file"].as_str() {
        return Err(failed(
            path,
            &format!("images with an external data file are not accepted ('{data_file}')"),
        ));
    }
    if info["format"].as_str() == Some("vmdk") {
        let single_file = matches!(
            data["create-type"].as_str(),
            Some("monolithicSparse") | Some("streamOptimized")
        );
        let own_extents = data["extents"].as_array().is_some_and(|extents| {
            extents
                .iter()
                .all(|e| e["filename"].as_str() == Some(&*path.to_string_lossy()))
        });
        if !single_file || !own_extents {
            return Err(failed(
                path,
                "only single-file VMDK images (monolithicSparse, streamOptimized) are accepted",
            ));
        }
    }
    Ok(())
}

/// Converts a non-raw image to a raw file at `out`, checking the whole file first.
pub fn convert_to_raw(source: &Path, format: &str, out: &Path) -> Result<()> {
    let qemu_format = IMPORT_FORMATS
        .iter()
        .find(|(ec2, _)| *ec2 == format)
        .map(|(_, q)| *q)
        .ok_or_else(|| failed(source, &format!("unsupported format '{format}'")))?;
    check(source, qemu_format)?;
    run_qemu_img(
        Command::new("qemu-img")
            .args(["convert", "-f", qemu_format, "-O", "raw"])
            .arg(source)
            .arg(out),
        source,
    )
}

/// Converts a raw file to an export format at `out`.
pub fn convert_from_raw(source: &Path, format: &str, out: &Path) -> Result<()> {
    let qemu_format = EXPORT_FORMATS
        .iter()
        .find(|(ec2, _)| *ec2 == format)
        .map(|(_, q)| *q)
        .ok_or_else(|| {
            Error::InvalidParameterValue(format!(
                "Unsupported export format '{format}': use raw, vmdk or vhd"
            ))
        })?;
    run_qemu_img(
        Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", qemu_format])
            .arg(source)
            .arg(out),
        source,
    )
}

fn run_qemu_img(cmd: &mut Command, source: &Path) -> Result<()> {
    let output = cmd.output().map_err(|e| {
        Error::InternalError(format!("cannot run qemu-img (install qemu-utils): {e}"))
    })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("No space left") {
        return Err(Error::InternalError(format!(
            "no space left on device while converting {}",
            source.display()
        )));
    }
    Err(failed(
        source,
        &format!("conversion failed: {}", stderr.trim()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_qcow2_reports_format_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.qcow2");
        let ok = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&path)
            .arg("3M")
            .status()
            .unwrap();
        assert!(ok.success());
        let info = inspect(&path).unwrap();
        assert_eq!(info.format, "qcow2");
        assert_eq!(info.virtual_size, 3 << 20);
    }

    #[test]
    fn inspect_qcow2_with_backing_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret.raw");
        std::fs::write(&secret, vec![1u8; 1 << 20]).unwrap();
        let overlay = dir.path().join("overlay.qcow2");
        let ok = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&secret)
            .arg(&overlay)
            .arg("1M")
            .status()
            .unwrap();
        assert!(ok.success());
        let err = inspect(&overlay).unwrap_err();
        assert!(err.to_string().contains("backing file"), "{err}");
    }

    #[test]
    fn inspect_vmdk_descriptor_with_flat_host_extent_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret.raw");
        std::fs::write(&secret, vec![1u8; 1 << 20]).unwrap();
        let descriptor = dir.path().join("desc.vmdk");
        std::fs::write(
            &descriptor,
            format!(
                "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 2048 FLAT \"{}\" 0\n",
                secret.display()
            ),
        )
        .unwrap();
        assert!(inspect(&descriptor).is_err());
    }

    #[test]
    fn inspect_missing_file_fails_with_invalid_parameter_value() {
        let err = inspect(Path::new("/nonexistent/disk.img")).unwrap_err();
        assert_eq!(err.code(), "InvalidParameterValue");
    }

    #[test]
    fn convert_truncated_qcow2_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.qcow2");
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&path)
            .arg("64M")
            .status()
            .unwrap();
        // Write data so the image has clusters, then cut the file short.
        Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", "write -P 7 0 4M"])
            .arg(&path)
            .output()
            .unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len / 2).unwrap();
        let out = dir.path().join("out.raw");
        let result = inspect(&path).and_then(|i| convert_to_raw(&path, &i.format, &out));
        assert!(result.is_err());
    }
}
