//! One QEMU process per instance.
//!
//! The machine is `-M pc` under TCG (KVM does not work on these hosts; see DESIGN.md), with
//! virtio disks that QEMU's user-space NBD client opens on Kiln's unix sockets, the serial
//! console written to a file, no network yet, and a QMP socket for control.

use super::qmp::QmpClient;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How the VM boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// Firmware (SeaBIOS) boots the bootloader on the first disk: HVM images.
    Firmware,
    /// QEMU loads a kernel and ramdisk directly: PV images (`aki-` / `ari-`).
    Direct {
        /// Kernel image file.
        kernel: PathBuf,
        /// Initial ramdisk file.
        initrd: Option<PathBuf>,
        /// Kernel command line.
        cmdline: String,
    },
}

/// Everything needed to start a VM.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// NBD sockets of the disks, in device order (the first is the root disk).
    pub disks: Vec<PathBuf>,
    /// How it boots.
    pub boot: Boot,
    /// Where the serial console is written.
    pub console_log: PathBuf,
    /// Where QEMU listens for QMP.
    pub qmp_socket: PathBuf,
    /// A guest reboot ends the process instead (for one-shot runs).
    pub exit_on_reboot: bool,
}

/// A running (or finished) QEMU process.
pub struct QemuVm {
    child: Child,
    spec: VmSpec,
}

/// How long QEMU may take to open its QMP socket.
const START_TIMEOUT: Duration = Duration::from_secs(30);

impl QemuVm {
    /// Starts QEMU for `spec` and waits until its QMP socket answers.
    pub fn start(spec: VmSpec) -> Result<QemuVm> {
        let _ = std::fs::remove_file(&spec.qmp_socket);
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args([
            "-M",
            "pc",
            "-accel",
            "tcg",
            "-nodefaults",
            "-display",
            "none",
        ])
        .args(["-smp", &spec.vcpus.to_string()])
        .args(["-m", &spec.memory_mib.to_string()])
        .arg("-serial")
        .arg(format!("file:{}", spec.console_log.display()))
        .arg("-qmp")
        .arg(format!(
            "unix:{},server=on,wait=off",
            spec.qmp_socket.display()
        ))
        .args(["-nic", "none"]);
        if spec.exit_on_reboot {
            cmd.arg("-no-reboot");
        }
        for (i, socket) in spec.disks.iter().enumerate() {
            cmd.arg("-drive").arg(format!(
                "file=nbd+unix:///?socket={},format=raw,if=virtio,index={i}",
                socket.display()
            ));
        }
        if let Boot::Direct {
            kernel,
            initrd,
            cmdline,
        } = &spec.boot
        {
            cmd.arg("-kernel").arg(kernel).arg("-append").arg(cmdline);
            if let Some(initrd) = initrd {
                cmd.arg("-initrd").arg(initrd);
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::InternalError(format!("starting qemu-system-x86_64: {e}")))?;
        let mut vm = QemuVm { child, spec };
        vm.wait_for_qmp()?;
        Ok(vm)
    }

    fn wait_for_qmp(&mut self) -> Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_exit()? {
                return Err(Error::InternalError(format!(
                    "QEMU exited while starting ({status})"
                )));
            }
            if self.spec.qmp_socket.exists() && QmpClient::connect(&self.spec.qmp_socket).is_ok() {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                self.kill();
                return Err(Error::InternalError(
                    "QEMU did not open its QMP socket in time".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A QMP session with the VM.
    pub fn qmp(&self) -> Result<QmpClient> {
        QmpClient::connect(&self.spec.qmp_socket)
    }

    /// The process id (for adoption after a restart of Kiln).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if QEMU has ended.
    pub fn try_exit(&mut self) -> Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .map_err(|e| Error::InternalError(format!("waiting for QEMU: {e}")))
    }

    /// Waits up to `timeout` for QEMU to end (a guest that powers off ends it).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_exit()? {
                return Ok(Some(status));
            }
            if started.elapsed() > timeout {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything the guest wrote to its serial console so far.
    pub fn console(&self) -> String {
        console_of(&self.spec.console_log)
    }

    /// Ends the VM at once, like pulling the plug.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for QemuVm {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
        let _ = std::fs::remove_file(&self.spec.qmp_socket);
    }
}

/// The console log of a VM, running or not (lossy UTF-8: guests print what they like).
pub fn console_of(log: &Path) -> String {
    std::fs::read(log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}
