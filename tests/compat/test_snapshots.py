"""DescribeSnapshots, DeleteSnapshot, CopySnapshot, Describe/Modify/ResetSnapshotAttribute,
and the EBS direct StartSnapshot/CompleteSnapshot pair that makes them."""

import datetime as dt
import re

import pytest
from botocore.exceptions import ClientError

from compat_helpers import PRIMARY, error_code, tags_of, unique

SNAP_ID = re.compile(r"^snap-[0-9a-f]{17}$")
FAST_WAITER = {"Delay": 1, "MaxAttempts": 30}


def _snap(ec2, snapshot_id):
    snaps = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
    assert [s["SnapshotId"] for s in snaps] == [snapshot_id]
    return snaps[0]


def _ids(resp):
    return sorted(s["SnapshotId"] for s in resp["Snapshots"])


def _share(ec2, snapshot_id, account):
    ec2.modify_snapshot_attribute(
        SnapshotId=snapshot_id, CreateVolumePermission={"Add": [{"UserId": account.account_id}]}
    )


# ---------------------------------------------------------------- EBS direct


def test_start_snapshot_returns_pending_snapshot_with_block_size(ebs_a, account_a):
    resp = ebs_a.start_snapshot(VolumeSize=8, Description=unique("start"))

    assert SNAP_ID.match(resp["SnapshotId"])
    assert resp["Status"] == "pending"
    assert resp["BlockSize"] == 524288
    assert resp["VolumeSize"] == 8
    assert resp["OwnerId"] == account_a.account_id


def test_complete_snapshot_zero_blocks_returns_completed(ebs_a):
    snapshot_id = ebs_a.start_snapshot(VolumeSize=1)["SnapshotId"]

    resp = ebs_a.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=0)

    assert resp["Status"] == "completed"


def test_complete_snapshot_unknown_id_fails_with_resource_not_found(ebs_a):
    with pytest.raises(ClientError) as e:
        ebs_a.complete_snapshot(SnapshotId="snap-0123456789abcdef0", ChangedBlocksCount=0)

    assert error_code(e) == "ResourceNotFoundException"


def test_complete_snapshot_of_other_account_fails_and_leaves_it_pending(
    ebs_a, ebs_b, ec2_a
):
    snapshot_id = ebs_a.start_snapshot(VolumeSize=1)["SnapshotId"]

    with pytest.raises(ClientError) as e:
        ebs_b.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=0)

    assert error_code(e) in {"ResourceNotFoundException", "AccessDeniedException"}
    assert _snap(ec2_a, snapshot_id)["State"] == "pending"


# ---------------------------------------------------------------- DescribeSnapshots


def test_describe_snapshots_snapshot_ids_returns_completed_snapshot_fields(
    ec2_a, make_snapshot, account_a
):
    description = unique("desc")
    before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
    snapshot_id = make_snapshot(size=8, description=description)

    snap = _snap(ec2_a, snapshot_id)

    assert {k: snap.get(k) for k in ("State", "VolumeSize", "OwnerId", "Progress", "Encrypted",
                                      "Description")} == {
        "State": "completed",
        "VolumeSize": 8,
        "OwnerId": account_a.account_id,
        "Progress": "100%",
        "Encrypted": False,
        "Description": description,
    }
    assert before <= snap["StartTime"] <= dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=5)


def test_describe_snapshots_started_not_completed_is_pending(ec2_a, make_snapshot):
    snapshot_id = make_snapshot(complete=False)

    assert _snap(ec2_a, snapshot_id)["State"] == "pending"


def test_describe_snapshots_tags_from_start_snapshot_are_shown(ec2_a, make_snapshot):
    snapshot_id = make_snapshot(tags={"origin": "ebs-direct"})

    assert tags_of(_snap(ec2_a, snapshot_id)) == {"origin": "ebs-direct"}


def test_describe_snapshots_in_other_region_does_not_show_snapshot(ec2_a_west, make_snapshot):
    snapshot_id = make_snapshot()

    resp = ec2_a_west.describe_snapshots(Filters=[{"Name": "snapshot-id", "Values": [snapshot_id]}])

    assert resp["Snapshots"] == []


def test_describe_snapshots_unknown_id_fails_with_not_found(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.describe_snapshots(SnapshotIds=["snap-0123456789abcdef0"])

    assert error_code(e) == "InvalidSnapshot.NotFound"


def test_describe_snapshots_malformed_id_fails_with_malformed(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.describe_snapshots(SnapshotIds=["snap-zz"])

    assert error_code(e) == "InvalidSnapshotID.Malformed"


def test_describe_snapshots_private_snapshot_of_other_account_fails_with_not_found(
    ec2_b, make_snapshot
):
    snapshot_id = make_snapshot()

    with pytest.raises(ClientError) as e:
        ec2_b.describe_snapshots(SnapshotIds=[snapshot_id])

    assert error_code(e) == "InvalidSnapshot.NotFound"


def test_describe_snapshots_owner_ids_self_returns_only_own(
    ec2_a, ec2_b, make_snapshot, account_a, account_b
):
    description = unique("mine")
    own = make_snapshot(description=description)
    theirs = make_snapshot(account=account_b, description=description)
    _share(ec2_b, theirs, account_a)

    resp = ec2_a.describe_snapshots(
        OwnerIds=["self"], Filters=[{"Name": "description", "Values": [description]}]
    )

    assert _ids(resp) == [own]


def test_describe_snapshots_owner_ids_account_id_returns_that_owners_visible(
    ec2_a, ec2_b, make_snapshot, account_a, account_b
):
    description = unique("owner")
    shared = make_snapshot(description=description)
    make_snapshot(description=description)  # private, invisible to B
    _share(ec2_a, shared, account_b)

    resp = ec2_b.describe_snapshots(
        OwnerIds=[account_a.account_id],
        Filters=[{"Name": "description", "Values": [description]}],
    )

    assert _ids(resp) == [shared]


def test_describe_snapshots_restorable_by_self_returns_shared_with_caller(
    ec2_a, ec2_b, make_snapshot, account_b
):
    description = unique("restorable")
    shared = make_snapshot(description=description)
    make_snapshot(description=description)
    _share(ec2_a, shared, account_b)

    resp = ec2_b.describe_snapshots(
        RestorableByUserIds=["self"], Filters=[{"Name": "description", "Values": [description]}]
    )

    assert _ids(resp) == [shared]


def test_describe_snapshots_restorable_by_account_id_returns_shared_with_it(
    ec2_a, make_snapshot, account_b
):
    description = unique("restorable-id")
    shared = make_snapshot(description=description)
    make_snapshot(description=description)
    _share(ec2_a, shared, account_b)

    resp = ec2_a.describe_snapshots(
        OwnerIds=["self"],
        RestorableByUserIds=[account_b.account_id],
        Filters=[{"Name": "description", "Values": [description]}],
    )

    assert _ids(resp) == [shared]


def test_describe_snapshots_restorable_by_all_returns_public_snapshots(
    ec2_a, ec2_b, make_snapshot
):
    description = unique("public-snap")
    public = make_snapshot(description=description)
    make_snapshot(description=description)
    ec2_a.modify_snapshot_attribute(
        SnapshotId=public, CreateVolumePermission={"Add": [{"Group": "all"}]}
    )

    resp = ec2_b.describe_snapshots(
        RestorableByUserIds=["all"], Filters=[{"Name": "description", "Values": [description]}]
    )

    assert _ids(resp) == [public]


@pytest.fixture(scope="module")
def snap_catalog(make_snapshot):
    run = unique("snapcat")
    small = make_snapshot(size=4, description=f"{run} small", tags={"run": run, "size": "s"})
    large = make_snapshot(size=16, description=f"{run} large", tags={"run": run, "kind": "big"})
    pending = make_snapshot(size=4, description=f"{run} pending", tags={"run": run}, complete=False)
    return run, small, large, pending


def _run(run):
    return {"Name": "tag:run", "Values": [run]}


def test_describe_snapshots_tag_filter_returns_tagged(ec2_a, snap_catalog):
    run, small, large, pending = snap_catalog

    resp = ec2_a.describe_snapshots(Filters=[_run(run)])

    assert _ids(resp) == sorted([small, large, pending])


def test_describe_snapshots_tag_key_filter_returns_with_key(ec2_a, snap_catalog):
    run, small, large, pending = snap_catalog

    resp = ec2_a.describe_snapshots(Filters=[_run(run), {"Name": "tag-key", "Values": ["kind"]}])

    assert _ids(resp) == [large]


def test_describe_snapshots_status_filter_returns_matching(ec2_a, snap_catalog):
    run, small, large, pending = snap_catalog

    completed = ec2_a.describe_snapshots(
        Filters=[_run(run), {"Name": "status", "Values": ["completed"]}]
    )
    pend = ec2_a.describe_snapshots(Filters=[_run(run), {"Name": "status", "Values": ["pending"]}])

    assert _ids(completed) == sorted([small, large])
    assert _ids(pend) == [pending]


def test_describe_snapshots_volume_size_filter_returns_matching(ec2_a, snap_catalog):
    run, small, large, pending = snap_catalog

    resp = ec2_a.describe_snapshots(Filters=[_run(run), {"Name": "volume-size", "Values": ["16"]}])

    assert _ids(resp) == [large]


def test_describe_snapshots_description_wildcard_filter_returns_matching(ec2_a, snap_catalog):
    run, small, large, pending = snap_catalog

    resp = ec2_a.describe_snapshots(
        Filters=[{"Name": "description", "Values": [f"{run} *a*"]}]
    )

    assert _ids(resp) == sorted([small, large])


def test_describe_snapshots_snapshot_id_and_owner_id_filters_return_matching(
    ec2_a, snap_catalog, account_a
):
    run, small, large, pending = snap_catalog

    resp = ec2_a.describe_snapshots(
        Filters=[
            {"Name": "snapshot-id", "Values": [small, large]},
            {"Name": "owner-id", "Values": [account_a.account_id]},
        ]
    )

    assert _ids(resp) == sorted([small, large])


def test_describe_snapshots_encrypted_filter_false_returns_unencrypted(ec2_a, snap_catalog):
    run, small, large, pending = snap_catalog

    resp = ec2_a.describe_snapshots(
        Filters=[_run(run), {"Name": "encrypted", "Values": ["false"]}]
    )

    assert _ids(resp) == sorted([small, large, pending])


def test_describe_snapshots_paginator_page_size_5_walks_every_snapshot_once(
    ec2_a, make_snapshot
):
    run = unique("snappage")
    expected = sorted(make_snapshot(size=1, tags={"page": run}) for _ in range(7))
    paginator = ec2_a.get_paginator("describe_snapshots")

    pages = list(
        paginator.paginate(
            OwnerIds=["self"],
            Filters=[{"Name": "tag:page", "Values": [run]}],
            PaginationConfig={"PageSize": 5},
        )
    )
    ids = [s["SnapshotId"] for p in pages for s in p["Snapshots"]]

    assert sorted(ids) == expected
    assert len(pages) >= 2
    assert all(len(p["Snapshots"]) <= 5 for p in pages)


def test_describe_snapshots_max_results_with_snapshot_ids_fails_with_invalid_parameter_combination(
    ec2_a, make_snapshot
):
    snapshot_id = make_snapshot()

    with pytest.raises(ClientError) as e:
        ec2_a.describe_snapshots(SnapshotIds=[snapshot_id], MaxResults=5)

    assert error_code(e) == "InvalidParameterCombination"


def test_describe_snapshots_garbage_next_token_fails_with_invalid_pagination_token(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.describe_snapshots(OwnerIds=["self"], MaxResults=5, NextToken="garbage")

    assert error_code(e) == "InvalidPaginationToken"


# ---------------------------------------------------------------- DeleteSnapshot


def test_delete_snapshot_unused_snapshot_removes_it(ec2_a, make_snapshot):
    snapshot_id = make_snapshot()

    ec2_a.delete_snapshot(SnapshotId=snapshot_id)

    with pytest.raises(ClientError) as e:
        ec2_a.describe_snapshots(SnapshotIds=[snapshot_id])
    assert error_code(e) == "InvalidSnapshot.NotFound"


def test_delete_snapshot_used_by_registered_image_fails_with_in_use(ec2_a, register_image):
    image = register_image()

    with pytest.raises(ClientError) as e:
        ec2_a.delete_snapshot(SnapshotId=image.snapshot_id)

    assert error_code(e) == "InvalidSnapshot.InUse"
    assert _snap(ec2_a, image.snapshot_id)["State"] == "completed"


def test_delete_snapshot_after_image_deregistered_succeeds(ec2_a, register_image):
    image = register_image()
    ec2_a.deregister_image(ImageId=image.image_id)

    ec2_a.delete_snapshot(SnapshotId=image.snapshot_id)

    assert ec2_a.describe_snapshots(
        Filters=[{"Name": "snapshot-id", "Values": [image.snapshot_id]}]
    )["Snapshots"] == []


def test_delete_snapshot_unknown_id_fails_with_not_found(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.delete_snapshot(SnapshotId="snap-0fedcba9876543210")

    assert error_code(e) == "InvalidSnapshot.NotFound"


def test_delete_snapshot_by_non_owner_with_permission_fails_with_auth_failure(
    ec2_a, ec2_b, make_snapshot, account_b
):
    snapshot_id = make_snapshot()
    _share(ec2_a, snapshot_id, account_b)

    with pytest.raises(ClientError) as e:
        ec2_b.delete_snapshot(SnapshotId=snapshot_id)

    assert error_code(e) == "AuthFailure"
    assert _snap(ec2_a, snapshot_id)["State"] == "completed"


def test_delete_snapshot_dry_run_fails_with_dry_run_operation_and_keeps_it(ec2_a, make_snapshot):
    snapshot_id = make_snapshot()

    with pytest.raises(ClientError) as e:
        ec2_a.delete_snapshot(SnapshotId=snapshot_id, DryRun=True)

    assert error_code(e) == "DryRunOperation"
    assert _snap(ec2_a, snapshot_id)["State"] == "completed"


# ---------------------------------------------------------------- CopySnapshot


def test_copy_snapshot_to_other_region_is_pending_then_completed(
    ec2_a_west, make_snapshot, account_a
):
    source = make_snapshot(size=8)

    copy_id = ec2_a_west.copy_snapshot(
        SourceSnapshotId=source, SourceRegion=PRIMARY, Description="copied west"
    )["SnapshotId"]
    first_state = _snap(ec2_a_west, copy_id)["State"]
    ec2_a_west.get_waiter("snapshot_completed").wait(SnapshotIds=[copy_id], WaiterConfig=FAST_WAITER)
    copy = _snap(ec2_a_west, copy_id)

    assert SNAP_ID.match(copy_id)
    assert copy_id != source
    assert first_state == "pending"
    assert {k: copy.get(k) for k in ("State", "Description", "VolumeSize", "OwnerId")} == {
        "State": "completed",
        "Description": "copied west",
        "VolumeSize": 8,
        "OwnerId": account_a.account_id,
    }


def test_copy_snapshot_with_tag_specifications_tags_the_copy(ec2_a_west, make_snapshot):
    source = make_snapshot()

    resp = ec2_a_west.copy_snapshot(
        SourceSnapshotId=source,
        SourceRegion=PRIMARY,
        TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": "copy", "Value": "1"}]}],
    )

    assert tags_of(resp) == {"copy": "1"}
    assert tags_of(_snap(ec2_a_west, resp["SnapshotId"])) == {"copy": "1"}


def test_copy_snapshot_within_same_region_creates_new_snapshot(ec2_a, make_snapshot):
    source = make_snapshot()

    copy_id = ec2_a.copy_snapshot(SourceSnapshotId=source, SourceRegion=PRIMARY)["SnapshotId"]
    ec2_a.get_waiter("snapshot_completed").wait(SnapshotIds=[copy_id], WaiterConfig=FAST_WAITER)

    assert copy_id != source
    assert _snap(ec2_a, copy_id)["State"] == "completed"


def test_copy_snapshot_copy_can_back_an_image_in_destination_region(
    ec2_a_west, make_snapshot, register_image
):
    source = make_snapshot()
    copy_id = ec2_a_west.copy_snapshot(SourceSnapshotId=source, SourceRegion=PRIMARY)["SnapshotId"]
    ec2_a_west.get_waiter("snapshot_completed").wait(SnapshotIds=[copy_id], WaiterConfig=FAST_WAITER)

    image = register_image(region="us-west-2", snapshot_id=copy_id)

    assert ec2_a_west.describe_images(ImageIds=[image.image_id])["Images"][0]["State"] == (
        "available"
    )


def test_copy_snapshot_unknown_source_fails_with_not_found(ec2_a_west):
    with pytest.raises(ClientError) as e:
        ec2_a_west.copy_snapshot(SourceSnapshotId="snap-0123456789abcdef0", SourceRegion=PRIMARY)

    assert error_code(e) == "InvalidSnapshot.NotFound"


# ---------------------------------------------------------------- snapshot attributes


def _perms(ec2, snapshot_id):
    resp = ec2.describe_snapshot_attribute(SnapshotId=snapshot_id, Attribute="createVolumePermission")
    assert resp["SnapshotId"] == snapshot_id
    return resp["CreateVolumePermissions"]


def test_describe_snapshot_attribute_create_volume_permission_new_snapshot_is_empty(
    ec2_a, make_snapshot
):
    assert _perms(ec2_a, make_snapshot()) == []


def test_modify_snapshot_attribute_add_user_grants_permission_and_visibility(
    ec2_a, ec2_b, make_snapshot, account_b
):
    snapshot_id = make_snapshot()

    _share(ec2_a, snapshot_id, account_b)

    assert _perms(ec2_a, snapshot_id) == [{"UserId": account_b.account_id}]
    assert _snap(ec2_b, snapshot_id)["SnapshotId"] == snapshot_id


def test_modify_snapshot_attribute_legacy_user_ids_form_grants_permission(
    ec2_a, make_snapshot, account_b
):
    snapshot_id = make_snapshot()

    ec2_a.modify_snapshot_attribute(
        SnapshotId=snapshot_id,
        Attribute="createVolumePermission",
        OperationType="add",
        UserIds=[account_b.account_id],
    )

    assert _perms(ec2_a, snapshot_id) == [{"UserId": account_b.account_id}]


def test_modify_snapshot_attribute_remove_user_revokes_permission(
    ec2_a, ec2_b, make_snapshot, account_b
):
    snapshot_id = make_snapshot()
    _share(ec2_a, snapshot_id, account_b)

    ec2_a.modify_snapshot_attribute(
        SnapshotId=snapshot_id,
        CreateVolumePermission={"Remove": [{"UserId": account_b.account_id}]},
    )

    assert _perms(ec2_a, snapshot_id) == []
    assert ec2_b.describe_snapshots(
        Filters=[{"Name": "snapshot-id", "Values": [snapshot_id]}]
    )["Snapshots"] == []


def test_modify_snapshot_attribute_add_group_all_makes_snapshot_public(
    ec2_a, make_snapshot
):
    snapshot_id = make_snapshot()

    ec2_a.modify_snapshot_attribute(
        SnapshotId=snapshot_id, CreateVolumePermission={"Add": [{"Group": "all"}]}
    )

    assert _perms(ec2_a, snapshot_id) == [{"Group": "all"}]


def test_reset_snapshot_attribute_create_volume_permission_removes_all(
    ec2_a, make_snapshot, account_b
):
    snapshot_id = make_snapshot()
    ec2_a.modify_snapshot_attribute(
        SnapshotId=snapshot_id,
        CreateVolumePermission={"Add": [{"UserId": account_b.account_id}, {"Group": "all"}]},
    )

    ec2_a.reset_snapshot_attribute(SnapshotId=snapshot_id, Attribute="createVolumePermission")

    assert _perms(ec2_a, snapshot_id) == []


def test_modify_snapshot_attribute_by_non_owner_fails_with_auth_failure(
    ec2_a, ec2_b, make_snapshot, account_b
):
    snapshot_id = make_snapshot()
    _share(ec2_a, snapshot_id, account_b)

    with pytest.raises(ClientError) as e:
        ec2_b.modify_snapshot_attribute(
            SnapshotId=snapshot_id, CreateVolumePermission={"Add": [{"Group": "all"}]}
        )

    assert error_code(e) == "AuthFailure"
    assert _perms(ec2_a, snapshot_id) == [{"UserId": account_b.account_id}]


def test_describe_snapshot_attribute_product_codes_is_empty(ec2_a, make_snapshot):
    snapshot_id = make_snapshot()

    resp = ec2_a.describe_snapshot_attribute(SnapshotId=snapshot_id, Attribute="productCodes")

    assert resp["ProductCodes"] == []


def test_describe_snapshot_attribute_unknown_snapshot_fails_with_not_found(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.describe_snapshot_attribute(
            SnapshotId="snap-0123456789abcdef0", Attribute="createVolumePermission"
        )

    assert error_code(e) == "InvalidSnapshot.NotFound"


DOCUMENTED_SNAPSHOT_FILTERS = [
    ("progress", "100%", ["small", "large"]),
    # A pattern that does not depend on today's date: a run may cross midnight.
    ("start-time", "2???-??-??T??:??:??.???Z", ["small", "large", "pending"]),
    ("storage-tier", "standard", ["small", "large", "pending"]),
    ("encrypted", "true", []),
    ("volume-size", "4", ["small", "pending"]),
]


@pytest.mark.parametrize(
    "name,value,expected", DOCUMENTED_SNAPSHOT_FILTERS, ids=[f[0] + "-" + f[1] for f in DOCUMENTED_SNAPSHOT_FILTERS]
)
def test_describe_snapshots_documented_filter_selects_matching(
    ec2_a, snap_catalog, name, value, expected
):
    run, small, large, pending = snap_catalog
    ids = {"small": small, "large": large, "pending": pending}

    resp = ec2_a.describe_snapshots(Filters=[_run(run), {"Name": name, "Values": [value]}])

    assert _ids(resp) == sorted(ids[k] for k in expected)
