"""DeregisterImage, Enable/DisableImageDeprecation, Disable/EnableImage,
Enable/DisableImageDeregistrationProtection."""

import datetime as dt

import pytest
from botocore.exceptions import ClientError

from compat_helpers import error_code, unique


def _by_name(ec2, name, **kwargs):
    return ec2.describe_images(Filters=[{"Name": "name", "Values": [name]}], **kwargs)["Images"]


def _parse_time(text):
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _tomorrow_at(second):
    base = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    return base.replace(second=second, microsecond=0)


# ---------------------------------------------------------------- DeregisterImage


def test_deregister_image_own_image_returns_true(ec2_a, register_image):
    image = register_image()

    resp = ec2_a.deregister_image(ImageId=image.image_id)

    assert resp["Return"] is True


def test_deregister_image_own_image_removes_it_from_listings(ec2_a, register_image):
    image = register_image()

    ec2_a.deregister_image(ImageId=image.image_id)

    assert _by_name(ec2_a, image.name, Owners=["self"]) == []


def test_deregister_image_then_describe_by_id_returns_empty_list(ec2_a, register_image):
    image = register_image()

    ec2_a.deregister_image(ImageId=image.image_id)

    assert ec2_a.describe_images(ImageIds=[image.image_id])["Images"] == []


def test_deregister_image_without_delete_keeps_snapshot(ec2_a, register_image):
    image = register_image()

    ec2_a.deregister_image(ImageId=image.image_id)

    snaps = ec2_a.describe_snapshots(SnapshotIds=[image.snapshot_id])["Snapshots"]
    assert [s["State"] for s in snaps] == ["completed"]


def test_deregister_image_delete_associated_snapshots_deletes_them(ec2_a, register_image):
    image = register_image()

    resp = ec2_a.deregister_image(ImageId=image.image_id, DeleteAssociatedSnapshots=True)

    assert resp["DeleteSnapshotResults"] == [
        {"SnapshotId": image.snapshot_id, "ReturnCode": "success"}
    ]
    with pytest.raises(ClientError) as e:
        ec2_a.describe_snapshots(SnapshotIds=[image.snapshot_id])
    assert error_code(e) == "InvalidSnapshot.NotFound"


def test_deregister_image_delete_associated_snapshots_keeps_snapshot_used_by_other_image(
    ec2_a, register_image
):
    first = register_image()
    second = register_image(snapshot_id=first.snapshot_id)

    ec2_a.deregister_image(ImageId=first.image_id, DeleteAssociatedSnapshots=True)

    snaps = ec2_a.describe_snapshots(SnapshotIds=[first.snapshot_id])["Snapshots"]
    assert [s["SnapshotId"] for s in snaps] == [first.snapshot_id]
    assert ec2_a.describe_images(ImageIds=[second.image_id])["Images"][0]["State"] == "available"


def test_deregister_image_unknown_id_fails_with_not_found(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.deregister_image(ImageId="ami-0fedcba9876543210")

    assert error_code(e) == "InvalidAMIID.NotFound"


def test_deregister_image_malformed_id_fails_with_malformed(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.deregister_image(ImageId="ami-xyz")

    assert error_code(e) == "InvalidAMIID.Malformed"


def test_deregister_image_by_non_owner_with_permission_fails_with_auth_failure(
    ec2_a, ec2_b, register_image, account_b
):
    image = register_image()
    ec2_a.modify_image_attribute(
        ImageId=image.image_id, LaunchPermission={"Add": [{"UserId": account_b.account_id}]}
    )

    with pytest.raises(ClientError) as e:
        ec2_b.deregister_image(ImageId=image.image_id)

    assert error_code(e) == "AuthFailure"
    assert ec2_a.describe_images(ImageIds=[image.image_id])["Images"][0]["State"] == "available"


def test_deregister_image_dry_run_own_image_fails_with_dry_run_operation_and_keeps_it(
    ec2_a, register_image
):
    image = register_image()

    with pytest.raises(ClientError) as e:
        ec2_a.deregister_image(ImageId=image.image_id, DryRun=True)

    assert error_code(e) == "DryRunOperation"
    assert ec2_a.describe_images(ImageIds=[image.image_id])["Images"][0]["State"] == "available"


# ---------------------------------------------------------------- deprecation


def test_enable_image_deprecation_future_minute_sets_deprecation_time(
    ec2_a, register_image, describe_image
):
    image = register_image()
    at = _tomorrow_at(0)

    resp = ec2_a.enable_image_deprecation(ImageId=image.image_id, DeprecateAt=at)

    assert resp["Return"] is True
    assert _parse_time(describe_image(image.image_id)["DeprecationTime"]) == at


def test_enable_image_deprecation_with_seconds_rounds_to_nearest_minute(
    ec2_a, register_image, describe_image
):
    image = register_image()
    at = _tomorrow_at(40)

    ec2_a.enable_image_deprecation(ImageId=image.image_id, DeprecateAt=at)

    expected = at.replace(second=0) + dt.timedelta(minutes=1)
    assert _parse_time(describe_image(image.image_id)["DeprecationTime"]) == expected


def test_disable_image_deprecation_clears_deprecation_time(ec2_a, register_image, describe_image):
    image = register_image()
    ec2_a.enable_image_deprecation(ImageId=image.image_id, DeprecateAt=_tomorrow_at(0))

    resp = ec2_a.disable_image_deprecation(ImageId=image.image_id)

    assert resp["Return"] is True
    assert "DeprecationTime" not in describe_image(image.image_id)


def test_enable_image_deprecation_by_non_owner_fails_with_auth_failure(
    ec2_a, ec2_b, register_image, account_b
):
    image = register_image()
    ec2_a.modify_image_attribute(
        ImageId=image.image_id, LaunchPermission={"Add": [{"UserId": account_b.account_id}]}
    )

    with pytest.raises(ClientError) as e:
        ec2_b.enable_image_deprecation(ImageId=image.image_id, DeprecateAt=_tomorrow_at(0))

    assert error_code(e) == "AuthFailure"


# ---------------------------------------------------------------- Disable/EnableImage


def test_disable_image_sets_state_disabled_and_hides_it_by_default(ec2_a, register_image):
    image = register_image()

    resp = ec2_a.disable_image(ImageId=image.image_id)

    assert resp["Return"] is True
    assert _by_name(ec2_a, image.name, Owners=["self"]) == []
    shown = _by_name(ec2_a, image.name, Owners=["self"], IncludeDisabled=True)
    assert [(i["ImageId"], i["State"]) for i in shown] == [(image.image_id, "disabled")]


def test_enable_image_disabled_image_becomes_available_and_listed(ec2_a, register_image):
    image = register_image()
    ec2_a.disable_image(ImageId=image.image_id)

    resp = ec2_a.enable_image(ImageId=image.image_id)

    assert resp["Return"] is True
    shown = _by_name(ec2_a, image.name, Owners=["self"])
    assert [(i["ImageId"], i["State"]) for i in shown] == [(image.image_id, "available")]


def test_disable_image_shared_image_removes_launch_permissions_for_good(
    ec2_a, ec2_b, register_image, account_a, account_b
):
    image = register_image()
    ec2_a.modify_image_attribute(
        ImageId=image.image_id, LaunchPermission={"Add": [{"UserId": account_b.account_id}]}
    )

    ec2_a.disable_image(ImageId=image.image_id)
    ec2_a.enable_image(ImageId=image.image_id)

    perms = ec2_a.describe_image_attribute(ImageId=image.image_id, Attribute="launchPermission")
    assert perms["LaunchPermissions"] == []
    assert _by_name(ec2_b, image.name, Owners=[account_a.account_id]) == []


def test_disable_image_public_image_makes_it_private(ec2_a, register_image, describe_image):
    image = register_image()
    ec2_a.modify_image_attribute(
        ImageId=image.image_id, LaunchPermission={"Add": [{"Group": "all"}]}
    )

    ec2_a.disable_image(ImageId=image.image_id)
    ec2_a.enable_image(ImageId=image.image_id)

    assert describe_image(image.image_id)["Public"] is False


def test_disable_image_by_non_owner_fails_with_auth_failure(
    ec2_a, ec2_b, register_image, account_b
):
    image = register_image()
    ec2_a.modify_image_attribute(
        ImageId=image.image_id, LaunchPermission={"Add": [{"UserId": account_b.account_id}]}
    )

    with pytest.raises(ClientError) as e:
        ec2_b.disable_image(ImageId=image.image_id)

    assert error_code(e) == "AuthFailure"


def test_disable_image_unknown_id_fails_with_not_found(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.disable_image(ImageId="ami-0aaaabbbbccccdddd")

    assert error_code(e) == "InvalidAMIID.NotFound"


# ---------------------------------------------------------------- deregistration protection


def test_enable_image_deregistration_protection_sets_enabled_without_cooldown(
    ec2_a, register_image, describe_image
):
    image = register_image()

    ec2_a.enable_image_deregistration_protection(ImageId=image.image_id)

    assert describe_image(image.image_id)["DeregistrationProtection"] == "enabled-without-cooldown"


def test_enable_image_deregistration_protection_with_cooldown_sets_enabled_with_cooldown(
    ec2_a, register_image, describe_image
):
    image = register_image()

    ec2_a.enable_image_deregistration_protection(ImageId=image.image_id, WithCooldown=True)

    assert describe_image(image.image_id)["DeregistrationProtection"] == "enabled-with-cooldown"


def test_deregister_image_protected_fails_with_operation_not_permitted(
    ec2_a, register_image, describe_image
):
    image = register_image()
    ec2_a.enable_image_deregistration_protection(ImageId=image.image_id)

    with pytest.raises(ClientError) as e:
        ec2_a.deregister_image(ImageId=image.image_id)

    assert error_code(e) == "OperationNotPermitted"
    assert describe_image(image.image_id)["State"] == "available"


def test_disable_image_deregistration_protection_without_cooldown_allows_deregister(
    ec2_a, register_image, describe_image
):
    image = register_image()
    ec2_a.enable_image_deregistration_protection(ImageId=image.image_id)

    ec2_a.disable_image_deregistration_protection(ImageId=image.image_id)

    assert describe_image(image.image_id)["DeregistrationProtection"] == "disabled"
    assert ec2_a.deregister_image(ImageId=image.image_id)["Return"] is True


def test_disable_image_deregistration_protection_with_cooldown_keeps_it_for_24_hours(
    ec2_a, register_image, describe_image
):
    image = register_image()
    ec2_a.enable_image_deregistration_protection(ImageId=image.image_id, WithCooldown=True)

    ec2_a.disable_image_deregistration_protection(ImageId=image.image_id)

    value = describe_image(image.image_id)["DeregistrationProtection"]
    assert value.startswith("disabled-until-")
    until = _parse_time(value[len("disabled-until-"):])
    remaining = until - dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(hours=23) < remaining <= dt.timedelta(hours=24, minutes=1)
    with pytest.raises(ClientError) as e:
        ec2_a.deregister_image(ImageId=image.image_id)
    assert error_code(e) == "OperationNotPermitted"


def test_enable_image_deregistration_protection_by_non_owner_fails_with_auth_failure(
    ec2_a, ec2_b, register_image, account_b
):
    image = register_image()
    ec2_a.modify_image_attribute(
        ImageId=image.image_id, LaunchPermission={"Add": [{"UserId": account_b.account_id}]}
    )

    with pytest.raises(ClientError) as e:
        ec2_b.enable_image_deregistration_protection(ImageId=image.image_id)

    assert error_code(e) == "AuthFailure"


def test_describe_images_new_image_has_deregistration_protection_disabled(
    register_image, describe_image
):
    image = register_image(name=unique("fresh"))

    assert describe_image(image.image_id)["DeregistrationProtection"] == "disabled"
