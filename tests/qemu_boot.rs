//! A real QEMU guest (TCG) boots with its disk served by Kiln: the disk is a copy-on-write
//! volume over a snapshot block, exported by Kiln's NBD server on a unix socket and opened
//! by QEMU's own NBD client. The guest reads the snapshot's bytes, writes a message, and
//! Kiln sees exactly the block it wrote.
//!
//! The guest is Debian's cloud kernel and a static busybox, unpacked (never installed) from
//! the .deb files that `scripts/fetch-guest-packages` downloads into `$KILN_GUEST_DEBS`
//! (default `~/.cache/kiln/debs`); QEMU comes from `scripts/install-qemu-system`. `.ci/run`
//! runs both. No network is used by the test itself.

use kiln::blocks::{BlockStore, LocalDir, BLOCK_SIZE};
use kiln::volumes::cow::CowVolume;
use kiln::volumes::nbd::NbdServer;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Modules the cloud kernel needs for a virtio disk, in load order.
const VIRTIO_MODULES: &[&str] = &[
    "virtio/virtio_ring.ko",
    "virtio/virtio.ko",
    "virtio/virtio_pci_legacy_dev.ko",
    "virtio/virtio_pci_modern_dev.ko",
    "virtio/virtio_pci.ko",
    "block/virtio_blk.ko",
];

/// The guest's /init: load the disk driver, show the first bytes of the disk, write a
/// message 1 MiB in (block 2), flush, power off.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk; do
    insmod /lib/modules/$m.ko
done
echo KILN-GUEST-BOOTED
dd if=/dev/vda bs=16 count=1 2>/dev/null
echo
mkdir -p /tmp
echo hello-from-guest > /tmp/msg
dd if=/tmp/msg of=/dev/vda bs=512 seek=2048 conv=sync,fsync 2>/dev/null
sync
echo KILN-GUEST-DONE
poweroff -f
"#;

const BASE_MARKER: &[u8; 16] = b"KILN-BASE-BLOCK!";
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

fn guest_debs() -> PathBuf {
    std::env::var_os("KILN_GUEST_DEBS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/kiln/debs")
        })
}

fn find_deb(dir: &Path, prefix: &str) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run scripts/fetch-guest-packages first",
                dir.display()
            )
        })
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".deb"))
        })
        .unwrap_or_else(|| {
            panic!(
                "no {prefix}*.deb in {}; run scripts/fetch-guest-packages first",
                dir.display()
            )
        })
}

fn run(cmd: &mut Command) {
    let status = cmd.status().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed: {status}");
}

/// Unpacks the kernel and busybox and builds the initramfs; returns (kernel, initrd).
fn build_guest(work: &Path) -> (PathBuf, PathBuf) {
    let debs = guest_debs();
    let unpacked = work.join("debs");
    for prefix in ["linux-image-", "busybox-static_"] {
        run(Command::new("dpkg-deb")
            .arg("-x")
            .arg(find_deb(&debs, prefix))
            .arg(&unpacked));
    }
    let kernel = std::fs::read_dir(unpacked.join("boot"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .expect("the kernel package has /boot/vmlinuz-*");
    let version = kernel
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .unwrap()
        .to_string();
    let root = work.join("initrd");
    for d in ["bin", "dev", "proc", "sys", "lib/modules"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let busybox = unpacked.join("bin/busybox");
    std::fs::copy(&busybox, root.join("bin/busybox")).unwrap();
    let drivers = unpacked.join(format!("lib/modules/{version}/kernel/drivers"));
    for m in VIRTIO_MODULES {
        let name = Path::new(m).file_name().unwrap();
        std::fs::copy(drivers.join(m), root.join("lib/modules").join(name)).unwrap();
    }
    let init = root.join("init");
    std::fs::write(&init, INIT).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
    let initrd = work.join("initrd.cpio.gz");
    // busybox's own cpio and gzip: nothing else is needed on the host.
    let script = format!(
        "cd '{}' && find . | '{bb}' cpio -o -H newc 2>/dev/null | '{bb}' gzip -1 > '{}'",
        root.display(),
        initrd.display(),
        bb = busybox.display()
    );
    run(Command::new("sh").arg("-c").arg(script));
    (kernel, initrd)
}

/// A 64 MiB volume whose source snapshot's first block starts with [`BASE_MARKER`], served
/// over NBD.
fn serve_marked_volume(work: &Path) -> (Arc<Mutex<CowVolume>>, NbdServer) {
    let blocks = Arc::new(BlockStore::new(
        Box::new(LocalDir::open(&work.join("store")).unwrap()),
        false,
    ));
    let mut first = vec![0u8; BLOCK_SIZE];
    first[..16].copy_from_slice(BASE_MARKER);
    let base = {
        let _writer = blocks.writer_guard().unwrap();
        HashMap::from([(0u64, blocks.put(&first).unwrap().0)])
    };
    let volume = Arc::new(Mutex::new(
        CowVolume::open(&work.join("vol"), 64 << 20, base, blocks).unwrap(),
    ));
    let server = NbdServer::start(&work.join("vol.sock"), volume.clone()).unwrap();
    (volume, server)
}

/// Runs QEMU until the guest powers off (or the timeout kills it); returns the console.
fn boot(kernel: &Path, initrd: &Path, socket: &Path, console: &Path) -> String {
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-M", "pc", "-accel", "tcg", "-m", "256", "-smp", "1"])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 quiet panic=-1"])
        .arg("-drive")
        .arg(format!(
            "file=nbd+unix:///?socket={},format=raw,if=virtio",
            socket.display()
        ))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(console).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("qemu-system-x86_64 must be installed (scripts/install-qemu-system)");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > BOOT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the guest did not power off within {BOOT_TIMEOUT:?}; console:\n{}",
                std::fs::read_to_string(console).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(console).unwrap_or_default();
    assert!(
        status.success(),
        "qemu exited with {status}; console:\n{text}"
    );
    text
}

#[test]
fn boot_guest_on_nbd_volume_reads_snapshot_and_kiln_tracks_its_write() {
    let work = tempfile::tempdir().unwrap();
    let (kernel, initrd) = build_guest(work.path());

    let (volume, server) = serve_marked_volume(work.path());

    let console = boot(
        &kernel,
        &initrd,
        server.socket(),
        &work.path().join("console.log"),
    );
    assert!(console.contains("KILN-GUEST-BOOTED"), "console:\n{console}");
    assert!(
        console.contains("KILN-BASE-BLOCK!"),
        "the guest did not read the snapshot's bytes; console:\n{console}"
    );
    assert!(console.contains("KILN-GUEST-DONE"), "console:\n{console}");

    let mut v = volume.lock().unwrap();
    assert_eq!(v.dirty_blocks().collect::<Vec<_>>(), vec![2]);
    let mut written = vec![0u8; 17];
    v.read_at(1 << 20, &mut written).unwrap();
    assert_eq!(&written, b"hello-from-guest\n");
}

#[test]
fn qemu_vm_direct_boot_guest_powers_off_then_qemu_reports_shutdown_and_console_outlives_it() {
    use kiln::compute::qemu::{console_of, Accelerator, Boot, QemuVm, VmDisk, VmSpec};

    let work = tempfile::tempdir().unwrap();
    let (kernel, initrd) = build_guest(work.path());
    let (volume, server) = serve_marked_volume(work.path());
    let console_log = work.path().join("console.log");

    let mut vm = QemuVm::start(VmSpec {
        name: "qemu-boot-test".into(),
        accelerator: Accelerator::Tcg,
        vcpus: 1,
        memory_mib: 256,
        disks: vec![VmDisk {
            id: "vol-test".into(),
            socket: server.socket().to_path_buf(),
        }],
        boot: Boot::Direct {
            kernel,
            initrd: Some(initrd),
            cmdline: "console=ttyS0 quiet panic=-1".into(),
        },
        console_log: console_log.clone(),
        qemu_log: work.path().join("qemu.log"),
        qmp_socket: work.path().join("qmp.sock"),
        fw_cfg_files: Vec::new(),
        smbios_uuid: None,
        exit_on_reboot: true,
    })
    .unwrap();
    let first_status = vm.status();
    // -no-shutdown: the guest's power-off leaves QEMU alive in the `shutdown` state.
    let powered_off = vm.wait_guest_off(BOOT_TIMEOUT);
    let final_status = vm.status();
    vm.quit();

    assert!(
        matches!(first_status.as_deref(), Ok("running") | Ok("shutdown")),
        "QMP status right after start: {first_status:?}"
    );
    assert!(
        powered_off,
        "the guest did not power off; console:\n{}",
        console_of(&console_log)
    );
    assert_eq!(final_status.as_deref().ok(), Some("shutdown"));
    assert!(!vm.is_alive());
    let console = console_of(&console_log);
    assert!(console.contains("KILN-BASE-BLOCK!"), "console:\n{console}");
    assert!(console.contains("KILN-GUEST-DONE"), "console:\n{console}");
    assert_eq!(
        volume.lock().unwrap().dirty_blocks().collect::<Vec<_>>(),
        vec![2]
    );
}
