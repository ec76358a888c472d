//! Machines: the QEMU side of instances.
//!
//! Each instance has a [`Machine`]: its QEMU process (if any) and one NBD server per
//! attached volume. Work on a machine (boot, power-down, reboot, hot-plug, image creation)
//! is queued by the API calls and run by [`Service::run_machine_op`] on a thread of its own,
//! holding the machine's lock for the whole operation, so the operations of one instance
//! never interleave. [`Service::watch_machines`] notices what guests do by themselves (power
//! off, crash) and records it; [`Service::adopt_machines`] takes over the VMs a previous Kiln
//! left running.
//!
//! Files of an instance live in `DATA/vm/INSTANCE/`: the console log (kept while the
//! instance exists), QEMU's own log, the QMP socket, the NBD sockets and the user data the
//! guest reads through fw_cfg. They are removed when the instance terminates.

use super::instance_types::instance_type;
use super::instances::transition_reason;
use super::model::{Instance, InstanceState, StateReason, VmProcess, VolumeState};
use super::{time, Service};
use crate::compute::qemu::{Accelerator, Boot, QemuVm, VmDisk, VmSpec};
use crate::error::{Error, Result};
use crate::store::Change;
use crate::volumes::nbd::NbdServer;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Work queued on an instance's machine.
#[derive(Debug, Clone, PartialEq)]
pub enum MachineOp {
    /// Start the VM of a `pending` instance.
    Boot,
    /// Power down a `stopping` instance (at once with `force`).
    Stop {
        /// Pull the plug instead of pressing the power button.
        force: bool,
    },
    /// Power down a `shutting-down` instance and release its volumes.
    Terminate,
    /// Reboot a running instance.
    Reboot,
    /// Plug an attached volume into the running VM.
    Attach {
        /// The volume.
        volume_id: String,
    },
    /// Unplug a detaching volume.
    Detach {
        /// The volume.
        volume_id: String,
        /// Detach even if the guest does not let go.
        force: bool,
    },
    /// Snapshot the instance's volumes for a pending image.
    CreateImage {
        /// The image being created.
        image_id: String,
        /// Take the snapshots live instead of powering the guest down first.
        no_reboot: bool,
    },
}

/// The QEMU process of an instance and the NBD servers of its volumes.
#[derive(Default)]
pub struct Machine {
    vm: Option<QemuVm>,
    disks: Vec<(String, NbdServer)>,
}

/// The machines of this Kiln and their work queue.
pub struct Machines {
    table: Mutex<HashMap<String, Arc<Mutex<Machine>>>>,
    queue: Mutex<Vec<(String, MachineOp)>>,
    accelerator: Mutex<Accelerator>,
}

impl Default for Machines {
    fn default() -> Self {
        Machines {
            table: Mutex::new(HashMap::new()),
            queue: Mutex::new(Vec::new()),
            accelerator: Mutex::new(Accelerator::Tcg),
        }
    }
}

/// Kernel command line of PV instances: serial console, root on the first virtio disk.
const PV_CMDLINE: &str = "console=ttyS0 root=/dev/vda rw panic=-1 quiet";
/// Longest unix socket path (sun_path holds 108 bytes with the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

fn poisoned<T>(_: T) -> Error {
    Error::InternalError("machine lock poisoned".into())
}

/// An SMBIOS uuid that starts with `ec2`, derived from the instance id (cloud-init takes a
/// machine whose uuid and serial start with `ec2` for an EC2 instance).
fn smbios_uuid(instance_id: &str) -> String {
    let h = hex::encode(Sha256::digest(instance_id.as_bytes()));
    format!(
        "ec2{}-{}-{}-{}-{}",
        &h[0..5],
        &h[5..9],
        &h[9..13],
        &h[13..17],
        &h[17..29]
    )
}

impl Service {
    /// The accelerator new VMs use.
    pub fn accelerator(&self) -> Accelerator {
        self.machines
            .accelerator
            .lock()
            .map(|a| *a)
            .unwrap_or(Accelerator::Tcg)
    }

    /// Sets the accelerator new VMs use (after the KVM probe).
    pub fn set_accelerator(&self, accelerator: Accelerator) {
        if let Ok(mut a) = self.machines.accelerator.lock() {
            *a = accelerator;
        }
    }

    /// Queues work on an instance's machine (run by the background loop).
    pub(crate) fn queue_machine_op(&self, instance_id: &str, op: MachineOp) {
        if let Ok(mut q) = self.machines.queue.lock() {
            q.push((instance_id.to_string(), op));
        }
    }

    /// Takes the queued machine work; each item runs on a thread of its own.
    pub fn take_machine_ops(&self) -> Vec<(String, MachineOp)> {
        self.machines
            .queue
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default()
    }

    fn machine(&self, instance_id: &str) -> Result<Arc<Mutex<Machine>>> {
        let mut table = self.machines.table.lock().map_err(poisoned)?;
        Ok(table
            .entry(instance_id.to_string())
            .or_insert_with(|| Arc::new(Mutex::new(Machine::default())))
            .clone())
    }

    /// Directory of an instance's runtime files.
    pub(crate) fn vm_dir(&self, instance_id: &str) -> PathBuf {
        self.data_dir.join("vm").join(instance_id)
    }

    /// The instance's serial console log.
    pub(crate) fn console_log_path(&self, instance_id: &str) -> PathBuf {
        self.vm_dir(instance_id).join("console.log")
    }

    fn instance(&self, instance_id: &str) -> Result<Arc<Instance>> {
        self.read()?
            .instances
            .get(instance_id)
            .cloned()
            .ok_or_else(|| Error::InvalidInstanceIdNotFound(instance_id.to_string()))
    }

    /// Changes one instance record (if it still exists) and commits it.
    fn update_instance(&self, instance_id: &str, edit: impl FnOnce(&mut Instance)) -> Result<()> {
        self.write(|state, _| {
            let Some(i) = state.instances.get(instance_id) else {
                return Ok((Vec::new(), ()));
            };
            let mut changed = (**i).clone();
            edit(&mut changed);
            Ok((vec![Change::PutInstance(changed)], ()))
        })
    }

    /// Runs one queued operation; failures are recorded on the instance where they matter
    /// and logged.
    pub fn run_machine_op(&self, instance_id: &str, op: MachineOp) {
        let outcome = self.machine(instance_id).and_then(|m| {
            let mut machine = m.lock().map_err(poisoned)?;
            match &op {
                MachineOp::Boot => self.boot(instance_id, &mut machine),
                MachineOp::Stop { force } => self.stop(instance_id, &mut machine, *force),
                MachineOp::Terminate => self.terminate(instance_id, &mut machine),
                MachineOp::Reboot => self.reboot(&mut machine),
                MachineOp::Attach { volume_id } => {
                    self.hotplug(instance_id, &mut machine, volume_id)
                }
                MachineOp::Detach { volume_id, force } => {
                    self.unplug(instance_id, &mut machine, volume_id, *force)
                }
                MachineOp::CreateImage {
                    image_id,
                    no_reboot,
                } => self.image_from_machine(&mut machine, image_id, *no_reboot),
            }
        });
        if let Err(e) = outcome {
            tracing::warn!("{op:?} of {instance_id} failed: {e}");
        }
    }

    fn boot(&self, instance_id: &str, machine: &mut Machine) -> Result<()> {
        let instance = self.instance(instance_id)?;
        if instance.state != InstanceState::Pending {
            return Ok(());
        }
        if machine.vm.is_none() {
            if let Err(e) = self.start_vm(&instance, machine) {
                self.release_disks(machine);
                tracing::warn!("{instance_id} did not start: {e}");
                return self.update_instance(instance_id, |i| {
                    i.state = InstanceState::Stopped;
                    i.vm = None;
                    i.state_transition_reason = transition_reason("Server error");
                    i.state_reason = Some(StateReason {
                        code: "Server.InternalError".into(),
                        message: format!("Server.InternalError: the VM did not start: {e}"),
                    });
                });
            }
        }
        let vm = machine.vm.as_ref().map(|vm| VmProcess {
            pid: vm.pid(),
            start_ticks: vm.start_ticks(),
            accelerator: vm.spec().accelerator.as_str().to_string(),
        });
        self.update_instance(instance_id, |i| {
            if i.state == InstanceState::Pending {
                i.state = InstanceState::Running;
                i.state_reason = None;
                i.state_transition_reason = String::new();
            }
            i.vm = vm;
        })
    }

    /// Starts NBD servers for the instance's volumes and QEMU on them.
    fn start_vm(&self, instance: &Instance, machine: &mut Machine) -> Result<()> {
        let dir = self.vm_dir(&instance.instance_id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::InternalError(format!("{}: {e}", dir.display())))?;
        let disks = self.serve_disks(instance, machine)?;
        let kind = instance_type(&instance.instance_type).ok_or_else(|| {
            Error::InternalError(format!("unknown instance type {}", instance.instance_type))
        })?;
        let boot = match &instance.kernel_id {
            Some(kernel) => Boot::Direct {
                kernel: self.boot_file(kernel)?,
                initrd: match &instance.ramdisk_id {
                    Some(r) => Some(self.boot_file(r)?),
                    None => None,
                },
                cmdline: PV_CMDLINE.into(),
            },
            None => Boot::Firmware,
        };
        let mut fw_cfg_files = Vec::new();
        let id_file = dir.join("instance-id");
        write_file(&id_file, instance.instance_id.as_bytes())?;
        fw_cfg_files.push(("opt/kiln/instance-id".to_string(), id_file));
        if let Some(data) = &instance.user_data {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|e| Error::InternalError(format!("stored user data: {e}")))?;
            let file = dir.join("user-data");
            write_file(&file, &decoded)?;
            fw_cfg_files.push(("opt/kiln/user-data".to_string(), file));
        }
        let spec = VmSpec {
            name: instance.instance_id.clone(),
            accelerator: self.accelerator(),
            vcpus: kind.vcpus,
            memory_mib: kind.memory_mib,
            disks,
            boot,
            console_log: dir.join("console.log"),
            qemu_log: dir.join("qemu.log"),
            qmp_socket: dir.join("qmp.sock"),
            fw_cfg_files,
            smbios_uuid: Some(smbios_uuid(&instance.instance_id)),
            exit_on_reboot: false,
        };
        machine.vm = Some(QemuVm::start(spec)?);
        Ok(())
    }

    /// Serves each attached volume of the instance over NBD (once per machine).
    fn serve_disks(&self, instance: &Instance, machine: &mut Machine) -> Result<Vec<VmDisk>> {
        let mut disks = Vec::new();
        for device in &instance.block_devices {
            disks.push(self.serve_disk(&instance.instance_id, machine, &device.volume_id)?);
        }
        Ok(disks)
    }

    fn serve_disk(
        &self,
        instance_id: &str,
        machine: &mut Machine,
        volume_id: &str,
    ) -> Result<VmDisk> {
        let socket = self.vm_dir(instance_id).join(format!("{volume_id}.sock"));
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(Error::InternalError(format!(
                "the socket path {} is longer than {MAX_SOCKET_PATH} bytes; use a shorter --data-dir",
                socket.display()
            )));
        }
        if !machine.disks.iter().any(|(v, _)| v == volume_id) {
            let server = NbdServer::start(&socket, self.volume_data(volume_id)?)?;
            machine.disks.push((volume_id.to_string(), server));
        }
        Ok(VmDisk {
            id: volume_id.to_string(),
            socket,
        })
    }

    /// Stops serving the machine's volumes and flushes them.
    fn release_disks(&self, machine: &mut Machine) {
        for (volume_id, server) in machine.disks.drain(..) {
            drop(server);
            if let Ok(data) = self.volume_data(&volume_id) {
                if let Err(e) = data.lock().map_err(poisoned).and_then(|mut d| d.flush()) {
                    tracing::warn!("flushing {volume_id}: {e}");
                }
            }
        }
    }

    /// Presses the power button and waits for the guest (unless `force`), then ends QEMU
    /// and releases the volumes.
    fn power_off(&self, machine: &mut Machine, force: bool) {
        if let Some(vm) = machine.vm.as_mut() {
            if !force && vm.is_alive() {
                vm.power_down(self.config.stop_timeout);
            }
            vm.quit();
        }
        machine.vm = None;
        self.release_disks(machine);
    }

    fn stop(&self, instance_id: &str, machine: &mut Machine, force: bool) -> Result<()> {
        if self.instance(instance_id)?.state != InstanceState::Stopping {
            return Ok(());
        }
        self.power_off(machine, force);
        self.update_instance(instance_id, |i| {
            if i.state == InstanceState::Stopping {
                i.state = InstanceState::Stopped;
            }
            i.vm = None;
        })
    }

    fn terminate(&self, instance_id: &str, machine: &mut Machine) -> Result<()> {
        if self.instance(instance_id)?.state != InstanceState::ShuttingDown {
            return Ok(());
        }
        self.power_off(machine, false);
        self.finish_termination(instance_id, None)
    }

    /// Records a terminated instance: DeleteOnTermination volumes are deleted, the others
    /// detached; the instance's files go.
    fn finish_termination(&self, instance_id: &str, reason: Option<StateReason>) -> Result<()> {
        let deleted = self.write(|state, _| {
            let Some(i) = state.instances.get(instance_id) else {
                return Ok((Vec::new(), Vec::new()));
            };
            let mut changes = Vec::new();
            let mut deleted = Vec::new();
            for device in &i.block_devices {
                let Some(v) = state.volumes.get(&device.volume_id) else {
                    continue;
                };
                if device.delete_on_termination {
                    changes.push(Change::DeleteVolume(v.volume_id.clone()));
                    deleted.push(v.volume_id.clone());
                } else {
                    let mut detached = (**v).clone();
                    detached.state = VolumeState::Available;
                    detached.attachment = None;
                    changes.push(Change::PutVolume(detached));
                }
            }
            let mut done = (**i).clone();
            done.state = InstanceState::Terminated;
            done.terminated_at = Some(time::now_string());
            done.block_devices.clear();
            done.vm = None;
            if let Some(reason) = reason {
                done.state_reason = Some(reason);
            }
            changes.push(Change::PutInstance(done));
            Ok((changes, deleted))
        })?;
        for volume_id in deleted {
            self.drop_volume_data(&volume_id);
        }
        if let Ok(mut table) = self.machines.table.lock() {
            table.remove(instance_id);
        }
        let dir = self.vm_dir(instance_id);
        if dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!("could not remove {}: {e}", dir.display());
            }
        }
        Ok(())
    }

    fn reboot(&self, machine: &mut Machine) -> Result<()> {
        let Some(vm) = machine.vm.as_mut() else {
            return Ok(());
        };
        if vm.power_down(self.config.stop_timeout) {
            if vm.is_alive() {
                vm.reset_and_run()?;
            }
        } else {
            // The guest ignored the power button: reset it, as EC2 does after a while.
            vm.qmp("system_reset", None)?;
        }
        Ok(())
    }

    /// Powers the guest down cleanly (for a consistent image) or leaves it running; `then`
    /// runs with the guest quiet; the guest is started again afterwards.
    pub(crate) fn with_guest_quiet<T>(
        &self,
        machine: &mut Machine,
        no_reboot: bool,
        then: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let mut powered_down = false;
        if let Some(vm) = machine.vm.as_mut() {
            if !no_reboot && vm.is_alive() {
                powered_down = vm.power_down(self.config.stop_timeout);
            }
        }
        let outcome = then();
        if powered_down {
            if let Some(vm) = machine.vm.as_mut() {
                if vm.is_alive() {
                    vm.reset_and_run()?;
                }
            }
        }
        outcome
    }

    fn hotplug(&self, instance_id: &str, machine: &mut Machine, volume_id: &str) -> Result<()> {
        let running = machine.vm.as_mut().is_some_and(|vm| vm.is_alive());
        if running {
            let disk = self.serve_disk(instance_id, machine, volume_id)?;
            if let Some(vm) = machine.vm.as_mut() {
                vm.hotplug_disk(&disk)?;
            }
        }
        self.set_attachment_state(volume_id, "attached")
    }

    fn unplug(
        &self,
        instance_id: &str,
        machine: &mut Machine,
        volume_id: &str,
        force: bool,
    ) -> Result<()> {
        if let Some(vm) = machine.vm.as_mut() {
            if vm.is_alive() {
                match vm.unplug_disk(volume_id, self.config.stop_timeout) {
                    Ok(true) => {}
                    Ok(false) if force => {}
                    Ok(false) => {
                        tracing::warn!("the guest of {instance_id} did not release {volume_id}");
                        return self.set_attachment_state(volume_id, "attached");
                    }
                    Err(e) => {
                        // Still attached as far as anyone can tell: say so, so it can be retried.
                        self.set_attachment_state(volume_id, "attached")?;
                        return Err(e);
                    }
                }
            }
        }
        if let Some(pos) = machine.disks.iter().position(|(v, _)| v == volume_id) {
            let (_, server) = machine.disks.remove(pos);
            drop(server);
            let data = self.volume_data(volume_id)?;
            data.lock().map_err(poisoned)?.flush()?;
        }
        self.write(|state, _| {
            let mut changes = Vec::new();
            if let Some(v) = state.volumes.get(volume_id) {
                let mut detached = (**v).clone();
                detached.state = VolumeState::Available;
                detached.attachment = None;
                changes.push(Change::PutVolume(detached));
            }
            if let Some(i) = state.instances.get(instance_id) {
                let mut changed = (**i).clone();
                changed.block_devices.retain(|d| d.volume_id != volume_id);
                changes.push(Change::PutInstance(changed));
            }
            Ok((changes, ()))
        })
    }

    fn set_attachment_state(&self, volume_id: &str, to: &str) -> Result<()> {
        self.write(|state, _| {
            let Some(v) = state.volumes.get(volume_id) else {
                return Ok((Vec::new(), ()));
            };
            let mut changed = (**v).clone();
            if let Some(a) = changed.attachment.as_mut() {
                a.state = to.to_string();
            }
            Ok((vec![Change::PutVolume(changed)], ()))
        })
    }

    /// Background check of running VMs: a guest that powered off becomes `stopped` (or
    /// `terminated`, per its shutdown behaviour); a QEMU that ended without the guest
    /// powering off is reported as a server error. Terminated instances are forgotten an
    /// hour after they ended.
    pub fn watch_machines(&self) -> Result<()> {
        let running: Vec<String> = self
            .read()?
            .instances
            .values()
            .filter(|i| i.state == InstanceState::Running)
            .map(|i| i.instance_id.clone())
            .collect();
        for id in running {
            let m = self.machine(&id)?;
            let Ok(mut machine) = m.try_lock() else {
                continue; // an operation is under way; it sees what the VM does
            };
            self.check_machine(&id, &mut machine)?;
        }
        self.forget_old_terminated()
    }

    fn check_machine(
        &self,
        instance_id: &str,
        machine: &mut MutexGuard<'_, Machine>,
    ) -> Result<()> {
        let Some(vm) = machine.vm.as_mut() else {
            return Ok(());
        };
        if !vm.is_alive() {
            let message = format!(
                "Server.InternalError: QEMU ended unexpectedly ({}) {}",
                vm.exit_description(),
                vm.qemu_messages()
            );
            tracing::warn!("{instance_id}: {message}");
            machine.vm = None;
            self.release_disks(machine);
            return self.update_instance(instance_id, |i| {
                i.state = InstanceState::Stopped;
                i.vm = None;
                i.state_transition_reason = transition_reason("Server error");
                i.state_reason = Some(StateReason {
                    code: "Server.InternalError".into(),
                    message: message.trim().to_string(),
                });
            });
        }
        if vm.status().ok().as_deref() != Some("shutdown") {
            return Ok(());
        }
        let instance = self.instance(instance_id)?;
        self.power_off(machine, true);
        let reason = StateReason {
            code: "Client.InstanceInitiatedShutdown".into(),
            message: "Client.InstanceInitiatedShutdown: Instance initiated shutdown".into(),
        };
        if instance.shutdown_behavior == "terminate" {
            return self.finish_termination(instance_id, Some(reason));
        }
        self.update_instance(instance_id, |i| {
            i.state = InstanceState::Stopped;
            i.vm = None;
            i.state_transition_reason = transition_reason("Instance initiated shutdown");
            i.state_reason = Some(reason);
        })
    }

    fn forget_old_terminated(&self) -> Result<()> {
        let now = time::now_ms();
        let expired = |i: &Instance| {
            i.state == InstanceState::Terminated
                && i.terminated_at
                    .as_deref()
                    .and_then(|t| time::parse_ms(t).ok())
                    .is_some_and(|t| now - t > super::instances::TERMINATED_VISIBLE_MS)
        };
        if !self.read()?.instances.values().any(|i| expired(i)) {
            return Ok(());
        }
        self.write(|state, _| {
            let changes = state
                .instances
                .values()
                .filter(|i| expired(i))
                .map(|i| Change::DeleteInstance(i.instance_id.clone()))
                .collect();
            Ok((changes, ()))
        })
    }

    /// At start-up: takes over the QEMU processes of a previous Kiln (serving their volumes
    /// again, which their NBD clients reconnect to), and settles every instance whose VM is
    /// gone into the state that is true now.
    pub fn adopt_machines(&self) -> Result<()> {
        let instances: Vec<Arc<Instance>> = self
            .read()?
            .instances
            .values()
            .filter(|i| !matches!(i.state, InstanceState::Stopped | InstanceState::Terminated))
            .cloned()
            .collect();
        for instance in instances {
            let id = instance.instance_id.clone();
            let m = self.machine(&id)?;
            let mut machine = m.lock().map_err(poisoned)?;
            let adopted = match &instance.vm {
                Some(process) => self.adopt(&instance, &mut machine, process),
                None => false,
            };
            if adopted {
                tracing::info!("adopted the running VM of {id}");
            } else {
                self.release_disks(&mut machine);
            }
            match (instance.state, adopted) {
                (InstanceState::Pending, false) => self.queue_machine_op(&id, MachineOp::Boot),
                (InstanceState::Pending, true) => {
                    self.update_instance(&id, |i| i.state = InstanceState::Running)?
                }
                (InstanceState::Running, false) => self.update_instance(&id, |i| {
                    i.state = InstanceState::Stopped;
                    i.vm = None;
                    i.state_transition_reason = transition_reason("Server error");
                    i.state_reason = Some(StateReason {
                        code: "Server.InternalError".into(),
                        message: "Server.InternalError: the instance's QEMU process ended while Kiln was not running".into(),
                    });
                })?,
                (InstanceState::Stopping, _) => {
                    self.queue_machine_op(&id, MachineOp::Stop { force: false })
                }
                (InstanceState::ShuttingDown, _) => {
                    self.queue_machine_op(&id, MachineOp::Terminate)
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn adopt(&self, instance: &Instance, machine: &mut Machine, process: &VmProcess) -> bool {
        let dir = self.vm_dir(&instance.instance_id);
        let disks = match self.serve_disks(instance, machine) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("serving the volumes of {}: {e}", instance.instance_id);
                return false;
            }
        };
        let accelerator = if process.accelerator == "kvm" {
            Accelerator::Kvm
        } else {
            Accelerator::Tcg
        };
        let spec = VmSpec {
            name: instance.instance_id.clone(),
            accelerator,
            vcpus: 0,
            memory_mib: 0,
            disks,
            boot: Boot::Firmware,
            console_log: dir.join("console.log"),
            qemu_log: dir.join("qemu.log"),
            qmp_socket: dir.join("qmp.sock"),
            fw_cfg_files: Vec::new(),
            smbios_uuid: None,
            exit_on_reboot: false,
        };
        match QemuVm::adopt(spec, process.pid, process.start_ticks) {
            Some(vm) => {
                machine.vm = Some(vm);
                true
            }
            None => false,
        }
    }

    /// At shutdown: stops serving volumes (QEMU's NBD clients wait to reconnect) and
    /// flushes them; VMs keep running for the next Kiln to adopt.
    pub fn release_machines(&self) {
        let machines: Vec<Arc<Mutex<Machine>>> = match self.machines.table.lock() {
            Ok(t) => t.values().cloned().collect(),
            Err(_) => return,
        };
        for m in machines {
            if let Ok(mut machine) = m.lock() {
                machine.vm = None;
                self.release_disks(&mut machine);
            }
        }
    }

    /// The bytes of a kernel or ramdisk image (its root snapshot up to the last stored
    /// block), cached in `DATA/boot/SNAPSHOT`.
    pub(crate) fn boot_file(&self, image_id: &str) -> Result<PathBuf> {
        let snapshot_id = {
            let state = self.read()?;
            let image = state.images.get(image_id).ok_or_else(|| {
                Error::InvalidAkiIdNotFound(format!("The image '{image_id}' does not exist"))
            })?;
            image
                .block_device_mappings
                .iter()
                .find(|m| m.device_name == image.root_device_name)
                .and_then(|m| m.ebs.as_ref())
                .and_then(|e| e.snapshot_id.clone())
                .ok_or_else(|| {
                    Error::InternalError(format!("image {image_id} has no root snapshot"))
                })?
        };
        let path = self.data_dir.join("boot").join(snapshot_id.as_str());
        if path.exists() {
            return Ok(path);
        }
        let blocks = self.store().snapshot_blocks(&snapshot_id, 0, i64::MAX)?;
        let mut bytes = Vec::new();
        for b in &blocks {
            let data = self.blocks().get(&b.hash)?;
            let at = b.index as usize * crate::blocks::BLOCK_SIZE;
            if bytes.len() < at + data.len() {
                bytes.resize(at + data.len(), 0);
            }
            bytes[at..at + data.len()].copy_from_slice(&data);
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::InternalError(format!("{}: {e}", dir.display())))?;
        }
        let partial = path.with_extension("partial");
        write_file(&partial, &bytes)?;
        std::fs::rename(&partial, &path)
            .map_err(|e| Error::InternalError(format!("{}: {e}", path.display())))?;
        Ok(path)
    }
}

fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    std::fs::write(path, data).map_err(|e| Error::InternalError(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smbios_uuid_starts_with_ec2_and_has_uuid_shape() {
        let uuid = smbios_uuid("i-0123456789abcdef0");
        assert!(uuid.starts_with("ec2"));
        let groups: Vec<usize> = uuid.split('-').map(str::len).collect();
        assert_eq!(groups, vec![8, 4, 4, 4, 12]);
        assert_eq!(uuid, smbios_uuid("i-0123456789abcdef0"));
    }
}
