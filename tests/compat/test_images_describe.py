"""DescribeImages: ids, owners, executable users, filters, wildcards, pagination."""

from dataclasses import dataclass

import pytest
from botocore.exceptions import ClientError

from compat_helpers import KILN_OWNER_ALIAS, KILN_OWNER_ID, error_code, unique


@dataclass
class Catalog:
    prefix: str
    alpha1: object  # public, x86_64, tags run/role=web
    alpha2: object  # private, arm64, tags run/role=db, shared with B
    beta1: object  # private, x86_64, tags run/env=prod, not shared


@pytest.fixture(scope="module")
def catalog(ec2_a, register_image, account_b):
    prefix = unique("cat")
    alpha1 = register_image(
        name=f"{prefix}-alpha-1",
        tags={"run": prefix, "role": "web"},
        Description="web server one",
    )
    alpha2 = register_image(
        name=f"{prefix}-alpha-2",
        tags={"run": prefix, "role": "db"},
        Architecture="arm64",
        Description="database",
    )
    beta1 = register_image(
        name=f"{prefix}-beta-1", tags={"run": prefix, "env": "prod"}, Description="batch"
    )
    ec2_a.modify_image_attribute(
        ImageId=alpha1.image_id, LaunchPermission={"Add": [{"Group": "all"}]}
    )
    ec2_a.modify_image_attribute(
        ImageId=alpha2.image_id, LaunchPermission={"Add": [{"UserId": account_b.account_id}]}
    )
    return Catalog(prefix, alpha1, alpha2, beta1)


def _ids(resp):
    return sorted(i["ImageId"] for i in resp["Images"])


def _run(catalog):
    return {"Name": "tag:run", "Values": [catalog.prefix]}


def _name_prefix(catalog):
    return {"Name": "name", "Values": [catalog.prefix + "-*"]}


# ---------------------------------------------------------------- ImageIds


def test_describe_images_image_ids_returns_exactly_those(ec2_a, catalog):
    resp = ec2_a.describe_images(ImageIds=[catalog.alpha1.image_id, catalog.beta1.image_id])

    assert _ids(resp) == sorted([catalog.alpha1.image_id, catalog.beta1.image_id])


def test_describe_images_unknown_well_formed_id_fails_with_not_found(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.describe_images(ImageIds=["ami-0123456789abcdef0"])

    assert error_code(e) == "InvalidAMIID.NotFound"


def test_describe_images_malformed_id_fails_with_malformed(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.describe_images(ImageIds=["ami-notanid"])

    assert error_code(e) == "InvalidAMIID.Malformed"


def test_describe_images_non_ami_prefix_fails_with_malformed(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.describe_images(ImageIds=["snap-0123456789abcdef0"])

    assert error_code(e) == "InvalidAMIID.Malformed"


# ---------------------------------------------------------------- Owners


def test_describe_images_owners_self_returns_only_own_images(ec2_a, catalog, account_a):
    images = ec2_a.describe_images(Owners=["self"], Filters=[_name_prefix(catalog)])["Images"]

    assert sorted(i["ImageId"] for i in images) == sorted(
        [catalog.alpha1.image_id, catalog.alpha2.image_id, catalog.beta1.image_id]
    )
    assert {i["OwnerId"] for i in images} == {account_a.account_id}


def test_describe_images_owners_self_excludes_public_images_of_others(
    ec2_a, ec2_kiln, register_image, account_kiln
):
    kiln_image = register_image(account=account_kiln)
    ec2_kiln.modify_image_attribute(
        ImageId=kiln_image.image_id, LaunchPermission={"Add": [{"Group": "all"}]}
    )

    ids = _ids(ec2_a.describe_images(Owners=["self"]))

    assert kiln_image.image_id not in ids


def test_describe_images_owners_account_id_from_other_account_returns_visible_ones(
    ec2_b, catalog, account_a
):
    resp = ec2_b.describe_images(Owners=[account_a.account_id], Filters=[_name_prefix(catalog)])

    assert _ids(resp) == sorted([catalog.alpha1.image_id, catalog.alpha2.image_id])


def test_describe_images_owners_kiln_alias_returns_kiln_public_images(
    ec2_a, ec2_kiln, register_image, account_kiln
):
    kiln_image = register_image(account=account_kiln, name=unique("quickstart"))
    ec2_kiln.modify_image_attribute(
        ImageId=kiln_image.image_id, LaunchPermission={"Add": [{"Group": "all"}]}
    )

    images = ec2_a.describe_images(
        Owners=[KILN_OWNER_ALIAS], Filters=[{"Name": "name", "Values": [kiln_image.name]}]
    )["Images"]

    assert [i["ImageId"] for i in images] == [kiln_image.image_id]
    assert images[0]["ImageOwnerAlias"] == KILN_OWNER_ALIAS
    assert images[0]["OwnerId"] == KILN_OWNER_ID
    assert images[0]["Public"] is True


def test_describe_images_owners_kiln_excludes_own_images(ec2_a, catalog):
    resp = ec2_a.describe_images(Owners=[KILN_OWNER_ALIAS], Filters=[_name_prefix(catalog)])

    assert resp["Images"] == []


def test_describe_images_owners_self_and_kiln_returns_union(
    ec2_a, ec2_kiln, register_image, account_kiln
):
    prefix = unique("union")
    own = register_image(name=f"{prefix}-own")
    kiln_image = register_image(account=account_kiln, name=f"{prefix}-kiln")
    ec2_kiln.modify_image_attribute(
        ImageId=kiln_image.image_id, LaunchPermission={"Add": [{"Group": "all"}]}
    )

    resp = ec2_a.describe_images(
        Owners=["self", KILN_OWNER_ALIAS], Filters=[{"Name": "name", "Values": [prefix + "-*"]}]
    )

    assert _ids(resp) == sorted([own.image_id, kiln_image.image_id])


def test_describe_images_own_image_has_no_owner_alias(describe_image, catalog):
    assert "ImageOwnerAlias" not in describe_image(catalog.beta1.image_id)


def test_describe_images_no_owner_from_other_account_returns_public_and_shared(ec2_b, catalog):
    resp = ec2_b.describe_images(Filters=[_name_prefix(catalog)])

    assert _ids(resp) == sorted([catalog.alpha1.image_id, catalog.alpha2.image_id])


# ---------------------------------------------------------------- ExecutableUsers


def test_describe_images_executable_users_self_returns_images_shared_with_caller(
    ec2_b, catalog
):
    resp = ec2_b.describe_images(ExecutableUsers=["self"], Filters=[_name_prefix(catalog)])

    assert _ids(resp) == [catalog.alpha2.image_id]


def test_describe_images_executable_users_own_account_id_returns_images_shared_with_it(
    ec2_b, catalog, account_b
):
    resp = ec2_b.describe_images(
        ExecutableUsers=[account_b.account_id], Filters=[_name_prefix(catalog)]
    )

    assert _ids(resp) == [catalog.alpha2.image_id]


def test_describe_images_executable_users_other_account_id_returns_images_shared_with_it(
    ec2_a, catalog, account_b
):
    resp = ec2_a.describe_images(
        ExecutableUsers=[account_b.account_id], Filters=[_name_prefix(catalog)]
    )

    assert _ids(resp) == [catalog.alpha2.image_id]


def test_describe_images_executable_users_all_returns_only_public_images(ec2_b, catalog):
    resp = ec2_b.describe_images(ExecutableUsers=["all"], Filters=[_name_prefix(catalog)])

    assert _ids(resp) == [catalog.alpha1.image_id]


def test_describe_images_executable_users_all_for_owner_returns_only_public_images(
    ec2_a, catalog
):
    resp = ec2_a.describe_images(ExecutableUsers=["all"], Filters=[_name_prefix(catalog)])

    assert _ids(resp) == [catalog.alpha1.image_id]


# ---------------------------------------------------------------- filters


def test_describe_images_name_filter_exact_returns_one(ec2_a, catalog):
    resp = ec2_a.describe_images(
        Filters=[{"Name": "name", "Values": [catalog.alpha2.name]}]
    )

    assert _ids(resp) == [catalog.alpha2.image_id]


def test_describe_images_name_filter_star_wildcard_returns_matching(ec2_a, catalog):
    resp = ec2_a.describe_images(
        Filters=[{"Name": "name", "Values": [f"{catalog.prefix}-alpha-*"]}]
    )

    assert _ids(resp) == sorted([catalog.alpha1.image_id, catalog.alpha2.image_id])


def test_describe_images_name_filter_question_mark_matches_one_character(ec2_a, catalog):
    resp = ec2_a.describe_images(
        Filters=[{"Name": "name", "Values": [f"{catalog.prefix}-?eta-?"]}]
    )

    assert _ids(resp) == [catalog.beta1.image_id]


def test_describe_images_name_filter_question_mark_does_not_match_two_characters(
    ec2_a, catalog
):
    resp = ec2_a.describe_images(
        Filters=[{"Name": "name", "Values": [f"{catalog.prefix}-?a-1"]}]
    )

    assert resp["Images"] == []


def test_describe_images_name_filter_wildcard_in_middle_returns_matching(ec2_a, catalog):
    resp = ec2_a.describe_images(
        Filters=[{"Name": "name", "Values": [f"{catalog.prefix}*-1"]}]
    )

    assert _ids(resp) == sorted([catalog.alpha1.image_id, catalog.beta1.image_id])


def test_describe_images_filter_multiple_values_are_ored(ec2_a, catalog):
    resp = ec2_a.describe_images(
        Filters=[{"Name": "name", "Values": [catalog.alpha1.name, catalog.beta1.name]}]
    )

    assert _ids(resp) == sorted([catalog.alpha1.image_id, catalog.beta1.image_id])


def test_describe_images_multiple_filters_are_anded(ec2_a, catalog):
    resp = ec2_a.describe_images(
        Filters=[_name_prefix(catalog), {"Name": "architecture", "Values": ["x86_64"]},
                 {"Name": "is-public", "Values": ["false"]}]
    )

    assert _ids(resp) == [catalog.beta1.image_id]


def test_describe_images_tag_filter_returns_tagged(ec2_a, catalog):
    resp = ec2_a.describe_images(Filters=[_run(catalog), {"Name": "tag:role", "Values": ["db"]}])

    assert _ids(resp) == [catalog.alpha2.image_id]


def test_describe_images_tag_filter_wildcard_value_returns_matching(ec2_a, catalog):
    resp = ec2_a.describe_images(Filters=[_run(catalog), {"Name": "tag:role", "Values": ["w*"]}])

    assert _ids(resp) == [catalog.alpha1.image_id]


def test_describe_images_tag_key_filter_returns_images_with_key(ec2_a, catalog):
    resp = ec2_a.describe_images(Filters=[_run(catalog), {"Name": "tag-key", "Values": ["env"]}])

    assert _ids(resp) == [catalog.beta1.image_id]


def test_describe_images_state_filter_available_returns_registered(ec2_a, catalog):
    resp = ec2_a.describe_images(Filters=[_run(catalog), {"Name": "state", "Values": ["available"]}])

    assert len(resp["Images"]) == 3


def test_describe_images_state_filter_pending_excludes_available(ec2_a, catalog):
    resp = ec2_a.describe_images(Filters=[_run(catalog), {"Name": "state", "Values": ["pending"]}])

    assert resp["Images"] == []


def test_describe_images_is_public_true_returns_public(ec2_a, catalog):
    resp = ec2_a.describe_images(Filters=[_run(catalog), {"Name": "is-public", "Values": ["true"]}])

    assert _ids(resp) == [catalog.alpha1.image_id]


def test_describe_images_is_public_false_returns_private(ec2_a, catalog):
    resp = ec2_a.describe_images(
        Filters=[_run(catalog), {"Name": "is-public", "Values": ["false"]}]
    )

    assert _ids(resp) == sorted([catalog.alpha2.image_id, catalog.beta1.image_id])


def test_describe_images_owner_alias_filter_kiln_returns_kiln_images(
    ec2_b, ec2_kiln, register_image, account_kiln
):
    kiln_image = register_image(account=account_kiln, name=unique("alias"))
    ec2_kiln.modify_image_attribute(
        ImageId=kiln_image.image_id, LaunchPermission={"Add": [{"Group": "all"}]}
    )

    resp = ec2_b.describe_images(
        Filters=[
            {"Name": "owner-alias", "Values": [KILN_OWNER_ALIAS]},
            {"Name": "name", "Values": [kiln_image.name]},
        ]
    )

    assert _ids(resp) == [kiln_image.image_id]


def test_describe_images_owner_id_filter_returns_owned(ec2_b, catalog, account_a):
    resp = ec2_b.describe_images(
        Filters=[_name_prefix(catalog), {"Name": "owner-id", "Values": [account_a.account_id]}]
    )

    assert _ids(resp) == sorted([catalog.alpha1.image_id, catalog.alpha2.image_id])


def test_describe_images_block_device_mapping_snapshot_id_filter_returns_user(ec2_a, catalog):
    resp = ec2_a.describe_images(
        Filters=[
            {"Name": "block-device-mapping.snapshot-id", "Values": [catalog.alpha2.snapshot_id]}
        ]
    )

    assert _ids(resp) == [catalog.alpha2.image_id]


def test_describe_images_block_device_mapping_volume_size_filter_returns_matching(
    ec2_a, catalog
):
    resp = ec2_a.describe_images(
        Filters=[_run(catalog), {"Name": "block-device-mapping.volume-size", "Values": ["8"]}]
    )

    assert len(resp["Images"]) == 3


def test_describe_images_architecture_filter_returns_matching(ec2_a, catalog):
    resp = ec2_a.describe_images(
        Filters=[_run(catalog), {"Name": "architecture", "Values": ["arm64"]}]
    )

    assert _ids(resp) == [catalog.alpha2.image_id]


def test_describe_images_image_id_filter_returns_that_image(ec2_a, catalog):
    resp = ec2_a.describe_images(
        Filters=[{"Name": "image-id", "Values": [catalog.beta1.image_id]}]
    )

    assert _ids(resp) == [catalog.beta1.image_id]


def test_describe_images_description_filter_wildcard_returns_matching(ec2_a, catalog):
    resp = ec2_a.describe_images(
        Filters=[_run(catalog), {"Name": "description", "Values": ["*server*"]}]
    )

    assert _ids(resp) == [catalog.alpha1.image_id]


def test_describe_images_virtualization_type_filter_returns_matching(ec2_a, catalog):
    resp = ec2_a.describe_images(
        Filters=[_run(catalog), {"Name": "virtualization-type", "Values": ["hvm"]}]
    )

    assert len(resp["Images"]) == 3


def test_describe_images_root_device_type_filter_returns_ebs_images(ec2_a, catalog):
    resp = ec2_a.describe_images(
        Filters=[_run(catalog), {"Name": "root-device-type", "Values": ["ebs"]}]
    )

    assert len(resp["Images"]) == 3


def test_describe_images_image_type_filter_machine_returns_images(ec2_a, catalog):
    resp = ec2_a.describe_images(
        Filters=[_run(catalog), {"Name": "image-type", "Values": ["machine"]}]
    )

    assert len(resp["Images"]) == 3


def test_describe_images_no_match_returns_empty_list(ec2_a):
    resp = ec2_a.describe_images(Filters=[{"Name": "name", "Values": [unique("nothing")]}])

    assert resp["Images"] == []


def test_describe_images_unknown_filter_name_fails_with_invalid_parameter_value(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.describe_images(Filters=[{"Name": "flavour", "Values": ["vanilla"]}])

    assert error_code(e) == "InvalidParameterValue"


# ---------------------------------------------------------------- pagination


@pytest.fixture(scope="module")
def seven_images(register_image):
    prefix = unique("page")
    images = [register_image(name=f"{prefix}-{i}", tags={"page": prefix}) for i in range(7)]
    return prefix, sorted(i.image_id for i in images)


def test_describe_images_paginator_page_size_5_walks_every_image_once(ec2_a, seven_images):
    prefix, expected = seven_images
    paginator = ec2_a.get_paginator("describe_images")

    pages = list(
        paginator.paginate(
            Owners=["self"],
            Filters=[{"Name": "tag:page", "Values": [prefix]}],
            PaginationConfig={"PageSize": 5},
        )
    )
    ids = [i["ImageId"] for p in pages for i in p["Images"]]

    assert sorted(ids) == expected
    assert len(pages) >= 2
    assert all(len(p["Images"]) <= 5 for p in pages)


def test_describe_images_paginator_over_all_own_images_repeats_nothing(ec2_a, seven_images):
    _, expected = seven_images
    paginator = ec2_a.get_paginator("describe_images")

    ids = [
        i["ImageId"]
        for p in paginator.paginate(Owners=["self"], PaginationConfig={"PageSize": 5})
        for i in p["Images"]
    ]

    assert len(ids) == len(set(ids))
    assert set(expected) <= set(ids)


def test_describe_images_max_results_5_returns_5_and_next_token(ec2_a, seven_images):
    resp = ec2_a.describe_images(Owners=["self"], MaxResults=5)

    assert len(resp["Images"]) == 5
    assert resp["NextToken"]


def test_describe_images_last_page_has_no_next_token(ec2_a, seven_images):
    prefix, expected = seven_images

    resp = ec2_a.describe_images(
        Owners=["self"], Filters=[{"Name": "tag:page", "Values": [prefix]}], MaxResults=1000
    )

    assert _ids(resp) == expected
    assert "NextToken" not in resp


def test_describe_images_max_results_with_image_ids_fails_with_invalid_parameter_combination(
    ec2_a, seven_images
):
    _, expected = seven_images

    with pytest.raises(ClientError) as e:
        ec2_a.describe_images(ImageIds=expected[:1], MaxResults=5)

    assert error_code(e) == "InvalidParameterCombination"


def test_describe_images_max_results_below_5_fails_with_invalid_parameter_value(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.describe_images(Owners=["self"], MaxResults=4)

    assert error_code(e) == "InvalidParameterValue"


def test_describe_images_garbage_next_token_fails_with_invalid_pagination_token(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.describe_images(Owners=["self"], MaxResults=5, NextToken="not-a-token")

    assert error_code(e) == "InvalidPaginationToken"


def test_describe_images_dry_run_fails_with_dry_run_operation(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.describe_images(Owners=["self"], DryRun=True)

    assert error_code(e) == "DryRunOperation"


# ---------------------------------------------------------------- every documented filter


@pytest.fixture(scope="module")
def featured(ec2_a, make_snapshot, register_image):
    """Two images that differ in every documented attribute, tagged with a unique run."""
    run = unique("feat")
    rich = register_image(
        tags={"feat": run},
        Architecture="x86_64",
        VirtualizationType="hvm",
        EnaSupport=True,
        SriovNetSupport="simple",
        BootMode="uefi",
        BlockDeviceMappings=[
            {
                "DeviceName": "/dev/xvda",
                "Ebs": {
                    "SnapshotId": make_snapshot(size=8),
                    "VolumeSize": 9,
                    "VolumeType": "gp3",
                    "DeleteOnTermination": False,
                },
            },
            {
                "DeviceName": "/dev/xvdz",
                "Ebs": {"VolumeSize": 4, "VolumeType": "io2", "Iops": 100, "Encrypted": True},
            },
        ],
    )
    pv_snap = make_snapshot(size=8)
    pv = register_image(
        tags={"feat": run},
        Architecture="i386",
        VirtualizationType="paravirtual",
        KernelId="aki-fc8f11cc",
        RamdiskId="ari-0123abcd",
        RootDeviceName="/dev/sda1",
        BlockDeviceMappings=[
            {"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": pv_snap, "VolumeType": "gp2"}}
        ],
        snapshot_id=pv_snap,
    )
    return run, {"rich": rich.image_id, "pv": pv.image_id}


DOCUMENTED_IMAGE_FILTERS = [
    ("architecture", "i386", ["pv"]),
    ("block-device-mapping.delete-on-termination", "false", ["rich"]),
    ("block-device-mapping.device-name", "/dev/xvdz", ["rich"]),
    ("block-device-mapping.volume-size", "9", ["rich"]),
    ("block-device-mapping.volume-type", "io2", ["rich"]),
    ("block-device-mapping.encrypted", "true", ["rich"]),
    # A pattern that does not depend on today's date: a run may cross midnight.
    ("creation-date", "2???-??-??T??:??:??.???Z", ["pv", "rich"]),
    ("ena-support", "true", ["rich"]),
    ("free-tier-eligible", "false", ["pv", "rich"]),
    ("hypervisor", "xen", ["pv", "rich"]),
    ("image-type", "machine", ["pv", "rich"]),
    ("kernel-id", "aki-fc8f11cc", ["pv"]),
    ("platform", "windows", []),
    ("ramdisk-id", "ari-0123abcd", ["pv"]),
    ("root-device-name", "/dev/sda1", ["pv"]),
    ("root-device-type", "ebs", ["pv", "rich"]),
    ("sriov-net-support", "simple", ["rich"]),
    ("state", "available", ["pv", "rich"]),
    ("virtualization-type", "paravirtual", ["pv"]),
]


@pytest.mark.parametrize(
    "name,value,expected", DOCUMENTED_IMAGE_FILTERS, ids=[f[0] for f in DOCUMENTED_IMAGE_FILTERS]
)
def test_describe_images_documented_filter_selects_matching(ec2_a, featured, name, value, expected):
    run, ids = featured

    resp = ec2_a.describe_images(
        Filters=[{"Name": "tag:feat", "Values": [run]}, {"Name": name, "Values": [value]}]
    )

    assert _ids(resp) == sorted(ids[k] for k in expected)
