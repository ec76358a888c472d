"""Volumes: CreateVolume, DescribeVolumes, DeleteVolume, ModifyVolume,
DescribeVolumesModifications, CreateSnapshot of a volume, and tags on vol- ids.

Volumes that tests only read come from module-scoped fixtures (one wait for all of them);
tests that change a volume take a fresh available one from `pool`. Data checks go through
the EBS direct API: a snapshot of a volume must hold exactly the blocks of the snapshot the
volume was created from, even after that source snapshot is deleted.

Helpers below may loop; the tests themselves do not branch.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import random
import re
import time
from dataclasses import dataclass

import pytest
from botocore.exceptions import ClientError

from compat_helpers import PRIMARY, error_code, tags_of, unique

VOL_ID = re.compile(r"^vol-[0-9a-f]{17}$")
SNAP_ID = re.compile(r"^snap-[0-9a-f]{17}$")
FAST_WAITER = {"Delay": 1, "MaxAttempts": 30}
POLL_S = 0.1
ZONE = "us-east-1a"
BLOCK_SIZE = 524288
UNKNOWN_VOLUME = "vol-0123456789abcdef0"
# Kiln collects unreferenced blocks about every 5 s; waiting longer than that guarantees
# one collection pass in between.
GC_PERIOD_S = 5.5


# --------------------------------------------------------------------------
# helpers (no fixtures)
# --------------------------------------------------------------------------


def tag_spec(resource_type: str, tags: dict) -> list:
    return [{"ResourceType": resource_type, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]


def create(ec2, zone: str = ZONE, **kwargs) -> dict:
    """CreateVolume in `zone` (size 1 gp2 unless told); returns the answer."""
    params = {"AvailabilityZone": zone, **kwargs}
    if "Size" not in params and "SnapshotId" not in params:
        params["Size"] = 1
    return ec2.create_volume(**params)


def waiter_available(ec2, *volume_ids: str) -> None:
    """boto3's own volume_available waiter, with a 1 s delay."""
    ec2.get_waiter("volume_available").wait(VolumeIds=list(volume_ids), WaiterConfig=FAST_WAITER)


def waiter_completed(ec2, *snapshot_ids: str) -> None:
    """boto3's own snapshot_completed waiter, with a 1 s delay."""
    ec2.get_waiter("snapshot_completed").wait(
        SnapshotIds=list(snapshot_ids), WaiterConfig=FAST_WAITER
    )


def wait_available(ec2, *volume_ids: str, timeout: float = 15.0) -> None:
    """Polls DescribeVolumes (faster than the waiter's whole-second delay) until all are available."""
    deadline = time.monotonic() + timeout
    while True:
        states = {v["VolumeId"]: v["State"] for v in ec2.describe_volumes(VolumeIds=list(volume_ids))["Volumes"]}
        if set(states.values()) == {"available"} or time.monotonic() > deadline:
            assert set(states.values()) == {"available"}, states
            return
        time.sleep(POLL_S)


def wait_completed(ec2, *snapshot_ids: str, timeout: float = 15.0) -> None:
    """Polls DescribeSnapshots until all are completed."""
    deadline = time.monotonic() + timeout
    while True:
        snaps = ec2.describe_snapshots(SnapshotIds=list(snapshot_ids))["Snapshots"]
        states = {s["SnapshotId"]: s["State"] for s in snaps}
        if set(states.values()) == {"completed"} or time.monotonic() > deadline:
            assert set(states.values()) == {"completed"}, states
            return
        time.sleep(POLL_S)


def create_available(ec2, **kwargs) -> str:
    volume_id = create(ec2, **kwargs)["VolumeId"]
    wait_available(ec2, volume_id)
    return volume_id


def describe(ec2, volume_id: str) -> dict:
    volumes = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"]
    assert [v["VolumeId"] for v in volumes] == [volume_id]
    return volumes[0]


def ids(resp) -> list:
    return sorted(v["VolumeId"] for v in resp["Volumes"])


def walk_pages(ec2, **params) -> list:
    """Every DescribeVolumes page (list of volume-id lists), following NextToken."""
    pages = []
    while True:
        page = ec2.describe_volumes(**params)
        pages.append([v["VolumeId"] for v in page["Volumes"]])
        if "NextToken" not in page:
            return pages
        params["NextToken"] = page["NextToken"]


def modification(ec2, volume_id: str) -> dict:
    rows = ec2.describe_volumes_modifications(VolumeIds=[volume_id])["VolumesModifications"]
    assert [m["VolumeId"] for m in rows] == [volume_id]
    return rows[0]


def wait_modification(ec2, volume_id: str, want: str = "completed", timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    m = modification(ec2, volume_id)
    while m["ModificationState"] != want and time.monotonic() < deadline:
        time.sleep(POLL_S)
        m = modification(ec2, volume_id)
    return m


def snapshot_of(ec2, volume_id: str, **kwargs) -> str:
    """CreateSnapshot of the volume, waited until completed."""
    snapshot_id = ec2.create_snapshot(VolumeId=volume_id, **kwargs)["SnapshotId"]
    wait_completed(ec2, snapshot_id)
    return snapshot_id


# EBS direct data -----------------------------------------------------------


def random_block(seed: int) -> bytes:
    return random.Random(seed).randbytes(BLOCK_SIZE)


def _b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def upload(ebs, blocks: dict, size: int) -> str:
    """A completed EBS direct snapshot of `size` GiB holding `blocks` (index -> bytes)."""
    snapshot_id = ebs.start_snapshot(VolumeSize=size, Description=unique("vol-data"))["SnapshotId"]
    for index, data in sorted(blocks.items()):
        ebs.put_snapshot_block(
            SnapshotId=snapshot_id, BlockIndex=index, BlockData=data, DataLength=len(data),
            Checksum=_b64_sha256(data), ChecksumAlgorithm="SHA256",
        )
    linear = base64.b64encode(
        hashlib.sha256(b"".join(hashlib.sha256(blocks[i]).digest() for i in sorted(blocks))).digest()
    ).decode()
    done = ebs.complete_snapshot(
        SnapshotId=snapshot_id, ChangedBlocksCount=len(blocks), Checksum=linear,
        ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR",
    )
    assert done["Status"] == "completed", done
    return snapshot_id


def list_blocks(ebs, snapshot_id: str) -> dict:
    """index -> block token of every listed block (all pages)."""
    tokens = {}
    params = {"SnapshotId": snapshot_id}
    while True:
        page = ebs.list_snapshot_blocks(**params)
        for block in page["Blocks"]:
            assert block["BlockIndex"] not in tokens, f"index {block['BlockIndex']} listed twice"
            tokens[block["BlockIndex"]] = block["BlockToken"]
        if "NextToken" not in page:
            return tokens
        params["NextToken"] = page["NextToken"]


def download(ebs, snapshot_id: str) -> dict:
    """index -> bytes of every listed block."""
    return {
        index: ebs.get_snapshot_block(
            SnapshotId=snapshot_id, BlockIndex=index, BlockToken=token
        )["BlockData"].read()
        for index, token in list_blocks(ebs, snapshot_id).items()
    }


# Blocks of a 2 GiB snapshot: first block, one in the middle, last block of the volume.
DATA_BLOCKS = {0: random_block(101), 1500: random_block(102), 4095: random_block(103)}


# --------------------------------------------------------------------------
# module fixtures
# --------------------------------------------------------------------------


class Pool:
    """Fresh available volumes of account A in us-east-1a, for tests that change one."""

    def __init__(self, volumes: dict):
        self.volumes = volumes

    def take(self, kind: str = "gp2") -> str:
        assert self.volumes[kind], f"volume pool of {kind} is exhausted: add more"
        return self.volumes[kind].pop()


@pytest.fixture(scope="module")
def data_snapshot(ebs_a):
    """A completed 2 GiB snapshot of account A holding DATA_BLOCKS."""
    return upload(ebs_a, DATA_BLOCKS, size=2)


@pytest.fixture(scope="module")
def pool(ec2_a, data_snapshot):
    """gp2: 10 GiB; gp3: 20 GiB; restored: 2 GiB gp2 from data_snapshot. All available."""
    made = {
        "gp2": [create(ec2_a, Size=10)["VolumeId"] for _ in range(25)],
        "gp3": [create(ec2_a, Size=20, VolumeType="gp3")["VolumeId"] for _ in range(3)],
        "restored": [create(ec2_a, SnapshotId=data_snapshot)["VolumeId"] for _ in range(1)],
    }
    wait_available(ec2_a, *made["gp2"], *made["gp3"], *made["restored"])
    return Pool(made)


@dataclass
class Orphan:
    """A volume whose source snapshot (holding `blocks`) was deleted at `deleted_at`."""

    source: str
    blocks: dict
    volume_id: str
    deleted_at: float
    delete_answer: dict


@pytest.fixture(scope="module")
def orphan(ec2_a, ebs_a):
    blocks = {3: random_block(201), 900: random_block(202)}
    source = upload(ebs_a, blocks, size=1)
    volume_id = create(ec2_a, SnapshotId=source)["VolumeId"]
    wait_available(ec2_a, volume_id)
    answer = ec2_a.delete_snapshot(SnapshotId=source)
    return Orphan(source, blocks, volume_id, time.monotonic(), answer)


@pytest.fixture(scope="module")
def catalog(ec2_a, data_snapshot):
    """Six available volumes tagged run=<unique>, differing in every filtered field."""
    run = unique("volcat")

    def make(**kwargs):
        tags = {"run": run, **kwargs.pop("tags", {})}
        return create(ec2_a, TagSpecifications=tag_spec("volume", tags), **kwargs)["VolumeId"]

    cat = {
        "small": make(Size=10, tags={"role": "small"}),
        "big": make(Size=20, zone="us-east-1b", VolumeType="gp3", tags={"role": "big", "env": "prod"}),
        "from_snap": make(SnapshotId=data_snapshot, tags={"role": "restored"}),
        "encrypted": make(Size=3, Encrypted=True, tags={"env": "staging"}),
        "multi": make(Size=10, zone="us-east-1c", VolumeType="io2", Iops=1000,
                      MultiAttachEnabled=True),
        "sc1": make(Size=125, VolumeType="sc1"),
    }
    wait_available(ec2_a, *cat.values())
    return run, cat


def _run(run):
    return {"Name": "tag:run", "Values": [run]}


# --------------------------------------------------------------------------
# CreateVolume
# --------------------------------------------------------------------------


def test_create_volume_size_only_returns_creating_gp2_volume(ec2_a):
    before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)

    vol = ec2_a.create_volume(AvailabilityZone=ZONE, Size=10)

    assert VOL_ID.match(vol["VolumeId"])
    assert {k: vol.get(k) for k in ("Size", "AvailabilityZone", "State", "VolumeType", "Iops",
                                     "SnapshotId", "Encrypted", "MultiAttachEnabled")} == {
        "Size": 10,
        "AvailabilityZone": ZONE,
        "State": "creating",
        "VolumeType": "gp2",
        "Iops": 100,
        "SnapshotId": "",
        "Encrypted": False,
        "MultiAttachEnabled": False,
    }
    assert vol.get("Attachments", []) == []
    assert before <= vol["CreateTime"] <= dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=5)


def test_create_volume_then_waiter_describes_available(ec2_a):
    volume_id = create(ec2_a, Size=4)["VolumeId"]

    waiter_available(ec2_a, volume_id)

    vol = describe(ec2_a, volume_id)
    assert (vol["State"], vol["Size"], vol["Attachments"]) == ("available", 4, [])


@pytest.mark.parametrize("size, iops", [(1, 100), (200, 600), (6000, 16000)])
def test_create_volume_gp2_iops_is_three_per_gib_clamped(ec2_a, size, iops):
    vol = create(ec2_a, Size=size, VolumeType="gp2")

    assert (vol["Iops"], "Throughput" in vol) == (iops, False)


def test_create_volume_gp3_defaults_iops_3000_throughput_125(ec2_a):
    vol = create(ec2_a, Size=50, VolumeType="gp3")

    assert (vol["VolumeType"], vol["Iops"], vol["Throughput"]) == ("gp3", 3000, 125)


def test_create_volume_gp3_explicit_iops_and_throughput_are_returned(ec2_a):
    vol = create(ec2_a, Size=50, VolumeType="gp3", Iops=4000, Throughput=250)

    assert (vol["Iops"], vol["Throughput"]) == (4000, 250)


@pytest.mark.parametrize("volume_type", ["io1", "io2"])
def test_create_volume_provisioned_iops_type_without_iops_fails_missing_parameter(ec2_a, volume_type):
    with pytest.raises(ClientError) as e:
        create(ec2_a, Size=10, VolumeType=volume_type)

    assert error_code(e) == "MissingParameter"


def test_create_volume_io1_with_iops_returns_those_iops(ec2_a):
    vol = create(ec2_a, Size=10, VolumeType="io1", Iops=500)

    assert (vol["VolumeType"], vol["Iops"]) == ("io1", 500)


@pytest.mark.parametrize(
    "volume_type, size", [("gp2", 10), ("st1", 125), ("sc1", 125), ("standard", 10)]
)
def test_create_volume_iops_on_type_without_provisioned_iops_fails_invalid_parameter_combination(
    ec2_a, volume_type, size
):
    with pytest.raises(ClientError) as e:
        create(ec2_a, Size=size, VolumeType=volume_type, Iops=300)

    assert error_code(e) == "InvalidParameterCombination"


@pytest.mark.parametrize(
    "volume_type, extra", [("gp2", {}), ("io1", {"Iops": 300}), ("st1", {})]
)
def test_create_volume_throughput_on_non_gp3_fails_invalid_parameter_combination(
    ec2_a, volume_type, extra
):
    with pytest.raises(ClientError) as e:
        create(ec2_a, Size=500, VolumeType=volume_type, Throughput=200, **extra)

    assert error_code(e) == "InvalidParameterCombination"


@pytest.mark.parametrize(
    "volume_type, size, extra",
    [
        ("st1", 124, {}),
        ("sc1", 1, {}),
        ("standard", 1025, {}),
        ("gp2", 16385, {}),
        ("gp3", 0, {}),
        ("io1", 3, {"Iops": 100}),
    ],
)
def test_create_volume_size_outside_type_limits_fails_invalid_parameter_value(
    ec2_a, volume_type, size, extra
):
    with pytest.raises(ClientError) as e:
        create(ec2_a, Size=size, VolumeType=volume_type, **extra)

    assert error_code(e) == "InvalidParameterValue"


@pytest.mark.parametrize("volume_type, size", [("st1", 125), ("sc1", 125), ("standard", 1024)])
def test_create_volume_size_at_type_limit_succeeds_without_iops(ec2_a, volume_type, size):
    vol = create(ec2_a, Size=size, VolumeType=volume_type)

    assert (vol["VolumeType"], vol["Size"], "Iops" in vol) == (volume_type, size, False)


def test_create_volume_unknown_volume_type_fails_invalid_parameter_value(ec2_a):
    with pytest.raises(ClientError) as e:
        create(ec2_a, Size=10, VolumeType="gp9")

    assert error_code(e) == "InvalidParameterValue"


def test_create_volume_without_availability_zone_fails_missing_parameter(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.create_volume(Size=10)

    assert error_code(e) == "MissingParameter"


@pytest.mark.parametrize("zone", ["us-west-2a", "us-east-1z", "nowhere"])
def test_create_volume_zone_not_in_request_region_fails_invalid_parameter_value(ec2_a, zone):
    with pytest.raises(ClientError) as e:
        ec2_a.create_volume(AvailabilityZone=zone, Size=10)

    assert error_code(e) == "InvalidParameterValue"


def test_create_volume_without_size_or_snapshot_fails_missing_parameter(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.create_volume(AvailabilityZone=ZONE)

    assert error_code(e) == "MissingParameter"


def test_create_volume_from_snapshot_defaults_size_to_snapshot_size(ec2_a, make_snapshot):
    snapshot_id = make_snapshot(size=8)

    vol = ec2_a.create_volume(AvailabilityZone=ZONE, SnapshotId=snapshot_id)

    assert (vol["SnapshotId"], vol["Size"], vol["State"]) == (snapshot_id, 8, "creating")


def test_create_volume_from_snapshot_larger_size_keeps_snapshot_id(ec2_a, make_snapshot):
    snapshot_id = make_snapshot(size=8)

    volume_id = create_available(ec2_a, SnapshotId=snapshot_id, Size=30)

    vol = describe(ec2_a, volume_id)
    assert (vol["SnapshotId"], vol["Size"]) == (snapshot_id, 30)


def test_create_volume_from_snapshot_smaller_size_fails_invalid_parameter_value(
    ec2_a, make_snapshot
):
    snapshot_id = make_snapshot(size=8)

    with pytest.raises(ClientError) as e:
        ec2_a.create_volume(AvailabilityZone=ZONE, SnapshotId=snapshot_id, Size=7)

    assert error_code(e) == "InvalidParameterValue"


def test_create_volume_from_pending_snapshot_fails_incorrect_state(ec2_a, make_snapshot):
    snapshot_id = make_snapshot(complete=False)

    with pytest.raises(ClientError) as e:
        ec2_a.create_volume(AvailabilityZone=ZONE, SnapshotId=snapshot_id)

    assert error_code(e) == "IncorrectState"


def test_create_volume_from_unknown_snapshot_fails_invalid_snapshot_not_found(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.create_volume(AvailabilityZone=ZONE, SnapshotId="snap-0123456789abcdef0")

    assert error_code(e) == "InvalidSnapshot.NotFound"


def test_create_volume_from_malformed_snapshot_id_fails_invalid_snapshot_id_malformed(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.create_volume(AvailabilityZone=ZONE, SnapshotId="snap-zz")

    assert error_code(e) == "InvalidSnapshotID.Malformed"


def test_create_volume_from_private_snapshot_of_other_account_fails_invalid_snapshot_not_found(
    ec2_b, make_snapshot
):
    snapshot_id = make_snapshot()

    with pytest.raises(ClientError) as e:
        ec2_b.create_volume(AvailabilityZone=ZONE, SnapshotId=snapshot_id)

    assert error_code(e) == "InvalidSnapshot.NotFound"


def test_create_volume_from_snapshot_in_other_region_fails_invalid_snapshot_not_found(
    ec2_a_west, make_snapshot
):
    snapshot_id = make_snapshot(region=PRIMARY)

    with pytest.raises(ClientError) as e:
        ec2_a_west.create_volume(AvailabilityZone="us-west-2a", SnapshotId=snapshot_id)

    assert error_code(e) == "InvalidSnapshot.NotFound"


def test_create_volume_from_snapshot_shared_with_caller_creates_callers_volume(
    ec2_a, ec2_b, make_snapshot, account_b
):
    snapshot_id = make_snapshot(size=4)
    ec2_a.modify_snapshot_attribute(
        SnapshotId=snapshot_id, CreateVolumePermission={"Add": [{"UserId": account_b.account_id}]}
    )

    volume_id = ec2_b.create_volume(AvailabilityZone=ZONE, SnapshotId=snapshot_id)["VolumeId"]

    vol = describe(ec2_b, volume_id)
    assert (vol["SnapshotId"], vol["Size"]) == (snapshot_id, 4)
    with pytest.raises(ClientError) as e:
        ec2_a.describe_volumes(VolumeIds=[volume_id])
    assert error_code(e) == "InvalidVolume.NotFound"


def test_delete_snapshot_source_of_volume_succeeds_and_volume_still_names_it(ec2_a, orphan):
    vol = describe(ec2_a, orphan.volume_id)

    assert orphan.delete_answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert (vol["SnapshotId"], vol["State"]) == (orphan.source, "available")
    with pytest.raises(ClientError) as e:
        ec2_a.describe_snapshots(SnapshotIds=[orphan.source])
    assert error_code(e) == "InvalidSnapshot.NotFound"


def test_create_volume_from_encrypted_snapshot_is_encrypted_with_its_key(ec2_a, ebs_a, account_a):
    key = f"arn:aws:kms:{PRIMARY}:{account_a.account_id}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    snapshot_id = ebs_a.start_snapshot(VolumeSize=1, Encrypted=True, KmsKeyArn=key)["SnapshotId"]
    ebs_a.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=0)
    snap = ec2_a.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]

    vol = ec2_a.create_volume(AvailabilityZone=ZONE, SnapshotId=snapshot_id)

    assert (snap["Encrypted"], snap.get("KmsKeyId")) == (True, key)
    assert (vol["Encrypted"], vol.get("KmsKeyId")) == (True, key)


def test_create_volume_encrypted_flag_is_recorded(ec2_a):
    volume_id = ec2_a.create_volume(AvailabilityZone=ZONE, Size=2, Encrypted=True)["VolumeId"]

    assert describe(ec2_a, volume_id)["Encrypted"] is True


def test_create_volume_multi_attach_on_io2_returns_multi_attach_enabled(ec2_a):
    vol = create(ec2_a, Size=10, VolumeType="io2", Iops=1000, MultiAttachEnabled=True)

    assert (vol["VolumeType"], vol["Iops"], vol["MultiAttachEnabled"]) == ("io2", 1000, True)


@pytest.mark.parametrize("volume_type", ["gp2", "gp3"])
def test_create_volume_multi_attach_on_non_io_type_fails_invalid_parameter_combination(
    ec2_a, volume_type
):
    with pytest.raises(ClientError) as e:
        create(ec2_a, Size=10, VolumeType=volume_type, MultiAttachEnabled=True)

    assert error_code(e) == "InvalidParameterCombination"


def test_create_volume_tag_specifications_volume_tags_are_returned_and_described(ec2_a):
    tags = {"Name": unique("vol"), "team": "storage"}

    vol = create(ec2_a, TagSpecifications=tag_spec("volume", tags))

    assert tags_of(vol) == tags
    assert tags_of(describe(ec2_a, vol["VolumeId"])) == tags


def test_create_volume_tag_specifications_other_resource_type_fails_invalid_parameter_value(ec2_a):
    marker = unique("wrong-type")

    with pytest.raises(ClientError) as e:
        create(ec2_a, TagSpecifications=tag_spec("snapshot", {"marker": marker}))

    assert error_code(e) == "InvalidParameterValue"
    assert ec2_a.describe_volumes(Filters=[{"Name": "tag:marker", "Values": [marker]}])["Volumes"] == []


def test_create_volume_dry_run_fails_dry_run_operation_and_creates_nothing(ec2_a):
    marker = unique("dry")

    with pytest.raises(ClientError) as e:
        create(ec2_a, DryRun=True, TagSpecifications=tag_spec("volume", {"marker": marker}))

    assert error_code(e) == "DryRunOperation"
    assert ec2_a.describe_volumes(Filters=[{"Name": "tag:marker", "Values": [marker]}])["Volumes"] == []


def test_create_volume_same_client_token_returns_same_volume(ec2_a):
    token = unique("token")

    first = create(ec2_a, Size=5, ClientToken=token)["VolumeId"]
    second = create(ec2_a, Size=5, ClientToken=token)["VolumeId"]

    assert second == first


def test_create_volume_in_secondary_region_is_described_only_there(ec2_a, ec2_a_west):
    volume_id = ec2_a_west.create_volume(AvailabilityZone="us-west-2b", Size=1)["VolumeId"]

    west = describe(ec2_a_west, volume_id)
    east = ec2_a.describe_volumes(Filters=[{"Name": "volume-id", "Values": [volume_id]}])
    assert (west["AvailabilityZone"], east["Volumes"]) == ("us-west-2b", [])


# --------------------------------------------------------------------------
# DescribeVolumes
# --------------------------------------------------------------------------


def test_describe_volumes_volume_ids_returns_fields_of_restored_volume(
    ec2_a, catalog, data_snapshot
):
    run, cat = catalog

    vol = describe(ec2_a, cat["from_snap"])

    assert {k: vol.get(k) for k in ("Size", "SnapshotId", "AvailabilityZone", "State",
                                     "VolumeType", "Iops", "Encrypted", "MultiAttachEnabled")} == {
        "Size": 2,
        "SnapshotId": data_snapshot,
        "AvailabilityZone": ZONE,
        "State": "available",
        "VolumeType": "gp2",
        "Iops": 100,
        "Encrypted": False,
        "MultiAttachEnabled": False,
    }
    assert tags_of(vol) == {"run": run, "role": "restored"}


def test_describe_volumes_several_ids_returns_each(ec2_a, catalog):
    _, cat = catalog

    resp = ec2_a.describe_volumes(VolumeIds=[cat["small"], cat["big"], cat["sc1"]])

    assert ids(resp) == sorted([cat["small"], cat["big"], cat["sc1"]])


def test_describe_volumes_unknown_id_fails_invalid_volume_not_found(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.describe_volumes(VolumeIds=[UNKNOWN_VOLUME])

    assert error_code(e) == "InvalidVolume.NotFound"


def test_describe_volumes_known_and_unknown_id_fails_invalid_volume_not_found(ec2_a, catalog):
    _, cat = catalog

    with pytest.raises(ClientError) as e:
        ec2_a.describe_volumes(VolumeIds=[cat["small"], UNKNOWN_VOLUME])

    assert error_code(e) == "InvalidVolume.NotFound"


@pytest.mark.parametrize("bad_id", ["vol-zz", "volume-0123456789abcdef0", "snap-0123456789abcdef0"])
def test_describe_volumes_malformed_id_fails_invalid_volume_id_malformed(ec2_a, bad_id):
    with pytest.raises(ClientError) as e:
        ec2_a.describe_volumes(VolumeIds=[bad_id])

    assert error_code(e) == "InvalidVolumeID.Malformed"


def test_describe_volumes_volume_of_other_account_fails_invalid_volume_not_found(ec2_b, catalog):
    _, cat = catalog

    with pytest.raises(ClientError) as e:
        ec2_b.describe_volumes(VolumeIds=[cat["small"]])

    assert error_code(e) == "InvalidVolume.NotFound"


def test_describe_volumes_without_ids_lists_no_volume_of_other_account(ec2_b, catalog):
    _, cat = catalog

    listed = {v["VolumeId"] for v in ec2_b.describe_volumes()["Volumes"]}

    assert listed & set(cat.values()) == set()


def test_describe_volumes_volume_id_of_other_region_fails_invalid_volume_not_found(
    ec2_a_west, catalog
):
    _, cat = catalog

    with pytest.raises(ClientError) as e:
        ec2_a_west.describe_volumes(VolumeIds=[cat["small"]])

    assert error_code(e) == "InvalidVolume.NotFound"


def test_describe_volumes_max_results_with_volume_ids_fails_invalid_parameter_combination(
    ec2_a, catalog
):
    _, cat = catalog

    with pytest.raises(ClientError) as e:
        ec2_a.describe_volumes(VolumeIds=[cat["small"]], MaxResults=5)

    assert error_code(e) == "InvalidParameterCombination"


def test_describe_volumes_max_results_below_five_fails_invalid_parameter_value(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.describe_volumes(MaxResults=4)

    assert error_code(e) == "InvalidParameterValue"


def test_describe_volumes_max_results_five_pages_through_catalog_without_repeats(ec2_a, catalog):
    run, cat = catalog

    pages = walk_pages(ec2_a, Filters=[_run(run)], MaxResults=5)

    seen = [vid for page in pages for vid in page]
    assert (len(pages) >= 2, max(len(page) for page in pages)) == (True, 5)
    assert len(seen) == len(set(seen))
    assert sorted(seen) == sorted(cat.values())


def test_describe_volumes_paginator_walks_all_own_volumes_once(ec2_a, catalog):
    _, cat = catalog
    paginator = ec2_a.get_paginator("describe_volumes")

    seen = [v["VolumeId"] for page in paginator.paginate(PaginationConfig={"PageSize": 5})
            for v in page["Volumes"]]

    assert len(seen) == len(set(seen))
    assert set(cat.values()) <= set(seen)


FILTER_CASES = [
    ("volume-id", lambda c, s: [c["small"]], ["small"]),
    ("size", lambda c, s: ["20"], ["big"]),
    ("snapshot-id", lambda c, s: [s], ["from_snap"]),
    ("status", lambda c, s: ["available"], ["small", "big", "from_snap", "encrypted", "multi", "sc1"]),
    ("status", lambda c, s: ["creating", "deleting"], []),
    ("availability-zone", lambda c, s: ["us-east-1b", "us-east-1c"], ["big", "multi"]),
    ("volume-type", lambda c, s: ["gp3"], ["big"]),
    ("volume-type", lambda c, s: ["io*", "sc1"], ["multi", "sc1"]),
    ("encrypted", lambda c, s: ["true"], ["encrypted"]),
    ("multi-attach-enabled", lambda c, s: ["true"], ["multi"]),
    ("tag:role", lambda c, s: ["big", "small"], ["small", "big"]),
    ("tag-key", lambda c, s: ["env"], ["big", "encrypted"]),
    ("tag-value", lambda c, s: ["prod"], ["big"]),
]


@pytest.mark.parametrize(
    "name, values, expected", FILTER_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(FILTER_CASES)]
)
def test_describe_volumes_filter_returns_matching_volumes(
    ec2_a, catalog, data_snapshot, name, values, expected
):
    run, cat = catalog

    resp = ec2_a.describe_volumes(
        Filters=[_run(run), {"Name": name, "Values": values(cat, data_snapshot)}]
    )

    assert ids(resp) == sorted(cat[k] for k in expected)


def test_describe_volumes_create_time_filter_returns_volume_created_then(ec2_a, catalog):
    run, cat = catalog
    volumes = ec2_a.describe_volumes(Filters=[_run(run)])["Volumes"]
    stamp = {
        v["VolumeId"]: v["CreateTime"].astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        for v in volumes
    }
    wanted = stamp[cat["big"]]

    resp = ec2_a.describe_volumes(Filters=[_run(run), {"Name": "create-time", "Values": [wanted]}])

    assert ids(resp) == sorted(vid for vid, s in stamp.items() if s == wanted)
    assert cat["big"] in ids(resp)


def test_describe_volumes_unknown_filter_fails_invalid_parameter_value(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.describe_volumes(Filters=[{"Name": "colour", "Values": ["red"]}])

    assert error_code(e) == "InvalidParameterValue"


# --------------------------------------------------------------------------
# DeleteVolume
# --------------------------------------------------------------------------


def test_delete_volume_then_describe_fails_invalid_volume_not_found(ec2_a, pool):
    volume_id = pool.take()

    ec2_a.delete_volume(VolumeId=volume_id)

    with pytest.raises(ClientError) as e:
        ec2_a.describe_volumes(VolumeIds=[volume_id])
    assert error_code(e) == "InvalidVolume.NotFound"


def test_delete_volume_then_list_does_not_show_it(ec2_a, pool):
    volume_id = pool.take()

    ec2_a.delete_volume(VolumeId=volume_id)

    resp = ec2_a.describe_volumes(Filters=[{"Name": "volume-id", "Values": [volume_id]}])
    assert resp["Volumes"] == []


def test_delete_volume_twice_fails_invalid_volume_not_found(ec2_a, pool):
    volume_id = pool.take()
    ec2_a.delete_volume(VolumeId=volume_id)

    with pytest.raises(ClientError) as e:
        ec2_a.delete_volume(VolumeId=volume_id)

    assert error_code(e) == "InvalidVolume.NotFound"


def test_delete_volume_of_other_account_fails_invalid_volume_not_found_and_volume_stays(
    ec2_a, ec2_b, pool
):
    volume_id = pool.take()

    with pytest.raises(ClientError) as e:
        ec2_b.delete_volume(VolumeId=volume_id)

    assert error_code(e) == "InvalidVolume.NotFound"
    assert describe(ec2_a, volume_id)["State"] == "available"


def test_delete_volume_dry_run_fails_dry_run_operation_and_volume_stays(ec2_a, pool):
    volume_id = pool.take()

    with pytest.raises(ClientError) as e:
        ec2_a.delete_volume(VolumeId=volume_id, DryRun=True)

    assert error_code(e) == "DryRunOperation"
    assert describe(ec2_a, volume_id)["State"] == "available"


def test_delete_volume_unknown_id_fails_invalid_volume_not_found(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.delete_volume(VolumeId=UNKNOWN_VOLUME)

    assert error_code(e) == "InvalidVolume.NotFound"


def test_delete_volume_malformed_id_fails_invalid_volume_id_malformed(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.delete_volume(VolumeId="vol-xyz")

    assert error_code(e) == "InvalidVolumeID.Malformed"


# --------------------------------------------------------------------------
# ModifyVolume / DescribeVolumesModifications
# --------------------------------------------------------------------------


def test_modify_volume_grow_size_returns_modifying_modification(ec2_a, pool):
    volume_id = pool.take()
    before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)

    m = ec2_a.modify_volume(VolumeId=volume_id, Size=15)["VolumeModification"]

    assert {k: m.get(k) for k in ("VolumeId", "ModificationState", "OriginalSize", "TargetSize",
                                   "OriginalVolumeType", "TargetVolumeType", "OriginalIops",
                                   "TargetIops", "Progress")} == {
        "VolumeId": volume_id,
        "ModificationState": "modifying",
        "OriginalSize": 10,
        "TargetSize": 15,
        "OriginalVolumeType": "gp2",
        "TargetVolumeType": "gp2",
        "OriginalIops": 100,
        "TargetIops": 100,
        "Progress": 0,
    }
    assert before <= m["StartTime"] <= dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=5)
    assert "EndTime" not in m


def test_modify_volume_grow_size_describes_new_size_at_once(ec2_a, pool):
    volume_id = pool.take()

    ec2_a.modify_volume(VolumeId=volume_id, Size=40)

    vol = describe(ec2_a, volume_id)
    assert (vol["Size"], vol["Iops"]) == (40, 120)


def test_modify_volume_modification_completes_with_progress_100_and_end_time(ec2_a, pool):
    volume_id = pool.take()
    started = ec2_a.modify_volume(VolumeId=volume_id, Size=12)["VolumeModification"]

    done = wait_modification(ec2_a, volume_id, "completed")

    assert (done["ModificationState"], done["Progress"], done["TargetSize"]) == ("completed", 100, 12)
    assert started["StartTime"] <= done["EndTime"] <= dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=5)


def test_modify_volume_while_modifying_fails_incorrect_modification_state(ec2_a, pool):
    volume_id = pool.take()
    ec2_a.modify_volume(VolumeId=volume_id, Size=11)

    with pytest.raises(ClientError) as e:
        ec2_a.modify_volume(VolumeId=volume_id, Size=13)

    # AWS: "Volume vol-... cannot be modified in modification state MODIFYING".
    assert error_code(e) == "IncorrectModificationState"
    assert describe(ec2_a, volume_id)["Size"] == 11


def test_modify_volume_smaller_size_fails_invalid_parameter_value(ec2_a, pool):
    volume_id = pool.take()

    with pytest.raises(ClientError) as e:
        ec2_a.modify_volume(VolumeId=volume_id, Size=9)

    assert error_code(e) == "InvalidParameterValue"
    assert describe(ec2_a, volume_id)["Size"] == 10


def test_modify_volume_gp2_to_gp3_sets_default_iops_and_throughput(ec2_a, pool):
    volume_id = pool.take()

    m = ec2_a.modify_volume(VolumeId=volume_id, VolumeType="gp3")["VolumeModification"]

    assert (m["OriginalVolumeType"], m["TargetVolumeType"], m["OriginalIops"], m["TargetIops"],
            m["TargetThroughput"]) == ("gp2", "gp3", 100, 3000, 125)
    vol = describe(ec2_a, volume_id)
    assert (vol["VolumeType"], vol["Iops"], vol["Throughput"]) == ("gp3", 3000, 125)


def test_modify_volume_gp3_iops_and_throughput_returns_original_and_target(ec2_a, pool):
    volume_id = pool.take("gp3")

    m = ec2_a.modify_volume(VolumeId=volume_id, Iops=6000, Throughput=500)["VolumeModification"]

    assert (m["OriginalIops"], m["TargetIops"], m["OriginalThroughput"], m["TargetThroughput"],
            m["OriginalSize"], m["TargetSize"]) == (3000, 6000, 125, 500, 20, 20)


def test_modify_volume_gp3_grow_keeps_provisioned_iops_and_throughput(ec2_a, pool):
    volume_id = pool.take("gp3")

    m = ec2_a.modify_volume(VolumeId=volume_id, Size=30)["VolumeModification"]

    assert (m["TargetSize"], m["TargetIops"], m["TargetThroughput"]) == (30, 3000, 125)


def test_modify_volume_throughput_on_gp2_fails_invalid_parameter_combination(ec2_a, pool):
    volume_id = pool.take()

    with pytest.raises(ClientError) as e:
        ec2_a.modify_volume(VolumeId=volume_id, Throughput=200)

    assert error_code(e) == "InvalidParameterCombination"


def test_modify_volume_of_other_account_fails_invalid_volume_not_found(ec2_a, ec2_b, pool):
    volume_id = pool.take()

    with pytest.raises(ClientError) as e:
        ec2_b.modify_volume(VolumeId=volume_id, Size=20)

    assert error_code(e) == "InvalidVolume.NotFound"
    assert describe(ec2_a, volume_id)["Size"] == 10


def test_modify_volume_unknown_id_fails_invalid_volume_not_found(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.modify_volume(VolumeId=UNKNOWN_VOLUME, Size=20)

    assert error_code(e) == "InvalidVolume.NotFound"


def test_modify_volume_dry_run_fails_dry_run_operation_and_size_stays(ec2_a, pool):
    volume_id = pool.take()

    with pytest.raises(ClientError) as e:
        ec2_a.modify_volume(VolumeId=volume_id, Size=50, DryRun=True)

    assert error_code(e) == "DryRunOperation"
    assert describe(ec2_a, volume_id)["Size"] == 10


@pytest.fixture(scope="module")
def modified(ec2_a, pool):
    """Two volumes of the pool: one grown 10 -> 25 (completed), one changed to gp3 (completed)."""
    grown, retyped = pool.take(), pool.take()
    ec2_a.modify_volume(VolumeId=grown, Size=25)
    ec2_a.modify_volume(VolumeId=retyped, VolumeType="gp3")
    wait_modification(ec2_a, grown)
    wait_modification(ec2_a, retyped)
    return grown, retyped


def test_describe_volumes_modifications_volume_ids_returns_latest_modification(ec2_a, modified):
    grown, _ = modified

    m = modification(ec2_a, grown)

    assert (m["ModificationState"], m["OriginalSize"], m["TargetSize"], m["Progress"]) == (
        "completed", 10, 25, 100
    )


@pytest.mark.parametrize(
    "name, values, expected",
    [
        ("volume-id", lambda g, r: [g], "grown"),
        ("target-size", lambda g, r: ["25"], "grown"),
        ("original-size", lambda g, r: ["10"], "both"),
        ("target-volume-type", lambda g, r: ["gp3"], "retyped"),
        ("original-volume-type", lambda g, r: ["gp2"], "both"),
        ("target-iops", lambda g, r: ["3000"], "retyped"),
        ("modification-state", lambda g, r: ["completed"], "both"),
        ("modification-state", lambda g, r: ["modifying", "optimizing"], "none"),
    ],
)
def test_describe_volumes_modifications_filter_returns_matching(
    ec2_a, modified, name, values, expected
):
    grown, retyped = modified
    expect = {"grown": [grown], "retyped": [retyped], "both": [grown, retyped], "none": []}[expected]

    rows = ec2_a.describe_volumes_modifications(
        VolumeIds=[grown, retyped], Filters=[{"Name": name, "Values": values(grown, retyped)}]
    )["VolumesModifications"]

    assert sorted(m["VolumeId"] for m in rows) == sorted(expect)


def test_describe_volumes_modifications_without_ids_lists_callers_modifications(ec2_a, modified):
    grown, retyped = modified

    rows = ec2_a.describe_volumes_modifications(
        Filters=[{"Name": "volume-id", "Values": [grown, retyped]}]
    )["VolumesModifications"]

    assert sorted(m["VolumeId"] for m in rows) == sorted([grown, retyped])


def test_describe_volumes_modifications_of_other_account_lists_nothing(ec2_b, modified):
    grown, retyped = modified

    rows = ec2_b.describe_volumes_modifications(
        Filters=[{"Name": "volume-id", "Values": [grown, retyped]}]
    )["VolumesModifications"]

    assert rows == []


def test_describe_volumes_modifications_unknown_volume_fails_invalid_volume_not_found(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.describe_volumes_modifications(VolumeIds=[UNKNOWN_VOLUME])

    assert error_code(e) == "InvalidVolume.NotFound"


def test_describe_volumes_modifications_never_modified_volume_fails_modification_not_found(
    ec2_a,
):
    volume_id = create(ec2_a, Size=1)["VolumeId"]

    with pytest.raises(ClientError) as e:
        ec2_a.describe_volumes_modifications(VolumeIds=[volume_id])

    assert error_code(e) == "InvalidVolumeModification.NotFound"


# --------------------------------------------------------------------------
# CreateSnapshot of a volume
# --------------------------------------------------------------------------


def test_create_snapshot_of_volume_returns_pending_snapshot_of_that_volume(
    ec2_a, pool, account_a
):
    volume_id = pool.take()
    description = unique("volsnap")

    snap = ec2_a.create_snapshot(VolumeId=volume_id, Description=description)

    assert SNAP_ID.match(snap["SnapshotId"])
    assert {k: snap.get(k) for k in ("VolumeId", "VolumeSize", "State", "Description", "OwnerId",
                                      "Encrypted")} == {
        "VolumeId": volume_id,
        "VolumeSize": 10,
        "State": "pending",
        "Description": description,
        "OwnerId": account_a.account_id,
        "Encrypted": False,
    }


def test_create_snapshot_of_volume_waiter_describes_completed(ec2_a, pool):
    volume_id = pool.take()
    snapshot_id = ec2_a.create_snapshot(VolumeId=volume_id)["SnapshotId"]

    waiter_completed(ec2_a, snapshot_id)

    snap = ec2_a.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
    assert (snap["State"], snap["Progress"], snap["VolumeId"], snap["VolumeSize"]) == (
        "completed", "100%", volume_id, 10
    )


def test_create_snapshot_tag_specifications_snapshot_tags_are_described(ec2_a, pool):
    volume_id = pool.take()
    tags = {"backup": unique("nightly")}

    snap = ec2_a.create_snapshot(VolumeId=volume_id, TagSpecifications=tag_spec("snapshot", tags))

    assert tags_of(snap) == tags
    described = ec2_a.describe_snapshots(SnapshotIds=[snap["SnapshotId"]])["Snapshots"][0]
    assert tags_of(described) == tags


def test_create_snapshot_tag_specifications_volume_type_fails_invalid_parameter_value(ec2_a, pool):
    volume_id = pool.take()

    with pytest.raises(ClientError) as e:
        ec2_a.create_snapshot(VolumeId=volume_id, TagSpecifications=tag_spec("volume", {"a": "b"}))

    assert error_code(e) == "InvalidParameterValue"


def test_create_snapshot_of_creating_volume_fails_incorrect_state(ec2_a):
    volume_id = create(ec2_a, Size=1)["VolumeId"]

    with pytest.raises(ClientError) as e:
        ec2_a.create_snapshot(VolumeId=volume_id)

    assert error_code(e) == "IncorrectState"


def test_create_snapshot_of_other_accounts_volume_fails_invalid_volume_not_found(ec2_b, catalog):
    _, cat = catalog

    with pytest.raises(ClientError) as e:
        ec2_b.create_snapshot(VolumeId=cat["small"])

    assert error_code(e) == "InvalidVolume.NotFound"


def test_create_snapshot_unknown_volume_fails_invalid_volume_not_found(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.create_snapshot(VolumeId=UNKNOWN_VOLUME)

    assert error_code(e) == "InvalidVolume.NotFound"


def test_create_snapshot_dry_run_fails_dry_run_operation_and_creates_nothing(ec2_a, catalog):
    _, cat = catalog

    with pytest.raises(ClientError) as e:
        ec2_a.create_snapshot(VolumeId=cat["small"], DryRun=True)

    assert error_code(e) == "DryRunOperation"
    resp = ec2_a.describe_snapshots(Filters=[{"Name": "volume-id", "Values": [cat["small"]]}])
    assert resp["Snapshots"] == []


def test_create_snapshot_of_empty_volume_lists_no_blocks(ec2_a, ebs_a, pool):
    volume_id = pool.take()

    snapshot_id = snapshot_of(ec2_a, volume_id)

    page = ebs_a.list_snapshot_blocks(SnapshotId=snapshot_id)
    assert (page["Blocks"], page["VolumeSize"]) == ([], 10)


def test_create_snapshot_of_restored_volume_has_source_blocks(
    ebs_a, data_snapshot, restored_snapshot
):
    listed = list_blocks(ebs_a, restored_snapshot)

    assert sorted(listed) == sorted(list_blocks(ebs_a, data_snapshot))
    assert download(ebs_a, restored_snapshot) == DATA_BLOCKS


def test_create_snapshot_of_grown_restored_volume_has_new_size_and_source_blocks(
    ec2_a, ebs_a, pool
):
    volume_id = pool.take("restored")
    ec2_a.modify_volume(VolumeId=volume_id, Size=3)

    snapshot_id = snapshot_of(ec2_a, volume_id)

    page = ebs_a.list_snapshot_blocks(SnapshotId=snapshot_id)
    assert (page["VolumeSize"], sorted(list_blocks(ebs_a, snapshot_id))) == (3, sorted(DATA_BLOCKS))


@pytest.fixture(scope="module")
def restored_snapshot(ec2_a, catalog):
    """A completed snapshot (CreateSnapshot) of the catalog volume restored from data_snapshot."""
    _, cat = catalog
    return snapshot_of(ec2_a, cat["from_snap"])


def test_create_volume_from_volume_snapshot_round_trips_blocks(ec2_a, ebs_a, restored_snapshot):
    second_volume = create_available(ec2_a, SnapshotId=restored_snapshot, zone="us-east-1b")

    second_snapshot = snapshot_of(ec2_a, second_volume)

    assert describe(ec2_a, second_volume)["SnapshotId"] == restored_snapshot
    assert download(ebs_a, second_snapshot) == DATA_BLOCKS


def test_create_snapshot_after_source_snapshot_deleted_keeps_source_blocks(ec2_a, ebs_a, orphan):
    # Let a block collection pass run while only the volume holds the blocks (the fixture
    # is set up by an earlier test, so this usually waits for nothing).
    time.sleep(max(0.0, orphan.deleted_at + GC_PERIOD_S - time.monotonic()))

    snapshot_id = snapshot_of(ec2_a, orphan.volume_id)

    assert download(ebs_a, snapshot_id) == orphan.blocks


def test_create_snapshot_by_account_with_shared_source_has_source_blocks(
    ec2_a, ec2_b, ebs_b, data_snapshot, account_b
):
    ec2_a.modify_snapshot_attribute(
        SnapshotId=data_snapshot, CreateVolumePermission={"Add": [{"UserId": account_b.account_id}]}
    )
    volume_id = create_available(ec2_b, SnapshotId=data_snapshot)

    snapshot_id = snapshot_of(ec2_b, volume_id)

    snap = ec2_b.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
    assert snap["OwnerId"] == account_b.account_id
    assert download(ebs_b, snapshot_id) == DATA_BLOCKS


def test_delete_volume_restored_from_snapshot_leaves_snapshot_readable(ec2_a, ebs_a):
    blocks = {0: random_block(301)}
    source = upload(ebs_a, blocks, size=1)
    volume_id = create_available(ec2_a, SnapshotId=source)

    ec2_a.delete_volume(VolumeId=volume_id)

    assert ec2_a.describe_snapshots(SnapshotIds=[source])["Snapshots"][0]["State"] == "completed"
    assert download(ebs_a, source) == blocks


# --------------------------------------------------------------------------
# tags on volumes
# --------------------------------------------------------------------------


def test_create_tags_on_volume_is_described_with_resource_type_volume(ec2_a, pool):
    volume_id = pool.take()

    ec2_a.create_tags(Resources=[volume_id], Tags=[{"Key": "Name", "Value": "data"}])

    resp = ec2_a.describe_tags(Filters=[{"Name": "resource-id", "Values": [volume_id]}])
    assert resp["Tags"] == [
        {"Key": "Name", "Value": "data", "ResourceId": volume_id, "ResourceType": "volume"}
    ]
    assert tags_of(describe(ec2_a, volume_id)) == {"Name": "data"}


def test_describe_tags_resource_type_volume_filter_lists_volume_tags(ec2_a, catalog):
    run, cat = catalog

    resp = ec2_a.describe_tags(Filters=[
        {"Name": "resource-type", "Values": ["volume"]},
        {"Name": "key", "Values": ["run"]},
        {"Name": "value", "Values": [run]},
    ])

    assert sorted(t["ResourceId"] for t in resp["Tags"]) == sorted(cat.values())


def test_delete_tags_on_volume_removes_only_that_tag(ec2_a, pool):
    volume_id = pool.take()
    ec2_a.create_tags(Resources=[volume_id], Tags=[{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}])

    ec2_a.delete_tags(Resources=[volume_id], Tags=[{"Key": "a"}])

    assert tags_of(describe(ec2_a, volume_id)) == {"b": "2"}


def test_create_tags_on_other_accounts_volume_fails_invalid_volume_not_found(ec2_a, ec2_b, pool):
    volume_id = pool.take()

    with pytest.raises(ClientError) as e:
        ec2_b.create_tags(Resources=[volume_id], Tags=[{"Key": "stolen", "Value": "yes"}])

    assert error_code(e) == "InvalidVolume.NotFound"
    assert "stolen" not in tags_of(describe(ec2_a, volume_id))


def test_delete_tags_on_other_accounts_volume_fails_and_tag_stays(ec2_a, ec2_b, catalog):
    run, cat = catalog

    with pytest.raises(ClientError) as e:
        ec2_b.delete_tags(Resources=[cat["small"]], Tags=[{"Key": "run"}])

    assert error_code(e) == "InvalidVolume.NotFound"
    assert tags_of(describe(ec2_a, cat["small"]))["run"] == run


def test_create_tags_on_unknown_volume_fails_invalid_volume_not_found(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.create_tags(Resources=[UNKNOWN_VOLUME], Tags=[{"Key": "k", "Value": "v"}])

    assert error_code(e) == "InvalidVolume.NotFound"


# --------------------------------------------------------------------------
# the real aws CLI
# --------------------------------------------------------------------------


def test_aws_create_volume_gp3_with_tags_returns_creating_volume(aws_cli):
    name = unique("cli-vol")

    out = aws_cli(
        "ec2", "create-volume",
        "--availability-zone", "us-east-1c",
        "--size", "3",
        "--volume-type", "gp3",
        "--tag-specifications", f"ResourceType=volume,Tags=[{{Key=Name,Value={name}}}]",
    )

    assert VOL_ID.match(out["VolumeId"])
    assert (out["State"], out["Size"], out["Iops"], out["Throughput"], out["AvailabilityZone"]) == (
        "creating", 3, 3000, 125, "us-east-1c"
    )
    assert out["Tags"] == [{"Key": "Name", "Value": name}]


def test_aws_describe_volumes_filters_then_create_snapshot_returns_pending_snapshot(aws_cli, catalog):
    run, cat = catalog

    described = aws_cli(
        "ec2", "describe-volumes",
        "--filters", f"Name=tag:run,Values={run}", "Name=volume-type,Values=gp3",
    )
    snap = aws_cli(
        "ec2", "create-snapshot", "--volume-id", cat["big"], "--description", f"{run} cli",
    )

    assert [v["VolumeId"] for v in described["Volumes"]] == [cat["big"]]
    assert (snap["VolumeId"], snap["State"], snap["VolumeSize"]) == (cat["big"], "pending", 20)
