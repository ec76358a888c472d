//! Image actions: parameters in, XML out.

use super::{write_tag_set, Call};
use crate::api::query::Params;
use crate::api::xml::XmlWriter;
use crate::error::{Error, Result};
use crate::service::images::{
    protection_string, CopyImageRequest, DescribeImagesRequest, ImageAttribute,
    ImageAttributeChange, RegisterImageRequest,
};
use crate::service::model::{BlockDeviceMapping, EbsBlockDevice, Image, LaunchPermission};

pub(super) fn block_device_mappings(p: &Params) -> Result<Vec<BlockDeviceMapping>> {
    p.structs("BlockDeviceMapping")?
        .into_iter()
        .map(|m| {
            let ebs = if m.has_prefix("Ebs") {
                let e = m.nested("Ebs");
                Some(EbsBlockDevice {
                    snapshot_id: e
                        .string("SnapshotId")
                        .filter(|s| !s.is_empty())
                        .map(Into::into),
                    volume_size: e.int("VolumeSize")?,
                    volume_type: e
                        .string("VolumeType")
                        .filter(|s| !s.is_empty())
                        .map(Into::into),
                    iops: e.int("Iops")?,
                    throughput: e.int("Throughput")?,
                    delete_on_termination: e.bool("DeleteOnTermination")?,
                    encrypted: e.bool("Encrypted")?,
                    kms_key_id: e.string("KmsKeyId").map(Into::into),
                })
            } else {
                None
            };
            Ok(BlockDeviceMapping {
                device_name: m.string("DeviceName").unwrap_or_default().into(),
                virtual_name: m.string("VirtualName").map(Into::into),
                ebs,
                no_device: m.get("NoDevice").is_some(),
            })
        })
        .collect()
}

/// RegisterImage.
pub fn register_image(call: &Call<'_>) -> Result<String> {
    let p = call.params;
    let req = RegisterImageRequest {
        name: p.string("Name"),
        description: p.string("Description"),
        architecture: p.string("Architecture"),
        root_device_name: p.string("RootDeviceName"),
        block_device_mappings: block_device_mappings(p)?,
        virtualization_type: p.string("VirtualizationType"),
        kernel_id: p.string("KernelId"),
        ramdisk_id: p.string("RamdiskId"),
        boot_mode: p.string("BootMode"),
        ena_support: p.bool("EnaSupport")?,
        sriov_net_support: p.string("SriovNetSupport"),
        tpm_support: p.string("TpmSupport"),
        imds_support: p.string("ImdsSupport"),
        uefi_data: p.string("UefiData"),
        image_location: p.string("ImageLocation"),
        tag_specifications: p.tag_specifications()?,
    };
    let image_id = call.service.register_image(call.ctx, req)?;
    let mut w = call.response();
    w.leaf("imageId", &image_id);
    Ok(call.finish(w))
}

/// DescribeImages.
pub fn describe_images(call: &Call<'_>) -> Result<String> {
    let p = call.params;
    let req = DescribeImagesRequest {
        image_ids: p.list("ImageId")?,
        owners: p.list("Owner")?,
        executable_users: p.list("ExecutableBy")?,
        filters: p.filters()?,
        include_deprecated: p.flag("IncludeDeprecated")?,
        include_disabled: p.flag("IncludeDisabled")?,
        max_results: p.int("MaxResults")?,
        next_token: p.string("NextToken"),
    };
    let (images, next_token) = call.service.describe_images(call.ctx, &req)?;
    let mut w = call.response();
    w.open("imagesSet");
    for image in &images {
        write_image(call, &mut w, image);
    }
    w.close("imagesSet");
    w.opt_leaf("nextToken", next_token.as_deref());
    Ok(call.finish(w))
}

fn write_image(call: &Call<'_>, w: &mut XmlWriter, image: &Image) {
    w.open("item")
        .leaf("imageId", &image.image_id)
        .leaf("imageLocation", &image.image_location())
        .leaf("imageState", image.state.as_str())
        .leaf("imageOwnerId", &image.owner_id)
        .leaf("creationDate", &image.creation_date)
        .bool_leaf("isPublic", image.is_public())
        .leaf("architecture", &image.architecture)
        .leaf("imageType", &image.image_type)
        .opt_leaf("kernelId", image.details().kernel_id.as_deref())
        .opt_leaf("ramdiskId", image.details().ramdisk_id.as_deref())
        .opt_leaf("imageOwnerAlias", call.service.owner_alias(&image.owner_id))
        .leaf("platformDetails", "Linux/UNIX")
        .leaf("usageOperation", "RunInstances")
        .leaf("name", &image.name)
        .opt_leaf("description", image.description.as_deref())
        .leaf("rootDeviceType", &image.root_device_type)
        .leaf("rootDeviceName", &image.root_device_name);
    w.open("blockDeviceMapping");
    for m in &image.block_device_mappings {
        write_mapping(w, m);
    }
    w.close("blockDeviceMapping");
    w.leaf("virtualizationType", &image.virtualization_type);
    write_tag_set(w, image.tags.of(call.ctx.account_id()));
    w.leaf("hypervisor", "xen");
    if let Some(ena) = image.ena_support {
        w.bool_leaf("enaSupport", ena);
    }
    w.opt_leaf(
        "sriovNetSupport",
        image.details().sriov_net_support.as_deref(),
    )
    .opt_leaf("bootMode", image.boot_mode.as_deref())
    .opt_leaf("tpmSupport", image.details().tpm_support.as_deref())
    .opt_leaf("imdsSupport", image.imds_support.as_deref())
    .opt_leaf(
        "deprecationTime",
        image.details().deprecation_time.as_deref(),
    )
    .leaf(
        "deregistrationProtection",
        &protection_string(&image.details().deregistration_protection),
    )
    .opt_leaf(
        "lastLaunchedTime",
        image.details().last_launched_time.as_deref(),
    )
    .opt_leaf("sourceImageId", image.details().source_image_id.as_deref())
    .opt_leaf(
        "sourceImageRegion",
        image.details().source_image_region.as_deref(),
    );
    if let Some((code, message)) = &image.details().state_reason {
        w.open("stateReason")
            .leaf("code", code)
            .leaf("message", message)
            .close("stateReason");
    }
    w.bool_leaf("freeTierEligible", false);
    w.close("item");
}

fn write_mapping(w: &mut XmlWriter, m: &BlockDeviceMapping) {
    w.open("item").leaf("deviceName", &m.device_name);
    w.opt_leaf("virtualName", m.virtual_name.as_deref());
    if let Some(e) = &m.ebs {
        w.open("ebs");
        w.opt_leaf("snapshotId", e.snapshot_id.as_deref());
        if let Some(size) = e.volume_size {
            w.num_leaf("volumeSize", size);
        }
        if let Some(d) = e.delete_on_termination {
            w.bool_leaf("deleteOnTermination", d);
        }
        w.opt_leaf("volumeType", e.volume_type.as_deref());
        if let Some(iops) = e.iops {
            w.num_leaf("iops", iops);
        }
        if let Some(t) = e.throughput {
            w.num_leaf("throughput", t);
        }
        if let Some(enc) = e.encrypted {
            w.bool_leaf("encrypted", enc);
        }
        w.opt_leaf("kmsKeyId", e.kms_key_id.as_deref());
        w.close("ebs");
    }
    if m.no_device {
        w.leaf("noDevice", "");
    }
    w.close("item");
}

/// DeregisterImage.
pub fn deregister_image(call: &Call<'_>) -> Result<String> {
    let p = call.params;
    let results = call.service.deregister_image(
        call.ctx,
        p.required("ImageId")?,
        p.flag("DeleteAssociatedSnapshots")?,
    )?;
    let mut w = call.response();
    w.bool_leaf("return", true);
    if !results.is_empty() {
        w.open("deleteSnapshotResultSet");
        for r in results {
            w.open("item")
                .leaf("snapshotId", &r.snapshot_id)
                .leaf("returnCode", r.return_code)
                .close("item");
        }
        w.close("deleteSnapshotResultSet");
    }
    Ok(call.finish(w))
}

/// CopyImage.
pub fn copy_image(call: &Call<'_>) -> Result<String> {
    let p = call.params;
    let req = CopyImageRequest {
        source_region: p.required("SourceRegion")?.to_string(),
        source_image_id: p.required("SourceImageId")?.to_string(),
        name: p.required("Name")?.to_string(),
        description: p.string("Description"),
        client_token: p.string("ClientToken"),
        copy_image_tags: p.flag("CopyImageTags")?,
        encrypted: p.flag("Encrypted")?,
        kms_key_id: p.string("KmsKeyId"),
        tag_specifications: p.tag_specifications()?,
    };
    let image_id = call.service.copy_image(call.ctx, req)?;
    let mut w = call.response();
    w.leaf("imageId", &image_id);
    Ok(call.finish(w))
}

/// DescribeImageAttribute.
pub fn describe_image_attribute(call: &Call<'_>) -> Result<String> {
    let p = call.params;
    let image_id = p.required("ImageId")?;
    let attribute =
        call.service
            .describe_image_attribute(call.ctx, image_id, p.required("Attribute")?)?;
    let mut w = call.response();
    w.leaf("imageId", image_id);
    match attribute {
        ImageAttribute::Description(v) => w.attribute_value("description", v.as_deref()),
        ImageAttribute::Kernel(v) => w.attribute_value("kernel", v.as_deref()),
        ImageAttribute::Ramdisk(v) => w.attribute_value("ramdisk", v.as_deref()),
        ImageAttribute::LaunchPermission(perms) => {
            w.open("launchPermission");
            for perm in perms {
                w.open("item");
                match perm {
                    LaunchPermission::UserId(u) => w.leaf("userId", &u),
                    LaunchPermission::Public => w.leaf("group", "all"),
                    LaunchPermission::OrganizationArn(a) => w.leaf("organizationArn", &a),
                    LaunchPermission::OrganizationalUnitArn(a) => {
                        w.leaf("organizationalUnitArn", &a)
                    }
                };
                w.close("item");
            }
            w.close("launchPermission")
        }
        ImageAttribute::ProductCodes => w.empty("productCodes"),
        ImageAttribute::SriovNetSupport(v) => w.attribute_value("sriovNetSupport", v.as_deref()),
        ImageAttribute::BootMode(v) => w.attribute_value("bootMode", v.as_deref()),
        ImageAttribute::TpmSupport(v) => w.attribute_value("tpmSupport", v.as_deref()),
        ImageAttribute::UefiData(v) => w.attribute_value("uefiData", v.as_deref()),
        ImageAttribute::LastLaunchedTime(v) => w.attribute_value("lastLaunchedTime", v.as_deref()),
        ImageAttribute::ImdsSupport(v) => w.attribute_value("imdsSupport", v.as_deref()),
        ImageAttribute::DeregistrationProtection(v) => {
            w.attribute_value("deregistrationProtection", Some(&v))
        }
    };
    Ok(call.finish(w))
}

fn launch_permissions(items: Vec<Params>) -> Result<Vec<LaunchPermission>> {
    items
        .into_iter()
        .map(|item| {
            if let Some(u) = item.get("UserId") {
                Ok(LaunchPermission::UserId(u.to_string()))
            } else if let Some(g) = item.get("Group") {
                group_permission(g)
            } else if let Some(a) = item.get("OrganizationArn") {
                Ok(LaunchPermission::OrganizationArn(a.to_string()))
            } else if let Some(a) = item.get("OrganizationalUnitArn") {
                Ok(LaunchPermission::OrganizationalUnitArn(a.to_string()))
            } else {
                Err(Error::InvalidAmiAttributeItemValue(
                    "A launch permission needs UserId, Group, OrganizationArn or OrganizationalUnitArn".into(),
                ))
            }
        })
        .collect()
}

fn group_permission(group: &str) -> Result<LaunchPermission> {
    if group == "all" {
        Ok(LaunchPermission::Public)
    } else {
        Err(Error::InvalidAmiAttributeItemValue(format!(
            "Invalid attribute item value \"{group}\" for group item type."
        )))
    }
}

/// Reads the many equivalent forms of ModifyImageAttribute into one change.
fn image_attribute_change(p: &Params) -> Result<ImageAttributeChange> {
    if let Some(d) = p.get("Description.Value") {
        return Ok(ImageAttributeChange::Description(d.to_string()));
    }
    if let Some(v) = p.get("ImdsSupport.Value") {
        return Ok(ImageAttributeChange::ImdsSupport(v.to_string()));
    }
    if p.has_prefix("LaunchPermission") {
        let lp = p.nested("LaunchPermission");
        return Ok(ImageAttributeChange::LaunchPermission {
            add: launch_permissions(lp.structs("Add")?)?,
            remove: launch_permissions(lp.structs("Remove")?)?,
        });
    }
    let attribute = p.required("Attribute")?;
    match attribute {
        "description" => Ok(ImageAttributeChange::Description(
            p.required("Value")?.to_string(),
        )),
        "imdsSupport" => Ok(ImageAttributeChange::ImdsSupport(
            p.required("Value")?.to_string(),
        )),
        "productCodes" => Ok(ImageAttributeChange::ProductCodes),
        "launchPermission" => {
            let mut perms: Vec<LaunchPermission> = p
                .list("UserId")?
                .into_iter()
                .map(LaunchPermission::UserId)
                .collect();
            for g in p.list("UserGroup")? {
                perms.push(group_permission(&g)?);
            }
            perms.extend(p.list("OrganizationArn")?.into_iter().map(LaunchPermission::OrganizationArn));
            perms.extend(
                p.list("OrganizationalUnitArn")?
                    .into_iter()
                    .map(LaunchPermission::OrganizationalUnitArn),
            );
            match p.required("OperationType")? {
                "add" => Ok(ImageAttributeChange::LaunchPermission { add: perms, remove: Vec::new() }),
                "remove" => Ok(ImageAttributeChange::LaunchPermission { add: Vec::new(), remove: perms }),
                other => Err(Error::InvalidParameterValue(format!(
                    "Value ({other}) for parameter OperationType is invalid. Expected 'add' or 'remove'."
                ))),
            }
        }
        other => Err(Error::InvalidParameterValue(format!(
            "Value ({other}) for parameter Attribute is invalid. Modifiable attributes: description, launchPermission, imdsSupport"
        ))),
    }
}

/// ModifyImageAttribute.
pub fn modify_image_attribute(call: &Call<'_>) -> Result<String> {
    let p = call.params;
    let image_id = p.required("ImageId")?;
    let change = image_attribute_change(p)?;
    call.service
        .modify_image_attribute(call.ctx, image_id, change)?;
    Ok(call.return_true())
}

/// ResetImageAttribute.
pub fn reset_image_attribute(call: &Call<'_>) -> Result<String> {
    let p = call.params;
    call.service.reset_image_attribute(
        call.ctx,
        p.required("ImageId")?,
        p.required("Attribute")?,
    )?;
    Ok(call.return_true())
}

/// EnableImageDeprecation.
pub fn enable_image_deprecation(call: &Call<'_>) -> Result<String> {
    let p = call.params;
    call.service.enable_image_deprecation(
        call.ctx,
        p.required("ImageId")?,
        p.required("DeprecateAt")?,
    )?;
    Ok(call.return_true())
}

/// DisableImageDeprecation.
pub fn disable_image_deprecation(call: &Call<'_>) -> Result<String> {
    call.service
        .disable_image_deprecation(call.ctx, call.params.required("ImageId")?)?;
    Ok(call.return_true())
}

/// DisableImage.
pub fn disable_image(call: &Call<'_>) -> Result<String> {
    call.service
        .disable_image(call.ctx, call.params.required("ImageId")?)?;
    Ok(call.return_true())
}

/// EnableImage.
pub fn enable_image(call: &Call<'_>) -> Result<String> {
    call.service
        .enable_image(call.ctx, call.params.required("ImageId")?)?;
    Ok(call.return_true())
}

/// EnableImageDeregistrationProtection.
pub fn enable_deregistration_protection(call: &Call<'_>) -> Result<String> {
    let p = call.params;
    let value = call.service.enable_deregistration_protection(
        call.ctx,
        p.required("ImageId")?,
        p.flag("WithCooldown")?,
    )?;
    let mut w = call.response();
    w.leaf("return", &value);
    Ok(call.finish(w))
}

/// DisableImageDeregistrationProtection.
pub fn disable_deregistration_protection(call: &Call<'_>) -> Result<String> {
    let value = call
        .service
        .disable_deregistration_protection(call.ctx, call.params.required("ImageId")?)?;
    let mut w = call.response();
    w.leaf("return", &value);
    Ok(call.finish(w))
}

/// GetImageBlockPublicAccessState.
pub fn get_image_block_public_access_state(call: &Call<'_>) -> Result<String> {
    let enabled = call.service.image_block_public_access(call.ctx)?;
    let mut w = call.response();
    w.leaf(
        "imageBlockPublicAccessState",
        if enabled {
            "block-new-sharing"
        } else {
            "unblocked"
        },
    )
    .leaf("managedBy", "account");
    Ok(call.finish(w))
}

/// EnableImageBlockPublicAccess.
pub fn enable_image_block_public_access(call: &Call<'_>) -> Result<String> {
    let state = call.params.required("ImageBlockPublicAccessState")?;
    if state != "block-new-sharing" {
        return Err(Error::InvalidParameterValue(format!(
            "Value ({state}) for parameter ImageBlockPublicAccessState is invalid. Expected 'block-new-sharing'."
        )));
    }
    call.service.set_image_block_public_access(call.ctx, true)?;
    let mut w = call.response();
    w.leaf("imageBlockPublicAccessState", "block-new-sharing");
    Ok(call.finish(w))
}

/// DisableImageBlockPublicAccess.
pub fn disable_image_block_public_access(call: &Call<'_>) -> Result<String> {
    call.service
        .set_image_block_public_access(call.ctx, false)?;
    let mut w = call.response();
    w.leaf("imageBlockPublicAccessState", "unblocked");
    Ok(call.finish(w))
}
