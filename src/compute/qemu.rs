//! One QEMU process per instance.
//!
//! The machine is `-M pc` with virtio disks that QEMU's user-space NBD client opens on
//! Kiln's unix sockets (reconnecting for minutes if Kiln restarts), the serial console
//! appended to a file, and a QMP socket for control. QEMU runs in a process group of its
//! own with `-no-shutdown`: a guest that powers off leaves QEMU alive in the `shutdown`
//! state, so Kiln can tell a clean power-off from a crash even for a QEMU it adopted after a
//! restart (and is not the parent of).

use super::qmp::QmpClient;
use crate::error::{Error, Result};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

/// Which accelerator QEMU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accelerator {
    /// Hardware virtualization (only where a probe boot succeeded).
    Kvm,
    /// QEMU's binary translator: works everywhere, slower.
    Tcg,
}

impl Accelerator {
    /// The name QEMU's `-accel` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Accelerator::Kvm => "kvm",
            Accelerator::Tcg => "tcg",
        }
    }
}

/// One virtio disk served over NBD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDisk {
    /// Node and device name inside QEMU (the volume id).
    pub id: String,
    /// The NBD server's unix socket.
    pub socket: PathBuf,
}

/// Everything needed to start a VM.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// Shown as QEMU's `-name` (the instance id), so `ps` tells VMs apart.
    pub name: String,
    /// Accelerator.
    pub accelerator: Accelerator,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Disks in device order (the first is the root disk).
    pub disks: Vec<VmDisk>,
    /// How it boots.
    pub boot: Boot,
    /// Where the serial console is appended.
    pub console_log: PathBuf,
    /// Where QEMU's own messages go.
    pub qemu_log: PathBuf,
    /// Where QEMU listens for QMP.
    pub qmp_socket: PathBuf,
    /// Files the guest can read through fw_cfg (`opt/kiln/...` name, host file).
    pub fw_cfg_files: Vec<(String, PathBuf)>,
    /// SMBIOS system uuid and serial (cloud-init recognizes EC2 by an `ec2` prefix).
    pub smbios_uuid: Option<String>,
    /// A guest reboot ends the process instead (for one-shot runs).
    pub exit_on_reboot: bool,
}

/// The QEMU process behind a VM: started by this Kiln, or adopted after a restart.
enum Process {
    Child(Child),
    Adopted { pid: u32, start_ticks: u64 },
}

/// A running (or finished) QEMU process. Dropping it leaves QEMU running (a restarted Kiln
/// adopts it); [`QemuVm::quit`] and [`QemuVm::kill`] end it.
pub struct QemuVm {
    process: Process,
    spec: VmSpec,
    qmp: Option<QmpClient>,
}

/// How long QEMU may take to open its QMP socket.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long QEMU's NBD client waits for Kiln to come back before failing guest I/O.
const NBD_RECONNECT_SECONDS: u32 = 300;

/// The `-blockdev` value of a disk: QEMU's NBD client on the disk's socket.
fn blockdev_arg(disk: &VmDisk) -> String {
    format!(
        "driver=nbd,node-name={id},server.type=unix,server.path={path},reconnect-delay={NBD_RECONNECT_SECONDS}",
        id = disk.id,
        path = disk.socket.display()
    )
}

impl QemuVm {
    /// Starts QEMU for `spec` and waits until its QMP socket answers.
    pub fn start(spec: VmSpec) -> Result<QemuVm> {
        let _ = std::fs::remove_file(&spec.qmp_socket);
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-name", &spec.name])
            .args(["-M", "pc", "-accel", spec.accelerator.as_str()])
            .args(["-nodefaults", "-display", "none", "-no-shutdown"])
            .args(["-smp", &spec.vcpus.to_string()])
            .args(["-m", &spec.memory_mib.to_string()])
            .arg("-chardev")
            .arg(format!(
                "file,id=console,path={},append=on",
                spec.console_log.display()
            ))
            .args(["-serial", "chardev:console"])
            .arg("-qmp")
            .arg(format!(
                "unix:{},server=on,wait=off",
                spec.qmp_socket.display()
            ))
            .args(["-nic", "none"]);
        if spec.exit_on_reboot {
            cmd.arg("-no-reboot");
        }
        if let Some(uuid) = &spec.smbios_uuid {
            cmd.arg("-smbios")
                .arg(format!("type=1,uuid={uuid},serial={uuid}"));
        }
        for (name, file) in &spec.fw_cfg_files {
            cmd.arg("-fw_cfg")
                .arg(format!("name={name},file={}", file.display()));
        }
        for (i, disk) in spec.disks.iter().enumerate() {
            cmd.arg("-blockdev").arg(blockdev_arg(disk));
            let mut device = format!("virtio-blk-pci,drive={id},id=dev-{id}", id = disk.id);
            // Firmware boots the root disk; a direct kernel boot owns boot index 0 itself.
            if i == 0 && spec.boot == Boot::Firmware {
                device.push_str(",bootindex=0");
            }
            cmd.arg("-device").arg(device);
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
        let log = std::fs::File::create(&spec.qemu_log)
            .map_err(|e| Error::InternalError(format!("{}: {e}", spec.qemu_log.display())))?;
        let log_err = log
            .try_clone()
            .map_err(|e| Error::InternalError(format!("{}: {e}", spec.qemu_log.display())))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Its own process group: a signal to Kiln's group (Ctrl-C) does not reach the
            // guest, which outlives a Kiln restart.
            .process_group(0)
            .spawn()
            .map_err(|e| Error::InternalError(format!("starting qemu-system-x86_64: {e}")))?;
        let mut vm = QemuVm {
            process: Process::Child(child),
            spec,
            qmp: None,
        };
        vm.wait_for_qmp()?;
        Ok(vm)
    }

    /// Takes over a QEMU process started by an earlier Kiln, if it is still that process.
    pub fn adopt(spec: VmSpec, pid: u32, start_ticks: u64) -> Option<QemuVm> {
        if process_start_ticks(pid) != Some(start_ticks) {
            return None;
        }
        let mut vm = QemuVm {
            process: Process::Adopted { pid, start_ticks },
            spec,
            qmp: None,
        };
        vm.qmp_session().ok()?;
        Some(vm)
    }

    fn wait_for_qmp(&mut self) -> Result<()> {
        let started = Instant::now();
        loop {
            if !self.is_alive() {
                return Err(Error::InternalError(format!(
                    "QEMU exited while starting: {}",
                    self.qemu_messages()
                )));
            }
            if self.spec.qmp_socket.exists() && self.qmp_session().is_ok() {
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

    /// The VM's QMP session (one per VM: QEMU serves one client at a time), reconnected if
    /// it broke.
    pub fn qmp_session(&mut self) -> Result<&mut QmpClient> {
        if self.qmp.is_none() {
            self.qmp = Some(QmpClient::connect(&self.spec.qmp_socket)?);
        }
        self.qmp
            .as_mut()
            .ok_or_else(|| Error::InternalError("QMP session missing".into()))
    }

    /// Runs one QMP command; a broken session is dropped so the next call reconnects.
    pub fn qmp(
        &mut self,
        command: &str,
        arguments: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let outcome = self.qmp_session()?.execute(command, arguments);
        if outcome.is_err() {
            self.qmp = None;
        }
        outcome
    }

    /// The run state QEMU reports (`running`, `shutdown`, `paused`, ...).
    pub fn status(&mut self) -> Result<String> {
        let status = self.qmp("query-status", None)?;
        Ok(status["status"].as_str().unwrap_or("unknown").to_string())
    }

    /// Presses the ACPI power button: a guest that handles it shuts down cleanly.
    pub fn power_button(&mut self) -> Result<()> {
        self.qmp("system_powerdown", None).map(|_| ())
    }

    /// After a guest power-off (status `shutdown`): resets and runs the VM again, which is a
    /// reboot without a new process.
    pub fn reset_and_run(&mut self) -> Result<()> {
        self.qmp("system_reset", None)?;
        self.qmp("cont", None).map(|_| ())
    }

    /// Plugs a disk into the running VM (the guest sees a new virtio disk).
    pub fn hotplug_disk(&mut self, disk: &VmDisk) -> Result<()> {
        let node = serde_json::json!({
            "driver": "nbd",
            "node-name": disk.id,
            "server": { "type": "unix", "path": disk.socket.display().to_string() },
            "reconnect-delay": NBD_RECONNECT_SECONDS,
        });
        self.qmp("blockdev-add", Some(node))?;
        let device = serde_json::json!({
            "driver": "virtio-blk-pci",
            "drive": disk.id,
            "id": format!("dev-{}", disk.id),
        });
        if let Err(e) = self.qmp("device_add", Some(device)) {
            let _ = self.qmp(
                "blockdev-del",
                Some(serde_json::json!({ "node-name": disk.id })),
            );
            return Err(e);
        }
        Ok(())
    }

    /// Asks the guest to release a disk and removes it once released; false if the guest
    /// did not let go within `timeout` (the disk then stays).
    pub fn unplug_disk(&mut self, id: &str, timeout: Duration) -> Result<bool> {
        let device = format!("dev-{id}");
        self.qmp("device_del", Some(serde_json::json!({ "id": device })))?;
        let started = Instant::now();
        loop {
            let devices = self.qmp(
                "qom-list",
                Some(serde_json::json!({ "path": "/machine/peripheral" })),
            )?;
            let present = devices
                .as_array()
                .is_some_and(|d| d.iter().any(|p| p["name"] == device.as_str()));
            if !present {
                break;
            }
            if started.elapsed() > timeout {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // The device leaves the tree a moment before QEMU lets go of its disk node.
        loop {
            match self.qmp("blockdev-del", Some(serde_json::json!({ "node-name": id }))) {
                Ok(_) => return Ok(true),
                Err(e) if started.elapsed() > timeout => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Ends QEMU through QMP (`quit`), or by signal if it does not answer.
    pub fn quit(&mut self) {
        let _ = self.qmp("quit", None);
        let started = Instant::now();
        while self.is_alive() && started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.is_alive() {
            self.kill();
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        match &self.process {
            Process::Child(c) => c.id(),
            Process::Adopted { pid, .. } => *pid,
        }
    }

    /// Start time of the process (see [`process_start_ticks`]), 0 if unknown.
    pub fn start_ticks(&self) -> u64 {
        match &self.process {
            Process::Child(c) => process_start_ticks(c.id()).unwrap_or(0),
            Process::Adopted { start_ticks, .. } => *start_ticks,
        }
    }

    /// The spec the VM was started with.
    pub fn spec(&self) -> &VmSpec {
        &self.spec
    }

    /// True while the QEMU process exists (a child that ended is reaped here).
    pub fn is_alive(&mut self) -> bool {
        match &mut self.process {
            Process::Child(c) => matches!(c.try_wait(), Ok(None)),
            Process::Adopted { pid, start_ticks } => {
                process_start_ticks(*pid) == Some(*start_ticks)
            }
        }
    }

    /// How the process ended, in words (exit status for a child; unknown for an adopted one).
    pub fn exit_description(&mut self) -> String {
        match &mut self.process {
            Process::Child(c) => match c.try_wait() {
                Ok(Some(status)) => status.to_string(),
                _ => "still running".into(),
            },
            Process::Adopted { .. } => "exit status unknown (adopted process)".into(),
        }
    }

    /// Waits up to `timeout` for QEMU to end.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let started = Instant::now();
        loop {
            if !self.is_alive() {
                return true;
            }
            if started.elapsed() > timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Presses the power button, again every two seconds (a guest still booting misses the
    /// first press), until the guest is off or `timeout` passes; true if it powered off.
    pub fn power_down(&mut self, timeout: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if self.power_button().is_err() && !self.is_alive() {
                return true;
            }
            let step = Duration::from_secs(2).min(timeout.saturating_sub(started.elapsed()));
            if self.wait_guest_off(step) {
                return true;
            }
        }
        false
    }

    /// Waits up to `timeout` for the guest to power off (QMP status `shutdown`) or QEMU to
    /// end; true if it did.
    pub fn wait_guest_off(&mut self, timeout: Duration) -> bool {
        let started = Instant::now();
        loop {
            if !self.is_alive() {
                return true;
            }
            if self.status().is_ok_and(|s| s == "shutdown") {
                return true;
            }
            if started.elapsed() > timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Everything the guest wrote to its serial console so far.
    pub fn console(&self) -> String {
        console_of(&self.spec.console_log)
    }

    /// QEMU's own messages (the end of its log), for error reports.
    pub fn qemu_messages(&self) -> String {
        let text = console_of(&self.spec.qemu_log);
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }

    /// Ends the VM at once, like pulling the plug.
    pub fn kill(&mut self) {
        self.qmp = None;
        match &mut self.process {
            Process::Child(c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            Process::Adopted { pid, start_ticks } => {
                if process_start_ticks(*pid) == Some(*start_ticks) {
                    // SAFETY: kill(2) with a pid checked to still be this QEMU.
                    unsafe {
                        libc::kill(*pid as libc::pid_t, libc::SIGKILL);
                    }
                }
                let started = Instant::now();
                while process_start_ticks(*pid) == Some(*start_ticks)
                    && started.elapsed() < Duration::from_secs(5)
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

/// The start time of a live (not zombie) process in clock ticks since boot, from
/// `/proc/PID/stat`; `None` if there is no such process.
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); field 22 (starttime) is fields[19].
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// The console log of a VM, running or not (lossy UTF-8: guests print what they like).
pub fn console_of(log: &Path) -> String {
    std::fs::read(log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_start_ticks_of_self_is_known_and_of_missing_pid_none() {
        assert!(process_start_ticks(std::process::id()).is_some());
        assert_eq!(process_start_ticks(u32::MAX - 1), None);
    }

    #[test]
    fn blockdev_arg_names_socket_and_reconnects() {
        let arg = blockdev_arg(&VmDisk {
            id: "vol-1".into(),
            socket: PathBuf::from("/d/vol-1.sock"),
        });
        assert_eq!(
            arg,
            "driver=nbd,node-name=vol-1,server.type=unix,server.path=/d/vol-1.sock,reconnect-delay=300"
        );
    }
}
