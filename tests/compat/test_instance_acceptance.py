"""End-to-end acceptance of instances: real QEMU (TCG) guests booted from the `kiln-tiny`
image that `kiln quickstart` registers, observed only through the EC2 API (above all
GetConsoleOutput) and, for the restart cases, the host's process table.

The tiny guest's init prints `KILN-TINY-BOOTED instance=<id> boot=<n>` (n counts boots of
its root volume), runs the user data once per instance between `KILN-TINY-USER-DATA-BEGIN`
and `KILN-TINY-USER-DATA-END status=<rc>`, runs /etc/kiln/every-boot.sh at every boot,
syncs and prints `KILN-TINY-READY`; the ACPI power button powers it off cleanly.

Covered: the image loop (launch -> write -> CreateImage -> launch from it -> stop/start ->
terminate), CreateImage with NoReboot, volume hot-plug / snapshot / restore / detach with
data checked inside guests, and a Kiln restart that adopts a running guest (its own server,
so that the session server is never stopped), plus a guest whose QEMU dies under Kiln.

Helpers below may loop; the tests themselves do not branch. Every instance a test launches
is terminated by the `launched` fixture's teardown, whatever the test's outcome.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from compat_helpers import PRIMARY, STARTUP_TIMEOUT_S, error_code, unique
from conftest import REPO_ROOT, kill_guests

POLL_S = 0.5
BOOT_TIMEOUT_S = 120.0
STATE_TIMEOUT_S = 90.0
FAST_WAITER = {"Delay": 1, "MaxAttempts": 120}
BOOTED = "KILN-TINY-BOOTED"
READY = "KILN-TINY-READY"
# The user data of volume tests waits this long (seconds) for a hot-plugged disk.
DEVICE_WAIT_S = 120


# --------------------------------------------------------------------------
# helpers (no fixtures)
# --------------------------------------------------------------------------


def tiny_image(ec2) -> str:
    """The id of the public kiln-tiny machine image of owner alias `kiln`."""
    images = ec2.describe_images(
        Owners=["kiln"],
        Filters=[
            {"Name": "name", "Values": ["kiln-tiny-*"]},
            {"Name": "image-type", "Values": ["machine"]},
        ],
    )["Images"]
    assert len(images) == 1, [(i["ImageId"], i["Name"]) for i in images]
    return images[0]["ImageId"]


def describe_instance(ec2, instance_id: str) -> dict:
    reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    found = [i for r in reservations for i in r["Instances"]]
    assert [i["InstanceId"] for i in found] == [instance_id]
    return found[0]


def root_volume(instance: dict) -> str:
    """Volume id of the instance's root device."""
    roots = [
        m["Ebs"]["VolumeId"]
        for m in instance["BlockDeviceMappings"]
        if m["DeviceName"] == instance["RootDeviceName"]
    ]
    assert len(roots) == 1, instance["BlockDeviceMappings"]
    return roots[0]


def console(ec2, instance_id: str) -> str:
    """The decoded serial console (boto3 decodes GetConsoleOutput's base64)."""
    return ec2.get_console_output(InstanceId=instance_id).get("Output") or ""


def boots(text: str, instance_id: str) -> list:
    """The boot numbers the guest printed, in order."""
    return [int(n) for n in re.findall(rf"{BOOTED} instance={instance_id} boot=(\d+)\r?\n", text)]


def wait_console(ec2, instance_id: str, done, what: str, timeout: float = BOOT_TIMEOUT_S) -> str:
    """Polls GetConsoleOutput until `done(text)` holds; returns the text."""
    deadline = time.monotonic() + timeout
    text = console(ec2, instance_id)
    while not done(text) and time.monotonic() < deadline:
        time.sleep(POLL_S)
        text = console(ec2, instance_id)
    assert done(text), (
        f"{instance_id}: console did not show {what} within {timeout:.0f} s; "
        f"state {describe_instance(ec2, instance_id)['State']['Name']}; console tail:\n{text[-3000:]}"
    )
    return text


def wait_lines(ec2, instance_id: str, *needles: str, count: int = 1, timeout: float = BOOT_TIMEOUT_S) -> str:
    """Waits until every needle occurs at least `count` times on the console."""
    return wait_console(
        ec2, instance_id, lambda t: all(t.count(n) >= count for n in needles),
        f"{needles} x{count}", timeout,
    )


def wait_state(ec2, instance_id: str, want: str, timeout: float = STATE_TIMEOUT_S) -> dict:
    """Polls DescribeInstances until the instance is in state `want`; returns it."""
    deadline = time.monotonic() + timeout
    instance = describe_instance(ec2, instance_id)
    while instance["State"]["Name"] != want and time.monotonic() < deadline:
        time.sleep(POLL_S)
        instance = describe_instance(ec2, instance_id)
    assert instance["State"]["Name"] == want, (
        f"{instance_id} is {instance['State']['Name']} (reason {instance.get('StateReason')}), "
        f"not {want}, after {timeout:.0f} s"
    )
    return instance


def wait_volume_state(ec2, volume_id: str, want: str, timeout: float = STATE_TIMEOUT_S) -> dict:
    deadline = time.monotonic() + timeout
    volume = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    while volume["State"] != want and time.monotonic() < deadline:
        time.sleep(POLL_S)
        volume = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    assert volume["State"] == want, volume
    return volume


def wait_attachment(ec2, volume_id: str, want: str, timeout: float = STATE_TIMEOUT_S) -> dict:
    """Polls until the volume's one attachment is in state `want`; returns the volume."""
    deadline = time.monotonic() + timeout

    def state_of(volume):
        return [a["State"] for a in volume.get("Attachments", [])]

    volume = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    while state_of(volume) != [want] and time.monotonic() < deadline:
        time.sleep(POLL_S)
        volume = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    assert state_of(volume) == [want], volume
    return volume


def volume_missing_code(ec2, volume_id: str) -> str:
    """The error code DescribeVolumes of that one id fails with ('' if it succeeds)."""
    try:
        ec2.describe_volumes(VolumeIds=[volume_id])
    except ClientError as e:
        return e.response["Error"]["Code"]
    return ""


def image_root_snapshot(image: dict) -> str:
    roots = [
        m["Ebs"]["SnapshotId"]
        for m in image["BlockDeviceMappings"]
        if m["DeviceName"] == image["RootDeviceName"]
    ]
    assert len(roots) == 1, image["BlockDeviceMappings"]
    return roots[0]


def wait_disk_script(body: str) -> str:
    """Shell that waits for the block device /dev/vdb (hot-plugged), then runs `body`
    (or prints `vdb-missing`)."""
    return (
        f"i=0\n"
        f"while [ ! -b /dev/vdb ] && [ $i -lt {DEVICE_WAIT_S} ]; do sleep 1; i=$((i+1)); done\n"
        f"if [ -b /dev/vdb ]; then\n{body}\nelse\necho vdb-missing\nfi\n"
    )


def qemu_pids(instance_id: str) -> list:
    """Live (not zombie) QEMU processes whose command line names the instance."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        zombie = stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")
        if cmdline.startswith("qemu-system") and instance_id in cmdline and not zombie:
            pids.append(int(entry.name))
    return pids


def wait_no_qemu(instance_id: str, timeout: float = 30.0) -> list:
    deadline = time.monotonic() + timeout
    pids = qemu_pids(instance_id)
    while pids and time.monotonic() < deadline:
        time.sleep(POLL_S)
        pids = qemu_pids(instance_id)
    return pids


def ticks(text: str) -> list:
    """(tick, line count) pairs the restart guest printed."""
    return [(int(a), int(b)) for a, b in re.findall(r"tick (\d+) lines=(\d+)\r?\n", text)]


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------


class Launcher:
    """Launches tiny instances and remembers them for termination at teardown."""

    def __init__(self, ec2):
        self.ec2 = ec2
        self.instance_ids = []

    def __call__(self, image_id: str, user_data: str | None = None, **kwargs) -> str:
        params = {"ImageId": image_id, "MinCount": 1, "MaxCount": 1, "InstanceType": "t3.micro"}
        if user_data is not None:
            params["UserData"] = user_data  # boto3 base64-encodes it
        params.update(kwargs)
        instance_id = self.ec2.run_instances(**params)["Instances"][0]["InstanceId"]
        self.instance_ids.append(instance_id)
        return instance_id

    def terminate_all(self):
        for instance_id in self.instance_ids:
            try:
                self.ec2.terminate_instances(InstanceIds=[instance_id])
            except ClientError:
                pass
        for instance_id in self.instance_ids:
            try:
                wait_state(self.ec2, instance_id, "terminated", timeout=60)
            except (AssertionError, ClientError):
                pass


@pytest.fixture
def launched(ec2_a):
    """launched(image_id, user_data=None, **RunInstances kwargs) -> instance id; every
    instance launched is terminated at teardown."""
    launcher = Launcher(ec2_a)
    try:
        yield launcher
    finally:
        launcher.terminate_all()


@pytest.fixture(scope="module")
def tiny(ec2_a) -> str:
    return tiny_image(ec2_a)


@pytest.fixture
def cleanup(ec2_a):
    """Images, snapshots and volumes a test registers here are removed at teardown."""
    made = {"images": [], "snapshots": [], "volumes": []}
    try:
        yield made
    finally:
        for image_id in made["images"]:
            try:
                ec2_a.deregister_image(ImageId=image_id)
            except ClientError:
                pass
        for volume_id in made["volumes"]:
            try:
                wait_volume_state(ec2_a, volume_id, "available", timeout=60)
                ec2_a.delete_volume(VolumeId=volume_id)
            except (AssertionError, ClientError):
                pass
        for snapshot_id in made["snapshots"]:
            try:
                ec2_a.delete_snapshot(SnapshotId=snapshot_id)
            except ClientError:
                pass


# --------------------------------------------------------------------------
# 1. the image loop
# --------------------------------------------------------------------------


def test_create_image_from_written_instance_launches_instance_with_file_across_restarts(
    ec2_a, tiny, cleanup, launched
):
    content = unique("kiln-acceptance")
    first_script = (
        f"echo {content} > /acceptance.txt\n"
        "mkdir -p /etc/kiln\n"
        "echo 'echo \"every-boot: $(cat /acceptance.txt)\"' > /etc/kiln/every-boot.sh\n"
        "sync\n"
        f"echo first-instance-wrote-{content}\n"
    )
    first = launched(tiny, first_script)
    wait_state(ec2_a, first, "running", timeout=30)
    text = wait_lines(ec2_a, first, READY)
    assert boots(text, first) == [1]
    assert f"first-instance-wrote-{content}" in text
    assert "KILN-TINY-USER-DATA-END status=0" in text
    assert f"every-boot: {content}" in text

    image_id = ec2_a.create_image(InstanceId=first, Name=unique("acceptance-image"))["ImageId"]
    cleanup["images"].append(image_id)
    assert ec2_a.describe_images(ImageIds=[image_id])["Images"][0]["State"] == "pending"
    ec2_a.get_waiter("image_available").wait(ImageIds=[image_id], WaiterConfig=FAST_WAITER)

    image = ec2_a.describe_images(ImageIds=[image_id])["Images"][0]
    snapshot_id = image_root_snapshot(image)
    cleanup["snapshots"].append(snapshot_id)
    snapshot = ec2_a.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
    assert first in snapshot["Description"], snapshot
    assert snapshot["State"] == "completed"
    # CreateImage without NoReboot rebooted the instance (one more boot of its root volume).
    text = wait_console(ec2_a, first, lambda t: boots(t, first) == [1, 2] and t.count(READY) == 2,
                        "the reboot of CreateImage")
    assert describe_instance(ec2_a, first)["State"]["Name"] == "running"

    second = launched(image_id, 'echo "second-instance-read: $(cat /acceptance.txt)"\n')
    wait_state(ec2_a, second, "running", timeout=30)
    text = wait_lines(ec2_a, second, READY)
    assert f"second-instance-read: {content}" in text
    assert f"every-boot: {content}" in text
    # The image holds the root volume as it was after one boot, before the reboot.
    assert boots(text, second) == [2]

    ec2_a.stop_instances(InstanceIds=[second])
    wait_state(ec2_a, second, "stopped")
    ec2_a.start_instances(InstanceIds=[second])
    wait_state(ec2_a, second, "running", timeout=30)
    text = wait_lines(ec2_a, second, READY, count=2)
    assert boots(text, second) == [2, 3]
    assert text.count(f"every-boot: {content}") == 2
    assert text.count("second-instance-read:") == 1  # user data runs once per instance

    described = [describe_instance(ec2_a, i) for i in (first, second)]
    assert [
        [m["Ebs"]["DeleteOnTermination"] for m in i["BlockDeviceMappings"]] for i in described
    ] == [[True], [True]]
    roots = [root_volume(i) for i in described]
    ec2_a.terminate_instances(InstanceIds=[first, second])
    ec2_a.get_waiter("instance_terminated").wait(InstanceIds=[first, second], WaiterConfig=FAST_WAITER)

    assert [volume_missing_code(ec2_a, v) for v in roots] == ["InvalidVolume.NotFound"] * 2


# --------------------------------------------------------------------------
# 2. CreateImage NoReboot
# --------------------------------------------------------------------------


def test_create_image_no_reboot_running_instance_keeps_running_and_image_has_file(
    ec2_a, tiny, cleanup, launched
):
    content = unique("kiln-noreboot")
    writer = launched(tiny, f"echo {content} > /noreboot.txt\nsync\necho noreboot-written\n")
    text = wait_lines(ec2_a, writer, READY, "noreboot-written")
    assert boots(text, writer) == [1]

    image_id = ec2_a.create_image(
        InstanceId=writer, Name=unique("noreboot-image"), NoReboot=True
    )["ImageId"]
    cleanup["images"].append(image_id)
    ec2_a.get_waiter("image_available").wait(ImageIds=[image_id], WaiterConfig=FAST_WAITER)
    cleanup["snapshots"].append(
        image_root_snapshot(ec2_a.describe_images(ImageIds=[image_id])["Images"][0])
    )

    reader = launched(image_id, 'echo "noreboot-read: $(cat /noreboot.txt)"\n')
    text = wait_lines(ec2_a, reader, READY)
    assert f"noreboot-read: {content}" in text

    writer_console = console(ec2_a, writer)
    assert (boots(writer_console, writer), writer_console.count(READY)) == ([1], 1)
    assert "powering off" not in writer_console
    assert describe_instance(ec2_a, writer)["State"]["Name"] == "running"


# --------------------------------------------------------------------------
# 3. volumes
# --------------------------------------------------------------------------


def test_attach_volume_running_instance_data_reaches_restored_volume_on_other_instance(
    ec2_a, tiny, cleanup, launched
):
    marker = unique("kiln-vol-marker")
    writer_script = wait_disk_script(
        f"printf '%s' {marker} | dd of=/dev/vdb conv=fsync 2>/dev/null\n"
        "sync\n"
        "echo volume-write-done\n"
        # then wait until the volume is unplugged again (DetachVolume)
        f"i=0\nwhile [ -b /dev/vdb ] && [ $i -lt {DEVICE_WAIT_S} ]; do sleep 1; i=$((i+1)); done\n"
        "[ -b /dev/vdb ] || echo volume-gone"
    )
    reader_script = wait_disk_script(
        f'echo "restored-read: $(dd if=/dev/vdb bs={len(marker)} count=1 2>/dev/null)"'
    )
    writer = launched(tiny, writer_script)
    reader = launched(tiny, reader_script)
    zone = wait_state(ec2_a, writer, "running", timeout=30)["Placement"]["AvailabilityZone"]

    volume_id = ec2_a.create_volume(AvailabilityZone=zone, Size=1)["VolumeId"]
    cleanup["volumes"].append(volume_id)
    ec2_a.get_waiter("volume_available").wait(VolumeIds=[volume_id], WaiterConfig=FAST_WAITER)
    attached = ec2_a.attach_volume(VolumeId=volume_id, InstanceId=writer, Device="/dev/sdf")
    assert (attached["State"], attached["Device"]) == ("attaching", "/dev/sdf")
    wait_attachment(ec2_a, volume_id, "attached")
    text = wait_console(ec2_a, writer, lambda t: "volume-write-done" in t or "vdb-missing" in t,
                        "the volume write")
    assert "volume-write-done" in text

    snapshot_id = ec2_a.create_snapshot(VolumeId=volume_id, Description=marker)["SnapshotId"]
    cleanup["snapshots"].append(snapshot_id)
    ec2_a.get_waiter("snapshot_completed").wait(SnapshotIds=[snapshot_id], WaiterConfig=FAST_WAITER)

    detached = ec2_a.detach_volume(VolumeId=volume_id)
    assert (detached["State"], detached["InstanceId"]) == ("detaching", writer)
    volume = wait_volume_state(ec2_a, volume_id, "available")
    assert volume.get("Attachments", []) == []
    assert "/dev/sdf" not in [
        m["DeviceName"] for m in describe_instance(ec2_a, writer)["BlockDeviceMappings"]
    ]
    wait_lines(ec2_a, writer, "volume-gone", timeout=30)

    restored = ec2_a.create_volume(AvailabilityZone=zone, SnapshotId=snapshot_id)["VolumeId"]
    cleanup["volumes"].append(restored)
    ec2_a.get_waiter("volume_available").wait(VolumeIds=[restored], WaiterConfig=FAST_WAITER)
    wait_state(ec2_a, reader, "running", timeout=30)
    ec2_a.attach_volume(VolumeId=restored, InstanceId=reader, Device="/dev/sdf")
    wait_attachment(ec2_a, restored, "attached")
    text = wait_lines(ec2_a, reader, "KILN-TINY-USER-DATA-END")
    assert f"restored-read: {marker}" in text


# --------------------------------------------------------------------------
# 4. a restarted Kiln adopts its guests (a server of its own)
# --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class OwnServer:
    """A `kiln serve` of this module only, which tests may stop and start again."""

    binary: Path
    data_dir: Path
    log_dir: Path
    port: int
    proc: subprocess.Popen | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, limit: int = 4000) -> str:
        return "".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-limit:]}\n"
            for p in sorted(self.log_dir.glob("serve-*.log"))
        )

    def start(self):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        log = open(self.log_dir / f"serve-{self.starts}.log", "wb")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        self.proc = subprocess.Popen(
            [
                str(self.binary), "serve",
                "--listen", f"127.0.0.1:{self.port}",
                "--data-dir", str(self.data_dir),
                "--regions", PRIMARY,
                "--accelerator", "tcg",
                "--stop-timeout", "20",
            ],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )
        log.close()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not (_port_open(self.port) and (self.data_dir / "credentials").exists()):
            assert self.proc.poll() is None, f"kiln serve exited {self.proc.returncode}\n{self.log_tail()}"
            assert time.monotonic() < deadline, f"kiln serve did not start\n{self.log_tail()}"
            time.sleep(0.05)

    def stop(self, sig=signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signals the server and waits for it to exit; returns its exit status."""
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError(f"kiln serve did not exit on {sig!r}\n{self.log_tail()}")

    def ec2(self):
        creds = configparser.ConfigParser()
        creds.read(self.data_dir / "credentials")
        return boto3.session.Session().client(
            "ec2",
            region_name=PRIMARY,
            endpoint_url=self.url,
            aws_access_key_id=creds["kiln"]["aws_access_key_id"],
            aws_secret_access_key=creds["kiln"]["aws_secret_access_key"],
            config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=30),
        )


@pytest.fixture(scope="module")
def own_server():
    """A kiln server on a short data dir under /tmp (unix socket paths stay < 108 bytes)."""
    binary = Path(os.environ.get("KILN_BIN", REPO_ROOT / "target" / "debug" / "kiln"))
    root = Path(tempfile.mkdtemp(prefix="k", dir="/tmp"))
    data_dir, log_dir = root / "d", root / "l"
    log_dir.mkdir()
    built = subprocess.run(
        [str(binary), "--data-dir", str(data_dir), "quickstart", "--regions", PRIMARY],
        capture_output=True, text=True,
    )
    assert built.returncode == 0, f"kiln quickstart failed:\n{built.stdout}\n{built.stderr}"
    server = OwnServer(binary, data_dir, log_dir, _free_port())
    try:
        server.start()
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.send_signal(signal.SIGTERM)
            try:
                server.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.proc.kill()
                server.proc.wait(timeout=10)
        kill_guests(data_dir)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def own_launched(own_server):
    """Launcher on the module's own server; terminates what it launched (if the server runs)."""
    launcher = Launcher(own_server.ec2())
    try:
        yield launcher
    finally:
        if own_server.proc is not None and own_server.proc.poll() is None:
            launcher.ec2 = own_server.ec2()
            launcher.terminate_all()


TICK_SCRIPT = (
    "echo adopted > /adopt.txt\n"
    "n=0\n"
    "while true; do\n"
    "  n=$((n+1))\n"
    '  echo "line $n" >> /ticks.txt\n'
    "  sync\n"
    '  echo "tick $n lines=$(wc -l < /ticks.txt)" > /dev/console\n'
    "  sleep 1\n"
    "done\n"
)


def test_serve_restart_running_instance_is_adopted_and_keeps_running(own_server, own_launched):
    ec2 = own_server.ec2()
    instance_id = own_launched(tiny_image(ec2), TICK_SCRIPT)
    wait_state(ec2, instance_id, "running", timeout=30)
    wait_console(ec2, instance_id, lambda t: len(ticks(t)) >= 3, "3 ticks")
    [pid] = qemu_pids(instance_id)

    assert own_server.stop(signal.SIGTERM) == 0
    assert qemu_pids(instance_id) == [pid]  # the guest outlives kiln serve
    time.sleep(2)
    own_server.start()
    ec2 = own_server.ec2()

    assert describe_instance(ec2, instance_id)["State"]["Name"] == "running"
    before = ticks(console(ec2, instance_id))
    text = wait_console(ec2, instance_id, lambda t: len(ticks(t)) >= len(before) + 3,
                        "3 ticks after the restart", timeout=60)
    seen = ticks(text)
    # Every tick appended one line to a file on the root volume and synced it.
    assert [lines for _, lines in seen] == [n for n, _ in seen]
    assert [n for n, _ in seen] == list(range(1, len(seen) + 1))
    assert boots(text, instance_id) == [1]  # the same guest, not a new boot
    assert qemu_pids(instance_id) == [pid]

    ec2.terminate_instances(InstanceIds=[instance_id])
    wait_state(ec2, instance_id, "terminated")
    assert wait_no_qemu(instance_id) == []


def test_qemu_killed_running_instance_becomes_stopped_with_server_error(own_server, own_launched):
    ec2 = own_server.ec2()
    instance_id = own_launched(tiny_image(ec2))
    wait_state(ec2, instance_id, "running", timeout=30)
    wait_lines(ec2, instance_id, READY)
    [pid] = qemu_pids(instance_id)

    os.kill(pid, signal.SIGKILL)

    instance = wait_state(ec2, instance_id, "stopped", timeout=30)
    assert instance["StateReason"]["Code"] == "Server.InternalError", instance.get("StateReason")
    assert qemu_pids(instance_id) == []
