"""Acceptance: coldsnap 0.12 (crates.io, AWS SDK for Rust) uploads a file to Kiln's EBS direct
endpoint and downloads it again, bit for bit; also incrementally with --parent-snapshot-id.

coldsnap is slow to build (about 9 minutes on 2 cores), so it is not a pip requirement:
install it with `scripts/install-coldsnap`. These tests are skipped only when no coldsnap
0.12.x is found (COLDSNAP_BIN, then PATH, then ~/.cargo/bin).

`coldsnap download` writes the whole volume (the file size rounded up to whole GiB), so the
downloaded file is compared with the source on the source's length and must be zero after it.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from compat_helpers import PRIMARY

BLOCK_SIZE = 524288
GIB = 1 << 30


def _coldsnap_version(path: str) -> str:
    """coldsnap has no --version; it embeds its SDK app name `coldsnap-<version>`."""
    found = re.search(rb"coldsnap-(\d+\.\d+\.\d+)", Path(path).read_bytes())
    return found.group(1).decode() if found else "unknown"


def _find_coldsnap() -> tuple[str | None, str]:
    """(path, version) of a coldsnap 0.12.x binary, or (None, why not)."""
    candidates = [
        os.environ.get("COLDSNAP_BIN"),
        shutil.which("coldsnap"),
        str(Path.home() / ".cargo" / "bin" / "coldsnap"),
    ]
    found = [(c, _coldsnap_version(c)) for c in candidates if c and os.access(c, os.X_OK)]
    good = [(path, version) for path, version in found if version.startswith("0.12.")]
    listing = ", ".join(f"{path} {version}" for path, version in found) or "none"
    return good[0] if good else (
        None,
        f"coldsnap 0.12.x is not installed (found: {listing}); "
        "run scripts/install-coldsnap (about 9 minutes) or set COLDSNAP_BIN",
    )


COLDSNAP, COLDSNAP_INFO = _find_coldsnap()

pytestmark = pytest.mark.skipif(COLDSNAP is None, reason=COLDSNAP_INFO)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def make_image(seed: int) -> bytes:
    """About 8 MiB: random blocks, an aligned all-zero region of two blocks, a block that is
    half zeros, a repeated block, and a tail that is not a whole block (coldsnap pads it)."""
    rng = random.Random(seed)
    parts = [
        rng.randbytes(3 * BLOCK_SIZE),            # blocks 0-2: random
        bytes(2 * BLOCK_SIZE),                    # blocks 3-4: zeros
        rng.randbytes(BLOCK_SIZE // 2),           # block 5: half random,
        bytes(BLOCK_SIZE // 2),                   #          half zeros
        rng.randbytes(6 * BLOCK_SIZE),            # blocks 6-11: random
    ]
    repeated = rng.randbytes(BLOCK_SIZE)
    parts += [repeated, repeated]                 # blocks 12-13: one block twice
    parts += [rng.randbytes(2 * BLOCK_SIZE)]      # blocks 14-15: random
    parts += [rng.randbytes(12345)]               # block 16: a short tail
    return b"".join(parts)


def modify_blocks(data: bytes, indexes: list[int], seed: int) -> bytes:
    """A copy of data with the given whole blocks replaced by new random bytes."""
    rng = random.Random(seed)
    out = bytearray(data)
    for index in indexes:
        out[index * BLOCK_SIZE : (index + 1) * BLOCK_SIZE] = rng.randbytes(BLOCK_SIZE)
    return bytes(out)


def first_difference(path: Path, expected: bytes) -> int | None:
    """Offset of the first byte where `path` differs from `expected` followed by zeros up to
    the end of the file; None when they agree. A file shorter than `expected` differs at its
    end."""
    chunk = 16 << 20
    with open(path, "rb") as f:
        head = f.read(len(expected))
        mismatch = next((i for i, (a, b) in enumerate(zip(head, expected)) if a != b), None)
        if head != expected:
            return mismatch if mismatch is not None else len(head)
        offset = len(expected)
        while True:
            block = f.read(chunk)
            if not block:
                return None
            if block.count(0) != len(block):
                return offset + next(i for i, b in enumerate(block) if b != 0)
            offset += len(block)


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coldsnap(kiln, account_a, tmp_path_factory):
    """coldsnap(*args, check=True) -> CompletedProcess. Runs
    `coldsnap --endpoint URL --region us-east-1 ARGS...` as account A (credentials from
    AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; no config files, no IMDS)."""
    home = tmp_path_factory.mktemp("coldsnap-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        {
            "HOME": str(home),
            "AWS_ACCESS_KEY_ID": account_a.access_key_id,
            "AWS_SECRET_ACCESS_KEY": account_a.secret_access_key,
            "AWS_CONFIG_FILE": str(home / "config-does-not-exist"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials-does-not-exist"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "RUST_LOG": "error",
        }
    )

    def run(*args: str, check: bool = True, timeout: float = 300, profile: bool = False):
        """With profile=True: `--profile kiln` from DIR/credentials instead of the env keys."""
        run_env = dict(env)
        profile_args = []
        if profile:
            del run_env["AWS_ACCESS_KEY_ID"], run_env["AWS_SECRET_ACCESS_KEY"]
            run_env["AWS_SHARED_CREDENTIALS_FILE"] = str(kiln.data_dir / "credentials")
            profile_args = ["--profile", "kiln"]
        cmd = [COLDSNAP, *profile_args, "--endpoint", kiln.url, "--region", PRIMARY, *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=run_env, timeout=timeout)
        assert not check or proc.returncode == 0, (
            f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
            f"stderr:\n{proc.stderr}\nkiln stderr (tail):\n{kiln.stderr_tail()}"
        )
        return proc

    return run


def _upload(coldsnap, path: Path, *extra: str) -> str:
    out = coldsnap("upload", "--no-progress", "--wait", *extra, str(path)).stdout
    return out.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def base_image(tmp_path_factory) -> tuple[Path, bytes]:
    data = make_image(seed=7)
    path = tmp_path_factory.mktemp("coldsnap-src") / "base.img"
    path.write_bytes(data)
    return path, data


@pytest.fixture(scope="module")
def base_snapshot(coldsnap, base_image) -> str:
    """Snapshot id of `coldsnap upload --wait base.img`."""
    return _upload(coldsnap, base_image[0])


@pytest.fixture(scope="module")
def child_image(tmp_path_factory, base_image) -> tuple[Path, bytes]:
    """base.img with blocks 1, 4 (was zeros) and 9 replaced."""
    data = modify_blocks(base_image[1], [1, 4, 9], seed=8)
    path = tmp_path_factory.mktemp("coldsnap-src") / "child.img"
    path.write_bytes(data)
    return path, data


@pytest.fixture(scope="module")
def child_snapshot(coldsnap, child_image, base_snapshot) -> str:
    """Snapshot id of `coldsnap upload --wait --parent-snapshot-id BASE child.img`."""
    return _upload(coldsnap, child_image[0], "--parent-snapshot-id", base_snapshot)


# --------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------


def test_coldsnap_upload_wait_snapshot_is_completed_with_rounded_volume_size(
    ec2_a, base_snapshot
):
    snapshot = ec2_a.describe_snapshots(SnapshotIds=[base_snapshot])["Snapshots"][0]

    assert (snapshot["State"], snapshot["VolumeSize"]) == ("completed", 1)


def test_coldsnap_download_uploaded_snapshot_returns_identical_bytes(
    coldsnap, base_image, base_snapshot, tmp_path
):
    out = tmp_path / "base.download"

    coldsnap("download", "--no-progress", base_snapshot, str(out))

    assert (out.stat().st_size, first_difference(out, base_image[1])) == (GIB, None)


def test_list_snapshot_blocks_coldsnap_upload_lists_blocks_with_data(
    ebs_a, base_image, base_snapshot
):
    blocks = ebs_a.list_snapshot_blocks(SnapshotId=base_snapshot)["Blocks"]

    # The zero blocks 3 and 4 are not listed, whether coldsnap sent them or not.
    assert {b["BlockIndex"] for b in blocks} == set(range(17)) - {3, 4}


def test_coldsnap_upload_with_parent_snapshot_id_downloads_identical_bytes(
    coldsnap, child_image, child_snapshot, tmp_path
):
    out = tmp_path / "child.download"

    coldsnap("download", "--no-progress", child_snapshot, str(out))

    assert (out.stat().st_size, first_difference(out, child_image[1])) == (GIB, None)


def test_list_changed_blocks_coldsnap_parent_and_child_are_related(
    ebs_a, base_snapshot, child_snapshot
):
    answer = ebs_a.list_changed_blocks(FirstSnapshotId=base_snapshot, SecondSnapshotId=child_snapshot)

    # coldsnap writes every block again; at least the three modified ones differ.
    assert {1, 4, 9} <= {b["BlockIndex"] for b in answer["ChangedBlocks"]}


def test_coldsnap_upload_omit_zero_blocks_downloads_identical_bytes(
    coldsnap, base_image, tmp_path
):
    snapshot_id = _upload(coldsnap, base_image[0], "--omit-zero-blocks")
    out = tmp_path / "sparse.download"

    coldsnap("download", "--no-progress", snapshot_id, str(out))

    assert (out.stat().st_size, first_difference(out, base_image[1])) == (GIB, None)


def test_coldsnap_upload_volume_size_2_downloads_two_gib(coldsnap, base_image, tmp_path):
    snapshot_id = _upload(coldsnap, base_image[0], "--volume-size", "2")
    out = tmp_path / "two.download"

    coldsnap("download", "--no-progress", snapshot_id, str(out))

    assert (out.stat().st_size, first_difference(out, base_image[1])) == (2 * GIB, None)


def test_coldsnap_upload_with_profile_credentials_owner_is_account_a(
    coldsnap, ec2_a, account_a, tmp_path
):
    data = make_image(seed=9)[: 3 * BLOCK_SIZE + 100]
    path = tmp_path / "profile.img"
    path.write_bytes(data)

    out = coldsnap("upload", "--no-progress", "--wait", str(path), profile=True).stdout
    snapshot_id = out.strip().splitlines()[-1]

    snapshot = ec2_a.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
    assert (snapshot["State"], snapshot["OwnerId"]) == ("completed", account_a.account_id)
