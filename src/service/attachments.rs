//! AttachVolume and DetachVolume.
//!
//! On a stopped instance the attachment is only recorded (the next boot includes the
//! volume). On a running one the volume goes `attaching` / `detaching` and the instance's
//! machine plugs it into QEMU or asks the guest to let it go (PCI hot-plug); the attachment
//! becomes `attached` or disappears when the VM has done so.

use super::instances::owned_instance;
use super::machines::MachineOp;
use super::model::{InstanceBlockDevice, InstanceState, VolumeAttachment, VolumeState};
use super::volumes::owned_volume;
use super::{time, RequestContext, Service};
use crate::error::{Error, Result};
use crate::store::Change;

/// A volume attachment as AttachVolume and DetachVolume report it.
#[derive(Debug, Clone)]
pub struct AttachmentReport {
    /// The volume.
    pub volume_id: String,
    /// The attachment.
    pub attachment: VolumeAttachment,
}

/// Parameters of DetachVolume.
#[derive(Debug, Clone, Default)]
pub struct DetachVolumeRequest {
    /// The volume.
    pub volume_id: String,
    /// The instance it must be attached to, if given.
    pub instance_id: Option<String>,
    /// The device it must be attached as, if given.
    pub device: Option<String>,
    /// Detach even if the guest does not release it.
    pub force: bool,
}

fn check_device_name(device: &str) -> Result<()> {
    let ok = device.starts_with("/dev/") && device.len() > 5 || device.starts_with("xvd");
    if ok
        && device.len() <= 32
        && device
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '/')
    {
        Ok(())
    } else {
        Err(Error::InvalidParameterValue(format!(
            "Value ({device}) for parameter device is invalid. {device} is not a valid EBS device name."
        )))
    }
}

impl Service {
    /// AttachVolume.
    pub fn attach_volume(
        &self,
        ctx: &RequestContext,
        volume_id: &str,
        instance_id: &str,
        device: &str,
    ) -> Result<AttachmentReport> {
        check_device_name(device)?;
        let (report, hotplug) = self.write(|state, _| {
            let volume = owned_volume(state, ctx, volume_id)?;
            let instance = owned_instance(state, ctx, instance_id)?;
            if let Some(a) = &volume.attachment {
                return Err(Error::VolumeInUse(volume_id.to_string(), a.instance_id.clone()));
            }
            if volume.state != VolumeState::Available {
                return Err(Error::IncorrectState(format!(
                    "The volume '{volume_id}' is in the '{}' state.",
                    volume.state.as_str()
                )));
            }
            let running = match instance.state {
                InstanceState::Running => true,
                InstanceState::Stopped => false,
                other => {
                    return Err(Error::IncorrectInstanceState(format!(
                        "Instance '{instance_id}' is not 'running' or 'stopped' ({}).",
                        other.as_str()
                    )))
                }
            };
            if volume.availability_zone != instance.availability_zone {
                return Err(Error::InvalidVolumeZoneMismatch(format!(
                    "The volume '{volume_id}' is not in the same availability zone as instance '{instance_id}'"
                )));
            }
            if instance.block_devices.iter().any(|d| d.device_name == device) {
                return Err(Error::InvalidParameterValue(format!(
                    "Invalid value '{device}' for unixDevice. Attachment point {device} is already in use"
                )));
            }
            ctx.finish_dry_run()?;
            let now = time::now_string();
            let attachment = VolumeAttachment {
                instance_id: instance_id.to_string(),
                device: device.to_string(),
                state: if running { "attaching" } else { "attached" }.into(),
                attach_time: now.clone(),
                delete_on_termination: false,
            };
            let mut attached = (**volume).clone();
            attached.state = VolumeState::InUse;
            attached.attachment = Some(attachment.clone());
            let mut changed = (**instance).clone();
            changed.block_devices.push(InstanceBlockDevice {
                device_name: device.to_string(),
                volume_id: volume_id.to_string(),
                attach_time: now,
                delete_on_termination: false,
            });
            Ok((
                vec![Change::PutVolume(attached), Change::PutInstance(changed)],
                (
                    AttachmentReport {
                        volume_id: volume_id.to_string(),
                        attachment,
                    },
                    running,
                ),
            ))
        })?;
        if hotplug {
            self.queue_machine_op(
                instance_id,
                MachineOp::Attach {
                    volume_id: volume_id.to_string(),
                },
            );
        }
        Ok(report)
    }

    /// DetachVolume.
    pub fn detach_volume(
        &self,
        ctx: &RequestContext,
        req: &DetachVolumeRequest,
    ) -> Result<AttachmentReport> {
        let (report, unplug) = self.write(|state, _| {
            let volume = owned_volume(state, ctx, &req.volume_id)?;
            let Some(attachment) = volume.attachment.clone() else {
                return Err(Error::IncorrectState(format!(
                    "Volume '{}' is in the '{}' state.",
                    req.volume_id,
                    volume.state.as_str()
                )));
            };
            if req.instance_id.as_ref().is_some_and(|i| *i != attachment.instance_id)
                || req.device.as_ref().is_some_and(|d| *d != attachment.device)
            {
                return Err(Error::InvalidParameterValue(format!(
                    "Volume '{}' is not attached to {} as {}",
                    req.volume_id,
                    req.instance_id.as_deref().unwrap_or(&attachment.instance_id),
                    req.device.as_deref().unwrap_or(&attachment.device)
                )));
            }
            let instance = state
                .instances
                .get(&attachment.instance_id)
                .ok_or_else(|| Error::InvalidInstanceIdNotFound(attachment.instance_id.clone()))?;
            // Force may retry a detach that is stuck.
            if attachment.state != "attached" && !(req.force && attachment.state == "detaching") {
                return Err(Error::IncorrectState(format!(
                    "Volume '{}' is {}.",
                    req.volume_id, attachment.state
                )));
            }
            let running = match instance.state {
                InstanceState::Stopped => false,
                InstanceState::Running => true,
                other => {
                    return Err(Error::IncorrectInstanceState(format!(
                        "Instance '{}' is {}; volumes can be detached from running or stopped instances.",
                        instance.instance_id,
                        other.as_str()
                    )))
                }
            };
            if running && attachment.device == instance.root_device_name {
                return Err(Error::OperationNotPermitted(format!(
                    "The root volume '{}' cannot be detached from the running instance '{}'; stop it first.",
                    req.volume_id, instance.instance_id
                )));
            }
            ctx.finish_dry_run()?;
            let mut detaching = attachment.clone();
            detaching.state = "detaching".into();
            let mut changed_volume = (**volume).clone();
            let mut changes = Vec::new();
            if running {
                changed_volume.attachment = Some(detaching.clone());
            } else {
                changed_volume.attachment = None;
                changed_volume.state = VolumeState::Available;
                let mut changed = (**instance).clone();
                changed.block_devices.retain(|d| d.volume_id != req.volume_id);
                changes.push(Change::PutInstance(changed));
            }
            changes.push(Change::PutVolume(changed_volume));
            Ok((
                changes,
                (
                    AttachmentReport {
                        volume_id: req.volume_id.clone(),
                        attachment: detaching,
                    },
                    running,
                ),
            ))
        })?;
        if unplug {
            self.queue_machine_op(
                &report.attachment.instance_id,
                MachineOp::Detach {
                    volume_id: req.volume_id.clone(),
                    force: req.force,
                },
            );
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_device_name_accepts_dev_names_and_rejects_others() {
        assert!(check_device_name("/dev/sdf").is_ok());
        assert!(check_device_name("xvdg").is_ok());
        assert!(check_device_name("sdf").is_err());
        assert!(check_device_name("/dev/").is_err());
        assert!(check_device_name("/dev/sd f").is_err());
    }
}
