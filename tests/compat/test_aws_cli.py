"""The real `aws` CLI (PyPI awscli) against Kiln."""

import json

from compat_helpers import PRIMARY, SECONDARY, REGIONS, unique


def test_aws_describe_images_owners_self_with_credentials_file_lists_own_image(
    aws_cli, register_image
):
    image = register_image()

    out = aws_cli("ec2", "describe-images", "--owners", "self", profile=True)

    assert image.image_id in [i["ImageId"] for i in out["Images"]]


def test_aws_describe_regions_with_env_keys_of_second_account_lists_regions(
    aws_cli, account_b
):
    out = aws_cli("ec2", "describe-regions", account=account_b, region=SECONDARY)

    assert sorted(r["RegionName"] for r in out["Regions"]) == sorted(REGIONS)


def test_aws_register_image_with_block_device_mappings_creates_available_image(
    aws_cli, make_snapshot, describe_image
):
    snapshot_id = make_snapshot()
    name = unique("cli-img")
    mappings = [
        {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snapshot_id, "VolumeType": "gp3"}},
        {"DeviceName": "/dev/xvdb", "VirtualName": "ephemeral0"},
    ]

    out = aws_cli(
        "ec2", "register-image",
        "--name", name,
        "--architecture", "x86_64",
        "--virtualization-type", "hvm",
        "--root-device-name", "/dev/xvda",
        "--ena-support",
        "--boot-mode", "uefi",
        "--block-device-mappings", json.dumps(mappings),
        "--tag-specifications", "ResourceType=image,Tags=[{Key=made-by,Value=cli}]",
    )

    image = describe_image(out["ImageId"])
    assert (image["Name"], image["State"], image["EnaSupport"], image["BootMode"]) == (
        name, "available", True, "uefi"
    )
    assert image["Tags"] == [{"Key": "made-by", "Value": "cli"}]


def test_aws_describe_images_name_filter_wildcard_returns_matching(aws_cli, register_image):
    prefix = unique("cli-filter")
    first = register_image(name=f"{prefix}-1")
    second = register_image(name=f"{prefix}-2")

    out = aws_cli(
        "ec2", "describe-images", "--owners", "self",
        "--filters", f"Name=name,Values={prefix}-*",
    )

    assert sorted(i["ImageId"] for i in out["Images"]) == sorted([first.image_id, second.image_id])


def test_aws_create_tags_then_describe_tags_shows_them(aws_cli, register_image):
    image = register_image()

    created = aws_cli(
        "ec2", "create-tags", "--resources", image.image_id,
        "--tags", "Key=env,Value=test", "Key=owner,Value=cli",
    )
    out = aws_cli("ec2", "describe-tags", "--filters", f"Name=resource-id,Values={image.image_id}")

    assert created is None
    assert sorted((t["Key"], t["Value"], t["ResourceType"]) for t in out["Tags"]) == [
        ("env", "test", "image"),
        ("owner", "cli", "image"),
    ]


def test_aws_describe_snapshots_by_id_returns_completed_snapshot(aws_cli, make_snapshot, account_a):
    snapshot_id = make_snapshot(size=8)

    out = aws_cli("ec2", "describe-snapshots", "--snapshot-ids", snapshot_id)

    assert [(s["SnapshotId"], s["State"], s["VolumeSize"], s["OwnerId"]) for s in out["Snapshots"]] == [
        (snapshot_id, "completed", 8, account_a.account_id)
    ]


def test_aws_ebs_start_and_complete_snapshot_makes_completed_snapshot(aws_cli):
    started = aws_cli("ebs", "start-snapshot", "--volume-size", "8")
    completed = aws_cli(
        "ebs", "complete-snapshot", "--snapshot-id", started["SnapshotId"],
        "--changed-blocks-count", "0",
    )

    assert started["Status"] == "pending"
    assert completed["Status"] == "completed"
    out = aws_cli("ec2", "describe-snapshots", "--snapshot-ids", started["SnapshotId"])
    assert out["Snapshots"][0]["State"] == "completed"


def test_aws_wait_image_available_returns_once_copy_is_available(
    aws_cli, register_image, describe_image
):
    source = register_image()
    copy = aws_cli(
        "ec2", "copy-image", "--name", unique("cli-copy"),
        "--source-image-id", source.image_id, "--source-region", PRIMARY,
        region=SECONDARY,
    )

    waited = aws_cli("ec2", "wait", "image-available", "--image-ids", copy["ImageId"],
                     region=SECONDARY)

    assert waited is None
    assert describe_image(copy["ImageId"], region=SECONDARY)["State"] == "available"


def test_aws_describe_images_unknown_id_exits_nonzero_with_not_found(aws_cli):
    result = aws_cli("ec2", "describe-images", "--image-ids", "ami-0123456789abcdef0", check=False)

    assert result.returncode != 0
    assert "InvalidAMIID.NotFound" in result.stderr


def test_aws_deregister_image_with_delete_associated_snapshots_removes_both(
    aws_cli, register_image
):
    image = register_image()

    out = aws_cli(
        "ec2", "deregister-image", "--image-id", image.image_id, "--delete-associated-snapshots"
    )
    snaps = aws_cli("ec2", "describe-snapshots", "--snapshot-ids", image.snapshot_id, check=False)

    assert out["Return"] is True
    assert snaps.returncode != 0
    assert "InvalidSnapshot.NotFound" in snaps.stderr
