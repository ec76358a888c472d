//! `kill -9` of the server in the middle of an import: after restart the task has failed,
//! no snapshot is completed that is not whole, the blocks it wrote are reclaimed, and the
//! store scrubs clean.

mod common;

use common::{p, KilnServer};
use std::path::Path;
use std::time::{Duration, Instant};

fn block_files(data_dir: &Path) -> usize {
    let mut n = 0;
    for fan in std::fs::read_dir(data_dir.join("blocks"))
        .expect("blocks dir")
        .flatten()
    {
        if fan.file_name() == "tmp" {
            continue;
        }
        n += std::fs::read_dir(fan.path())
            .map(|d| d.count())
            .unwrap_or(0);
    }
    n
}

#[test]
fn kill_during_import_fails_task_and_reclaims_blocks() {
    let mut server = KilnServer::start();
    let source = tempfile::NamedTempFile::new().expect("source");
    let mut random = vec![0u8; 96 << 20];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut random);
    std::fs::write(source.path(), &random).expect("write source");
    let client = server.client("us-east-1");
    let started = client.ec2_ok(
        "ImportSnapshot",
        &p(&[(
            "DiskContainer.Url",
            &format!("file://{}", source.path().display()),
        )]),
    );
    let task_id = common::xml_value(&started, "importTaskId").expect("task id");
    // Kill once the import has stored some blocks but long before it can finish.
    let deadline = Instant::now() + Duration::from_secs(30);
    while block_files(server.data_dir()) < 8 {
        assert!(Instant::now() < deadline, "the import stored no blocks");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill9();

    server.restart();

    let client = server.client("us-east-1");
    let body = client.ec2_ok(
        "DescribeImportSnapshotTasks",
        &p(&[("ImportTaskId.1", &task_id)]),
    );
    assert_eq!(
        common::xml_value(&body, "status").as_deref(),
        Some("deleted")
    );
    assert!(client
        .own_snapshots()
        .iter()
        .all(|s| s.state != "completed" && s.state != "pending"));
    let deadline = Instant::now() + Duration::from_secs(15);
    while block_files(server.data_dir()) > 0 {
        assert!(
            Instant::now() < deadline,
            "blocks of the killed import were not reclaimed"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    server.assert_scrub_clean();
}
