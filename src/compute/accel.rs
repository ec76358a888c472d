//! Choosing the accelerator: KVM only where a real probe boot under KVM succeeds.
//!
//! `/dev/kvm` existing proves nothing (on some hosts it only runs specially built guests and
//! a stock kernel hangs), so the probe boots a real kernel and ramdisk under `-accel kvm`
//! with the ramdisk's busybox as init, asked to power off at once; KVM counts as working only
//! if QEMU ends by itself, successfully, within the time limit.

use super::qemu::Accelerator;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the probe boot may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// The outcome of a probe, in words for the log.
#[derive(Debug, Clone)]
pub struct ProbeResult {
    /// The accelerator to use.
    pub accelerator: Accelerator,
    /// Why.
    pub reason: String,
}

/// Probes KVM by booting `kernel` with `initrd` (which must hold `/bin/busybox`).
pub fn probe(kernel: &Path, initrd: &Path, timeout: Duration) -> ProbeResult {
    let tcg = |reason: String| ProbeResult {
        accelerator: Accelerator::Tcg,
        reason,
    };
    if !Path::new("/dev/kvm").exists() {
        return tcg("no /dev/kvm".into());
    }
    let started = Instant::now();
    let mut cmd = Command::new("qemu-system-x86_64");
    // SAFETY: prctl(2) only sets a flag of the new process; nothing else runs in the hook.
    // The probe must not outlive Kiln (or the thread waiting for it) if Kiln stops meanwhile.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = cmd
        .args(["-M", "pc", "-accel", "kvm", "-m", "256", "-smp", "1"])
        .args([
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            "null",
        ])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args([
            "-append",
            "console=ttyS0 quiet panic=-1 rdinit=/bin/busybox -- poweroff -f",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return tcg(format!("could not start qemu-system-x86_64: {e}")),
    };
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => {
                return ProbeResult {
                    accelerator: Accelerator::Kvm,
                    reason: format!(
                        "a probe boot under KVM succeeded in {:.1} s",
                        started.elapsed().as_secs_f64()
                    ),
                }
            }
            Ok(Some(status)) => return tcg(format!("the KVM probe boot failed ({status})")),
            Ok(None) if started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return tcg(format!(
                    "the KVM probe boot did not finish within {} s",
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return tcg(format!("waiting for the KVM probe: {e}")),
        }
    }
}
