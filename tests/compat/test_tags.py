"""CreateTags, DeleteTags, DescribeTags."""

import pytest
from botocore.exceptions import ClientError

from compat_helpers import error_code, tags_of, unique


def _tags(ec2, resource_id):
    resp = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [resource_id]}])
    return {t["Key"]: t["Value"] for t in resp["Tags"]}


def _tag_list(d):
    return [{"Key": k, "Value": v} for k, v in d.items()]


def test_create_tags_on_image_is_described_with_resource_type_image(ec2_a, register_image):
    image = register_image()

    ec2_a.create_tags(Resources=[image.image_id], Tags=[{"Key": "Name", "Value": "web"}])

    resp = ec2_a.describe_tags(Filters=[{"Name": "resource-id", "Values": [image.image_id]}])
    assert resp["Tags"] == [
        {"Key": "Name", "Value": "web", "ResourceId": image.image_id, "ResourceType": "image"}
    ]


def test_create_tags_on_snapshot_is_described_with_resource_type_snapshot(ec2_a, make_snapshot):
    snapshot_id = make_snapshot()

    ec2_a.create_tags(Resources=[snapshot_id], Tags=[{"Key": "backup", "Value": "daily"}])

    resp = ec2_a.describe_tags(Filters=[{"Name": "resource-id", "Values": [snapshot_id]}])
    assert resp["Tags"] == [
        {"Key": "backup", "Value": "daily", "ResourceId": snapshot_id, "ResourceType": "snapshot"}
    ]


def test_create_tags_on_several_resources_tags_each(ec2_a, register_image, describe_image):
    image = register_image()

    ec2_a.create_tags(
        Resources=[image.image_id, image.snapshot_id], Tags=[{"Key": "set", "Value": "both"}]
    )

    assert tags_of(describe_image(image.image_id)) == {"set": "both"}
    snap = ec2_a.describe_snapshots(SnapshotIds=[image.snapshot_id])["Snapshots"][0]
    assert tags_of(snap) == {"set": "both"}


def test_create_tags_existing_key_overwrites_value(ec2_a, register_image):
    image = register_image(tags={"stage": "beta"})

    ec2_a.create_tags(Resources=[image.image_id], Tags=[{"Key": "stage", "Value": "prod"}])

    assert _tags(ec2_a, image.image_id) == {"stage": "prod"}


def test_create_tags_empty_value_is_stored_as_empty_string(ec2_a, register_image):
    image = register_image()

    ec2_a.create_tags(Resources=[image.image_id], Tags=[{"Key": "flag", "Value": ""}])

    assert _tags(ec2_a, image.image_id) == {"flag": ""}


def test_create_tags_aws_prefixed_key_fails_with_invalid_parameter_value(ec2_a, register_image):
    image = register_image()

    with pytest.raises(ClientError) as e:
        ec2_a.create_tags(Resources=[image.image_id], Tags=[{"Key": "aws:owner", "Value": "me"}])

    assert error_code(e) == "InvalidParameterValue"
    assert _tags(ec2_a, image.image_id) == {}


def test_create_tags_key_longer_than_128_fails_with_invalid_parameter_value(ec2_a, register_image):
    image = register_image()

    with pytest.raises(ClientError) as e:
        ec2_a.create_tags(Resources=[image.image_id], Tags=[{"Key": "k" * 129, "Value": "v"}])

    assert error_code(e) == "InvalidParameterValue"


def test_create_tags_value_longer_than_256_fails_with_invalid_parameter_value(
    ec2_a, register_image
):
    image = register_image()

    with pytest.raises(ClientError) as e:
        ec2_a.create_tags(Resources=[image.image_id], Tags=[{"Key": "k", "Value": "v" * 257}])

    assert error_code(e) == "InvalidParameterValue"


def test_create_tags_up_to_50_tags_succeeds(ec2_a, register_image):
    image = register_image()
    wanted = {f"k{i:02}": str(i) for i in range(50)}

    ec2_a.create_tags(Resources=[image.image_id], Tags=_tag_list(wanted))

    assert _tags(ec2_a, image.image_id) == wanted


def test_create_tags_51st_tag_fails_with_tag_limit_exceeded(ec2_a, register_image):
    image = register_image()
    fifty = {f"k{i:02}": str(i) for i in range(50)}
    ec2_a.create_tags(Resources=[image.image_id], Tags=_tag_list(fifty))

    with pytest.raises(ClientError) as e:
        ec2_a.create_tags(Resources=[image.image_id], Tags=[{"Key": "one-more", "Value": "x"}])

    assert error_code(e) == "TagLimitExceeded"
    assert _tags(ec2_a, image.image_id) == fifty


def test_create_tags_51_tags_in_one_call_fails_with_tag_limit_exceeded_and_adds_none(
    ec2_a, register_image
):
    image = register_image()

    with pytest.raises(ClientError) as e:
        ec2_a.create_tags(
            Resources=[image.image_id], Tags=_tag_list({f"k{i:02}": "v" for i in range(51)})
        )

    assert error_code(e) == "TagLimitExceeded"
    assert _tags(ec2_a, image.image_id) == {}


def test_create_tags_overwriting_at_limit_succeeds(ec2_a, register_image):
    image = register_image()
    fifty = {f"k{i:02}": str(i) for i in range(50)}
    ec2_a.create_tags(Resources=[image.image_id], Tags=_tag_list(fifty))

    ec2_a.create_tags(Resources=[image.image_id], Tags=[{"Key": "k00", "Value": "new"}])

    assert _tags(ec2_a, image.image_id)["k00"] == "new"


def test_create_tags_unknown_image_fails_with_not_found(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.create_tags(Resources=["ami-0123456789abcdef0"], Tags=[{"Key": "k", "Value": "v"}])

    assert error_code(e) == "InvalidAMIID.NotFound"


def test_create_tags_unknown_snapshot_fails_with_not_found(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.create_tags(Resources=["snap-0123456789abcdef0"], Tags=[{"Key": "k", "Value": "v"}])

    assert error_code(e) == "InvalidSnapshot.NotFound"


def test_create_tags_unrecognised_resource_id_fails_with_invalid_id(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.create_tags(Resources=["nonsense-1234"], Tags=[{"Key": "k", "Value": "v"}])

    assert error_code(e) == "InvalidID"


def test_create_tags_dry_run_fails_with_dry_run_operation_and_adds_nothing(ec2_a, register_image):
    image = register_image()

    with pytest.raises(ClientError) as e:
        ec2_a.create_tags(
            Resources=[image.image_id], Tags=[{"Key": "k", "Value": "v"}], DryRun=True
        )

    assert error_code(e) == "DryRunOperation"
    assert _tags(ec2_a, image.image_id) == {}


# ---------------------------------------------------------------- DeleteTags


def test_delete_tags_key_only_deletes_regardless_of_value(ec2_a, register_image):
    image = register_image(tags={"a": "1", "b": "2"})

    ec2_a.delete_tags(Resources=[image.image_id], Tags=[{"Key": "a"}])

    assert _tags(ec2_a, image.image_id) == {"b": "2"}


def test_delete_tags_key_and_matching_value_deletes(ec2_a, register_image):
    image = register_image(tags={"a": "1", "b": "2"})

    ec2_a.delete_tags(Resources=[image.image_id], Tags=[{"Key": "a", "Value": "1"}])

    assert _tags(ec2_a, image.image_id) == {"b": "2"}


def test_delete_tags_key_and_other_value_keeps_tag(ec2_a, register_image):
    image = register_image(tags={"a": "1"})

    ec2_a.delete_tags(Resources=[image.image_id], Tags=[{"Key": "a", "Value": "2"}])

    assert _tags(ec2_a, image.image_id) == {"a": "1"}


def test_delete_tags_empty_value_deletes_only_empty_valued_tag(ec2_a, register_image):
    image = register_image()
    ec2_a.create_tags(
        Resources=[image.image_id],
        Tags=[{"Key": "empty", "Value": ""}, {"Key": "full", "Value": "x"}],
    )

    ec2_a.delete_tags(
        Resources=[image.image_id],
        Tags=[{"Key": "empty", "Value": ""}, {"Key": "full", "Value": ""}],
    )

    assert _tags(ec2_a, image.image_id) == {"full": "x"}


def test_delete_tags_without_tags_deletes_all_tags(ec2_a, register_image):
    image = register_image(tags={"a": "1", "b": "2", "c": "3"})

    ec2_a.delete_tags(Resources=[image.image_id])

    assert _tags(ec2_a, image.image_id) == {}


def test_delete_tags_on_snapshot_deletes(ec2_a, make_snapshot):
    snapshot_id = make_snapshot(tags={"x": "1", "y": "2"})

    ec2_a.delete_tags(Resources=[snapshot_id], Tags=[{"Key": "x"}])

    assert _tags(ec2_a, snapshot_id) == {"y": "2"}


# ---------------------------------------------------------------- DescribeTags


@pytest.fixture(scope="module")
def tagged(register_image, make_snapshot):
    run = unique("tagrun")
    image = register_image(tags={"run": run, "role": "web-frontend", "tier": "1"})
    snapshot_id = make_snapshot(tags={"run": run, "role": "backup"})
    return run, image, snapshot_id


def _described(resp):
    return sorted((t["ResourceId"], t["Key"], t["Value"]) for t in resp["Tags"])


def test_describe_tags_key_and_value_filters_return_matching(ec2_a, tagged):
    run, image, snapshot_id = tagged

    resp = ec2_a.describe_tags(
        Filters=[{"Name": "key", "Values": ["run"]}, {"Name": "value", "Values": [run]}]
    )

    assert _described(resp) == sorted([(image.image_id, "run", run), (snapshot_id, "run", run)])


def test_describe_tags_resource_type_filter_returns_only_that_type(ec2_a, tagged):
    run, image, snapshot_id = tagged

    resp = ec2_a.describe_tags(
        Filters=[
            {"Name": "resource-id", "Values": [image.image_id, snapshot_id]},
            {"Name": "resource-type", "Values": ["snapshot"]},
        ]
    )

    assert _described(resp) == sorted(
        [(snapshot_id, "run", run), (snapshot_id, "role", "backup")]
    )


def test_describe_tags_value_wildcard_filter_returns_matching(ec2_a, tagged):
    run, image, snapshot_id = tagged

    resp = ec2_a.describe_tags(
        Filters=[
            {"Name": "resource-id", "Values": [image.image_id, snapshot_id]},
            {"Name": "value", "Values": ["web-*"]},
        ]
    )

    assert _described(resp) == [(image.image_id, "role", "web-frontend")]


def test_describe_tags_key_wildcard_filter_returns_matching(ec2_a, tagged):
    run, image, snapshot_id = tagged

    resp = ec2_a.describe_tags(
        Filters=[
            {"Name": "resource-id", "Values": [image.image_id]},
            {"Name": "key", "Values": ["r?le", "t*"]},
        ]
    )

    assert _described(resp) == sorted(
        [(image.image_id, "role", "web-frontend"), (image.image_id, "tier", "1")]
    )


def test_describe_tags_tag_key_value_filter_returns_tags_of_matching_resources(ec2_a, tagged):
    run, image, snapshot_id = tagged

    resp = ec2_a.describe_tags(
        Filters=[
            {"Name": "resource-id", "Values": [image.image_id, snapshot_id]},
            {"Name": "key", "Values": ["role"]},
            {"Name": "tag:role", "Values": ["backup"]},
        ]
    )

    assert _described(resp) == [(snapshot_id, "role", "backup")]


def test_describe_tags_unknown_filter_fails_with_invalid_parameter_value(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.describe_tags(Filters=[{"Name": "colour", "Values": ["red"]}])

    assert error_code(e) == "InvalidParameterValue"


def test_describe_tags_paginator_page_size_5_walks_every_tag_once(ec2_a, register_image):
    wanted = {f"p{i}": str(i) for i in range(7)}
    image = register_image(tags=wanted)
    paginator = ec2_a.get_paginator("describe_tags")

    pages = list(
        paginator.paginate(
            Filters=[{"Name": "resource-id", "Values": [image.image_id]}],
            PaginationConfig={"PageSize": 5},
        )
    )
    keys = [t["Key"] for p in pages for t in p["Tags"]]

    assert sorted(keys) == sorted(wanted)
    assert len(pages) >= 2
    assert all(len(p["Tags"]) <= 5 for p in pages)


def test_describe_tags_max_results_below_5_fails_with_invalid_parameter_value(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.describe_tags(MaxResults=4)

    assert error_code(e) == "InvalidParameterValue"


def test_describe_tags_garbage_next_token_fails_with_invalid_pagination_token(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.describe_tags(MaxResults=5, NextToken="garbage")

    assert error_code(e) == "InvalidPaginationToken"


def test_describe_tags_in_other_region_does_not_show_tags(ec2_a_west, tagged):
    run, image, snapshot_id = tagged

    resp = ec2_a_west.describe_tags(Filters=[{"Name": "resource-id", "Values": [image.image_id]}])

    assert resp["Tags"] == []


# ---------------------------------------------------------------- tags are per account


def test_create_tags_by_other_account_on_shared_image_is_visible_only_to_that_account(
    ec2_a, ec2_b, register_image, describe_image, account_b
):
    image = register_image(tags={"owner-tag": "a"})
    ec2_a.modify_image_attribute(
        ImageId=image.image_id, LaunchPermission={"Add": [{"UserId": account_b.account_id}]}
    )

    ec2_b.create_tags(Resources=[image.image_id], Tags=[{"Key": "b-tag", "Value": "b"}])

    assert tags_of(describe_image(image.image_id)) == {"owner-tag": "a"}
    assert tags_of(describe_image(image.image_id, account=account_b)) == {"b-tag": "b"}
    assert _tags(ec2_b, image.image_id) == {"b-tag": "b"}
    assert _tags(ec2_a, image.image_id) == {"owner-tag": "a"}


def test_describe_images_tag_filter_by_other_account_uses_its_own_tags(
    ec2_a, ec2_b, register_image, account_b
):
    image = register_image(tags={"team": "owner"})
    ec2_a.modify_image_attribute(
        ImageId=image.image_id, LaunchPermission={"Add": [{"UserId": account_b.account_id}]}
    )
    label = unique("label")
    ec2_b.create_tags(Resources=[image.image_id], Tags=[{"Key": "label", "Value": label}])

    mine = ec2_b.describe_images(Filters=[{"Name": "tag:label", "Values": [label]}])["Images"]
    owners = ec2_b.describe_images(
        Filters=[
            {"Name": "image-id", "Values": [image.image_id]},
            {"Name": "tag:team", "Values": ["owner"]},
        ]
    )["Images"]

    assert [i["ImageId"] for i in mine] == [image.image_id]
    assert owners == []
