"""RegisterImage: every parameter, defaults, names, snapshots it may use."""

import datetime as dt
import re

import pytest
from botocore.exceptions import ClientError

from compat_helpers import SECONDARY, error_code, tags_of, unique

AMI_ID = re.compile(r"^ami-[0-9a-f]{17}$")


def _by_device(image):
    return {m["DeviceName"]: m for m in image["BlockDeviceMappings"]}


def _subset(d, keys):
    return {k: d.get(k) for k in keys}


def test_register_image_all_hvm_parameters_are_described_back(
    ec2_a, account_a, make_snapshot, describe_image
):
    root_snap = make_snapshot(size=8)
    data_snap = make_snapshot(size=4)
    name = unique("full-hvm")
    before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)

    image_id = ec2_a.register_image(
        Name=name,
        Description="every parameter",
        Architecture="x86_64",
        RootDeviceName="/dev/xvda",
        VirtualizationType="hvm",
        BlockDeviceMappings=[
            {
                "DeviceName": "/dev/xvda",
                "Ebs": {
                    "SnapshotId": root_snap,
                    "VolumeSize": 10,
                    "VolumeType": "gp3",
                    "Iops": 3000,
                    "DeleteOnTermination": True,
                },
            },
            {
                "DeviceName": "/dev/xvdb",
                "Ebs": {
                    "SnapshotId": data_snap,
                    "VolumeSize": 20,
                    "VolumeType": "io1",
                    "Iops": 1000,
                    "DeleteOnTermination": False,
                },
            },
            {
                "DeviceName": "/dev/xvdc",
                "Ebs": {"VolumeSize": 50, "VolumeType": "gp2", "Encrypted": True},
            },
            {"DeviceName": "/dev/xvdd", "VirtualName": "ephemeral0"},
        ],
        BootMode="uefi",
        EnaSupport=True,
        SriovNetSupport="simple",
        TpmSupport="v2.0",
        ImdsSupport="v2.0",
        TagSpecifications=[
            {
                "ResourceType": "image",
                "Tags": [{"Key": "Name", "Value": name}, {"Key": "team", "Value": "compat"}],
            }
        ],
    )["ImageId"]
    image = describe_image(image_id)

    assert AMI_ID.match(image_id)
    assert _subset(
        image,
        [
            "Name", "Description", "Architecture", "RootDeviceName", "RootDeviceType",
            "VirtualizationType", "BootMode", "EnaSupport", "SriovNetSupport", "TpmSupport",
            "ImdsSupport", "State", "ImageType", "Public", "OwnerId", "Hypervisor",
        ],
    ) == {
        "Name": name,
        "Description": "every parameter",
        "Architecture": "x86_64",
        "RootDeviceName": "/dev/xvda",
        "RootDeviceType": "ebs",
        "VirtualizationType": "hvm",
        "BootMode": "uefi",
        "EnaSupport": True,
        "SriovNetSupport": "simple",
        "TpmSupport": "v2.0",
        "ImdsSupport": "v2.0",
        "State": "available",
        "ImageType": "machine",
        "Public": False,
        "OwnerId": account_a.account_id,
        "Hypervisor": "xen",
    }
    assert tags_of(image) == {"Name": name, "team": "compat"}
    created = dt.datetime.fromisoformat(image["CreationDate"].replace("Z", "+00:00"))
    assert before <= created <= dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=5)
    bdm = _by_device(image)
    assert sorted(bdm) == ["/dev/xvda", "/dev/xvdb", "/dev/xvdc", "/dev/xvdd"]
    assert _subset(
        bdm["/dev/xvda"]["Ebs"], ["SnapshotId", "VolumeSize", "VolumeType", "Iops", "DeleteOnTermination"]
    ) == {
        "SnapshotId": root_snap,
        "VolumeSize": 10,
        "VolumeType": "gp3",
        "Iops": 3000,
        "DeleteOnTermination": True,
    }
    assert _subset(
        bdm["/dev/xvdb"]["Ebs"], ["SnapshotId", "VolumeSize", "VolumeType", "Iops", "DeleteOnTermination"]
    ) == {
        "SnapshotId": data_snap,
        "VolumeSize": 20,
        "VolumeType": "io1",
        "Iops": 1000,
        "DeleteOnTermination": False,
    }
    assert _subset(bdm["/dev/xvdc"]["Ebs"], ["VolumeSize", "VolumeType", "Encrypted"]) == {
        "VolumeSize": 50,
        "VolumeType": "gp2",
        "Encrypted": True,
    }
    assert "SnapshotId" not in bdm["/dev/xvdc"]["Ebs"]
    assert bdm["/dev/xvdd"].get("VirtualName") == "ephemeral0"
    assert "Ebs" not in bdm["/dev/xvdd"]


def test_register_image_paravirtual_with_kernel_and_ramdisk_is_described_back(
    ec2_a, make_snapshot, describe_image
):
    snapshot_id = make_snapshot()

    image_id = ec2_a.register_image(
        Name=unique("pv"),
        Architecture="x86_64",
        VirtualizationType="paravirtual",
        KernelId="aki-fc8f11cc",
        RamdiskId="ari-0123abcd",
        RootDeviceName="/dev/sda1",
        BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": snapshot_id}}],
    )["ImageId"]
    image = describe_image(image_id)

    assert _subset(image, ["VirtualizationType", "KernelId", "RamdiskId", "RootDeviceName"]) == {
        "VirtualizationType": "paravirtual",
        "KernelId": "aki-fc8f11cc",
        "RamdiskId": "ari-0123abcd",
        "RootDeviceName": "/dev/sda1",
    }


def test_register_image_boot_mode_legacy_bios_is_described_back(register_image, describe_image):
    image = register_image(BootMode="legacy-bios")

    assert describe_image(image.image_id)["BootMode"] == "legacy-bios"


def test_register_image_boot_mode_uefi_preferred_is_described_back(register_image, describe_image):
    image = register_image(BootMode="uefi-preferred")

    assert describe_image(image.image_id)["BootMode"] == "uefi-preferred"


def test_register_image_architecture_arm64_is_described_back(register_image, describe_image):
    image = register_image(Architecture="arm64")

    assert describe_image(image.image_id)["Architecture"] == "arm64"


def _register_minimal(ec2, snapshot_id):
    return ec2.register_image(
        Name=unique("defaults"),
        RootDeviceName="/dev/sda1",
        BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": snapshot_id}}],
    )["ImageId"]


def test_register_image_without_architecture_defaults_to_i386(
    ec2_a, make_snapshot, describe_image
):
    image_id = _register_minimal(ec2_a, make_snapshot())

    assert describe_image(image_id)["Architecture"] == "i386"


def test_register_image_without_virtualization_type_defaults_to_paravirtual(
    ec2_a, make_snapshot, describe_image
):
    image_id = _register_minimal(ec2_a, make_snapshot())

    assert describe_image(image_id)["VirtualizationType"] == "paravirtual"


def test_register_image_ebs_with_snapshot_only_defaults_to_snapshot_size_and_delete(
    ec2_a, make_snapshot, describe_image
):
    snapshot_id = make_snapshot(size=6)

    image_id = ec2_a.register_image(
        Name=unique("bdm-defaults"),
        Architecture="x86_64",
        VirtualizationType="hvm",
        RootDeviceName="/dev/xvda",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snapshot_id}}],
    )["ImageId"]
    ebs = _by_device(describe_image(image_id))["/dev/xvda"]["Ebs"]

    assert ebs["VolumeSize"] == 6
    assert ebs["DeleteOnTermination"] is True


def test_register_image_is_available_at_once(ec2_a, register_image):
    image = register_image()

    images = ec2_a.describe_images(ImageIds=[image.image_id])["Images"]

    assert [i["State"] for i in images] == ["available"]


def test_register_image_ids_are_unique_and_well_formed(register_image):
    ids = [register_image().image_id for _ in range(5)]

    assert len(set(ids)) == 5
    assert all(AMI_ID.match(i) for i in ids)


def test_register_image_duplicate_name_fails_with_duplicate(ec2_a, register_image, make_snapshot):
    first = register_image()

    with pytest.raises(ClientError) as e:
        register_image(name=first.name)

    assert error_code(e) == "InvalidAMIName.Duplicate"


def test_register_image_same_name_in_other_region_succeeds(register_image, describe_image):
    first = register_image()

    second = register_image(region=SECONDARY, name=first.name)

    assert describe_image(second.image_id, region=SECONDARY)["Name"] == first.name
    assert second.image_id != first.image_id


def test_register_image_same_name_in_other_account_succeeds(
    register_image, describe_image, account_b
):
    first = register_image()

    second = register_image(account=account_b, name=first.name)

    assert describe_image(second.image_id, account=account_b)["Name"] == first.name


def test_register_image_name_of_deregistered_image_succeeds(ec2_a, register_image, describe_image):
    first = register_image()
    ec2_a.deregister_image(ImageId=first.image_id)

    second = register_image(name=first.name)

    assert describe_image(second.image_id)["Name"] == first.name


def test_register_image_name_with_invalid_character_fails_with_malformed(ec2_a, make_snapshot):
    snapshot_id = make_snapshot()

    with pytest.raises(ClientError) as e:
        ec2_a.register_image(
            Name="bad|name" + unique(""),
            RootDeviceName="/dev/xvda",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snapshot_id}}],
        )

    assert error_code(e) == "InvalidAMIName.Malformed"


def test_register_image_name_with_all_allowed_characters_succeeds(register_image, describe_image):
    name = "ok (x) [y] a.b/c-d 'e' @f_g " + unique("")

    image = register_image(name=name)

    assert describe_image(image.image_id)["Name"] == name


def test_register_image_pending_snapshot_fails_with_incorrect_state(
    ec2_a, make_snapshot
):
    snapshot_id = make_snapshot(complete=False)

    with pytest.raises(ClientError) as e:
        ec2_a.register_image(
            Name=unique("pending-snap"),
            RootDeviceName="/dev/xvda",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snapshot_id}}],
        )

    assert error_code(e) == "IncorrectState"


def test_register_image_unknown_snapshot_fails_with_snapshot_not_found(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.register_image(
            Name=unique("no-snap"),
            RootDeviceName="/dev/xvda",
            BlockDeviceMappings=[
                {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": "snap-0123456789abcdef0"}}
            ],
        )

    assert error_code(e) == "InvalidSnapshot.NotFound"


def test_register_image_volume_smaller_than_snapshot_fails_with_invalid_block_device_mapping(
    ec2_a, make_snapshot
):
    snapshot_id = make_snapshot(size=8)

    with pytest.raises(ClientError) as e:
        ec2_a.register_image(
            Name=unique("too-small"),
            RootDeviceName="/dev/xvda",
            BlockDeviceMappings=[
                {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snapshot_id, "VolumeSize": 4}}
            ],
        )

    assert error_code(e) == "InvalidBlockDeviceMapping"


def test_register_image_tag_specification_for_snapshot_resource_fails(ec2_a, make_snapshot):
    snapshot_id = make_snapshot()

    with pytest.raises(ClientError) as e:
        ec2_a.register_image(
            Name=unique("bad-tagspec"),
            RootDeviceName="/dev/xvda",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snapshot_id}}],
            TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": "k", "Value": "v"}]}],
        )

    assert error_code(e) in {"InvalidParameterValue", "InvalidParameter"}


def test_register_image_tag_key_with_aws_prefix_fails_with_invalid_parameter_value(
    ec2_a, make_snapshot
):
    snapshot_id = make_snapshot()

    with pytest.raises(ClientError) as e:
        ec2_a.register_image(
            Name=unique("aws-tag"),
            RootDeviceName="/dev/xvda",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snapshot_id}}],
            TagSpecifications=[
                {"ResourceType": "image", "Tags": [{"Key": "aws:reserved", "Value": "v"}]}
            ],
        )

    assert error_code(e) == "InvalidParameterValue"


def test_register_image_dry_run_fails_with_dry_run_operation_and_creates_nothing(
    ec2_a, make_snapshot
):
    snapshot_id = make_snapshot()
    name = unique("dry")

    with pytest.raises(ClientError) as e:
        ec2_a.register_image(
            Name=name,
            RootDeviceName="/dev/xvda",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snapshot_id}}],
            DryRun=True,
        )

    assert error_code(e) == "DryRunOperation"
    assert ec2_a.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [name]}])[
        "Images"
    ] == []
