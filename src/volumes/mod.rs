//! Volumes: copy-on-write block devices over snapshot blocks, served to the hypervisor.
//!
//! [`cow::CowVolume`] holds a volume's bytes (its source snapshot's blocks, read through,
//! plus its own written blocks in a sparse overlay) and knows which blocks changed;
//! [`nbd::NbdServer`] serves one volume on a unix socket to QEMU's NBD client. Volume
//! records, attachment and snapshots of volumes live in the service layer.

pub mod cow;
pub mod nbd;
