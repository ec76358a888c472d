"""CopyImage across regions: pending then available, names, tags, idempotency."""

import pytest
from botocore.exceptions import ClientError

from compat_helpers import PRIMARY, SECONDARY, error_code, tags_of, unique

FAST_WAITER = {"Delay": 1, "MaxAttempts": 30}


def _wait_available(ec2, image_id):
    ec2.get_waiter("image_available").wait(ImageIds=[image_id], WaiterConfig=FAST_WAITER)
    return ec2.describe_images(ImageIds=[image_id])["Images"][0]


@pytest.fixture(scope="module")
def source(register_image):
    return register_image(tags={"Name": "copy-source", "tier": "gold"}, Description="source")


def test_copy_image_to_other_region_is_pending_at_once(ec2_a_west, source):
    image_id = ec2_a_west.copy_image(
        Name=unique("copy"), SourceImageId=source.image_id, SourceRegion=PRIMARY
    )["ImageId"]

    images = ec2_a_west.describe_images(ImageIds=[image_id])["Images"]

    assert [i["State"] for i in images] == ["pending"]


def test_copy_image_to_other_region_becomes_available_with_waiter(ec2_a_west, source):
    name = unique("copy")
    image_id = ec2_a_west.copy_image(
        Name=name, Description="the copy", SourceImageId=source.image_id, SourceRegion=PRIMARY
    )["ImageId"]

    image = _wait_available(ec2_a_west, image_id)

    assert image["State"] == "available"
    assert image["Name"] == name
    assert image["Description"] == "the copy"
    assert image["SourceImageId"] == source.image_id
    assert image["SourceImageRegion"] == PRIMARY


def test_copy_image_keeps_image_properties(ec2_a, ec2_a_west, source):
    original = ec2_a.describe_images(ImageIds=[source.image_id])["Images"][0]
    image_id = ec2_a_west.copy_image(
        Name=unique("copy"), SourceImageId=source.image_id, SourceRegion=PRIMARY
    )["ImageId"]

    image = _wait_available(ec2_a_west, image_id)

    for key in ("Architecture", "RootDeviceName", "VirtualizationType", "RootDeviceType"):
        assert image[key] == original[key], key


def test_copy_image_copies_snapshots_into_destination_region(ec2_a_west, ec2_a, source):
    image_id = ec2_a_west.copy_image(
        Name=unique("copy"), SourceImageId=source.image_id, SourceRegion=PRIMARY
    )["ImageId"]

    image = _wait_available(ec2_a_west, image_id)

    new_snap = image["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    assert new_snap != source.snapshot_id
    snaps = ec2_a_west.describe_snapshots(SnapshotIds=[new_snap])["Snapshots"]
    assert [(s["State"], s["VolumeSize"]) for s in snaps] == [("completed", 8)]
    assert image["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 8


def test_copy_image_with_copy_image_tags_copies_tags(ec2_a_west, source):
    image_id = ec2_a_west.copy_image(
        Name=unique("copy"), SourceImageId=source.image_id, SourceRegion=PRIMARY,
        CopyImageTags=True,
    )["ImageId"]

    image = _wait_available(ec2_a_west, image_id)

    assert tags_of(image) == {"Name": "copy-source", "tier": "gold"}


def test_copy_image_without_copy_image_tags_copies_no_tags(ec2_a_west, source):
    image_id = ec2_a_west.copy_image(
        Name=unique("copy"), SourceImageId=source.image_id, SourceRegion=PRIMARY
    )["ImageId"]

    image = _wait_available(ec2_a_west, image_id)

    assert tags_of(image) == {}


def test_copy_image_with_tag_specifications_tags_the_copy(ec2_a_west, source):
    image_id = ec2_a_west.copy_image(
        Name=unique("copy"), SourceImageId=source.image_id, SourceRegion=PRIMARY,
        TagSpecifications=[{"ResourceType": "image", "Tags": [{"Key": "copied", "Value": "yes"}]}],
    )["ImageId"]

    image = _wait_available(ec2_a_west, image_id)

    assert tags_of(image) == {"copied": "yes"}


def test_copy_image_same_client_token_returns_same_image(ec2_a_west, source):
    token = unique("token")
    name = unique("copy")

    first = ec2_a_west.copy_image(
        Name=name, SourceImageId=source.image_id, SourceRegion=PRIMARY, ClientToken=token
    )["ImageId"]
    second = ec2_a_west.copy_image(
        Name=name, SourceImageId=source.image_id, SourceRegion=PRIMARY, ClientToken=token
    )["ImageId"]

    assert first == second
    named = ec2_a_west.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [name]}])
    assert [i["ImageId"] for i in named["Images"]] == [first]


def test_copy_image_same_client_token_other_parameters_fails_with_idempotent_mismatch(
    ec2_a_west, source
):
    token = unique("token")
    ec2_a_west.copy_image(
        Name=unique("copy"), SourceImageId=source.image_id, SourceRegion=PRIMARY, ClientToken=token
    )

    with pytest.raises(ClientError) as e:
        ec2_a_west.copy_image(
            Name=unique("copy-other"), SourceImageId=source.image_id, SourceRegion=PRIMARY,
            ClientToken=token,
        )

    assert error_code(e) == "IdempotentParameterMismatch"


def test_copy_image_different_client_tokens_create_different_images(ec2_a_west, source):
    first = ec2_a_west.copy_image(
        Name=unique("copy"), SourceImageId=source.image_id, SourceRegion=PRIMARY,
        ClientToken=unique("token"),
    )["ImageId"]
    second = ec2_a_west.copy_image(
        Name=unique("copy"), SourceImageId=source.image_id, SourceRegion=PRIMARY,
        ClientToken=unique("token"),
    )["ImageId"]

    assert first != second


def test_describe_images_source_image_filters_select_copies(ec2_a_west, source):
    image_id = ec2_a_west.copy_image(
        Name=unique("copy"), SourceImageId=source.image_id, SourceRegion=PRIMARY
    )["ImageId"]

    resp = ec2_a_west.describe_images(
        Filters=[
            {"Name": "source-image-id", "Values": [source.image_id]},
            {"Name": "source-image-region", "Values": [PRIMARY]},
            {"Name": "image-id", "Values": [image_id]},
        ]
    )

    assert [i["ImageId"] for i in resp["Images"]] == [image_id]


def test_copy_image_is_not_visible_in_source_region(ec2_a, ec2_a_west, source):
    image_id = ec2_a_west.copy_image(
        Name=unique("copy"), SourceImageId=source.image_id, SourceRegion=PRIMARY
    )["ImageId"]

    resp = ec2_a.describe_images(Filters=[{"Name": "image-id", "Values": [image_id]}])

    assert resp["Images"] == []


def test_copy_image_within_same_region_succeeds(ec2_a, source):
    image_id = ec2_a.copy_image(
        Name=unique("copy-local"), SourceImageId=source.image_id, SourceRegion=PRIMARY
    )["ImageId"]

    image = _wait_available(ec2_a, image_id)

    assert image["SourceImageId"] == source.image_id


def test_copy_image_unknown_source_fails_with_not_found(ec2_a_west):
    with pytest.raises(ClientError) as e:
        ec2_a_west.copy_image(
            Name=unique("copy"), SourceImageId="ami-0123456789abcdef0", SourceRegion=PRIMARY
        )

    assert error_code(e) == "InvalidAMIID.NotFound"


def test_copy_image_source_from_wrong_region_fails_with_not_found(ec2_a, source):
    with pytest.raises(ClientError) as e:
        ec2_a.copy_image(
            Name=unique("copy"), SourceImageId=source.image_id, SourceRegion=SECONDARY
        )

    assert error_code(e) == "InvalidAMIID.NotFound"


def test_copy_image_dry_run_fails_with_dry_run_operation(ec2_a_west, source):
    with pytest.raises(ClientError) as e:
        ec2_a_west.copy_image(
            Name=unique("copy"), SourceImageId=source.image_id, SourceRegion=PRIMARY, DryRun=True
        )

    assert error_code(e) == "DryRunOperation"
