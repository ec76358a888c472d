"""Describe/Modify/ResetImageAttribute."""

import pytest
from botocore.exceptions import ClientError

from compat_helpers import error_code, unique


def _attr(ec2, image_id, name):
    resp = ec2.describe_image_attribute(ImageId=image_id, Attribute=name)
    assert resp["ImageId"] == image_id
    return resp


# ---------------------------------------------------------------- description


def test_describe_image_attribute_description_returns_registered_description(
    ec2_a, register_image
):
    image = register_image(Description="first words")

    resp = _attr(ec2_a, image.image_id, "description")

    assert resp["Description"] == {"Value": "first words"}


def test_modify_image_attribute_description_structure_changes_description(
    ec2_a, register_image, describe_image
):
    image = register_image(Description="old")

    ec2_a.modify_image_attribute(ImageId=image.image_id, Description={"Value": "new"})

    assert _attr(ec2_a, image.image_id, "description")["Description"] == {"Value": "new"}
    assert describe_image(image.image_id)["Description"] == "new"


def test_modify_image_attribute_description_attribute_value_form_changes_description(
    ec2_a, register_image
):
    image = register_image(Description="old")

    ec2_a.modify_image_attribute(ImageId=image.image_id, Attribute="description", Value="newer")

    assert _attr(ec2_a, image.image_id, "description")["Description"] == {"Value": "newer"}


# ---------------------------------------------------------------- launchPermission


def test_describe_image_attribute_launch_permission_new_image_is_empty(ec2_a, register_image):
    image = register_image()

    assert _attr(ec2_a, image.image_id, "launchPermission")["LaunchPermissions"] == []


def test_modify_image_attribute_add_user_id_grants_launch_permission(
    ec2_a, register_image, account_b
):
    image = register_image()

    ec2_a.modify_image_attribute(
        ImageId=image.image_id, LaunchPermission={"Add": [{"UserId": account_b.account_id}]}
    )

    perms = _attr(ec2_a, image.image_id, "launchPermission")["LaunchPermissions"]
    assert perms == [{"UserId": account_b.account_id}]


def test_modify_image_attribute_remove_user_id_revokes_launch_permission(
    ec2_a, register_image, account_b
):
    image = register_image()
    ec2_a.modify_image_attribute(
        ImageId=image.image_id, LaunchPermission={"Add": [{"UserId": account_b.account_id}]}
    )

    ec2_a.modify_image_attribute(
        ImageId=image.image_id, LaunchPermission={"Remove": [{"UserId": account_b.account_id}]}
    )

    assert _attr(ec2_a, image.image_id, "launchPermission")["LaunchPermissions"] == []


def test_modify_image_attribute_legacy_user_ids_form_grants_launch_permission(
    ec2_a, register_image, account_b
):
    image = register_image()

    ec2_a.modify_image_attribute(
        ImageId=image.image_id,
        Attribute="launchPermission",
        OperationType="add",
        UserIds=[account_b.account_id],
    )

    perms = _attr(ec2_a, image.image_id, "launchPermission")["LaunchPermissions"]
    assert perms == [{"UserId": account_b.account_id}]


def test_modify_image_attribute_add_group_all_makes_image_public(
    ec2_a, register_image, describe_image
):
    image = register_image()

    ec2_a.modify_image_attribute(
        ImageId=image.image_id, LaunchPermission={"Add": [{"Group": "all"}]}
    )

    assert _attr(ec2_a, image.image_id, "launchPermission")["LaunchPermissions"] == [
        {"Group": "all"}
    ]
    assert describe_image(image.image_id)["Public"] is True


def test_modify_image_attribute_legacy_user_groups_form_makes_image_public(
    ec2_a, register_image, describe_image
):
    image = register_image()

    ec2_a.modify_image_attribute(
        ImageId=image.image_id,
        Attribute="launchPermission",
        OperationType="add",
        UserGroups=["all"],
    )

    assert describe_image(image.image_id)["Public"] is True


def test_modify_image_attribute_remove_group_all_makes_image_private(
    ec2_a, register_image, describe_image
):
    image = register_image()
    ec2_a.modify_image_attribute(
        ImageId=image.image_id, LaunchPermission={"Add": [{"Group": "all"}]}
    )

    ec2_a.modify_image_attribute(
        ImageId=image.image_id, LaunchPermission={"Remove": [{"Group": "all"}]}
    )

    assert describe_image(image.image_id)["Public"] is False
    assert _attr(ec2_a, image.image_id, "launchPermission")["LaunchPermissions"] == []


def test_modify_image_attribute_add_organization_arn_grants_launch_permission(
    ec2_a, register_image, org_arn
):
    image = register_image()

    ec2_a.modify_image_attribute(
        ImageId=image.image_id, LaunchPermission={"Add": [{"OrganizationArn": org_arn}]}
    )

    perms = _attr(ec2_a, image.image_id, "launchPermission")["LaunchPermissions"]
    assert perms == [{"OrganizationArn": org_arn}]


def test_reset_image_attribute_launch_permission_removes_all_permissions(
    ec2_a, register_image, describe_image, account_b
):
    image = register_image()
    ec2_a.modify_image_attribute(
        ImageId=image.image_id,
        LaunchPermission={"Add": [{"UserId": account_b.account_id}, {"Group": "all"}]},
    )

    ec2_a.reset_image_attribute(ImageId=image.image_id, Attribute="launchPermission")

    assert _attr(ec2_a, image.image_id, "launchPermission")["LaunchPermissions"] == []
    assert describe_image(image.image_id)["Public"] is False


def test_modify_image_attribute_by_non_owner_fails_with_auth_failure(
    ec2_a, ec2_b, register_image, account_b
):
    image = register_image(Description="mine")
    ec2_a.modify_image_attribute(
        ImageId=image.image_id, LaunchPermission={"Add": [{"UserId": account_b.account_id}]}
    )

    with pytest.raises(ClientError) as e:
        ec2_b.modify_image_attribute(ImageId=image.image_id, Description={"Value": "theirs"})

    assert error_code(e) == "AuthFailure"
    assert _attr(ec2_a, image.image_id, "description")["Description"] == {"Value": "mine"}


def test_modify_image_attribute_by_non_owner_dry_run_fails_with_unauthorized_operation(
    ec2_a, ec2_b, register_image, account_b
):
    image = register_image()
    ec2_a.modify_image_attribute(
        ImageId=image.image_id, LaunchPermission={"Add": [{"UserId": account_b.account_id}]}
    )

    with pytest.raises(ClientError) as e:
        ec2_b.modify_image_attribute(
            ImageId=image.image_id, Description={"Value": "theirs"}, DryRun=True
        )

    assert error_code(e) == "UnauthorizedOperation"


def test_modify_image_attribute_by_owner_dry_run_fails_with_dry_run_operation_and_changes_nothing(
    ec2_a, register_image
):
    image = register_image(Description="kept")

    with pytest.raises(ClientError) as e:
        ec2_a.modify_image_attribute(
            ImageId=image.image_id, Description={"Value": "changed"}, DryRun=True
        )

    assert error_code(e) == "DryRunOperation"
    assert _attr(ec2_a, image.image_id, "description")["Description"] == {"Value": "kept"}


def test_reset_image_attribute_by_non_owner_fails_with_auth_failure(
    ec2_a, ec2_b, register_image, account_b
):
    image = register_image()
    ec2_a.modify_image_attribute(
        ImageId=image.image_id, LaunchPermission={"Add": [{"UserId": account_b.account_id}]}
    )

    with pytest.raises(ClientError) as e:
        ec2_b.reset_image_attribute(ImageId=image.image_id, Attribute="launchPermission")

    assert error_code(e) == "AuthFailure"


# ---------------------------------------------------------------- read-only attributes


def test_describe_image_attribute_kernel_and_ramdisk_return_registered_ids(
    ec2_a, make_snapshot
):
    snapshot_id = make_snapshot()
    image_id = ec2_a.register_image(
        Name=unique("pv-attr"),
        Architecture="x86_64",
        VirtualizationType="paravirtual",
        KernelId="aki-fc8f11cc",
        RamdiskId="ari-0123abcd",
        RootDeviceName="/dev/sda1",
        BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": snapshot_id}}],
    )["ImageId"]

    kernel = _attr(ec2_a, image_id, "kernel")
    ramdisk = _attr(ec2_a, image_id, "ramdisk")

    assert kernel["KernelId"] == {"Value": "aki-fc8f11cc"}
    assert ramdisk["RamdiskId"] == {"Value": "ari-0123abcd"}


def test_describe_image_attribute_boot_mode_returns_registered_mode(ec2_a, register_image):
    image = register_image(BootMode="uefi")

    assert _attr(ec2_a, image.image_id, "bootMode")["BootMode"] == {"Value": "uefi"}


def test_describe_image_attribute_imds_support_returns_registered_value(ec2_a, register_image):
    image = register_image(ImdsSupport="v2.0")

    assert _attr(ec2_a, image.image_id, "imdsSupport")["ImdsSupport"] == {"Value": "v2.0"}


def test_modify_image_attribute_imds_support_sets_v2(ec2_a, register_image, describe_image):
    image = register_image()

    ec2_a.modify_image_attribute(ImageId=image.image_id, ImdsSupport={"Value": "v2.0"})

    assert _attr(ec2_a, image.image_id, "imdsSupport")["ImdsSupport"] == {"Value": "v2.0"}
    assert describe_image(image.image_id)["ImdsSupport"] == "v2.0"


def test_describe_image_attribute_tpm_support_returns_registered_value(ec2_a, register_image):
    image = register_image(BootMode="uefi", TpmSupport="v2.0")

    assert _attr(ec2_a, image.image_id, "tpmSupport")["TpmSupport"] == {"Value": "v2.0"}


def test_describe_image_attribute_sriov_net_support_returns_registered_value(
    ec2_a, register_image
):
    image = register_image(SriovNetSupport="simple")

    assert _attr(ec2_a, image.image_id, "sriovNetSupport")["SriovNetSupport"] == {
        "Value": "simple"
    }


def test_describe_image_attribute_last_launched_time_never_launched_has_no_value(
    ec2_a, register_image
):
    image = register_image()

    resp = _attr(ec2_a, image.image_id, "lastLaunchedTime")

    assert resp.get("LastLaunchedTime", {}).get("Value") is None


def test_describe_image_attribute_deregistration_protection_reflects_state(
    ec2_a, register_image
):
    image = register_image()
    before = _attr(ec2_a, image.image_id, "deregistrationProtection")["DeregistrationProtection"]

    ec2_a.enable_image_deregistration_protection(ImageId=image.image_id)

    after = _attr(ec2_a, image.image_id, "deregistrationProtection")["DeregistrationProtection"]
    assert before == {"Value": "disabled"}
    assert after == {"Value": "enabled-without-cooldown"}


def test_describe_image_attribute_product_codes_is_empty(ec2_a, register_image):
    image = register_image()

    assert _attr(ec2_a, image.image_id, "productCodes")["ProductCodes"] == []


def test_describe_image_attribute_block_device_mapping_fails_with_auth_failure(
    ec2_a, register_image
):
    image = register_image()

    with pytest.raises(ClientError) as e:
        ec2_a.describe_image_attribute(ImageId=image.image_id, Attribute="blockDeviceMapping")

    assert error_code(e) == "AuthFailure"


def test_describe_image_attribute_unknown_image_fails_with_not_found(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.describe_image_attribute(ImageId="ami-0123456789abcdef0", Attribute="description")

    assert error_code(e) == "InvalidAMIID.NotFound"


def test_describe_image_attribute_unknown_attribute_fails_with_invalid_parameter_value(
    ec2_a, register_image
):
    image = register_image()

    with pytest.raises(ClientError) as e:
        ec2_a.describe_image_attribute(ImageId=image.image_id, Attribute="colour")

    assert error_code(e) == "InvalidParameterValue"
