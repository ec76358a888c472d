"""Disk import and export, and storage accounting, against the shared `kiln serve`.

ImportImage / ImportSnapshot of raw, qcow2, vmdk, vhd and vhdx files (made with `qemu-img`
from one random raw disk), DescribeImportImageTasks / DescribeImportSnapshotTasks,
CancelImportTask, ExportImage / DescribeExportImageTasks, the `kiln image import|export`
CLI, and `kiln usage` (referenced / unique / shared bytes, checked against the block files
in DATA_DIR/blocks/xx/<sha256>).

Failed imports must end `deleted` with a `ClientError:` message, register nothing, and leave
no block behind once the collector (every ~5 s) has run. Tests compare the set of block
files before and after, so garbage from other tests being collected meanwhile does not
disturb them.

Helpers below may loop; the tests themselves do not branch.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import random
import re
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from compat_helpers import PRIMARY, SECONDARY, error_code, unique

BLOCK = 524288
GIB = 1 << 30
ZERO_BLOCK = bytes(BLOCK)
IMPORT_TIMEOUT_S = 120.0
EXPORT_TIMEOUT_S = 120.0
GC_TIMEOUT_S = 20.0  # the collector runs about every 5 s
STABLE_QUIET_S = 7.0  # longer than one collector period
STABLE_TIMEOUT_S = 60.0
SESSION_SALT = uuid.uuid4().hex
IMAGE_ID = re.compile(r"ami-[0-9a-f]{8,17}")

# qemu-img's name of each EC2 disk format.
QEMU_FORMAT = {"raw": "raw", "qcow2": "qcow2", "vmdk": "vmdk", "vhd": "vpc", "vhdx": "vhdx"}
EXPORT_EXTENSION = {"RAW": "raw", "VMDK": "vmdk", "VHD": "vhd"}


# --------------------------------------------------------------------------
# disks
# --------------------------------------------------------------------------


def make_disk(seed: int, layout: str, tail: int = 0) -> bytes:
    """A raw disk, one 512 KiB block per layout character: R = fresh random block,
    Z = zeros, D = a copy of the first R block; then `tail` random bytes (a partial block).
    Seeded per session: no other test (nor an earlier session) stores the same blocks."""
    rng = random.Random(f"{SESSION_SALT}-{seed}")
    blocks: list[bytes] = []
    first = None
    for kind in layout:
        data = {"R": lambda: rng.randbytes(BLOCK), "Z": lambda: ZERO_BLOCK, "D": lambda: first}[kind]()
        first = first or (data if kind == "R" else None)
        blocks.append(data)
    return b"".join(blocks) + rng.randbytes(tail)


def block_hashes(content: bytes) -> set[str]:
    """sha256 hex of every distinct non-zero 512 KiB block (the last one zero-padded)."""
    hashes = set()
    for offset in range(0, len(content), BLOCK):
        block = content[offset : offset + BLOCK].ljust(BLOCK, b"\0")
        hashes.add(hashlib.sha256(block).hexdigest())
    return hashes - {hashlib.sha256(ZERO_BLOCK).hexdigest()}


def qemu_img(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"qemu-img {' '.join(args)}: {proc.returncode}\n{proc.stderr}"
    return proc


def write_disk(directory: Path, content: bytes, fmt: str, stem: str = "disk") -> Path:
    """`content` as a file of EC2 format `fmt` (converted from raw with qemu-img)."""
    raw = directory / f"{stem}.raw"
    raw.write_bytes(content)
    if fmt == "raw":
        return raw
    out = directory / f"{stem}.{fmt}"
    qemu_img("convert", "-f", "raw", "-O", QEMU_FORMAT[fmt], str(raw), str(out))
    return out


def truncate_half(path: Path) -> Path:
    os.truncate(path, path.stat().st_size // 2)
    return path


def qemu_compare(source_raw: Path, other: Path, other_qemu_format: str) -> subprocess.CompletedProcess:
    """`qemu-img compare` (extra size must be zeros): returncode 0 = identical contents."""
    return subprocess.run(
        ["qemu-img", "compare", "-f", "raw", "-F", other_qemu_format, str(source_raw), str(other)],
        capture_output=True, text=True, timeout=300,
    )


def raw_export_mismatch(path: Path, content: bytes, size: int = GIB) -> str | None:
    """None when `path` is `content` followed by zeros up to `size` bytes, else what differs."""
    actual = path.stat().st_size
    chunk = 8 << 20
    with open(path, "rb") as f:
        head = f.read(len(content))
        offset = len(content)
        tail_ok = True
        while tail_ok and offset < actual:
            data = f.read(chunk)
            tail_ok = data == bytes(len(data)) and len(data) > 0
            offset += len(data) if tail_ok else 0
    problems = [
        f"size {actual} != {size}" if actual != size else None,
        "the disk's bytes differ" if head != content else None,
        f"non-zero byte after the disk, in the 8 MiB chunk at {offset}" if not tail_ok else None,
    ]
    return "; ".join(p for p in problems if p) or None


# --------------------------------------------------------------------------
# the block store
# --------------------------------------------------------------------------


def block_files(data_dir: Path) -> dict[str, int]:
    """Every block file of DATA_DIR/blocks/xx/<sha256 hex>: name -> size in bytes."""
    files = {}
    for path in (data_dir / "blocks").glob("??/*"):
        stat = path.stat() if path.is_file() else None
        files.update({path.name: stat.st_size} if stat and len(path.name) == 64 else {})
    return files


def poll(fetch, done, timeout: float, interval: float = 0.25):
    """fetch() until done(value) or the timeout; returns the last value."""
    deadline = time.monotonic() + timeout
    value = fetch()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(interval)
        value = fetch()
    return value


def wait_new_blocks_gone(data_dir: Path, before: dict[str, int]) -> set[str]:
    """Block files that exist now but not in `before`, after waiting up to GC_TIMEOUT_S for
    the collector to remove them."""
    return poll(lambda: set(block_files(data_dir)) - set(before), lambda new: not new, GC_TIMEOUT_S, 0.5)


def wait_blocks_stable(data_dir: Path) -> dict[str, int]:
    """The block files once they have not changed for STABLE_QUIET_S (longer than one
    collector period), waiting at most STABLE_TIMEOUT_S."""
    deadline = time.monotonic() + STABLE_TIMEOUT_S
    current = block_files(data_dir)
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < STABLE_QUIET_S and time.monotonic() < deadline:
        time.sleep(0.5)
        latest = block_files(data_dir)
        quiet_since = quiet_since if latest == current else time.monotonic()
        current = latest
    return current


# --------------------------------------------------------------------------
# tasks
# --------------------------------------------------------------------------

FINAL = ("completed", "deleted")


def import_image_task(ec2, task_id: str) -> dict:
    tasks = ec2.describe_import_image_tasks(ImportTaskIds=[task_id])["ImportImageTasks"]
    assert [t["ImportTaskId"] for t in tasks] == [task_id]
    return tasks[0]


def wait_import_image(ec2, task_id: str) -> dict:
    return poll(lambda: import_image_task(ec2, task_id), lambda t: t["Status"] in FINAL, IMPORT_TIMEOUT_S)


def import_snapshot_task(ec2, task_id: str) -> dict:
    tasks = ec2.describe_import_snapshot_tasks(ImportTaskIds=[task_id])["ImportSnapshotTasks"]
    assert [t["ImportTaskId"] for t in tasks] == [task_id]
    return tasks[0]


def wait_import_snapshot(ec2, task_id: str) -> dict:
    return poll(
        lambda: import_snapshot_task(ec2, task_id),
        lambda t: t["SnapshotTaskDetail"]["Status"] in FINAL,
        IMPORT_TIMEOUT_S,
    )


def start_image_import(ec2, path: Path, fmt: str | None = None, **kwargs) -> dict:
    container = {"Url": f"file://{path}", **({"Format": fmt} if fmt else {})}
    return ec2.import_image(DiskContainers=[container], **kwargs)


def import_image(ec2, path: Path, fmt: str | None = None, **kwargs) -> dict:
    """ImportImage and wait for the task to end; returns the final task."""
    return wait_import_image(ec2, start_image_import(ec2, path, fmt, **kwargs)["ImportTaskId"])


def export_task(ec2, task_id: str) -> dict:
    tasks = ec2.describe_export_image_tasks(ExportImageTaskIds=[task_id])["ExportImageTasks"]
    assert [t["ExportImageTaskId"] for t in tasks] == [task_id]
    return tasks[0]


def wait_image_state(ec2, image_id: str, want: str = "available", timeout: float = 30.0) -> dict:
    return poll(
        lambda: ec2.describe_images(ImageIds=[image_id])["Images"][0],
        lambda image: image["State"] == want,
        timeout,
    )


def images_named(ec2, name: str) -> list[str]:
    return [
        i["ImageId"]
        for i in ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [name]}])["Images"]
    ]


# --------------------------------------------------------------------------
# the kiln CLI
# --------------------------------------------------------------------------


def kiln_run(kiln, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run(
        [str(kiln.binary), "--data-dir", str(kiln.data_dir), *args],
        capture_output=True, text=True, timeout=timeout, env=env,
    )


def kiln_ok(kiln, *args: str, timeout: float = 300) -> str:
    proc = kiln_run(kiln, *args, timeout=timeout)
    assert proc.returncode == 0, (
        f"kiln {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}"
    )
    return proc.stdout


def cli_export(kiln, image_id: str, out: Path, fmt: str) -> str:
    return kiln_ok(kiln, "image", "export", image_id, str(out), "--format", fmt, "--endpoint", kiln.url)


def usage_report(kiln, *args: str) -> dict:
    return json.loads(kiln_ok(kiln, "usage", "--json", *args, timeout=60))


def image_usage(kiln, image_id: str) -> dict:
    return json.loads(kiln_ok(kiln, "usage", "--json", "image", image_id, timeout=60))


def usage_of(report: dict, kind: str, resource_ids: list[str]) -> list[dict]:
    by_id = {line["ResourceId"]: line for line in report[kind]}
    return [by_id.get(r) for r in resource_ids]


def byte_triple(line: dict) -> tuple[int, int, int]:
    return line["ReferencedBytes"], line["UniqueBytes"], line["SharedBytes"]


# --------------------------------------------------------------------------
# module fixtures
# --------------------------------------------------------------------------

# 8 full blocks (5 distinct random ones, one repeated, two zero) and a 64 KiB partial block.
SOURCE_LAYOUT = "RRRZZRRD"
SOURCE_TAIL = 64 * 1024


@dataclass
class Disks:
    content: bytes
    raw: Path
    files: dict[str, Path]


@pytest.fixture(scope="module")
def disks(tmp_path_factory) -> Disks:
    """One random disk as raw, qcow2, vmdk, vhd and vhdx files."""
    directory = tmp_path_factory.mktemp("disks")
    content = make_disk(1001, SOURCE_LAYOUT, SOURCE_TAIL)
    files = {fmt: write_disk(directory, content, fmt) for fmt in QEMU_FORMAT}
    return Disks(content, directory / "disk.raw", files)


@pytest.fixture(scope="module")
def imported(ec2_a, disks) -> dict:
    """The final ImportImage task of the qcow2 file (for the export tests)."""
    return import_image(ec2_a, disks.files["qcow2"], "qcow2")


@pytest.fixture
def loopback_http(tmp_path):
    """(directory, base URL) of an HTTP server on 127.0.0.1 serving `directory`."""
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# --------------------------------------------------------------------------
# ImportImage: every format
# --------------------------------------------------------------------------

# Declared formats in mixed case: the Format parameter is case-insensitive.
DECLARED = {"raw": "raw", "qcow2": "QCOW2", "vmdk": "vmdk", "vhd": "VHD", "vhdx": "VhDx"}


@pytest.mark.parametrize("fmt", list(QEMU_FORMAT))
def test_import_image_each_format_starts_active_task(ec2_a, disks, fmt):
    started = start_image_import(ec2_a, disks.files[fmt], DECLARED[fmt])

    assert re.fullmatch(r"import-ami-[0-9a-f]{8,17}", started["ImportTaskId"])
    assert started["Status"] == "active"
    assert wait_import_image(ec2_a, started["ImportTaskId"])["Status"] == "completed"


@pytest.mark.parametrize("fmt", list(QEMU_FORMAT))
def test_import_image_each_format_completes_with_image_and_snapshot(ec2_a, disks, fmt):
    task = import_image(ec2_a, disks.files[fmt], DECLARED[fmt])

    assert task["Status"] == "completed", task
    assert IMAGE_ID.fullmatch(task.get("ImageId", "")), task
    assert [d["Status"] for d in task["SnapshotDetails"]] == ["completed"]
    assert task["SnapshotDetails"][0]["SnapshotId"].startswith("snap-")
    assert task["SnapshotDetails"][0]["Format"] == fmt.upper()
    assert task["SnapshotDetails"][0]["DiskImageSize"] == disks.files[fmt].stat().st_size


@pytest.mark.parametrize("fmt", list(QEMU_FORMAT))
def test_import_image_each_format_registers_hvm_image_named_after_task(ec2_a, describe_image, disks, fmt):
    task = import_image(ec2_a, disks.files[fmt], DECLARED[fmt])

    image = describe_image(task["ImageId"])
    assert image["Name"] == task["ImportTaskId"]
    assert image["State"] == "available"
    assert image["VirtualizationType"] == "hvm"
    assert image["RootDeviceName"] == "/dev/sda1"
    assert [(m["DeviceName"], m["Ebs"]["SnapshotId"], m["Ebs"]["VolumeSize"]) for m in image["BlockDeviceMappings"]] == [
        ("/dev/sda1", task["SnapshotDetails"][0]["SnapshotId"], 1)
    ]


@pytest.mark.parametrize("fmt", list(QEMU_FORMAT))
def test_import_image_each_format_cli_raw_export_is_original_plus_zeros(kiln, ec2_a, disks, tmp_path, fmt):
    task = import_image(ec2_a, disks.files[fmt], DECLARED[fmt])
    out = tmp_path / "export.raw"

    cli_export(kiln, task["ImageId"], out, "raw")

    assert raw_export_mismatch(out, disks.content) is None
    out.unlink()


def test_import_image_without_format_detects_qcow2(ec2_a, disks):
    task = import_image(ec2_a, disks.files["qcow2"])

    assert task["Status"] == "completed", task
    assert task["SnapshotDetails"][0]["Format"] == "QCOW2"


def test_import_image_architecture_and_boot_mode_are_kept(ec2_a, describe_image, disks):
    task = import_image(ec2_a, disks.files["raw"], "raw", Architecture="arm64", BootMode="uefi")

    image = describe_image(task["ImageId"])
    assert (image["Architecture"], image["BootMode"]) == ("arm64", "uefi")


def test_import_image_five_formats_of_one_disk_store_its_blocks_once(kiln, ec2_a, tmp_path):
    content = make_disk(2002, "RRZRDR", 4096)
    files = {fmt: write_disk(tmp_path, content, fmt) for fmt in QEMU_FORMAT}
    before = block_files(kiln.data_dir)

    task_ids = [start_image_import(ec2_a, files[fmt], fmt)["ImportTaskId"] for fmt in QEMU_FORMAT]
    tasks = [wait_import_image(ec2_a, t) for t in task_ids]

    assert [t["Status"] for t in tasks] == ["completed"] * 5, tasks
    assert set(block_files(kiln.data_dir)) - set(before) == block_hashes(content)


def test_import_image_five_formats_of_one_disk_usage_shows_all_shared(kiln, ec2_a, tmp_path):
    content = make_disk(2003, "RZRRD", 100 * 1024)
    stored = len(block_hashes(content)) * BLOCK
    files = {fmt: write_disk(tmp_path, content, fmt) for fmt in QEMU_FORMAT}

    task_ids = [start_image_import(ec2_a, files[fmt], fmt)["ImportTaskId"] for fmt in QEMU_FORMAT]
    tasks = [wait_import_image(ec2_a, t) for t in task_ids]
    report = usage_report(kiln)

    snapshot_ids = [t["SnapshotDetails"][0]["SnapshotId"] for t in tasks]
    image_ids = [t["ImageId"] for t in tasks]
    assert [byte_triple(line) for line in usage_of(report, "Snapshots", snapshot_ids)] == [(stored, 0, stored)] * 5
    assert [byte_triple(line) for line in usage_of(report, "Images", image_ids)] == [(stored, 0, stored)] * 5


# --------------------------------------------------------------------------
# ImportSnapshot
# --------------------------------------------------------------------------


def test_import_snapshot_raw_completes_with_the_disk_blocks(ec2_a, ebs_a, disks):
    started = ec2_a.import_snapshot(
        DiskContainer={"Url": f"file://{disks.raw}", "Format": "RAW"}, Description="import-export compat"
    )
    task = wait_import_snapshot(ec2_a, started["ImportTaskId"])

    assert started["ImportTaskId"].startswith("import-snap-")
    assert task["SnapshotTaskDetail"]["Status"] == "completed", task
    snapshot_id = task["SnapshotTaskDetail"]["SnapshotId"]
    snapshot = ec2_a.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
    assert (snapshot["State"], snapshot["VolumeSize"]) == ("completed", 1)
    listed = ebs_a.list_snapshot_blocks(SnapshotId=snapshot_id)["Blocks"]
    got = {
        b["BlockIndex"]: ebs_a.get_snapshot_block(
            SnapshotId=snapshot_id, BlockIndex=b["BlockIndex"], BlockToken=b["BlockToken"]
        )["BlockData"].read()
        for b in listed
    }
    padded = disks.content.ljust(-(-len(disks.content) // BLOCK) * BLOCK, b"\0")
    want = {
        i: padded[i * BLOCK : (i + 1) * BLOCK]
        for i in range(len(padded) // BLOCK)
        if padded[i * BLOCK : (i + 1) * BLOCK] != ZERO_BLOCK
    }
    assert got == want


def test_import_snapshot_vhdx_completes_and_registers_no_image(ec2_a, disks):
    started = ec2_a.import_snapshot(DiskContainer={"Url": f"file://{disks.files['vhdx']}", "Format": "vhdx"})
    task = wait_import_snapshot(ec2_a, started["ImportTaskId"])

    assert task["SnapshotTaskDetail"]["Status"] == "completed", task
    assert "ImageId" not in task
    assert images_named(ec2_a, started["ImportTaskId"]) == []


def test_import_snapshot_http_loopback_url_completes(ec2_a, loopback_http, disks):
    directory, base = loopback_http
    (directory / "served.qcow2").write_bytes(disks.files["qcow2"].read_bytes())

    started = ec2_a.import_snapshot(DiskContainer={"Url": f"{base}/served.qcow2", "Format": "qcow2"})
    task = wait_import_snapshot(ec2_a, started["ImportTaskId"])

    assert task["SnapshotTaskDetail"]["Status"] == "completed", task


# --------------------------------------------------------------------------
# failing imports: deleted, ClientError, nothing registered, no block left
# --------------------------------------------------------------------------


def _truncated(fmt):
    def make(directory: Path, content: bytes) -> tuple[Path, str | None]:
        return truncate_half(write_disk(directory, content, fmt)), fmt
    return make


def _declared_as(fmt, declared):
    def make(directory: Path, content: bytes) -> tuple[Path, str | None]:
        return write_disk(directory, content, fmt), declared
    return make


def _missing(directory: Path, content: bytes) -> tuple[Path, str | None]:
    return directory / "does-not-exist.qcow2", "qcow2"


def _unsupported_vdi(directory: Path, content: bytes) -> tuple[Path, str | None]:
    raw = write_disk(directory, content, "raw")
    out = directory / "disk.vdi"
    qemu_img("convert", "-f", "raw", "-O", "vdi", str(raw), str(out))
    return out, None


BAD_DISKS = {
    "truncated-qcow2": _truncated("qcow2"),
    "truncated-vmdk": _truncated("vmdk"),
    "truncated-vhd": _truncated("vhd"),
    "truncated-vhdx": _truncated("vhdx"),
    "qcow2-declared-vmdk": _declared_as("qcow2", "vmdk"),
    "qcow2-declared-raw": _declared_as("qcow2", "raw"),
    "vhdx-declared-vhd": _declared_as("vhdx", "vhd"),
    "missing-file": _missing,
    "unsupported-vdi": _unsupported_vdi,
}
BAD_SEED = {case: n for n, case in enumerate(BAD_DISKS)}


@pytest.mark.parametrize("case", list(BAD_DISKS))
def test_import_image_bad_disk_ends_deleted_with_client_error(ec2_a, tmp_path, case):
    path, declared = BAD_DISKS[case](tmp_path, make_disk(3000 + BAD_SEED[case], "RRZR", 8192))

    started = start_image_import(ec2_a, path, declared)
    task = wait_import_image(ec2_a, started["ImportTaskId"])

    assert started["Status"] == "active"
    assert task["Status"] == "deleted", task
    assert task.get("StatusMessage", "").startswith("ClientError:"), task


@pytest.mark.parametrize("case", list(BAD_DISKS))
def test_import_image_bad_disk_registers_no_image(ec2_a, tmp_path, case):
    path, declared = BAD_DISKS[case](tmp_path, make_disk(3100 + BAD_SEED[case], "RRZR", 8192))

    task = import_image(ec2_a, path, declared)

    assert task["Status"] == "deleted", task
    assert "ImageId" not in task
    assert images_named(ec2_a, task["ImportTaskId"]) == []


@pytest.mark.parametrize("case", list(BAD_DISKS))
def test_import_image_bad_disk_leaves_no_block_after_gc(kiln, ec2_a, tmp_path, case):
    content = make_disk(3200 + BAD_SEED[case], "RRZRR", 8192)
    path, declared = BAD_DISKS[case](tmp_path, content)
    before = block_files(kiln.data_dir)

    task = import_image(ec2_a, path, declared)

    assert task["Status"] == "deleted", task
    assert wait_new_blocks_gone(kiln.data_dir, before) == set()
    assert block_hashes(content) & set(block_files(kiln.data_dir)) == set()


def test_import_snapshot_truncated_qcow2_ends_deleted_with_client_error(ec2_a, tmp_path):
    path = truncate_half(write_disk(tmp_path, make_disk(3300, "RRR"), "qcow2"))

    started = ec2_a.import_snapshot(DiskContainer={"Url": f"file://{path}", "Format": "qcow2"})
    detail = wait_import_snapshot(ec2_a, started["ImportTaskId"])["SnapshotTaskDetail"]

    assert detail["Status"] == "deleted", detail
    assert detail.get("StatusMessage", "").startswith("ClientError:"), detail


def test_import_image_unsupported_format_parameter_fails_invalid_parameter_value(ec2_a, disks):
    with pytest.raises(ClientError) as exc:
        start_image_import(ec2_a, disks.files["qcow2"], "vdi")

    assert error_code(exc) == "InvalidParameterValue"


# Disk files must not make Kiln read other files of its host into a snapshot.


def test_import_image_qcow2_with_host_backing_file_does_not_import_host_file(kiln, ec2_a, tmp_path):
    secret = tmp_path / "host-secret.raw"
    secret_content = make_disk(3400, "RR")
    secret.write_bytes(secret_content)
    overlay = tmp_path / "overlay.qcow2"
    qemu_img("create", "-f", "qcow2", "-b", str(secret), "-F", "raw", str(overlay), "1M")

    task = import_image(ec2_a, overlay, "qcow2")

    assert task["Status"] == "deleted", task
    assert task.get("StatusMessage", "").startswith("ClientError:"), task
    assert poll(
        lambda: block_hashes(secret_content) & set(block_files(kiln.data_dir)), lambda s: not s, GC_TIMEOUT_S, 0.5
    ) == set()


def test_import_image_vmdk_descriptor_with_host_extent_does_not_import_host_file(kiln, ec2_a, tmp_path):
    secret = tmp_path / "host-secret.raw"
    secret_content = make_disk(3500, "RR")
    secret.write_bytes(secret_content)
    descriptor = tmp_path / "descriptor.vmdk"
    descriptor.write_text(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        'createType="monolithicFlat"\n\n'
        f'RW {len(secret_content) // 512} FLAT "{secret}" 0\n\n'
        'ddb.virtualHWVersion = "4"\nddb.adapterType = "ide"\n'
    )

    task = import_image(ec2_a, descriptor, "vmdk")

    assert task["Status"] == "deleted", task
    assert task.get("StatusMessage", "").startswith("ClientError:"), task
    assert poll(
        lambda: block_hashes(secret_content) & set(block_files(kiln.data_dir)), lambda s: not s, GC_TIMEOUT_S, 0.5
    ) == set()


# --------------------------------------------------------------------------
# CancelImportTask
# --------------------------------------------------------------------------


@pytest.fixture
def large_raw(tmp_path) -> Path:
    """256 MiB of random data: long enough to cancel its import midway."""
    path = tmp_path / "large.raw"
    with open(path, "wb") as f:
        for _ in range(16):
            f.write(os.urandom(16 << 20))
    return path


def test_cancel_import_task_active_import_returns_deleting(ec2_a, large_raw):
    task_id = start_image_import(ec2_a, large_raw, "raw")["ImportTaskId"]

    cancelled = ec2_a.cancel_import_task(ImportTaskId=task_id)

    assert (cancelled["ImportTaskId"], cancelled["State"]) == (task_id, "deleting")
    assert wait_import_image(ec2_a, task_id)["Status"] == "deleted"


def test_cancel_import_task_active_import_registers_nothing_and_leaves_no_block(kiln, ec2_a, large_raw):
    before = block_files(kiln.data_dir)
    task_id = start_image_import(ec2_a, large_raw, "raw")["ImportTaskId"]

    ec2_a.cancel_import_task(ImportTaskId=task_id)
    task = wait_import_image(ec2_a, task_id)

    assert task["Status"] == "deleted", task
    assert "ImageId" not in task
    assert images_named(ec2_a, task_id) == []
    assert wait_new_blocks_gone(kiln.data_dir, before) == set()


# --------------------------------------------------------------------------
# ExportImage
# --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["VMDK", "VHD", "RAW"])
def test_export_image_each_format_file_compares_equal_to_source(kiln, ec2_a, disks, imported, fmt):
    bucket, prefix = "kiln-compat-exports", unique("exp") + "/"

    started = ec2_a.export_image(
        ImageId=imported["ImageId"], DiskImageFormat=fmt, S3ExportLocation={"S3Bucket": bucket, "S3Prefix": prefix}
    )
    task_id = started["ExportImageTaskId"]
    task = poll(lambda: export_task(ec2_a, task_id), lambda t: t["Status"] in FINAL, EXPORT_TIMEOUT_S)
    out = kiln.data_dir / "exports" / bucket / f"{prefix}{task_id}.{EXPORT_EXTENSION[fmt]}"

    assert task["Status"] == "completed", task
    assert out.is_file(), sorted(str(p) for p in (kiln.data_dir / "exports").rglob("*"))
    compared = qemu_compare(disks.raw, out, {"VMDK": "vmdk", "VHD": "vpc", "RAW": "raw"}[fmt])
    assert compared.returncode == 0, compared.stdout + compared.stderr
    out.unlink()


def test_export_image_returns_task_id_and_location(ec2_a, imported):
    location = {"S3Bucket": "kiln-compat-exports", "S3Prefix": unique("loc") + "/"}

    started = ec2_a.export_image(ImageId=imported["ImageId"], DiskImageFormat="VHD", S3ExportLocation=location)

    assert started["ExportImageTaskId"].startswith("export-ami-")
    assert (started["ImageId"], started["DiskImageFormat"]) == (imported["ImageId"], "VHD")
    assert started["S3ExportLocation"] == location


# --------------------------------------------------------------------------
# the kiln image CLI
# --------------------------------------------------------------------------


def test_cli_image_import_with_name_prints_image_id_describe_shows_name(kiln, ec2_a, describe_image, disks):
    name = unique("cli-import")

    out = kiln_ok(kiln, "image", "import", str(disks.files["vhdx"]), "--name", name, "--endpoint", kiln.url)

    image_id = out.strip()
    assert IMAGE_ID.fullmatch(image_id), out
    image = describe_image(image_id)
    assert (image["Name"], image["State"]) == (name, "available")
    assert images_named(ec2_a, name) == [image_id]


def test_cli_image_export_vmdk_compares_equal_to_source(kiln, disks, imported, tmp_path):
    out = tmp_path / "cli.vmdk"

    cli_export(kiln, imported["ImageId"], out, "vmdk")

    compared = qemu_compare(disks.raw, out, "vmdk")
    assert compared.returncode == 0, compared.stdout + compared.stderr


def test_cli_image_export_vhd_compares_equal_to_source(kiln, disks, imported, tmp_path):
    out = tmp_path / "cli.vhd"

    cli_export(kiln, imported["ImageId"], out, "vhd")

    compared = qemu_compare(disks.raw, out, "vpc")
    assert compared.returncode == 0, compared.stdout + compared.stderr


def test_cli_image_import_corrupt_file_exits_nonzero_and_registers_nothing(kiln, ec2_a, tmp_path):
    path = truncate_half(write_disk(tmp_path, make_disk(3600, "RRR"), "qcow2"))
    name = unique("cli-corrupt")

    proc = kiln_run(kiln, "image", "import", str(path), "--name", name, "--endpoint", kiln.url)

    assert proc.returncode != 0, proc.stdout
    assert images_named(ec2_a, name) == []


# --------------------------------------------------------------------------
# storage accounting
# --------------------------------------------------------------------------


def test_usage_image_of_unique_import_reports_all_bytes_unique(kiln, ec2_a, tmp_path):
    content = make_disk(4000, "RZRDR", 1000)
    task = import_image(ec2_a, write_disk(tmp_path, content, "qcow2"), "qcow2")

    line = image_usage(kiln, task["ImageId"])

    stored = len(block_hashes(content)) * BLOCK
    assert (line["ResourceId"], line["Region"], line["LogicalBytes"]) == (task["ImageId"], PRIMARY, GIB)
    assert byte_triple(line) == (stored, stored, 0)


def test_copy_image_same_region_source_usage_shows_shared_bytes(kiln, ec2_a, tmp_path):
    content = make_disk(4100, "RRZR")
    stored = len(block_hashes(content)) * BLOCK
    source = import_image(ec2_a, write_disk(tmp_path, content, "raw"), "raw")["ImageId"]
    alone = image_usage(kiln, source)

    copy_id = ec2_a.copy_image(SourceImageId=source, SourceRegion=PRIMARY, Name=unique("copy"))["ImageId"]
    copied = wait_image_state(ec2_a, copy_id)
    shared = image_usage(kiln, source)

    assert copied["State"] == "available"
    assert byte_triple(alone) == (stored, stored, 0)
    assert byte_triple(shared) == (stored, 0, stored)
    assert byte_triple(image_usage(kiln, copy_id)) == (stored, 0, stored)


def test_copy_image_same_region_stores_no_new_block(kiln, ec2_a, tmp_path):
    source = import_image(ec2_a, write_disk(tmp_path, make_disk(4200, "RZR"), "raw"), "raw")["ImageId"]
    before = block_files(kiln.data_dir)

    copy_id = ec2_a.copy_image(SourceImageId=source, SourceRegion=PRIMARY, Name=unique("copy"))["ImageId"]
    copied = wait_image_state(ec2_a, copy_id)

    assert copied["State"] == "available"
    assert set(block_files(kiln.data_dir)) - set(before) == set()


def test_copy_image_other_region_stores_no_new_block_and_shares(kiln, ec2_a, ec2_a_west, tmp_path):
    content = make_disk(4300, "RRR")
    stored = len(block_hashes(content)) * BLOCK
    source = import_image(ec2_a, write_disk(tmp_path, content, "raw"), "raw")["ImageId"]
    before = block_files(kiln.data_dir)

    copy_id = ec2_a_west.copy_image(SourceImageId=source, SourceRegion=PRIMARY, Name=unique("xcopy"))["ImageId"]
    copied = wait_image_state(ec2_a_west, copy_id)
    line = image_usage(kiln, copy_id)

    assert copied["State"] == "available"
    assert set(block_files(kiln.data_dir)) - set(before) == set()
    assert (line["Region"], *byte_triple(line)) == (SECONDARY, stored, 0, stored)


def test_deregister_image_with_snapshots_store_shrinks_by_reported_unique_bytes(kiln, ec2_a, tmp_path):
    content = make_disk(4400, "RRZRDRR", 3000)
    mine = block_hashes(content)
    task = import_image(ec2_a, write_disk(tmp_path, content, "vmdk"), "vmdk")
    before = wait_blocks_stable(kiln.data_dir)
    unique_bytes = image_usage(kiln, task["ImageId"])["UniqueBytes"]

    ec2_a.deregister_image(ImageId=task["ImageId"], DeleteAssociatedSnapshots=True)
    poll(lambda: mine & set(block_files(kiln.data_dir)), lambda left: not left, GC_TIMEOUT_S, 0.5)
    after = wait_blocks_stable(kiln.data_dir)

    assert task["Status"] == "completed", task
    assert unique_bytes == len(mine) * BLOCK
    assert set(before) - set(after) == mine
    assert sum(before.values()) - sum(after.values()) == unique_bytes


def test_deregister_image_with_snapshots_shared_blocks_stay(kiln, ec2_a, tmp_path):
    content = make_disk(4500, "RRR")
    path = write_disk(tmp_path, content, "raw")
    doomed = import_image(ec2_a, path, "raw")
    keeper = import_image(ec2_a, path, "raw")

    ec2_a.deregister_image(ImageId=doomed["ImageId"], DeleteAssociatedSnapshots=True)
    time.sleep(STABLE_QUIET_S)  # at least one collector run

    assert keeper["Status"] == "completed", keeper
    assert block_hashes(content) <= set(block_files(kiln.data_dir))
    assert byte_triple(image_usage(kiln, keeper["ImageId"])) == (len(block_hashes(content)) * BLOCK,) * 2 + (0,)


def test_usage_report_price_per_gb_month_prices_referenced_bytes(kiln):
    report = usage_report(kiln, "--price-per-gb-month", "0.1")

    assert report["PricePerGbMonth"] == 0.1
    assert report["Totals"] != []
    assert [round(t["MonthlyCost"], 9) for t in report["Totals"]] == [
        round(t["ReferencedBytes"] / 1e9 * 0.1, 9) for t in report["Totals"]
    ]


def test_usage_report_account_filter_lists_only_that_account(kiln, account_a):
    report = usage_report(kiln, "--account", account_a.account_id)

    owners = {line["OwnerId"] for kind in ("Snapshots", "Images", "Totals") for line in report[kind]}
    assert owners == {account_a.account_id}


def test_usage_report_lines_have_every_field_and_consistent_bytes(kiln):
    report = usage_report(kiln)

    lines = report["Snapshots"] + report["Images"]
    fields = {"ResourceId", "OwnerId", "Region", "LogicalBytes", "ReferencedBytes", "UniqueBytes", "SharedBytes"}
    assert lines != []
    assert [sorted(line) for line in lines] == [sorted(fields)] * len(lines)
    assert [line["UniqueBytes"] + line["SharedBytes"] - line["ReferencedBytes"] for line in lines] == [0] * len(lines)


def test_usage_image_json_flag_after_image_id_prints_json(kiln, imported):
    out = kiln_ok(kiln, "usage", "image", imported["ImageId"], "--json", timeout=60)

    assert json.loads(out)["ResourceId"] == imported["ImageId"]
