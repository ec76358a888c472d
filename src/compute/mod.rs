//! Compute: the QEMU virtual machines instances run in.
//!
//! [`qemu::QemuVm`] starts one QEMU process for one instance: its disks are Kiln volumes
//! served over NBD (see [`crate::volumes::nbd`]), its serial console goes to a log file
//! (GetConsoleOutput reads it, also after the VM stopped), and Kiln drives it through a QMP
//! socket (status, clean power-down, stop). [`qmp`] is the small QMP client. Instance records
//! and their state machine live in the service layer; this module knows nothing of EC2.

pub mod accel;
pub mod qemu;
pub mod qmp;
