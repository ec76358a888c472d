//! A copy-on-write volume served by Kiln's NBD server, driven by QEMU's own NBD client
//! (`qemu-io` and `qemu-img` from qemu-utils, the same client code QEMU's system emulator
//! uses): reads fall through to snapshot blocks, writes copy up and are tracked per block.
//! Real block store on a temporary directory, real unix socket; no mock.

use kiln::blocks::{BlockStore, LocalDir, BLOCK_SIZE};
use kiln::volumes::cow::CowVolume;
use kiln::volumes::nbd::NbdServer;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

const VOLUME_BLOCKS: u64 = 8;

struct Served {
    _dir: tempfile::TempDir,
    volume: Arc<Mutex<CowVolume>>,
    server: NbdServer,
}

impl Served {
    fn uri(&self) -> String {
        format!("nbd+unix:///?socket={}", self.server.socket().display())
    }
}

/// A 4 MiB volume whose source snapshot has block 1 filled with 0xAA and block 5 with 0x3C.
fn serve_volume() -> Served {
    let dir = tempfile::tempdir().unwrap();
    let blocks = Arc::new(BlockStore::new(
        Box::new(LocalDir::open(&dir.path().join("store")).unwrap()),
        false,
    ));
    let mut base = HashMap::new();
    {
        let _writer = blocks.writer_guard().unwrap();
        base.insert(1u64, blocks.put(&vec![0xAA; BLOCK_SIZE]).unwrap().0);
        base.insert(5u64, blocks.put(&vec![0x3C; BLOCK_SIZE]).unwrap().0);
    }
    let volume = CowVolume::open(
        &dir.path().join("vol"),
        VOLUME_BLOCKS * BLOCK_SIZE as u64,
        base,
        blocks,
    )
    .unwrap();
    let volume = Arc::new(Mutex::new(volume));
    let server = NbdServer::start(&dir.path().join("vol.sock"), volume.clone()).unwrap();
    Served {
        _dir: dir,
        volume,
        server,
    }
}

/// Runs qemu-io with the given commands against the volume; returns its stdout.
fn qemu_io(served: &Served, commands: &[&str]) -> String {
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", "raw"]);
    for c in commands {
        cmd.args(["-c", c]);
    }
    cmd.arg(served.uri());
    let out = cmd
        .output()
        .expect("qemu-io (qemu-utils) must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "qemu-io failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn dirty(served: &Served) -> Vec<u64> {
    served.volume.lock().unwrap().dirty_blocks().collect()
}

#[test]
fn qemu_img_info_over_nbd_reports_volume_size() {
    let served = serve_volume();
    let out = Command::new("qemu-img")
        .args(["info", "--output=json", "-f", "raw", &served.uri()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["virtual-size"], VOLUME_BLOCKS * BLOCK_SIZE as u64);
}

#[test]
fn read_untouched_volume_over_nbd_returns_snapshot_bytes() {
    let served = serve_volume();
    // `read -P` fails unless every byte has the pattern.
    let out = qemu_io(
        &served,
        &[
            "read -P 0xaa 512k 512k",
            "read -P 0 0 512k",
            "read -P 0x3c 2560k 4k",
        ],
    );
    assert!(!out.contains("Pattern verification failed"), "{out}");
    assert_eq!(dirty(&served), Vec::<u64>::new());
}

#[test]
fn write_over_nbd_copies_up_and_marks_only_touched_blocks_dirty() {
    let served = serve_volume();
    let out = qemu_io(
        &served,
        &[
            "write -P 0x5c 600k 4k",
            "flush",
            "read -P 0x5c 600k 4k",
            "read -P 0xaa 512k 88k",
            "read -P 0xaa 604k 420k",
        ],
    );
    assert!(!out.contains("Pattern verification failed"), "{out}");
    assert_eq!(dirty(&served), vec![1]);
}

#[test]
fn write_zeroes_over_nbd_reads_back_zeros() {
    let served = serve_volume();
    let out = qemu_io(
        &served,
        &[
            "write -z 2560k 8k",
            "read -P 0 2560k 8k",
            "read -P 0x3c 2568k 4k",
        ],
    );
    assert!(!out.contains("Pattern verification failed"), "{out}");
    assert_eq!(dirty(&served), vec![5]);
}

#[test]
fn convert_whole_volume_over_nbd_matches_expected_image() {
    let served = serve_volume();
    qemu_io(&served, &["write -P 0x11 3m 1k"]);
    let out_file = served._dir.path().join("whole.raw");
    let status = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "raw", &served.uri()])
        .arg(&out_file)
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&out_file).unwrap();
    let mut expected = vec![0u8; VOLUME_BLOCKS as usize * BLOCK_SIZE];
    expected[BLOCK_SIZE..2 * BLOCK_SIZE].fill(0xAA);
    expected[5 * BLOCK_SIZE..6 * BLOCK_SIZE].fill(0x3C);
    expected[3 << 20..(3 << 20) + 1024].fill(0x11);
    assert!(
        bytes == expected,
        "the volume read back differs from its expected content"
    );
}

#[test]
fn write_past_end_over_nbd_fails_and_leaves_volume_clean() {
    let served = serve_volume();
    let out = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write -P 1 4095k 2k", &served.uri()])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.to_lowercase().contains("error") || !out.status.success(),
        "{text}"
    );
    assert_eq!(dirty(&served), Vec::<u64>::new());
}

#[test]
fn stop_server_removes_socket() {
    let served = serve_volume();
    let socket = served.server.socket().to_path_buf();
    assert!(Path::new(&socket).exists());
    drop(served.server);
    assert!(!socket.exists());
}
