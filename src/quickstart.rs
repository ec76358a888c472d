//! `kiln quickstart`: builds and registers `kiln-tiny`, a small PV test image that boots in a
//! few seconds under TCG.
//!
//! Everything comes from two Debian packages, unpacked (never installed): the cloud kernel
//! (`linux-image-*-cloud-amd64`) and `busybox-static`. The build makes three files:
//! - the kernel, registered as a kernel image (`aki-`);
//! - a ramdisk (`ari-`) that loads the virtio, fw_cfg and power-button modules, mounts the
//!   root volume and switches to it;
//! - a 1 GiB ext4 root volume holding busybox and an init that prints a marker, runs the
//!   user data (read through QEMU's fw_cfg) once per instance as a shell script, runs
//!   `/etc/kiln/every-boot.sh` at every boot, and powers off cleanly on the ACPI power
//!   button.
//!
//! The files are cached by package versions under `~/.cache/kiln/quickstart` (or
//! `$KILN_CACHE`), so building again is instant. The image is registered in every region as
//! a public image of the built-in `kiln` owner.

use crate::error::{Error, Result};
use crate::service::images::{RegisterImageRequest, KERNEL_IMAGE_LOCATION, RAMDISK_IMAGE_LOCATION};
use crate::service::model::{BlockDeviceMapping, EbsBlockDevice};
use crate::service::{RequestContext, Service, KILN_OWNER_ACCOUNT_ID};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Marker the image prints on the console when its init starts.
pub const BOOT_MARKER: &str = "KILN-TINY-BOOTED";
/// Marker printed once boot work (user data, every-boot script) is done.
pub const READY_MARKER: &str = "KILN-TINY-READY";
/// Name prefix of the registered images.
pub const NAME_PREFIX: &str = "kiln-tiny-";
/// Bumped whenever the guest files below change, so caches are rebuilt.
const BUILDER_VERSION: &str = "1";
/// Size of the root volume.
const ROOT_SIZE: &str = "1G";

/// Modules the ramdisk loads, in order (paths below `lib/modules/VERSION/kernel/`).
const MODULES: &[&str] = &[
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "drivers/block/virtio_blk.ko",
    "net/core/failover.ko",
    "drivers/net/net_failover.ko",
    "drivers/net/virtio_net.ko",
    "drivers/firmware/qemu_fw_cfg.ko",
    "drivers/input/evdev.ko",
    "drivers/acpi/button.ko",
];

/// The ramdisk's /init: drivers, root volume, switch_root.
const RAMDISK_INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /newroot
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /etc/modules); do insmod /lib/modules/$m.ko 2>/dev/null; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
if ! mount -t ext4 -o rw /dev/vda /newroot; then
    echo "kiln-tiny: cannot mount the root volume /dev/vda"
    exec sh
fi
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /sbin/init
"#;

/// The root volume's /sbin/init.
const ROOT_INIT: &str = r#"#!/bin/busybox sh
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
hostname kiln-tiny
fw=/sys/firmware/qemu_fw_cfg/by_name/opt/kiln
id=$(cat $fw/instance-id/raw 2>/dev/null || echo unknown)
mkdir -p /var/lib/kiln /etc/kiln
boots=$(( $(cat /var/lib/kiln/boot-count 2>/dev/null || echo 0) + 1 ))
echo $boots > /var/lib/kiln/boot-count
echo "KILN-TINY-BOOTED instance=$id boot=$boots"
for e in /sys/class/input/event*; do
    if grep -q "Power Button" $e/device/name 2>/dev/null; then
        (dd if=/dev/input/${e##*/} bs=24 count=1 of=/dev/null 2>/dev/null; /sbin/kiln-shutdown) &
    fi
done
if [ -r $fw/user-data/raw ] && [ ! -e /var/lib/kiln/user-data-done.$id ]; then
    cat $fw/user-data/raw > /run/user-data
    echo "KILN-TINY-USER-DATA-BEGIN"
    sh /run/user-data 2>&1
    echo "KILN-TINY-USER-DATA-END status=$?"
    touch /var/lib/kiln/user-data-done.$id
fi
if [ -r /etc/kiln/every-boot.sh ]; then
    sh /etc/kiln/every-boot.sh 2>&1
fi
sync
echo "KILN-TINY-READY"
while true; do sleep 3600; done
"#;

/// Clean power-off: flush, make the root file system read-only, power off.
const SHUTDOWN: &str = r#"#!/bin/busybox sh
echo "kiln-tiny: powering off"
sync
mount -o remount,ro / 2>/dev/null
poweroff -f
"#;

/// The built files.
#[derive(Debug, Clone)]
pub struct Artifacts {
    /// Kernel version (`6.1.0-56-cloud-amd64`).
    pub kernel_version: String,
    /// The kernel.
    pub kernel: PathBuf,
    /// The ramdisk.
    pub initrd: PathBuf,
    /// The raw root volume.
    pub root: PathBuf,
}

fn tool_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::InternalError(format!("quickstart: {what}: {e}"))
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .map_err(|e| tool_error(&format!("{cmd:?}"), e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(tool_error(
            &format!("{cmd:?}"),
            String::from_utf8_lossy(&out.stderr).trim(),
        ))
    }
}

/// Default directory of the downloaded .deb files: `$KILN_GUEST_DEBS`, else the cache's.
pub fn default_debs_dir() -> PathBuf {
    std::env::var_os("KILN_GUEST_DEBS")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_root().join("debs"))
}

fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("KILN_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/tmp".into());
    home.join(".cache/kiln")
}

fn find_deb(dir: &Path, prefix: &str) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".deb"))
        })
        .collect();
    found.sort();
    found.pop()
}

/// The kernel and busybox packages, downloaded with `apt-get download` if missing.
fn packages(debs: &Path) -> Result<(PathBuf, PathBuf)> {
    let have = || {
        Some((
            find_deb(debs, "linux-image-")?,
            find_deb(debs, "busybox-static_")?,
        ))
    };
    if let Some(found) = have() {
        return Ok(found);
    }
    std::fs::create_dir_all(debs).map_err(|e| tool_error(&debs.display().to_string(), e))?;
    let download = run(Command::new("apt-get").current_dir(debs).args([
        "download",
        "linux-image-cloud-amd64",
        "busybox-static",
    ]));
    // The metapackage names the versioned kernel package; fetch that too.
    if let Some(meta) = find_deb(debs, "linux-image-cloud-amd64_") {
        let depends = Command::new("dpkg-deb")
            .args(["-f"])
            .arg(&meta)
            .arg("Depends")
            .output()
            .map_err(|e| tool_error("dpkg-deb -f", e))?;
        let depends = String::from_utf8_lossy(&depends.stdout).to_string();
        if let Some(pkg) = depends
            .split(',')
            .map(|d| d.trim().split(' ').next().unwrap_or(""))
            .find(|d| d.starts_with("linux-image-") && d.ends_with("-cloud-amd64"))
        {
            run(Command::new("apt-get")
                .current_dir(debs)
                .args(["download", pkg]))?;
        }
        let _ = std::fs::remove_file(&meta);
    }
    download?;
    have().ok_or_else(|| {
        tool_error(
            "packages",
            format!(
                "no linux-image-*-cloud-amd64 and busybox-static .deb in {}",
                debs.display()
            ),
        )
    })
}

/// Builds the image files (or finds them in the cache).
pub fn build(debs: &Path) -> Result<Artifacts> {
    let (kernel_deb, busybox_deb) = packages(debs)?;
    let out = cache_dir(&kernel_deb, &busybox_deb);
    let done = out.join("done");
    if done.exists() {
        let version = std::fs::read_to_string(&done).map_err(|e| tool_error("cache", e))?;
        return Ok(artifacts(&out, version.trim()));
    }
    let work = out.join("work");
    let _ = std::fs::remove_dir_all(&work);
    let unpacked = work.join("unpacked");
    std::fs::create_dir_all(&unpacked).map_err(|e| tool_error("work directory", e))?;
    for deb in [&kernel_deb, &busybox_deb] {
        run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&unpacked))?;
    }
    let version = std::fs::read_dir(unpacked.join("lib/modules"))
        .map_err(|e| tool_error("kernel package", e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .next()
        .ok_or_else(|| tool_error("kernel package", "no lib/modules/VERSION"))?;
    let a = artifacts(&out, &version);
    std::fs::copy(unpacked.join(format!("boot/vmlinuz-{version}")), &a.kernel)
        .map_err(|e| tool_error("kernel", e))?;
    let busybox = unpacked.join("bin/busybox");
    build_ramdisk(&work, &unpacked, &version, &busybox, &a.initrd)?;
    build_root(&work, &busybox, &a.root)?;
    std::fs::write(&done, &version).map_err(|e| tool_error("cache", e))?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(a)
}

/// The built files, if a build with the packages in `debs` is already cached.
pub fn cached(debs: &Path) -> Option<Artifacts> {
    let kernel_deb = find_deb(debs, "linux-image-")?;
    let busybox_deb = find_deb(debs, "busybox-static_")?;
    let out = cache_dir(&kernel_deb, &busybox_deb);
    let version = std::fs::read_to_string(out.join("done")).ok()?;
    Some(artifacts(&out, version.trim()))
}

fn cache_dir(kernel_deb: &Path, busybox_deb: &Path) -> PathBuf {
    let mut h = Sha256::new();
    h.update(BUILDER_VERSION);
    for deb in [kernel_deb, busybox_deb] {
        h.update(
            deb.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
        );
    }
    h.update(RAMDISK_INIT);
    h.update(ROOT_INIT);
    h.update(SHUTDOWN);
    cache_root()
        .join("quickstart")
        .join(hex::encode(&h.finalize()[..8]))
}

fn artifacts(dir: &Path, version: &str) -> Artifacts {
    Artifacts {
        kernel_version: version.to_string(),
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
        root: dir.join("root.img"),
    }
}

fn write_executable(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| tool_error(&dir.display().to_string(), e))?;
    }
    std::fs::write(path, text).map_err(|e| tool_error(&path.display().to_string(), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| tool_error(&path.display().to_string(), e))
}

fn build_ramdisk(
    work: &Path,
    unpacked: &Path,
    version: &str,
    busybox: &Path,
    out: &Path,
) -> Result<()> {
    let root = work.join("ramdisk");
    let modules = root.join("lib/modules");
    std::fs::create_dir_all(&modules).map_err(|e| tool_error("ramdisk", e))?;
    std::fs::create_dir_all(root.join("bin")).map_err(|e| tool_error("ramdisk", e))?;
    std::fs::copy(busybox, root.join("bin/busybox")).map_err(|e| tool_error("busybox", e))?;
    let source = unpacked.join(format!("lib/modules/{version}/kernel"));
    let mut order = String::new();
    for m in MODULES {
        let name = Path::new(m)
            .file_stem()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        std::fs::copy(source.join(m), modules.join(format!("{name}.ko")))
            .map_err(|e| tool_error(m, e))?;
        order.push_str(&name);
        order.push('\n');
    }
    std::fs::create_dir_all(root.join("etc")).map_err(|e| tool_error("ramdisk", e))?;
    std::fs::write(root.join("etc/modules"), order).map_err(|e| tool_error("ramdisk", e))?;
    write_executable(&root.join("init"), RAMDISK_INIT)?;
    // busybox's own cpio and gzip: nothing else is needed on the host.
    let script = format!(
        "cd '{}' && find . | '{bb}' cpio -o -H newc 2>/dev/null | '{bb}' gzip -6 > '{}'",
        root.display(),
        out.display(),
        bb = busybox.display()
    );
    run(Command::new("sh").arg("-c").arg(script))
}

fn build_root(work: &Path, busybox: &Path, out: &Path) -> Result<()> {
    let root = work.join("root");
    for d in [
        "bin",
        "sbin",
        "etc/kiln",
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "mnt",
        "root",
        "var/lib/kiln",
    ] {
        std::fs::create_dir_all(root.join(d)).map_err(|e| tool_error("root", e))?;
    }
    std::fs::copy(busybox, root.join("bin/busybox")).map_err(|e| tool_error("busybox", e))?;
    let list = Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(|e| tool_error("busybox --list", e))?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
    }
    write_executable(&root.join("sbin/init"), ROOT_INIT)?;
    write_executable(&root.join("sbin/kiln-shutdown"), SHUTDOWN)?;
    std::fs::write(root.join("etc/hostname"), "kiln-tiny\n").map_err(|e| tool_error("root", e))?;
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")
        .map_err(|e| tool_error("root", e))?;
    std::fs::write(root.join("etc/group"), "root:x:0:\n").map_err(|e| tool_error("root", e))?;
    run(Command::new("truncate").args(["-s", ROOT_SIZE]).arg(out))?;
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "kiln-root", "-d"])
        .arg(&root)
        .arg(out))
}

/// Registers the image in `region` as a public `kiln` image, unless one of that name is
/// there already; returns its id.
pub fn register(service: &Service, region: &str, a: &Artifacts) -> Result<String> {
    let account = service
        .store()
        .find_account(KILN_OWNER_ACCOUNT_ID)?
        .ok_or_else(|| tool_error("register", "the built-in kiln account is missing"))?;
    let ctx = RequestContext {
        account,
        region: region.to_string(),
        dry_run: false,
    };
    let name = format!("{NAME_PREFIX}{}-v{BUILDER_VERSION}", a.kernel_version);
    if let Some(existing) = service.image_named(&ctx, &name)? {
        return Ok(existing);
    }
    let kernel = register_file(
        service,
        &ctx,
        &a.kernel,
        &format!("{name}-kernel"),
        KERNEL_IMAGE_LOCATION,
    )?;
    let ramdisk = register_file(
        service,
        &ctx,
        &a.initrd,
        &format!("{name}-ramdisk"),
        RAMDISK_IMAGE_LOCATION,
    )?;
    let root = service.snapshot_from_file(&ctx, &a.root, &format!("{name} root volume"))?;
    let image_id = service.register_image(
        &ctx,
        RegisterImageRequest {
            name: Some(name.clone()),
            description: Some(format!(
                "Kiln's tiny test image: Debian kernel {} and busybox; runs user data as a shell script",
                a.kernel_version
            )),
            architecture: Some("x86_64".into()),
            root_device_name: Some("/dev/xvda".into()),
            block_device_mappings: vec![root_mapping("/dev/xvda", &root)],
            virtualization_type: Some("paravirtual".into()),
            kernel_id: Some(kernel),
            ramdisk_id: Some(ramdisk),
            ena_support: Some(true),
            ..Default::default()
        },
    )?;
    service.publish_image(&image_id)?;
    Ok(image_id)
}

fn root_mapping(device: &str, snapshot_id: &str) -> BlockDeviceMapping {
    BlockDeviceMapping {
        device_name: device.into(),
        virtual_name: None,
        ebs: Some(EbsBlockDevice {
            snapshot_id: Some(snapshot_id.into()),
            volume_type: Some("gp2".into()),
            delete_on_termination: Some(true),
            ..Default::default()
        }),
        no_device: false,
    }
}

fn register_file(
    service: &Service,
    ctx: &RequestContext,
    file: &Path,
    name: &str,
    location: &str,
) -> Result<String> {
    let snapshot = service.snapshot_from_file(ctx, file, name)?;
    let image_id = service.register_image(
        ctx,
        RegisterImageRequest {
            name: Some(name.to_string()),
            architecture: Some("x86_64".into()),
            root_device_name: Some("/dev/sda1".into()),
            block_device_mappings: vec![root_mapping("/dev/sda1", &snapshot)],
            virtualization_type: Some("paravirtual".into()),
            image_location: Some(location.to_string()),
            ..Default::default()
        },
    )?;
    service.publish_image(&image_id)?;
    Ok(image_id)
}
