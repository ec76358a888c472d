//! `kill -9` while garbage is being collected: whenever the kill lands, snapshots that are
//! still referenced read back whole, the garbage is gone after restart, and scrub is clean.

mod common;

use common::{random_block, KilnServer};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

fn block_files(data_dir: &Path) -> usize {
    let mut n = 0;
    for fan in std::fs::read_dir(data_dir.join("blocks"))
        .expect("blocks dir")
        .flatten()
    {
        if fan.file_name() != "tmp" {
            n += std::fs::read_dir(fan.path())
                .map(|d| d.count())
                .unwrap_or(0);
        }
    }
    n
}

#[test]
fn kill_during_gc_keeps_live_blocks_and_reclaims_garbage() {
    let mut server = KilnServer::start();
    let client = server.client("us-east-1");
    let shared: BTreeMap<i64, Vec<u8>> = (0..4).map(|i| (i, random_block())).collect();
    let keep = client.start_snapshot(1);
    client.put_blocks_and_complete(&keep, &shared);
    // Each round makes garbage sharing blocks with `keep`, deletes it, and kills the server
    // at a different point of the collector's 5-second cycle.
    for delay_ms in [50u64, 2600, 5100] {
        let client = server.client("us-east-1");
        let mut doomed_blocks = shared.clone();
        for i in 4..40 {
            doomed_blocks.insert(i, random_block());
        }
        let doomed = client.start_snapshot(1);
        client.put_blocks_and_complete(&doomed, &doomed_blocks);
        let (status, body) = client.ec2("DeleteSnapshot", &[("SnapshotId", doomed.as_str())]);
        assert_eq!(status, 200, "{body}");
        std::thread::sleep(Duration::from_millis(delay_ms));
        server.kill9();
        server.restart();
    }

    let client = server.client("us-east-1");
    let deadline = Instant::now() + Duration::from_secs(15);
    while block_files(server.data_dir()) > shared.len() {
        assert!(Instant::now() < deadline, "garbage left after restart");
        std::thread::sleep(Duration::from_millis(250));
    }
    client.assert_snapshot_reads_back(&keep, &shared);
    server.assert_scrub_clean();
}
