//! Snapshot actions: parameters in, XML out.

use super::{write_tag_set, Call};
use crate::api::query::Params;
use crate::error::{Error, Result};
use crate::service::model::{Snapshot, VolumePermission};
use crate::service::snapshots::{CopySnapshotRequest, DescribeSnapshotsRequest};

/// DescribeSnapshots.
pub fn describe_snapshots(call: &Call<'_>) -> Result<String> {
    let p = call.params;
    let req = DescribeSnapshotsRequest {
        snapshot_ids: p.list("SnapshotId")?,
        owner_ids: p.list("Owner")?,
        restorable_by: p.list("RestorableBy")?,
        filters: p.filters()?,
        max_results: p.int("MaxResults")?,
        next_token: p.string("NextToken"),
    };
    let (snapshots, next_token) = call.service.describe_snapshots(call.ctx, &req)?;
    let mut w = call.response();
    w.open("snapshotSet");
    for s in &snapshots {
        write_snapshot(call, &mut w, s);
    }
    w.close("snapshotSet");
    w.opt_leaf("nextToken", next_token.as_deref());
    Ok(call.finish(w))
}

fn write_snapshot(call: &Call<'_>, w: &mut crate::api::xml::XmlWriter, s: &Snapshot) {
    w.open("item");
    write_snapshot_fields(call, w, s);
    w.close("item");
}

/// A snapshot's fields (inside `<item>` in lists, at the top of CreateSnapshot's answer).
pub(crate) fn write_snapshot_fields(
    call: &Call<'_>,
    w: &mut crate::api::xml::XmlWriter,
    s: &Snapshot,
) {
    w.leaf("snapshotId", &s.snapshot_id)
        .leaf("volumeId", &s.volume_id)
        .leaf("status", s.state.as_str())
        .opt_leaf("statusMessage", s.state_message.as_deref())
        .leaf("startTime", &s.start_time)
        .opt_leaf("completionTime", s.completion_time.as_deref())
        .leaf("progress", &s.progress)
        .leaf("ownerId", &s.owner_id)
        .opt_leaf("ownerAlias", call.service.owner_alias(&s.owner_id))
        .leaf("volumeSize", &s.volume_size.to_string())
        .leaf("description", &s.description)
        .bool_leaf("encrypted", s.encrypted)
        .opt_leaf("kmsKeyId", s.kms_key_id.as_deref())
        .leaf("storageTier", "standard")
        .leaf("transferType", "standard")
        .leaf("sseType", if s.encrypted { "sse-ebs" } else { "none" });
    write_tag_set(w, s.tags.of(call.ctx.account_id()));
}

/// DeleteSnapshot.
pub fn delete_snapshot(call: &Call<'_>) -> Result<String> {
    call.service
        .delete_snapshot(call.ctx, call.params.required("SnapshotId")?)?;
    Ok(call.return_true())
}

/// CopySnapshot.
pub fn copy_snapshot(call: &Call<'_>) -> Result<String> {
    let p = call.params;
    let req = CopySnapshotRequest {
        source_region: p.required("SourceRegion")?.to_string(),
        source_snapshot_id: p.required("SourceSnapshotId")?.to_string(),
        description: p.string("Description"),
        encrypted: p.flag("Encrypted")?,
        kms_key_id: p.string("KmsKeyId"),
        tag_specifications: p.tag_specifications()?,
    };
    let (snapshot_id, tags) = call.service.copy_snapshot(call.ctx, req)?;
    let mut w = call.response();
    w.leaf("snapshotId", &snapshot_id);
    write_tag_set(&mut w, tags.of(call.ctx.account_id()));
    Ok(call.finish(w))
}

/// DescribeSnapshotAttribute.
pub fn describe_snapshot_attribute(call: &Call<'_>) -> Result<String> {
    let p = call.params;
    let snapshot_id = p.required("SnapshotId")?;
    let attribute = p.required("Attribute")?;
    let perms = call
        .service
        .describe_snapshot_attribute(call.ctx, snapshot_id, attribute)?;
    let mut w = call.response();
    w.leaf("snapshotId", snapshot_id);
    if attribute == "productCodes" {
        w.empty("productCodes");
    } else {
        w.open("createVolumePermission");
        for perm in perms {
            w.open("item");
            match perm {
                VolumePermission::UserId(u) => w.leaf("userId", &u),
                VolumePermission::Public => w.leaf("group", "all"),
            };
            w.close("item");
        }
        w.close("createVolumePermission");
    }
    Ok(call.finish(w))
}

fn volume_permissions(items: Vec<Params>) -> Result<Vec<VolumePermission>> {
    items
        .into_iter()
        .map(|item| {
            if let Some(u) = item.get("UserId") {
                Ok(VolumePermission::UserId(u.to_string()))
            } else {
                group_permission(item.get("Group").unwrap_or(""))
            }
        })
        .collect()
}

fn group_permission(group: &str) -> Result<VolumePermission> {
    if group == "all" {
        Ok(VolumePermission::Public)
    } else {
        Err(Error::InvalidParameterValue(format!(
            "Invalid group '{group}' in createVolumePermission: only 'all' is supported"
        )))
    }
}

/// ModifySnapshotAttribute.
pub fn modify_snapshot_attribute(call: &Call<'_>) -> Result<String> {
    let p = call.params;
    let snapshot_id = p.required("SnapshotId")?;
    let (add, remove) = if p.has_prefix("CreateVolumePermission") {
        let cvp = p.nested("CreateVolumePermission");
        (
            volume_permissions(cvp.structs("Add")?)?,
            volume_permissions(cvp.structs("Remove")?)?,
        )
    } else {
        match p.get("Attribute") {
            Some("createVolumePermission") | None => {}
            Some(other) => {
                return Err(Error::InvalidParameterValue(format!(
                    "Value ({other}) for parameter Attribute is invalid. Only createVolumePermission can be modified"
                )))
            }
        }
        let mut perms: Vec<VolumePermission> = p
            .list("UserId")?
            .into_iter()
            .map(VolumePermission::UserId)
            .collect();
        for g in p.list("UserGroup")? {
            perms.push(group_permission(&g)?);
        }
        match p.required("OperationType")? {
            "add" => (perms, Vec::new()),
            "remove" => (Vec::new(), perms),
            other => {
                return Err(Error::InvalidParameterValue(format!(
                    "Value ({other}) for parameter OperationType is invalid. Expected 'add' or 'remove'."
                )))
            }
        }
    };
    call.service
        .modify_snapshot_attribute(call.ctx, snapshot_id, add, remove)?;
    Ok(call.return_true())
}

/// ResetSnapshotAttribute.
pub fn reset_snapshot_attribute(call: &Call<'_>) -> Result<String> {
    let p = call.params;
    call.service.reset_snapshot_attribute(
        call.ctx,
        p.required("SnapshotId")?,
        p.required("Attribute")?,
    )?;
    Ok(call.return_true())
}
