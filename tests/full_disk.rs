//! A full disk during an import: the task fails with a clear message, nothing is registered,
//! the space comes back, and the store stays consistent.
//!
//! The data directory is a 24 MiB tmpfs mounted by the test (CI and developers run as root).

mod common;

use common::{p, KilnServer};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Unmounts the tmpfs when dropped (declared before the server, so dropped after it).
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(dir: &Path, size: &str) {
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .expect("run mount");
    assert!(status.success(), "mounting a tmpfs needs root");
}

fn used_bytes(dir: &Path) -> u64 {
    let out = Command::new("du").arg("-sb").arg(dir).output().expect("du");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut bytes);
    bytes
}

fn wait_task(client: &common::Client, task_id: &str) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body = client.ec2_ok(
            "DescribeImportSnapshotTasks",
            &p(&[("ImportTaskId.1", task_id)]),
        );
        let status = common::xml_value(&body, "status").unwrap_or_default();
        assert!(Instant::now() < deadline, "import {task_id} still {status}");
        if status != "active" && status != "deleting" {
            return (
                status,
                common::xml_value(&body, "statusMessage").unwrap_or_default(),
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn import_onto_full_disk_fails_task_frees_space_and_keeps_store_clean() {
    let mut mount = None;
    let server = KilnServer::start_with(|dir| {
        mount_tmpfs(dir, "24m");
        mount = Some(Tmpfs(dir.to_path_buf()));
    });
    let _mount = mount;
    let client = server.client("us-east-1");
    let source = tempfile::NamedTempFile::new().expect("source file");
    let random = random_bytes(48 << 20);
    std::fs::write(source.path(), &random).expect("write source");
    let before = used_bytes(&server.data_dir().join("blocks"));

    let started = client.ec2_ok(
        "ImportSnapshot",
        &p(&[(
            "DiskContainer.Url",
            &format!("file://{}", source.path().display()),
        )]),
    );
    let task_id = common::xml_value(&started, "importTaskId").expect("task id");
    let (status, message) = wait_task(&client, &task_id);

    assert_eq!(status, "deleted");
    assert!(message.contains("no space left"), "message: {message}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while used_bytes(&server.data_dir().join("blocks")) > before + (1 << 20) {
        assert!(
            Instant::now() < deadline,
            "the failed import's blocks were not collected"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(client.own_snapshot_ids().is_empty());
    server.assert_scrub_clean();
}

#[test]
fn import_after_full_disk_failure_succeeds() {
    let mut mount = None;
    let server = KilnServer::start_with(|dir| {
        mount_tmpfs(dir, "24m");
        mount = Some(Tmpfs(dir.to_path_buf()));
    });
    let _mount = mount;
    let client = server.client("us-east-1");
    let big = tempfile::NamedTempFile::new().expect("big file");
    let small = tempfile::NamedTempFile::new().expect("small file");
    let random = random_bytes(48 << 20);
    std::fs::write(big.path(), &random).expect("write big");
    std::fs::write(small.path(), &random[..2 << 20]).expect("write small");
    let url = |f: &tempfile::NamedTempFile| format!("file://{}", f.path().display());
    let first = client.ec2_ok("ImportSnapshot", &p(&[("DiskContainer.Url", &url(&big))]));
    let first_id = common::xml_value(&first, "importTaskId").expect("task id");
    assert_eq!(wait_task(&client, &first_id).0, "deleted");

    let second = client.ec2_ok("ImportSnapshot", &p(&[("DiskContainer.Url", &url(&small))]));
    let second_id = common::xml_value(&second, "importTaskId").expect("task id");
    let (status, message) = wait_task(&client, &second_id);

    assert_eq!(status, "completed", "message: {message}");
    server.assert_scrub_clean();
}
