//! Instance actions (and CreateImage, AttachVolume, DetachVolume): parameters in, XML out.

use super::images::block_device_mappings;
use super::{write_tag_set, Call};
use crate::api::xml::XmlWriter;
use crate::error::{Error, Result};
use crate::service::attachments::{AttachmentReport, DetachVolumeRequest};
use crate::service::instance_images::{CreateImageRequest, CreateSnapshotsRequest};
use crate::service::instance_types::instance_type;
use crate::service::instances::{
    status_check, DescribeInstancesRequest, InstanceAttribute, InstanceAttributeChange,
    Reservation, RunInstancesRequest, StateChange,
};
use crate::service::model::{Instance, InstanceBlockDevice, InstanceState};

/// A parameter Packer and other tools send as an empty string when unset.
fn non_empty(call: &Call<'_>, key: &str) -> Option<String> {
    call.params.string(key).filter(|s| !s.is_empty())
}

/// RunInstances.
pub fn run_instances(call: &Call<'_>) -> Result<String> {
    let p = call.params;
    let req = RunInstancesRequest {
        image_id: non_empty(call, "ImageId"),
        instance_type: non_empty(call, "InstanceType"),
        min_count: p.int("MinCount")?,
        max_count: p.int("MaxCount")?,
        user_data: non_empty(call, "UserData"),
        block_device_mappings: block_device_mappings(p)?,
        tag_specifications: p.tag_specifications()?,
        client_token: non_empty(call, "ClientToken"),
        shutdown_behavior: non_empty(call, "InstanceInitiatedShutdownBehavior"),
        disable_api_termination: p.flag("DisableApiTermination")?,
        availability_zone: non_empty(call, "Placement.AvailabilityZone"),
        kernel_id: non_empty(call, "KernelId"),
        ramdisk_id: non_empty(call, "RamdiskId"),
    };
    let reservation = call.service.run_instances(call.ctx, &req)?;
    let mut w = call.response();
    write_reservation_fields(call, &mut w, &reservation);
    Ok(call.finish(w))
}

fn describe_request(call: &Call<'_>) -> Result<DescribeInstancesRequest> {
    let p = call.params;
    Ok(DescribeInstancesRequest {
        instance_ids: p.list("InstanceId")?,
        filters: p.filters()?,
        max_results: p.int("MaxResults")?,
        next_token: p.string("NextToken"),
        include_all_instances: p.flag("IncludeAllInstances")?,
    })
}

/// DescribeInstances.
pub fn describe_instances(call: &Call<'_>) -> Result<String> {
    let (reservations, next_token) = call
        .service
        .describe_instances(call.ctx, &describe_request(call)?)?;
    let mut w = call.response();
    w.open("reservationSet");
    for r in &reservations {
        w.open("item");
        write_reservation_fields(call, &mut w, r);
        w.close("item");
    }
    w.close("reservationSet");
    w.opt_leaf("nextToken", next_token.as_deref());
    Ok(call.finish(w))
}

/// DescribeInstanceStatus.
pub fn describe_instance_status(call: &Call<'_>) -> Result<String> {
    let (instances, next_token) = call
        .service
        .describe_instance_status(call.ctx, &describe_request(call)?)?;
    let mut w = call.response();
    w.open("instanceStatusSet");
    for i in &instances {
        let check = status_check(i);
        let reachability = if check == "ok" {
            "passed"
        } else {
            "not-applicable"
        };
        w.open("item")
            .leaf("instanceId", &i.instance_id)
            .leaf("availabilityZone", &i.availability_zone);
        write_state(&mut w, "instanceState", i.state);
        for set in ["systemStatus", "instanceStatus"] {
            w.open(set).leaf("status", check).open("details");
            w.open("item")
                .leaf("name", "reachability")
                .leaf("status", reachability)
                .close("item");
            w.close("details").close(set);
        }
        w.close("item");
    }
    w.close("instanceStatusSet");
    w.opt_leaf("nextToken", next_token.as_deref());
    Ok(call.finish(w))
}

fn instance_ids(call: &Call<'_>) -> Result<Vec<String>> {
    call.params.list("InstanceId")
}

fn state_changes(call: &Call<'_>, changes: &[StateChange]) -> String {
    let mut w = call.response();
    w.open("instancesSet");
    for c in changes {
        w.open("item").leaf("instanceId", &c.instance_id);
        write_state(&mut w, "currentState", c.current);
        write_state(&mut w, "previousState", c.previous);
        w.close("item");
    }
    w.close("instancesSet");
    call.finish(w)
}

/// StartInstances.
pub fn start_instances(call: &Call<'_>) -> Result<String> {
    let changes = call
        .service
        .start_instances(call.ctx, &instance_ids(call)?)?;
    Ok(state_changes(call, &changes))
}

/// StopInstances.
pub fn stop_instances(call: &Call<'_>) -> Result<String> {
    let force = call.params.flag("Force")?;
    let changes = call
        .service
        .stop_instances(call.ctx, &instance_ids(call)?, force)?;
    Ok(state_changes(call, &changes))
}

/// TerminateInstances.
pub fn terminate_instances(call: &Call<'_>) -> Result<String> {
    let changes = call
        .service
        .terminate_instances(call.ctx, &instance_ids(call)?)?;
    Ok(state_changes(call, &changes))
}

/// RebootInstances.
pub fn reboot_instances(call: &Call<'_>) -> Result<String> {
    call.service
        .reboot_instances(call.ctx, &instance_ids(call)?)?;
    Ok(call.return_true())
}

/// GetConsoleOutput.
pub fn get_console_output(call: &Call<'_>) -> Result<String> {
    let id = call.params.required("InstanceId")?;
    let (output, timestamp) = call.service.get_console_output(call.ctx, id)?;
    let mut w = call.response();
    w.leaf("instanceId", id)
        .leaf("timestamp", &timestamp)
        .leaf("output", &output);
    Ok(call.finish(w))
}

/// DescribeInstanceAttribute.
pub fn describe_instance_attribute(call: &Call<'_>) -> Result<String> {
    let id = call.params.required("InstanceId")?;
    let attribute = call.params.required("Attribute")?;
    let value = call
        .service
        .describe_instance_attribute(call.ctx, id, attribute)?;
    let mut w = call.response();
    w.leaf("instanceId", id);
    let mut value_of = |tag: &str, v: Option<&str>| {
        w.open(tag);
        w.opt_leaf("value", v);
        w.close(tag);
    };
    match &value {
        InstanceAttribute::InstanceType(t) => value_of("instanceType", Some(t)),
        InstanceAttribute::UserData(d) => value_of("userData", d.as_deref()),
        InstanceAttribute::DisableApiTermination(b) => value_of(
            "disableApiTermination",
            Some(if *b { "true" } else { "false" }),
        ),
        InstanceAttribute::ShutdownBehavior(b) => {
            value_of("instanceInitiatedShutdownBehavior", Some(b))
        }
        InstanceAttribute::RootDeviceName(n) => value_of("rootDeviceName", Some(n)),
        InstanceAttribute::Kernel(k) => value_of("kernel", k.as_deref()),
        InstanceAttribute::Ramdisk(r) => value_of("ramdisk", r.as_deref()),
        InstanceAttribute::BlockDeviceMapping(devices) => {
            write_block_devices(&mut w, devices);
        }
    }
    Ok(call.finish(w))
}

/// ModifyInstanceAttribute (one attribute per call, in either of EC2's two forms).
pub fn modify_instance_attribute(call: &Call<'_>) -> Result<String> {
    let p = call.params;
    let id = p.required("InstanceId")?;
    let pick = |name: &str, attribute: &str| -> Option<String> {
        p.string(&format!("{name}.Value")).or_else(|| {
            (p.get("Attribute") == Some(attribute))
                .then(|| p.string("Value"))
                .flatten()
        })
    };
    let change = if let Some(t) = pick("InstanceType", "instanceType") {
        InstanceAttributeChange::InstanceType(t)
    } else if let Some(d) = pick("UserData", "userData") {
        InstanceAttributeChange::UserData(d)
    } else if let Some(v) = pick("DisableApiTermination", "disableApiTermination") {
        InstanceAttributeChange::DisableApiTermination(parse_bool(&v)?)
    } else if let Some(b) = pick(
        "InstanceInitiatedShutdownBehavior",
        "instanceInitiatedShutdownBehavior",
    ) {
        InstanceAttributeChange::ShutdownBehavior(b)
    } else {
        return Err(Error::MissingParameter(
            "one of InstanceType, UserData, DisableApiTermination or InstanceInitiatedShutdownBehavior".into(),
        ));
    };
    call.service
        .modify_instance_attribute(call.ctx, id, change)?;
    Ok(call.return_true())
}

fn parse_bool(v: &str) -> Result<bool> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(Error::InvalidParameterValue(format!(
            "Value ({other}) is not a boolean"
        ))),
    }
}

/// CreateImage.
pub fn create_image(call: &Call<'_>) -> Result<String> {
    let p = call.params;
    let req = CreateImageRequest {
        instance_id: p.required("InstanceId")?.to_string(),
        name: p.string("Name"),
        description: non_empty(call, "Description"),
        no_reboot: p.flag("NoReboot")?,
        block_device_mappings: block_device_mappings(p)?,
        tag_specifications: p.tag_specifications()?,
    };
    let image_id = call.service.create_image(call.ctx, &req)?;
    let mut w = call.response();
    w.leaf("imageId", &image_id);
    Ok(call.finish(w))
}

/// CreateSnapshots (of an instance's volumes).
pub fn create_snapshots(call: &Call<'_>) -> Result<String> {
    let p = call.params;
    let req = CreateSnapshotsRequest {
        instance_id: p.required("InstanceSpecification.InstanceId")?.to_string(),
        exclude_boot_volume: p.flag("InstanceSpecification.ExcludeBootVolume")?,
        exclude_data_volume_ids: p.list("InstanceSpecification.ExcludeDataVolumeId")?,
        description: non_empty(call, "Description"),
        tag_specifications: p.tag_specifications()?,
    };
    let snapshots = call.service.create_snapshots(call.ctx, &req)?;
    let mut w = call.response();
    w.open("snapshotSet");
    for s in &snapshots {
        w.open("item")
            .leaf("snapshotId", &s.snapshot_id)
            .leaf("volumeId", &s.volume_id)
            .leaf("state", s.state.as_str())
            .leaf("volumeSize", &s.volume_size.to_string())
            .leaf("startTime", &s.start_time)
            .leaf("progress", &s.progress)
            .leaf("ownerId", &s.owner_id)
            .leaf("description", &s.description)
            .bool_leaf("encrypted", s.encrypted);
        write_tag_set(&mut w, s.tags.of(call.ctx.account_id()));
        w.close("item");
    }
    w.close("snapshotSet");
    Ok(call.finish(w))
}

/// AttachVolume.
pub fn attach_volume(call: &Call<'_>) -> Result<String> {
    let p = call.params;
    let report = call.service.attach_volume(
        call.ctx,
        p.required("VolumeId")?,
        p.required("InstanceId")?,
        p.required("Device")?,
    )?;
    Ok(attachment_response(call, &report))
}

/// DetachVolume.
pub fn detach_volume(call: &Call<'_>) -> Result<String> {
    let p = call.params;
    let req = DetachVolumeRequest {
        volume_id: p.required("VolumeId")?.to_string(),
        instance_id: non_empty(call, "InstanceId"),
        device: non_empty(call, "Device"),
        force: p.flag("Force")?,
    };
    let report = call.service.detach_volume(call.ctx, &req)?;
    Ok(attachment_response(call, &report))
}

fn attachment_response(call: &Call<'_>, report: &AttachmentReport) -> String {
    let mut w = call.response();
    let a = &report.attachment;
    w.leaf("volumeId", &report.volume_id)
        .leaf("instanceId", &a.instance_id)
        .leaf("device", &a.device)
        .leaf("status", &a.state)
        .leaf("attachTime", &a.attach_time)
        .bool_leaf("deleteOnTermination", a.delete_on_termination);
    call.finish(w)
}

fn write_state(w: &mut XmlWriter, tag: &str, state: InstanceState) {
    w.open(tag)
        .leaf("code", &state.code().to_string())
        .leaf("name", state.as_str())
        .close(tag);
}

fn write_block_devices(w: &mut XmlWriter, devices: &[InstanceBlockDevice]) {
    w.open("blockDeviceMapping");
    for d in devices {
        w.open("item")
            .leaf("deviceName", &d.device_name)
            .open("ebs");
        w.leaf("volumeId", &d.volume_id)
            .leaf("status", "attached")
            .leaf("attachTime", &d.attach_time)
            .bool_leaf("deleteOnTermination", d.delete_on_termination);
        w.close("ebs").close("item");
    }
    w.close("blockDeviceMapping");
}

fn write_reservation_fields(call: &Call<'_>, w: &mut XmlWriter, r: &Reservation) {
    w.leaf("reservationId", &r.reservation_id)
        .leaf("ownerId", &r.owner_id);
    w.open("groupSet").close("groupSet");
    w.open("instancesSet");
    for i in &r.instances {
        w.open("item");
        write_instance_fields(call, w, i);
        w.close("item");
    }
    w.close("instancesSet");
}

fn write_instance_fields(call: &Call<'_>, w: &mut XmlWriter, i: &Instance) {
    w.leaf("instanceId", &i.instance_id)
        .leaf("imageId", &i.image_id);
    write_state(w, "instanceState", i.state);
    w.leaf("privateDnsName", "")
        .leaf("dnsName", "")
        .leaf("reason", &i.state_transition_reason)
        .leaf("amiLaunchIndex", &i.ami_launch_index.to_string());
    w.open("productCodes").close("productCodes");
    w.leaf("instanceType", &i.instance_type)
        .leaf("launchTime", &i.launch_time);
    w.open("placement")
        .leaf("availabilityZone", &i.availability_zone)
        .leaf("groupName", "")
        .leaf("tenancy", "default")
        .close("placement");
    w.opt_leaf("kernelId", i.kernel_id.as_deref())
        .opt_leaf("ramdiskId", i.ramdisk_id.as_deref());
    w.open("monitoring")
        .leaf("state", "disabled")
        .close("monitoring");
    w.open("groupSet").close("groupSet");
    if let Some(reason) = &i.state_reason {
        w.open("stateReason")
            .leaf("code", &reason.code)
            .leaf("message", &reason.message)
            .close("stateReason");
    }
    w.leaf("architecture", &i.architecture)
        .leaf("rootDeviceType", "ebs")
        .leaf("rootDeviceName", &i.root_device_name);
    write_block_devices(w, &i.block_devices);
    w.leaf("virtualizationType", &i.virtualization_type)
        .opt_leaf("clientToken", i.client_token.as_deref());
    write_tag_set(w, i.tags.of(call.ctx.account_id()));
    w.leaf("hypervisor", "xen");
    w.open("networkInterfaceSet").close("networkInterfaceSet");
    w.bool_leaf("ebsOptimized", false)
        .bool_leaf("enaSupport", true);
    if let Some(t) = instance_type(&i.instance_type) {
        let threads = t.threads_per_core();
        w.open("cpuOptions")
            .leaf("coreCount", &(t.vcpus / threads.max(1)).to_string())
            .leaf("threadsPerCore", &threads.to_string())
            .close("cpuOptions");
    }
    w.open("hibernationOptions")
        .bool_leaf("configured", false)
        .close("hibernationOptions");
    w.open("metadataOptions")
        .leaf("state", "applied")
        .leaf("httpTokens", "optional")
        .leaf("httpPutResponseHopLimit", "1")
        .leaf("httpEndpoint", "enabled")
        .close("metadataOptions");
    w.leaf("platformDetails", "Linux/UNIX")
        .leaf("usageOperation", "RunInstances")
        .leaf("currentInstanceBootMode", "legacy-bios");
}
