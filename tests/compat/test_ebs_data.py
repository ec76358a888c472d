"""EBS direct data APIs with boto3's `ebs` client: blocks in, blocks out, bit for bit.

StartSnapshot / PutSnapshotBlock / CompleteSnapshot (ChangedBlocksCount and the LINEAR
aggregate checksum), ListSnapshotBlocks, ListChangedBlocks and GetSnapshotBlock, incremental
snapshots (ParentSnapshotId), block tokens, cross-account access through
createVolumePermission, and the EC2 side (DescribeSnapshots state, CopySnapshot sharing
blocks, DeleteSnapshot of a snapshot an image uses).

Helpers below may loop; the tests themselves do not branch.
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
import time

import pytest
from botocore.exceptions import ClientError

from compat_helpers import PRIMARY, error_code, unique

BLOCK_SIZE = 524288
BLOCKS_PER_GIB = (1 << 30) // BLOCK_SIZE
ZERO_BLOCK = bytes(BLOCK_SIZE)
MODEL_TOKEN = re.compile(r"[A-Za-z0-9+/=]{1,256}")
VALIDATION_REASONS = {
    "INVALID_CUSTOMER_KEY", "INVALID_PAGE_TOKEN", "INVALID_BLOCK_TOKEN", "INVALID_GRANT_TOKEN",
    "INVALID_SNAPSHOT_ID", "UNRELATED_SNAPSHOTS", "INVALID_BLOCK", "INVALID_CONTENT_ENCODING",
    "INVALID_TAG", "INVALID_DEPENDENCY_REQUEST", "INVALID_PARAMETER_VALUE", "INVALID_VOLUME_SIZE",
    "CONFLICTING_BLOCK_UPDATE", "INVALID_IMAGE_ID", "WRITE_REQUEST_TIMEOUT",
}


# --------------------------------------------------------------------------
# helpers (no fixtures)
# --------------------------------------------------------------------------


def random_block(seed: int) -> bytes:
    """512 KiB of reproducible pseudo-random bytes."""
    return random.Random(seed).randbytes(BLOCK_SIZE)


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def linear_checksum(blocks: dict[int, bytes]) -> str:
    """LINEAR aggregate: SHA-256 over the raw 32-byte block digests in index order."""
    return b64(digest(b"".join(digest(blocks[i]) for i in sorted(blocks))))


def put_block(ebs, snapshot_id: str, index: int, data: bytes, **override):
    params = {
        "SnapshotId": snapshot_id,
        "BlockIndex": index,
        "BlockData": data,
        "DataLength": len(data),
        "Checksum": b64(digest(data)),
        "ChecksumAlgorithm": "SHA256",
    }
    params.update(override)
    return ebs.put_snapshot_block(**params)


def start(ebs, size: int = 1, **kwargs) -> str:
    return ebs.start_snapshot(VolumeSize=size, Description=unique("ebs-data"), **kwargs)["SnapshotId"]


def upload(ebs, blocks: dict[int, bytes], size: int = 1, parent: str | None = None) -> tuple[str, dict]:
    """Start, put every block, complete with count and LINEAR checksum.
    Returns (snapshot id, CompleteSnapshot answer)."""
    kwargs = {"ParentSnapshotId": parent} if parent else {}
    snapshot_id = start(ebs, size, **kwargs)
    for index, data in sorted(blocks.items()):
        put_block(ebs, snapshot_id, index, data)
    done = ebs.complete_snapshot(
        SnapshotId=snapshot_id,
        ChangedBlocksCount=len(blocks),
        Checksum=linear_checksum(blocks),
        ChecksumAlgorithm="SHA256",
        ChecksumAggregationMethod="LINEAR",
    )
    return snapshot_id, done


def list_blocks(ebs, snapshot_id: str, **kwargs) -> dict[int, str]:
    """Every listed block of a snapshot (all pages): index -> block token."""
    tokens: dict[int, str] = {}
    params = {"SnapshotId": snapshot_id, **kwargs}
    while True:
        page = ebs.list_snapshot_blocks(**params)
        for block in page["Blocks"]:
            assert block["BlockIndex"] not in tokens, f"index {block['BlockIndex']} listed twice"
            tokens[block["BlockIndex"]] = block["BlockToken"]
        if "NextToken" not in page:
            return tokens
        params["NextToken"] = page["NextToken"]


def list_changed(ebs, second: str, first: str | None = None) -> list[dict]:
    """Every ChangedBlocks entry (all pages)."""
    entries: list[dict] = []
    params = {"SecondSnapshotId": second}
    if first:
        params["FirstSnapshotId"] = first
    while True:
        page = ebs.list_changed_blocks(**params)
        entries.extend(page["ChangedBlocks"])
        if "NextToken" not in page:
            return entries
        params["NextToken"] = page["NextToken"]


def get_block(ebs, snapshot_id: str, index: int, token: str) -> dict:
    """GetSnapshotBlock with the body read: BlockData is bytes."""
    answer = ebs.get_snapshot_block(SnapshotId=snapshot_id, BlockIndex=index, BlockToken=token)
    answer["BlockData"] = answer["BlockData"].read()
    return answer


def download(ebs, snapshot_id: str) -> dict[int, bytes]:
    """index -> bytes of every listed block."""
    return {
        index: get_block(ebs, snapshot_id, index, token)["BlockData"]
        for index, token in list_blocks(ebs, snapshot_id).items()
    }


def snapshot_state(ec2, snapshot_id: str) -> str:
    return ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]["State"]


def wait_snapshot_state(ec2, snapshot_id: str, want: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    state = snapshot_state(ec2, snapshot_id)
    while state != want and time.monotonic() < deadline:
        time.sleep(0.2)
        state = snapshot_state(ec2, snapshot_id)
    return state


def reason(exc_info) -> str | None:
    return exc_info.value.response.get("Reason")


# --------------------------------------------------------------------------
# shared uploads (module scope: uploaded once, read by several tests)
# --------------------------------------------------------------------------

# Several random blocks, scattered (first, middle, last index of a 1 GiB volume), and one
# all-zero block that must not be listed.
BASE_BLOCKS = {
    0: random_block(1),
    1: random_block(2),
    7: random_block(3),
    8: ZERO_BLOCK,
    1000: random_block(4),
    BLOCKS_PER_GIB - 1: random_block(5),
}
BASE_DATA_INDEXES = {i for i, d in BASE_BLOCKS.items() if d != ZERO_BLOCK}

# The child changes block 1, adds block 9, and zeroes block 7 (which the parent has).
CHILD_CHANGES = {1: random_block(11), 9: random_block(12), 7: ZERO_BLOCK}


@pytest.fixture(scope="module")
def base_upload(ebs_a):
    """(snapshot id, CompleteSnapshot answer) of BASE_BLOCKS, account A, us-east-1."""
    return upload(ebs_a, BASE_BLOCKS)


@pytest.fixture(scope="module")
def child_upload(ebs_a, base_upload):
    """(snapshot id, CompleteSnapshot answer) of CHILD_CHANGES on top of the base."""
    return upload(ebs_a, CHILD_CHANGES, parent=base_upload[0])


# --------------------------------------------------------------------------
# full upload / download round trip
# --------------------------------------------------------------------------


def test_complete_snapshot_correct_count_and_linear_checksum_returns_completed(base_upload):
    _, done = base_upload

    assert done["Status"] == "completed"


def test_describe_snapshots_after_complete_reports_completed(ec2_a, base_upload):
    snapshot_id, _ = base_upload

    assert snapshot_state(ec2_a, snapshot_id) == "completed"


def test_list_snapshot_blocks_after_upload_lists_data_blocks_without_zero_block(ebs_a, base_upload):
    snapshot_id, _ = base_upload

    listed = list_blocks(ebs_a, snapshot_id)

    assert set(listed) == BASE_DATA_INDEXES


def test_list_snapshot_blocks_after_upload_reports_volume_and_block_size(ebs_a, base_upload):
    snapshot_id, _ = base_upload

    page = ebs_a.list_snapshot_blocks(SnapshotId=snapshot_id)

    assert (page["VolumeSize"], page["BlockSize"]) == (1, BLOCK_SIZE)


def test_get_snapshot_block_every_listed_block_returns_uploaded_bytes(ebs_a, base_upload):
    snapshot_id, _ = base_upload

    downloaded = download(ebs_a, snapshot_id)

    assert downloaded == {i: BASE_BLOCKS[i] for i in BASE_DATA_INDEXES}


def test_get_snapshot_block_listed_block_returns_length_and_sha256_checksum(ebs_a, base_upload):
    snapshot_id, _ = base_upload
    token = list_blocks(ebs_a, snapshot_id)[1000]

    answer = get_block(ebs_a, snapshot_id, 1000, token)

    assert (answer["DataLength"], answer["Checksum"], answer["ChecksumAlgorithm"]) == (
        BLOCK_SIZE,
        b64(digest(BASE_BLOCKS[1000])),
        "SHA256",
    )


def test_put_snapshot_block_valid_block_returns_its_checksum(ebs_a):
    snapshot_id = start(ebs_a)
    data = random_block(20)

    answer = put_block(ebs_a, snapshot_id, 3, data)

    assert (answer["Checksum"], answer["ChecksumAlgorithm"]) == (b64(digest(data)), "SHA256")


def test_list_snapshot_blocks_max_results_100_pages_through_every_block(ebs_a):
    blocks = {i: random_block(1000 + i) for i in range(150)}
    snapshot_id, _ = upload(ebs_a, blocks)

    first = ebs_a.list_snapshot_blocks(SnapshotId=snapshot_id, MaxResults=100)
    everything = list_blocks(ebs_a, snapshot_id, MaxResults=100)

    assert (len(first["Blocks"]), "NextToken" in first, set(everything)) == (100, True, set(blocks))


def test_list_snapshot_blocks_max_results_below_100_raises_validation(
    client, account_a, base_upload
):
    snapshot_id, _ = base_upload
    unchecked = client("ebs", account_a, PRIMARY, parameter_validation=False)

    with pytest.raises(ClientError) as exc:
        unchecked.list_snapshot_blocks(SnapshotId=snapshot_id, MaxResults=99)

    assert error_code(exc) == "ValidationException"


def test_list_snapshot_blocks_tokens_match_service_model_pattern(ebs_a, base_upload):
    snapshot_id, _ = base_upload
    blocks = {i: random_block(2000 + i) for i in range(101)}
    paged_id, _ = upload(ebs_a, blocks)

    tokens = list(list_blocks(ebs_a, snapshot_id).values())
    next_token = ebs_a.list_snapshot_blocks(SnapshotId=paged_id, MaxResults=100)["NextToken"]

    # BlockToken and PageToken: ^[A-Za-z0-9+/=]+$, at most 256 characters (ebs service-2.json).
    assert [t for t in tokens + [next_token] if not MODEL_TOKEN.fullmatch(t)] == []


def test_list_snapshot_blocks_starting_block_index_lists_from_that_index(ebs_a, base_upload):
    snapshot_id, _ = base_upload

    listed = list_blocks(ebs_a, snapshot_id, StartingBlockIndex=8)

    assert set(listed) == {i for i in BASE_DATA_INDEXES if i >= 8}


# --------------------------------------------------------------------------
# incremental snapshots
# --------------------------------------------------------------------------


def test_complete_snapshot_child_with_parent_returns_completed(child_upload):
    _, done = child_upload

    assert done["Status"] == "completed"


def test_list_changed_blocks_parent_to_child_lists_exactly_changed_indexes(
    ebs_a, base_upload, child_upload
):
    changed = list_changed(ebs_a, child_upload[0], first=base_upload[0])

    assert sorted(c["BlockIndex"] for c in changed) == sorted(CHILD_CHANGES)


def test_list_changed_blocks_parent_to_child_gives_tokens_for_both_sides(
    ebs_a, base_upload, child_upload
):
    changed = {c["BlockIndex"]: c for c in list_changed(ebs_a, child_upload[0], first=base_upload[0])}

    # block 1: in both; block 9: only in the child.
    assert (
        {"FirstBlockToken", "SecondBlockToken"} <= set(changed[1]),
        "FirstBlockToken" in changed[9],
        "SecondBlockToken" in changed[9],
    ) == (True, False, True)


def test_get_snapshot_block_changed_block_tokens_return_old_and_new_bytes(
    ebs_a, base_upload, child_upload
):
    base_id, child_id = base_upload[0], child_upload[0]
    entry = {c["BlockIndex"]: c for c in list_changed(ebs_a, child_id, first=base_id)}[1]

    old = get_block(ebs_a, base_id, 1, entry["FirstBlockToken"])["BlockData"]
    new = get_block(ebs_a, child_id, 1, entry["SecondBlockToken"])["BlockData"]

    assert (old, new) == (BASE_BLOCKS[1], CHILD_CHANGES[1])


def test_list_snapshot_blocks_child_lists_parent_blocks_plus_its_own(ebs_a, child_upload):
    listed = list_blocks(ebs_a, child_upload[0])

    assert set(listed) == (BASE_DATA_INDEXES - {7}) | {1, 9}


def test_get_snapshot_block_child_inherited_block_returns_parent_bytes(ebs_a, child_upload):
    child_id = child_upload[0]

    downloaded = download(ebs_a, child_id)

    expected = {i: BASE_BLOCKS[i] for i in BASE_DATA_INDEXES - {7}} | {
        1: CHILD_CHANGES[1],
        9: CHILD_CHANGES[9],
    }
    assert downloaded == expected


def test_list_changed_blocks_without_first_lists_every_data_block_of_second(ebs_a, base_upload):
    changed = list_changed(ebs_a, base_upload[0])

    # The only all-zero block of the base (index 8) is not data.
    assert {c["BlockIndex"] for c in changed} - {8} == BASE_DATA_INDEXES


def test_list_changed_blocks_unrelated_snapshots_raises_unrelated_snapshots(ebs_a, base_upload):
    other, _ = upload(ebs_a, {0: random_block(30)})

    with pytest.raises(ClientError) as exc:
        ebs_a.list_changed_blocks(FirstSnapshotId=other, SecondSnapshotId=base_upload[0])

    assert (error_code(exc), reason(exc)) == ("ValidationException", "UNRELATED_SNAPSHOTS")


def test_list_changed_blocks_child_as_first_parent_as_second_raises_unrelated_snapshots(
    ebs_a, base_upload, child_upload
):
    with pytest.raises(ClientError) as exc:
        ebs_a.list_changed_blocks(FirstSnapshotId=child_upload[0], SecondSnapshotId=base_upload[0])

    assert (error_code(exc), reason(exc)) == ("ValidationException", "UNRELATED_SNAPSHOTS")


def test_start_snapshot_unknown_parent_raises_not_found(ebs_a):
    with pytest.raises(ClientError) as exc:
        ebs_a.start_snapshot(VolumeSize=1, ParentSnapshotId="snap-0123456789abcdef0")

    assert error_code(exc) == "ResourceNotFoundException"


# --------------------------------------------------------------------------
# PutSnapshotBlock validation
# --------------------------------------------------------------------------


def test_put_snapshot_block_bad_checksum_raises_validation(ebs_a):
    snapshot_id = start(ebs_a)
    data = random_block(40)

    with pytest.raises(ClientError) as exc:
        put_block(ebs_a, snapshot_id, 0, data, Checksum=b64(digest(b"something else")))

    assert (error_code(exc), reason(exc) in VALIDATION_REASONS) == ("ValidationException", True)


def test_put_snapshot_block_bad_checksum_stores_nothing(ebs_a):
    snapshot_id = start(ebs_a)
    with pytest.raises(ClientError):
        put_block(ebs_a, snapshot_id, 0, random_block(41), Checksum=b64(digest(b"x")))

    # Nothing was received, so a count of 0 completes the snapshot.
    done = ebs_a.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=0)

    assert done["Status"] == "completed"


def test_put_snapshot_block_data_length_smaller_than_body_raises_validation(ebs_a):
    snapshot_id = start(ebs_a)

    with pytest.raises(ClientError) as exc:
        put_block(ebs_a, snapshot_id, 0, random_block(42), DataLength=BLOCK_SIZE - 1)

    assert error_code(exc) == "ValidationException"


def test_put_snapshot_block_short_body_raises_validation(ebs_a):
    snapshot_id = start(ebs_a)

    with pytest.raises(ClientError) as exc:
        put_block(ebs_a, snapshot_id, 0, random_block(43)[: BLOCK_SIZE // 2])

    assert error_code(exc) == "ValidationException"


def test_put_snapshot_block_index_beyond_volume_raises_validation(ebs_a):
    snapshot_id = start(ebs_a, size=1)

    with pytest.raises(ClientError) as exc:
        put_block(ebs_a, snapshot_id, BLOCKS_PER_GIB, random_block(44))

    assert error_code(exc) == "ValidationException"


def test_put_snapshot_block_last_index_of_volume_succeeds(ebs_a):
    snapshot_id = start(ebs_a, size=1)
    data = random_block(45)

    answer = put_block(ebs_a, snapshot_id, BLOCKS_PER_GIB - 1, data)

    assert answer["Checksum"] == b64(digest(data))


def test_put_snapshot_block_completed_snapshot_raises_validation(ebs_a, base_upload):
    with pytest.raises(ClientError) as exc:
        put_block(ebs_a, base_upload[0], 2, random_block(46))

    assert error_code(exc) == "ValidationException"


def test_put_snapshot_block_unknown_snapshot_raises_not_found(ebs_a):
    with pytest.raises(ClientError) as exc:
        put_block(ebs_a, "snap-0123456789abcdef0", 0, random_block(47))

    assert error_code(exc) == "ResourceNotFoundException"


# --------------------------------------------------------------------------
# CompleteSnapshot verification
# --------------------------------------------------------------------------


def test_complete_snapshot_wrong_changed_blocks_count_returns_error_status(ebs_a):
    snapshot_id = start(ebs_a)
    put_block(ebs_a, snapshot_id, 0, random_block(50))
    put_block(ebs_a, snapshot_id, 1, random_block(51))

    done = ebs_a.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=3)

    assert done["Status"] == "error"


def test_describe_snapshots_after_wrong_changed_blocks_count_reports_error(ebs_a, ec2_a):
    snapshot_id = start(ebs_a)
    put_block(ebs_a, snapshot_id, 0, random_block(52))
    ebs_a.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=5)

    state = snapshot_state(ec2_a, snapshot_id)

    assert state == "error"


def test_complete_snapshot_wrong_linear_checksum_returns_error_status(ebs_a, ec2_a):
    snapshot_id = start(ebs_a)
    blocks = {0: random_block(53), 4: random_block(54)}
    put_block(ebs_a, snapshot_id, 0, blocks[0])
    put_block(ebs_a, snapshot_id, 4, blocks[4])
    # The digests concatenated in the wrong (descending) order.
    wrong = b64(digest(digest(blocks[4]) + digest(blocks[0])))

    done = ebs_a.complete_snapshot(
        SnapshotId=snapshot_id,
        ChangedBlocksCount=2,
        Checksum=wrong,
        ChecksumAlgorithm="SHA256",
        ChecksumAggregationMethod="LINEAR",
    )

    assert (done["Status"], snapshot_state(ec2_a, snapshot_id)) == ("error", "error")


def test_list_snapshot_blocks_error_snapshot_raises_validation(ebs_a):
    snapshot_id = start(ebs_a)
    put_block(ebs_a, snapshot_id, 0, random_block(55))
    ebs_a.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=2)

    with pytest.raises(ClientError) as exc:
        ebs_a.list_snapshot_blocks(SnapshotId=snapshot_id)

    assert error_code(exc) == "ValidationException"


def test_complete_snapshot_overwritten_block_counts_once(ebs_a):
    snapshot_id = start(ebs_a)
    final = random_block(57)
    put_block(ebs_a, snapshot_id, 2, random_block(56))
    put_block(ebs_a, snapshot_id, 2, final)

    done = ebs_a.complete_snapshot(
        SnapshotId=snapshot_id,
        ChangedBlocksCount=1,
        Checksum=linear_checksum({2: final}),
        ChecksumAlgorithm="SHA256",
        ChecksumAggregationMethod="LINEAR",
    )

    assert (done["Status"], download(ebs_a, snapshot_id)) == ("completed", {2: final})


# --------------------------------------------------------------------------
# block tokens
# --------------------------------------------------------------------------


def test_get_snapshot_block_token_of_other_snapshot_raises_invalid_block_token(ebs_a):
    data = random_block(60)
    first, _ = upload(ebs_a, {5: data})
    second, _ = upload(ebs_a, {5: data})
    token_of_first = list_blocks(ebs_a, first)[5]

    with pytest.raises(ClientError) as exc:
        ebs_a.get_snapshot_block(SnapshotId=second, BlockIndex=5, BlockToken=token_of_first)

    assert (error_code(exc), reason(exc)) == ("ValidationException", "INVALID_BLOCK_TOKEN")


def test_get_snapshot_block_token_of_other_index_raises_invalid_block_token(ebs_a, base_upload):
    snapshot_id, _ = base_upload
    token_of_0 = list_blocks(ebs_a, snapshot_id)[0]

    with pytest.raises(ClientError) as exc:
        ebs_a.get_snapshot_block(SnapshotId=snapshot_id, BlockIndex=1, BlockToken=token_of_0)

    assert (error_code(exc), reason(exc)) == ("ValidationException", "INVALID_BLOCK_TOKEN")


def test_get_snapshot_block_forged_token_raises_invalid_block_token(ebs_a, base_upload):
    snapshot_id, _ = base_upload
    token = list_blocks(ebs_a, snapshot_id)[0]
    forged = token[12:] + token[:12]  # same alphabet and length, wrong MAC

    with pytest.raises(ClientError) as exc:
        ebs_a.get_snapshot_block(SnapshotId=snapshot_id, BlockIndex=0, BlockToken=forged)

    assert (error_code(exc), reason(exc)) == ("ValidationException", "INVALID_BLOCK_TOKEN")


# --------------------------------------------------------------------------
# other accounts
# --------------------------------------------------------------------------


def test_list_snapshot_blocks_other_account_without_permission_is_denied(ebs_a, ebs_b):
    snapshot_id, _ = upload(ebs_a, {0: random_block(70)})

    with pytest.raises(ClientError) as exc:
        ebs_b.list_snapshot_blocks(SnapshotId=snapshot_id)

    assert error_code(exc) in ("AccessDeniedException", "ResourceNotFoundException")


def test_get_snapshot_block_other_account_with_owner_token_is_rejected(ebs_a, ebs_b):
    snapshot_id, _ = upload(ebs_a, {0: random_block(71)})
    token = list_blocks(ebs_a, snapshot_id)[0]

    with pytest.raises(ClientError) as exc:
        ebs_b.get_snapshot_block(SnapshotId=snapshot_id, BlockIndex=0, BlockToken=token)

    assert error_code(exc) in ("AccessDeniedException", "ResourceNotFoundException")


def test_get_snapshot_block_other_account_after_create_volume_permission_returns_bytes(
    ebs_a, ebs_b, ec2_a, account_b
):
    data = random_block(72)
    snapshot_id, _ = upload(ebs_a, {3: data})
    ec2_a.modify_snapshot_attribute(
        SnapshotId=snapshot_id,
        Attribute="createVolumePermission",
        OperationType="add",
        UserIds=[account_b.account_id],
    )

    downloaded = download(ebs_b, snapshot_id)

    assert downloaded == {3: data}


def test_get_snapshot_block_shared_snapshot_owner_token_used_by_other_account_raises_validation(
    ebs_a, ebs_b, ec2_a, account_b
):
    snapshot_id, _ = upload(ebs_a, {3: random_block(73)})
    ec2_a.modify_snapshot_attribute(
        SnapshotId=snapshot_id,
        Attribute="createVolumePermission",
        OperationType="add",
        UserIds=[account_b.account_id],
    )
    owner_token = list_blocks(ebs_a, snapshot_id)[3]

    with pytest.raises(ClientError) as exc:
        ebs_b.get_snapshot_block(SnapshotId=snapshot_id, BlockIndex=3, BlockToken=owner_token)

    assert (error_code(exc), reason(exc)) == ("ValidationException", "INVALID_BLOCK_TOKEN")


def test_list_snapshot_blocks_after_create_volume_permission_removed_is_denied(
    ebs_a, ebs_b, ec2_a, account_b
):
    snapshot_id, _ = upload(ebs_a, {3: random_block(74)})
    permission = {
        "SnapshotId": snapshot_id,
        "Attribute": "createVolumePermission",
        "UserIds": [account_b.account_id],
    }
    ec2_a.modify_snapshot_attribute(OperationType="add", **permission)
    ec2_a.modify_snapshot_attribute(OperationType="remove", **permission)

    with pytest.raises(ClientError) as exc:
        ebs_b.list_snapshot_blocks(SnapshotId=snapshot_id)

    assert error_code(exc) in ("AccessDeniedException", "ResourceNotFoundException")


def test_put_snapshot_block_other_account_snapshot_is_rejected(ebs_a, ebs_b):
    snapshot_id = start(ebs_a)

    with pytest.raises(ClientError) as exc:
        put_block(ebs_b, snapshot_id, 0, random_block(75))

    assert error_code(exc) in ("AccessDeniedException", "ResourceNotFoundException")


# --------------------------------------------------------------------------
# EC2 side: CopySnapshot, DeleteSnapshot
# --------------------------------------------------------------------------


def test_copy_snapshot_then_download_copy_returns_same_bytes(ebs_a, ec2_a):
    blocks = {0: random_block(80), 6: random_block(81), 12: ZERO_BLOCK}
    source, _ = upload(ebs_a, blocks)
    copy_id = ec2_a.copy_snapshot(SourceSnapshotId=source, SourceRegion=PRIMARY)["SnapshotId"]
    wait_snapshot_state(ec2_a, copy_id, "completed")

    downloaded = download(ebs_a, copy_id)

    assert downloaded == {0: blocks[0], 6: blocks[6]}


def test_copy_snapshot_to_other_region_then_download_copy_returns_same_bytes(
    ebs_a, ec2_a_west, ebs_a_west
):
    blocks = {2: random_block(82)}
    source, _ = upload(ebs_a, blocks)
    copy_id = ec2_a_west.copy_snapshot(SourceSnapshotId=source, SourceRegion=PRIMARY)["SnapshotId"]
    wait_snapshot_state(ec2_a_west, copy_id, "completed")

    downloaded = download(ebs_a_west, copy_id)

    assert downloaded == blocks


def test_copy_snapshot_source_deleted_copy_still_downloads(ebs_a, ec2_a):
    blocks = {1: random_block(83)}
    source, _ = upload(ebs_a, blocks)
    copy_id = ec2_a.copy_snapshot(SourceSnapshotId=source, SourceRegion=PRIMARY)["SnapshotId"]
    wait_snapshot_state(ec2_a, copy_id, "completed")
    ec2_a.delete_snapshot(SnapshotId=source)
    time.sleep(6)  # at least one garbage-collection pass (every ~5 s)

    downloaded = download(ebs_a, copy_id)

    assert downloaded == blocks


def test_child_snapshot_parent_deleted_child_still_downloads(ebs_a, ec2_a):
    parent_blocks = {0: random_block(84), 1: random_block(85)}
    parent, _ = upload(ebs_a, parent_blocks)
    child, _ = upload(ebs_a, {1: random_block(86)}, parent=parent)
    ec2_a.delete_snapshot(SnapshotId=parent)
    time.sleep(6)  # at least one garbage-collection pass (every ~5 s)

    downloaded = download(ebs_a, child)

    assert downloaded[0] == parent_blocks[0]


def test_list_snapshot_blocks_deleted_snapshot_raises_not_found(ebs_a, ec2_a):
    snapshot_id, _ = upload(ebs_a, {0: random_block(87)})
    ec2_a.delete_snapshot(SnapshotId=snapshot_id)

    with pytest.raises(ClientError) as exc:
        ebs_a.list_snapshot_blocks(SnapshotId=snapshot_id)

    assert error_code(exc) == "ResourceNotFoundException"


def test_delete_snapshot_used_by_registered_image_raises_in_use(ebs_a, ec2_a, register_image):
    snapshot_id, _ = upload(ebs_a, {0: random_block(90)}, size=8)
    register_image(snapshot_id=snapshot_id)

    with pytest.raises(ClientError) as exc:
        ec2_a.delete_snapshot(SnapshotId=snapshot_id)

    assert error_code(exc) == "InvalidSnapshot.InUse"


def test_get_snapshot_block_snapshot_of_registered_image_still_downloads_after_failed_delete(
    ebs_a, ec2_a, register_image
):
    data = random_block(91)
    snapshot_id, _ = upload(ebs_a, {0: data}, size=8)
    register_image(snapshot_id=snapshot_id)
    with pytest.raises(ClientError):
        ec2_a.delete_snapshot(SnapshotId=snapshot_id)

    downloaded = download(ebs_a, snapshot_id)

    assert downloaded == {0: data}


# --------------------------------------------------------------------------
# StartSnapshot with a parent; reads of snapshots that are not completed
# --------------------------------------------------------------------------


def test_start_snapshot_pending_parent_raises_validation(ebs_a):
    parent = start(ebs_a)

    with pytest.raises(ClientError) as exc:
        ebs_a.start_snapshot(VolumeSize=1, ParentSnapshotId=parent)

    assert error_code(exc) == "ValidationException"


def test_start_snapshot_volume_smaller_than_parent_raises_validation(ebs_a):
    parent, _ = upload(ebs_a, {BLOCKS_PER_GIB + 1: random_block(100)}, size=2)

    with pytest.raises(ClientError) as exc:
        ebs_a.start_snapshot(VolumeSize=1, ParentSnapshotId=parent)

    assert error_code(exc) == "ValidationException"


def test_put_snapshot_block_child_larger_than_parent_accepts_blocks_beyond_parent(ebs_a):
    parent_blocks = {0: random_block(101)}
    parent, _ = upload(ebs_a, parent_blocks, size=1)
    extra = {BLOCKS_PER_GIB + 5: random_block(102)}

    child, done = upload(ebs_a, extra, size=2, parent=parent)

    assert (done["Status"], download(ebs_a, child)) == ("completed", parent_blocks | extra)


def test_list_snapshot_blocks_pending_snapshot_raises_validation(ebs_a):
    snapshot_id = start(ebs_a)
    put_block(ebs_a, snapshot_id, 0, random_block(103))

    with pytest.raises(ClientError) as exc:
        ebs_a.list_snapshot_blocks(SnapshotId=snapshot_id)

    assert error_code(exc) == "ValidationException"


def test_complete_snapshot_already_completed_raises_validation(ebs_a, base_upload):
    with pytest.raises(ClientError) as exc:
        ebs_a.complete_snapshot(SnapshotId=base_upload[0], ChangedBlocksCount=0)

    assert error_code(exc) == "ValidationException"


def test_start_snapshot_encrypted_with_parent_raises_validation(ebs_a, base_upload):
    # service-2.json, StartSnapshot Encrypted / ParentSnapshotId: "You can't specify Encrypted
    # and ParentSnapshotId in the same request ... the request fails with ValidationException".
    with pytest.raises(ClientError) as exc:
        ebs_a.start_snapshot(VolumeSize=1, ParentSnapshotId=base_upload[0], Encrypted=True)

    assert error_code(exc) == "ValidationException"


def test_start_snapshot_same_client_token_same_request_returns_same_snapshot(ebs_a):
    token = unique("ct")

    first = ebs_a.start_snapshot(VolumeSize=1, ClientToken=token)["SnapshotId"]
    second = ebs_a.start_snapshot(VolumeSize=1, ClientToken=token)["SnapshotId"]

    assert first == second


def test_start_snapshot_same_client_token_different_request_raises_conflict(ebs_a):
    # service-2.json ConflictException (409): "The request uses the same client token as a
    # previous, but non-identical request."
    token = unique("ct")
    ebs_a.start_snapshot(VolumeSize=1, ClientToken=token)

    with pytest.raises(ClientError) as exc:
        ebs_a.start_snapshot(VolumeSize=2, ClientToken=token)

    assert error_code(exc) == "ConflictException"
