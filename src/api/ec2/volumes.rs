//! Volume actions (and CreateSnapshot of a volume): parameters in, XML out.

use super::snapshots::write_snapshot_fields;
use super::{write_tag_set, Call};
use crate::api::xml::XmlWriter;
use crate::error::Result;
use crate::service::model::{Volume, VolumeModification};
use crate::service::volumes::{CreateVolumeRequest, DescribeVolumesRequest, ModifyVolumeRequest};

/// CreateVolume.
pub fn create_volume(call: &Call<'_>) -> Result<String> {
    let p = call.params;
    let req = CreateVolumeRequest {
        availability_zone: p.string("AvailabilityZone").filter(|s| !s.is_empty()),
        size: p.int("Size")?,
        snapshot_id: p.string("SnapshotId").filter(|s| !s.is_empty()),
        volume_type: p.string("VolumeType").filter(|s| !s.is_empty()),
        iops: p.int("Iops")?,
        throughput: p.int("Throughput")?,
        encrypted: p.flag("Encrypted")?,
        kms_key_id: p.string("KmsKeyId").filter(|s| !s.is_empty()),
        multi_attach_enabled: p.flag("MultiAttachEnabled")?,
        tag_specifications: p.tag_specifications()?,
        client_token: p.string("ClientToken").filter(|s| !s.is_empty()),
    };
    let volume = call.service.create_volume(call.ctx, &req)?;
    let mut w = call.response();
    write_volume_fields(call, &mut w, &volume);
    Ok(call.finish(w))
}

/// DescribeVolumes.
pub fn describe_volumes(call: &Call<'_>) -> Result<String> {
    let p = call.params;
    let req = DescribeVolumesRequest {
        volume_ids: p.list("VolumeId")?,
        filters: p.filters()?,
        max_results: p.int("MaxResults")?,
        next_token: p.string("NextToken"),
    };
    let (volumes, next_token) = call.service.describe_volumes(call.ctx, &req)?;
    let mut w = call.response();
    w.open("volumeSet");
    for v in &volumes {
        w.open("item");
        write_volume_fields(call, &mut w, v);
        w.close("item");
    }
    w.close("volumeSet");
    w.opt_leaf("nextToken", next_token.as_deref());
    Ok(call.finish(w))
}

/// DeleteVolume.
pub fn delete_volume(call: &Call<'_>) -> Result<String> {
    call.service
        .delete_volume(call.ctx, call.params.required("VolumeId")?)?;
    Ok(call.return_true())
}

/// ModifyVolume.
pub fn modify_volume(call: &Call<'_>) -> Result<String> {
    let p = call.params;
    let req = ModifyVolumeRequest {
        volume_id: p.required("VolumeId")?.to_string(),
        size: p.int("Size")?,
        volume_type: p.string("VolumeType").filter(|s| !s.is_empty()),
        iops: p.int("Iops")?,
        throughput: p.int("Throughput")?,
    };
    let (volume_id, m) = call.service.modify_volume(call.ctx, &req)?;
    let mut w = call.response();
    w.open("volumeModification");
    write_modification_fields(&mut w, &volume_id, &m);
    w.close("volumeModification");
    Ok(call.finish(w))
}

/// DescribeVolumesModifications.
pub fn describe_volumes_modifications(call: &Call<'_>) -> Result<String> {
    let p = call.params;
    let (rows, next_token) = call.service.describe_volumes_modifications(
        call.ctx,
        &p.list("VolumeId")?,
        &p.filters()?,
        p.int("MaxResults")?,
        p.get("NextToken"),
    )?;
    let mut w = call.response();
    w.open("volumeModificationSet");
    for (volume_id, m) in &rows {
        w.open("item");
        write_modification_fields(&mut w, volume_id, m);
        w.close("item");
    }
    w.close("volumeModificationSet");
    w.opt_leaf("nextToken", next_token.as_deref());
    Ok(call.finish(w))
}

/// CreateSnapshot (of a volume).
pub fn create_snapshot(call: &Call<'_>) -> Result<String> {
    let p = call.params;
    let snapshot = call.service.create_snapshot(
        call.ctx,
        p.required("VolumeId")?,
        p.get("Description"),
        &p.tag_specifications()?,
    )?;
    let mut w = call.response();
    write_snapshot_fields(call, &mut w, &snapshot);
    Ok(call.finish(w))
}

fn write_volume_fields(call: &Call<'_>, w: &mut XmlWriter, v: &Volume) {
    w.leaf("volumeId", &v.volume_id)
        .leaf("size", &v.size.to_string())
        .leaf("snapshotId", v.snapshot_id.as_deref().unwrap_or(""))
        .leaf("availabilityZone", &v.availability_zone)
        .leaf("status", v.state.as_str())
        .leaf("createTime", &v.create_time);
    w.open("attachmentSet");
    if let Some(a) = &v.attachment {
        w.open("item")
            .leaf("volumeId", &v.volume_id)
            .leaf("instanceId", &a.instance_id)
            .leaf("device", &a.device)
            .leaf("status", &a.state)
            .leaf("attachTime", &a.attach_time)
            .bool_leaf("deleteOnTermination", a.delete_on_termination)
            .close("item");
    }
    w.close("attachmentSet");
    w.leaf("volumeType", &v.volume_type)
        .opt_leaf("iops", v.iops.map(|n| n.to_string()).as_deref())
        .opt_leaf("throughput", v.throughput.map(|n| n.to_string()).as_deref())
        .bool_leaf("encrypted", v.encrypted)
        .opt_leaf("kmsKeyId", v.kms_key_id.as_deref())
        .bool_leaf("multiAttachEnabled", v.multi_attach_enabled)
        .bool_leaf("fastRestored", false);
    write_tag_set(w, v.tags.of(call.ctx.account_id()));
}

fn write_modification_fields(w: &mut XmlWriter, volume_id: &str, m: &VolumeModification) {
    let num = |n: Option<i64>| n.map(|n| n.to_string());
    w.leaf("volumeId", volume_id)
        .leaf("modificationState", &m.state)
        .leaf("targetSize", &m.target_size.to_string())
        .opt_leaf("targetIops", num(m.target_iops).as_deref())
        .leaf("targetVolumeType", &m.target_volume_type)
        .opt_leaf("targetThroughput", num(m.target_throughput).as_deref())
        .leaf("originalSize", &m.original_size.to_string())
        .opt_leaf("originalIops", num(m.original_iops).as_deref())
        .leaf("originalVolumeType", &m.original_volume_type)
        .opt_leaf("originalThroughput", num(m.original_throughput).as_deref())
        .leaf("progress", &m.progress.to_string())
        .leaf("startTime", &m.start_time)
        .opt_leaf("endTime", m.end_time.as_deref());
}
