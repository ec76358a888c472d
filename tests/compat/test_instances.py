"""Instances: RunInstances, DescribeInstances, DescribeInstanceStatus, Start/Stop/Reboot/
TerminateInstances, GetConsoleOutput, Describe/ModifyInstanceAttribute, tags on i- ids, the
volumes an instance gets at launch, and AttachVolume/DetachVolume on instances.

Instances are real QEMU (TCG) guests of the `kiln-tiny` image. Booting one costs seconds of
CPU, so:
- tests that only read a running guest share `booted` (one boot, module-scoped);
- tests that need an instance record but no guest take one from `fleet.run_stopped`, which
  force-stops the instance right after RunInstances (the guest never gets going);
- every instance launched through `fleet` is force-stopped and terminated at module end
  (tests that end an instance themselves do so too).

Helpers below may loop; the tests themselves do not branch.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import time
from dataclasses import dataclass

import pytest
from botocore.exceptions import ClientError

from compat_helpers import error_code, tags_of, unique

INSTANCE_ID = re.compile(r"^i-[0-9a-f]{17}$")
RESERVATION_ID = re.compile(r"^r-[0-9a-f]{17}$")
FAST_WAITER = {"Delay": 1, "MaxAttempts": 60}
POLL_S = 0.25
ZONE = "us-east-1a"
OTHER_ZONE = "us-east-1b"
UNKNOWN_INSTANCE = "i-0123456789abcdef0"
UNKNOWN_IMAGE = "ami-0123456789abcdef0"
BOOT_MARKER = "KILN-TINY-BOOTED"
READY_MARKER = "KILN-TINY-READY"
# Guests boot in 5-15 s alone; several at once on 2 cores take longer.
BOOT_TIMEOUT_S = 120.0
# The shell computes the marker, so seeing it proves the user data ran (not just echoed).
USER_DATA = "echo compat-user-data-$((6 * 7))\n"
USER_DATA_OUTPUT = "compat-user-data-42"
# Kills the guest's power-button listener (the subshell first, so that it cannot run
# /sbin/kiln-shutdown when its dd dies): the guest then ignores ACPI power-downs.
IGNORE_POWER_BUTTON = (
    "for p in $(pidof dd); do "
    "kill -9 $(sed -n 's/^PPid:[[:space:]]*//p' /proc/$p/status) $p; "
    "done; echo ignoring-power-button\n"
)


# --------------------------------------------------------------------------
# helpers (no fixtures)
# --------------------------------------------------------------------------


def tag_spec(resource_type: str, tags: dict) -> list:
    return [{"ResourceType": resource_type, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]


def instances_of(resp) -> list:
    """Every instance of a DescribeInstances answer, in order."""
    return [i for r in resp["Reservations"] for i in r["Instances"]]


def ids_of(resp) -> list:
    return sorted(i["InstanceId"] for i in instances_of(resp))


def describe(ec2, instance_id: str) -> dict:
    found = instances_of(ec2.describe_instances(InstanceIds=[instance_id]))
    assert [i["InstanceId"] for i in found] == [instance_id]
    return found[0]


def state_of(ec2, instance_id: str) -> str:
    return describe(ec2, instance_id)["State"]["Name"]


def wait_state(ec2, instance_ids: list, want: set, timeout: float = 60.0) -> dict:
    """Polls DescribeInstances until every instance is in one of the `want` states."""
    deadline = time.monotonic() + timeout
    while True:
        found = instances_of(ec2.describe_instances(InstanceIds=list(instance_ids)))
        states = {i["InstanceId"]: i["State"]["Name"] for i in found}
        if set(states.values()) <= want or time.monotonic() > deadline:
            assert set(states.values()) <= want, states
            return states
        time.sleep(POLL_S)


def console(ec2, instance_id: str) -> str:
    return ec2.get_console_output(InstanceId=instance_id).get("Output", "")


def wait_console(ec2, instance_id: str, *texts: str, after: str = "", timeout: float = BOOT_TIMEOUT_S) -> str:
    """Polls GetConsoleOutput until every text appears (after the first `after`, if given)."""
    deadline = time.monotonic() + timeout
    while True:
        out = console(ec2, instance_id)
        tail = out[out.find(after):] if after in out else ""
        if all(t in tail for t in texts) or time.monotonic() > deadline:
            assert all(t in tail for t in texts), (
                f"console of {instance_id} lacks {texts} after {after!r}:\n{out[-3000:]}"
            )
            return out
        time.sleep(0.5)


def volume(ec2, volume_id: str) -> dict:
    vols = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"]
    assert [v["VolumeId"] for v in vols] == [volume_id]
    return vols[0]


def wait_volume(ec2, volume_id: str, state: str, attachment_state: str | None = None,
                timeout: float = 30.0) -> dict:
    """Polls DescribeVolumes until the volume is in `state` (and its attachment in the given one)."""
    deadline = time.monotonic() + timeout
    while True:
        v = volume(ec2, volume_id)
        seen = (v["State"], [a["State"] for a in v.get("Attachments", [])][:1])
        want = (state, [attachment_state] if attachment_state else [])
        if seen == want or time.monotonic() > deadline:
            assert seen == want, v
            return v
        time.sleep(POLL_S)


def new_volume(ec2, zone: str = ZONE, size: int = 1) -> str:
    volume_id = ec2.create_volume(AvailabilityZone=zone, Size=size)["VolumeId"]
    wait_volume(ec2, volume_id, "available")
    return volume_id


def volumes_by_device(instance: dict) -> dict:
    """Device name -> volume id of a described instance."""
    return {m["DeviceName"]: m["Ebs"]["VolumeId"] for m in instance.get("BlockDeviceMappings", [])}


def state_pair(change: dict) -> tuple:
    """(previous, current) state of a Start/Stop/TerminateInstances item, codes and names."""
    return (
        (change["PreviousState"]["Code"], change["PreviousState"]["Name"]),
        (change["CurrentState"]["Code"], change["CurrentState"]["Name"]),
    )


def dispose(ec2, instance_ids: list) -> None:
    """Ends instances quickly: allow termination, force-stop what runs (no wait for a guest
    that does not listen to the power button yet), then terminate."""
    if not instance_ids:
        return
    found = instances_of(ec2.describe_instances(InstanceIds=list(instance_ids)))
    alive = [i["InstanceId"] for i in found if i["State"]["Name"] not in ("terminated", "shutting-down")]
    for instance_id in alive:
        ec2.modify_instance_attribute(InstanceId=instance_id, DisableApiTermination={"Value": False})
    running = [i["InstanceId"] for i in found if i["State"]["Name"] in ("pending", "running")]
    if running:
        ec2.stop_instances(InstanceIds=running, Force=True)
    if alive:
        wait_state(ec2, alive, {"stopped", "terminated"}, timeout=60)
        ec2.terminate_instances(InstanceIds=alive)


# --------------------------------------------------------------------------
# module fixtures
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_image(ec2_a) -> dict:
    """The public kiln-tiny machine image (described)."""
    images = ec2_a.describe_images(
        Owners=["kiln"],
        Filters=[{"Name": "name", "Values": ["kiln-tiny-*"]}, {"Name": "image-type", "Values": ["machine"]}],
    )["Images"]
    assert len(images) == 1, images
    return images[0]


@pytest.fixture(scope="module")
def image_id(tiny_image) -> str:
    return tiny_image["ImageId"]


class Fleet:
    """Launches instances of account A from the tiny image and ends them all at teardown."""

    def __init__(self, ec2, image_id: str):
        self.ec2 = ec2
        self.image_id = image_id
        self.ids: list = []

    def run(self, **kwargs) -> dict:
        params = {"ImageId": self.image_id, "MinCount": 1, "MaxCount": 1, **kwargs}
        resp = self.ec2.run_instances(**params)
        self.ids.extend(i["InstanceId"] for i in resp["Instances"])
        return resp

    def run_stopped(self, **kwargs) -> dict:
        """RunInstances, then StopInstances Force as soon as the VM started: an instance
        record with volumes but no guest to wait for. Returns the RunInstances answer."""
        resp = self.run(**kwargs)
        ids = [i["InstanceId"] for i in resp["Instances"]]
        # Stopping a pending instance is not something to rely on: wait for QEMU to start.
        wait_state(self.ec2, ids, {"running", "stopped"})
        self.ec2.stop_instances(InstanceIds=ids, Force=True)
        wait_state(self.ec2, ids, {"stopped"})
        return resp

    def end(self, *instance_ids: str) -> None:
        dispose(self.ec2, list(instance_ids))


@pytest.fixture(scope="module")
def fleet(ec2_a, image_id):
    f = Fleet(ec2_a, image_id)
    yield f
    dispose(ec2_a, f.ids)


@dataclass
class Booted:
    """A running instance that has booted and run USER_DATA; tests only read it (or, like
    the reboot test, leave it running as they found it)."""

    instance_id: str
    reservation_id: str
    run_answer: dict
    tag_key: str
    name: str
    root_volume_id: str
    launched_at: dt.datetime


@pytest.fixture(scope="module")
def booted(ec2_a, fleet) -> Booted:
    tag_key = unique("booted-key")
    name = unique("booted")
    launched_at = dt.datetime.now(dt.timezone.utc)
    resp = fleet.run(
        UserData=USER_DATA,
        TagSpecifications=tag_spec("instance", {"Name": name, tag_key: "yes"}),
    )
    instance_id = resp["Instances"][0]["InstanceId"]
    wait_console(ec2_a, instance_id, READY_MARKER)
    root = volumes_by_device(describe(ec2_a, instance_id))["/dev/xvda"]
    return Booted(instance_id, resp["ReservationId"], resp, tag_key, name, root, launched_at)


@pytest.fixture(scope="module")
def stopped(ec2_a, fleet) -> str:
    """A stopped instance that never booted (tests may change its type and user data)."""
    resp = fleet.run_stopped(UserData=USER_DATA)
    return resp["Instances"][0]["InstanceId"]


@dataclass
class Restarted:
    """An instance that booted, was stopped, and started again (answers recorded)."""

    instance_id: str
    stop_answer: dict
    stopped_description: dict
    stopped_console: str
    start_answer: dict
    console: str


@pytest.fixture(scope="module")
def restarted(ec2_a, fleet) -> Restarted:
    resp = fleet.run(UserData=USER_DATA)
    instance_id = resp["Instances"][0]["InstanceId"]
    wait_console(ec2_a, instance_id, READY_MARKER)
    stop_answer = ec2_a.stop_instances(InstanceIds=[instance_id])
    ec2_a.get_waiter("instance_stopped").wait(InstanceIds=[instance_id], WaiterConfig=FAST_WAITER)
    stopped_description = describe(ec2_a, instance_id)
    stopped_console = console(ec2_a, instance_id)
    start_answer = ec2_a.start_instances(InstanceIds=[instance_id])
    ec2_a.get_waiter("instance_running").wait(InstanceIds=[instance_id], WaiterConfig=FAST_WAITER)
    out = wait_console(
        ec2_a, instance_id, READY_MARKER, after=f"{BOOT_MARKER} instance={instance_id} boot=2"
    )
    return Restarted(instance_id, stop_answer, stopped_description, stopped_console, start_answer, out)


@dataclass
class Terminated:
    """A terminated instance whose root volume was DeleteOnTermination and whose /dev/sdf
    volume was not."""

    instance_id: str
    terminate_answer: dict
    root_volume_id: str
    kept_volume_id: str


@pytest.fixture(scope="module")
def terminated(ec2_a, fleet) -> Terminated:
    resp = fleet.run_stopped(
        BlockDeviceMappings=[
            {"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 1, "DeleteOnTermination": False}}
        ]
    )
    instance_id = resp["Instances"][0]["InstanceId"]
    devices = volumes_by_device(describe(ec2_a, instance_id))
    answer = ec2_a.terminate_instances(InstanceIds=[instance_id])
    ec2_a.get_waiter("instance_terminated").wait(InstanceIds=[instance_id], WaiterConfig=FAST_WAITER)
    yield Terminated(instance_id, answer, devices["/dev/xvda"], devices["/dev/sdf"])
    ec2_a.delete_volume(VolumeId=devices["/dev/sdf"])


@pytest.fixture(scope="module")
def self_shutdown(ec2_a, fleet) -> dict:
    """Two guests that power themselves off from their user data, launched together:
    behaviour -> instance id."""
    return {
        behaviour: fleet.run(
            UserData="/sbin/kiln-shutdown\n", InstanceInitiatedShutdownBehavior=behaviour
        )["Instances"][0]["InstanceId"]
        for behaviour in ("stop", "terminate")
    }


# --------------------------------------------------------------------------
# RunInstances
# --------------------------------------------------------------------------


def test_run_instances_tiny_image_returns_pending_reservation(booted, image_id, account_a):
    resp = booted.run_answer
    instance = resp["Instances"][0]

    assert RESERVATION_ID.match(resp["ReservationId"]) and resp["OwnerId"] == account_a.account_id
    assert INSTANCE_ID.match(instance["InstanceId"])
    assert (instance["ImageId"], instance["State"], instance["InstanceType"], instance["AmiLaunchIndex"]) == (
        image_id, {"Code": 0, "Name": "pending"}, "t3.micro", 0
    )


def test_run_instances_then_waiter_instance_running_succeeds(ec2_a, booted):
    ec2_a.get_waiter("instance_running").wait(InstanceIds=[booted.instance_id], WaiterConfig=FAST_WAITER)

    assert state_of(ec2_a, booted.instance_id) == "running"


def test_run_instances_explicit_instance_type_is_described(ec2_a, fleet):
    resp = fleet.run_stopped(InstanceType="t3.small")
    instance_id = resp["Instances"][0]["InstanceId"]

    assert (resp["Instances"][0]["InstanceType"], describe(ec2_a, instance_id)["InstanceType"]) == (
        "t3.small", "t3.small"
    )


def test_run_instances_unknown_instance_type_fails_invalid_parameter_value(ec2_a, image_id):
    with pytest.raises(ClientError) as e:
        ec2_a.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="t3.gigantic")

    assert error_code(e) == "InvalidParameterValue"


@pytest.mark.parametrize("min_count, max_count", [(0, 1), (2, 1), (21, 21)], ids=["min0", "min-above-max", "min21"])
def test_run_instances_bad_counts_fail_invalid_parameter_value(ec2_a, image_id, min_count, max_count):
    tag = unique("counts")

    with pytest.raises(ClientError) as e:
        ec2_a.run_instances(
            ImageId=image_id, MinCount=min_count, MaxCount=max_count,
            TagSpecifications=tag_spec("instance", {"run": tag}),
        )

    assert error_code(e) == "InvalidParameterValue"
    assert ec2_a.describe_instances(Filters=[{"Name": "tag:run", "Values": [tag]}])["Reservations"] == []


def test_run_instances_min_two_max_two_launches_one_reservation(ec2_a, fleet):
    resp = fleet.run_stopped(MinCount=2, MaxCount=2)

    reservations = ec2_a.describe_instances(
        Filters=[{"Name": "reservation-id", "Values": [resp["ReservationId"]]}]
    )["Reservations"]
    assert [r["ReservationId"] for r in reservations] == [resp["ReservationId"]]
    assert sorted(i["AmiLaunchIndex"] for i in reservations[0]["Instances"]) == [0, 1]
    assert sorted(i["InstanceId"] for i in reservations[0]["Instances"]) == sorted(
        i["InstanceId"] for i in resp["Instances"]
    )


def test_run_instances_root_volume_size_override_creates_larger_root(ec2_a, fleet):
    resp = fleet.run_stopped(BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 3}}])

    root = volumes_by_device(describe(ec2_a, resp["Instances"][0]["InstanceId"]))["/dev/xvda"]
    assert volume(ec2_a, root)["Size"] == 3


def test_run_instances_root_smaller_than_snapshot_fails_invalid_block_device_mapping(
    ec2_a, register_image
):
    image = register_image()  # 8 GiB root snapshot

    with pytest.raises(ClientError) as e:
        ec2_a.run_instances(
            ImageId=image.image_id, MinCount=1, MaxCount=1,
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 4}}],
        )

    assert error_code(e) == "InvalidBlockDeviceMapping"


def test_run_instances_extra_empty_volume_is_attached_at_its_device(ec2_a, fleet):
    resp = fleet.run_stopped(BlockDeviceMappings=[{"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 2}}])
    instance_id = resp["Instances"][0]["InstanceId"]

    devices = volumes_by_device(describe(ec2_a, instance_id))
    assert sorted(devices) == ["/dev/sdf", "/dev/xvda"]
    extra = volume(ec2_a, devices["/dev/sdf"])
    assert (extra["Size"], extra["SnapshotId"], extra["State"], extra["AvailabilityZone"]) == (
        2, "", "in-use", ZONE
    )
    assert [(a["InstanceId"], a["Device"], a["DeleteOnTermination"]) for a in extra["Attachments"]] == [
        (instance_id, "/dev/sdf", True)
    ]


def test_run_instances_no_device_on_root_fails_invalid_block_device_mapping(ec2_a, image_id):
    with pytest.raises(ClientError) as e:
        ec2_a.run_instances(
            ImageId=image_id, MinCount=1, MaxCount=1,
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "NoDevice": ""}],
        )

    assert error_code(e) == "InvalidBlockDeviceMapping"


def test_run_instances_tag_specifications_tag_instance_and_volumes(ec2_a, fleet):
    instance_tags = {"Name": unique("tagged"), "role": "web"}
    volume_tags = {"backup": unique("daily")}
    resp = fleet.run_stopped(
        TagSpecifications=tag_spec("instance", instance_tags) + tag_spec("volume", volume_tags),
        BlockDeviceMappings=[{"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 1}}],
    )

    instance = describe(ec2_a, resp["Instances"][0]["InstanceId"])
    assert tags_of(instance) == instance_tags
    assert [tags_of(volume(ec2_a, v)) for v in sorted(volumes_by_device(instance).values())] == [
        volume_tags, volume_tags
    ]


def test_run_instances_same_client_token_returns_same_instance(ec2_a, fleet, image_id):
    token = unique("token")
    first = fleet.run_stopped(ClientToken=token)

    again = ec2_a.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, ClientToken=token)

    assert again["ReservationId"] == first["ReservationId"]
    assert [i["InstanceId"] for i in again["Instances"]] == [i["InstanceId"] for i in first["Instances"]]
    with_token = ec2_a.describe_instances(Filters=[{"Name": "client-token", "Values": [token]}])
    assert ids_of(with_token) == [first["Instances"][0]["InstanceId"]]


def test_run_instances_client_token_with_other_parameters_fails_idempotent_parameter_mismatch(
    ec2_a, fleet, image_id
):
    token = unique("token")
    fleet.run_stopped(ClientToken=token)

    with pytest.raises(ClientError) as e:
        ec2_a.run_instances(
            ImageId=image_id, MinCount=1, MaxCount=1, ClientToken=token, InstanceType="t3.small"
        )

    assert error_code(e) == "IdempotentParameterMismatch"


def test_run_instances_bad_shutdown_behavior_fails_invalid_parameter_value(ec2_a, image_id):
    with pytest.raises(ClientError) as e:
        ec2_a.run_instances(
            ImageId=image_id, MinCount=1, MaxCount=1, InstanceInitiatedShutdownBehavior="hibernate"
        )

    assert error_code(e) == "InvalidParameterValue"


def test_run_instances_placement_zone_places_instance_and_volumes(ec2_a, fleet):
    resp = fleet.run_stopped(Placement={"AvailabilityZone": OTHER_ZONE})

    instance = describe(ec2_a, resp["Instances"][0]["InstanceId"])
    root = volume(ec2_a, volumes_by_device(instance)["/dev/xvda"])
    assert (instance["Placement"]["AvailabilityZone"], root["AvailabilityZone"]) == (OTHER_ZONE, OTHER_ZONE)


@pytest.mark.parametrize("zone", ["us-east-1z", "us-west-2a"])
def test_run_instances_bad_availability_zone_fails_invalid_parameter_value(ec2_a, image_id, zone):
    with pytest.raises(ClientError) as e:
        ec2_a.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, Placement={"AvailabilityZone": zone})

    assert error_code(e) == "InvalidParameterValue"


def test_run_instances_unknown_image_fails_invalid_ami_id_not_found(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.run_instances(ImageId=UNKNOWN_IMAGE, MinCount=1, MaxCount=1)

    assert error_code(e) == "InvalidAMIID.NotFound"


def test_run_instances_malformed_image_fails_invalid_ami_id_malformed(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.run_instances(ImageId="ami-xyz", MinCount=1, MaxCount=1)

    assert error_code(e) == "InvalidAMIID.Malformed"


def test_run_instances_other_accounts_private_image_fails_invalid_ami_id_not_found(ec2_b, register_image):
    image = register_image()  # account A, private

    with pytest.raises(ClientError) as e:
        ec2_b.run_instances(ImageId=image.image_id, MinCount=1, MaxCount=1)

    assert error_code(e) == "InvalidAMIID.NotFound"


def test_run_instances_image_of_other_region_fails_invalid_ami_id_not_found(ec2_a_west, image_id):
    with pytest.raises(ClientError) as e:
        ec2_a_west.run_instances(ImageId=image_id, MinCount=1, MaxCount=1)

    assert error_code(e) == "InvalidAMIID.NotFound"


def test_run_instances_arm64_image_on_x86_type_fails_invalid_parameter_value(ec2_a, fleet, register_image):
    image = register_image(Architecture="arm64")

    # run_stopped, so that a wrongly launched instance is stopped at once (and ended at teardown).
    with pytest.raises(ClientError) as e:
        fleet.run_stopped(ImageId=image.image_id, InstanceType="t3.micro")

    # EC2: "The architecture 'x86_64' of the specified instance type does not match the
    # architecture 'arm64' of the specified AMI. ..."
    assert error_code(e) == "InvalidParameterValue"


def test_run_instances_kernel_image_fails_invalid_parameter_value(ec2_a, tiny_image):
    assert tiny_image["KernelId"].startswith("aki-")

    with pytest.raises(ClientError) as e:
        ec2_a.run_instances(ImageId=tiny_image["KernelId"], MinCount=1, MaxCount=1)

    assert error_code(e) == "InvalidParameterValue"


def test_run_instances_deregistered_image_fails_invalid_ami_id_not_found(ec2_a, register_image):
    image = register_image()
    ec2_a.deregister_image(ImageId=image.image_id)

    with pytest.raises(ClientError) as e:
        ec2_a.run_instances(ImageId=image.image_id, MinCount=1, MaxCount=1)

    assert error_code(e) == "InvalidAMIID.NotFound"


def test_run_instances_disabled_image_fails_invalid_ami_id_unavailable(ec2_a, register_image):
    image = register_image()
    ec2_a.disable_image(ImageId=image.image_id)

    with pytest.raises(ClientError) as e:
        ec2_a.run_instances(ImageId=image.image_id, MinCount=1, MaxCount=1)

    assert error_code(e) == "InvalidAMIID.Unavailable"


def test_run_instances_dry_run_fails_dry_run_operation_and_launches_nothing(ec2_a, image_id):
    tag = unique("dry")

    with pytest.raises(ClientError) as e:
        ec2_a.run_instances(
            ImageId=image_id, MinCount=1, MaxCount=1, DryRun=True,
            TagSpecifications=tag_spec("instance", {"run": tag}),
        )

    assert error_code(e) == "DryRunOperation"
    assert ec2_a.describe_instances(Filters=[{"Name": "tag:run", "Values": [tag]}])["Reservations"] == []


def test_run_instances_dry_run_with_bad_type_fails_invalid_parameter_value(ec2_a, image_id):
    with pytest.raises(ClientError) as e:
        ec2_a.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, DryRun=True, InstanceType="t3.gigantic")

    assert error_code(e) == "InvalidParameterValue"


# --------------------------------------------------------------------------
# volumes created at launch
# --------------------------------------------------------------------------


def test_describe_volumes_launch_root_volume_is_in_use_and_attached(ec2_a, booted, tiny_image):
    root = volume(ec2_a, booted.root_volume_id)

    assert (root["State"], root["Size"], root["SnapshotId"], root["AvailabilityZone"]) == (
        "in-use", 1, tiny_image["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"], ZONE
    )
    assert [
        (a["InstanceId"], a["VolumeId"], a["Device"], a["State"], a["DeleteOnTermination"])
        for a in root["Attachments"]
    ] == [(booted.instance_id, booted.root_volume_id, "/dev/xvda", "attached", True)]


def test_describe_volumes_attachment_instance_id_filter_returns_instance_volumes(ec2_a, booted):
    vols = ec2_a.describe_volumes(
        Filters=[{"Name": "attachment.instance-id", "Values": [booted.instance_id]}]
    )["Volumes"]

    assert [v["VolumeId"] for v in vols] == [booted.root_volume_id]


def test_delete_volume_attached_at_launch_fails_volume_in_use(ec2_a, booted):
    with pytest.raises(ClientError) as e:
        ec2_a.delete_volume(VolumeId=booted.root_volume_id)

    assert error_code(e) == "VolumeInUse"
    assert volume(ec2_a, booted.root_volume_id)["State"] == "in-use"


# --------------------------------------------------------------------------
# DescribeInstances
# --------------------------------------------------------------------------


def test_describe_instances_running_instance_reports_fields(ec2_a, booted, tiny_image, account_a):
    reservations = ec2_a.describe_instances(InstanceIds=[booted.instance_id])["Reservations"]

    assert [(r["ReservationId"], r["OwnerId"]) for r in reservations] == [
        (booted.reservation_id, account_a.account_id)
    ]
    i = reservations[0]["Instances"][0]
    assert {k: i.get(k) for k in (
        "InstanceId", "ImageId", "State", "InstanceType", "RootDeviceName", "RootDeviceType",
        "VirtualizationType", "KernelId", "RamdiskId", "Architecture",
    )} == {
        "InstanceId": booted.instance_id,
        "ImageId": tiny_image["ImageId"],
        "State": {"Code": 16, "Name": "running"},
        "InstanceType": "t3.micro",
        "RootDeviceName": "/dev/xvda",
        "RootDeviceType": "ebs",
        "VirtualizationType": "paravirtual",
        "KernelId": tiny_image["KernelId"],
        "RamdiskId": tiny_image["RamdiskId"],
        "Architecture": "x86_64",
    }
    assert i["Placement"]["AvailabilityZone"] == ZONE
    assert booted.launched_at - dt.timedelta(seconds=5) <= i["LaunchTime"] <= dt.datetime.now(dt.timezone.utc)
    assert [(m["DeviceName"], m["Ebs"]["VolumeId"], m["Ebs"]["Status"], m["Ebs"]["DeleteOnTermination"])
            for m in i["BlockDeviceMappings"]] == [("/dev/xvda", booted.root_volume_id, "attached", True)]
    assert tags_of(i) == {"Name": booted.name, booted.tag_key: "yes"}


def _filter(booted: Booted, name: str, matching: bool) -> dict:
    """A filter on `name` that matches the booted instance (or a value that does not)."""
    values = {
        "instance-state-name": ("running", "stopped"),
        "instance-id": (booted.instance_id, UNKNOWN_INSTANCE),
        "image-id": (booted.run_answer["Instances"][0]["ImageId"], UNKNOWN_IMAGE),
        "instance-type": ("t3.micro", "m5.large"),
        "tag:Name": (booted.name, unique("other-name")),
        "tag-key": (booted.tag_key, unique("other-key")),
        "reservation-id": (booted.reservation_id, "r-0123456789abcdef0"),
        "block-device-mapping.volume-id": (booted.root_volume_id, "vol-0123456789abcdef0"),
        "availability-zone": (ZONE, OTHER_ZONE),
    }[name]
    return {"Name": name, "Values": [values[0] if matching else values[1]]}


FILTER_NAMES = [
    "instance-state-name", "instance-id", "image-id", "instance-type", "tag:Name", "tag-key",
    "reservation-id", "block-device-mapping.volume-id", "availability-zone",
]


@pytest.mark.parametrize("name", FILTER_NAMES)
def test_describe_instances_filter_matching_value_includes_instance(ec2_a, booted, name):
    resp = ec2_a.describe_instances(Filters=[_filter(booted, name, True)])

    assert booted.instance_id in ids_of(resp)


@pytest.mark.parametrize("name", FILTER_NAMES)
def test_describe_instances_filter_other_value_excludes_instance(ec2_a, booted, name):
    resp = ec2_a.describe_instances(Filters=[_filter(booted, name, False)])

    assert booted.instance_id not in ids_of(resp)


@pytest.mark.parametrize("name", ["tag:Name", "tag-key", "reservation-id", "block-device-mapping.volume-id"])
def test_describe_instances_unique_filter_returns_only_instance(ec2_a, booted, name):
    resp = ec2_a.describe_instances(Filters=[_filter(booted, name, True)])

    assert ids_of(resp) == [booted.instance_id]


def test_describe_instances_max_results_pages_through_all(ec2_a, fleet):
    tag = unique("pages")
    resp = fleet.run_stopped(MinCount=6, MaxCount=6, TagSpecifications=tag_spec("instance", {"run": tag}))
    params = {"Filters": [{"Name": "tag:run", "Values": [tag]}], "MaxResults": 5}

    first = ec2_a.describe_instances(**params)
    second = ec2_a.describe_instances(NextToken=first["NextToken"], **params)

    assert (len(instances_of(first)), len(instances_of(second)), "NextToken" in second) == (5, 1, False)
    assert sorted(ids_of(first) + ids_of(second)) == sorted(i["InstanceId"] for i in resp["Instances"])


@pytest.mark.parametrize("max_results", [1, 4])
def test_describe_instances_max_results_below_five_fails_invalid_parameter_value(ec2_a, max_results):
    with pytest.raises(ClientError) as e:
        ec2_a.describe_instances(MaxResults=max_results)

    assert error_code(e) == "InvalidParameterValue"


def test_describe_instances_max_results_with_instance_ids_fails_invalid_parameter_combination(ec2_a, booted):
    with pytest.raises(ClientError) as e:
        ec2_a.describe_instances(InstanceIds=[booted.instance_id], MaxResults=5)

    assert error_code(e) == "InvalidParameterCombination"


def test_describe_instances_unknown_id_fails_invalid_instance_id_not_found(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.describe_instances(InstanceIds=[UNKNOWN_INSTANCE])

    assert error_code(e) == "InvalidInstanceID.NotFound"


@pytest.mark.parametrize("bad_id", ["i-xyz", "vol-0123456789abcdef0", "i-0123456789ABCDEF0"])
def test_describe_instances_malformed_id_fails_invalid_instance_id_malformed(ec2_a, bad_id):
    with pytest.raises(ClientError) as e:
        ec2_a.describe_instances(InstanceIds=[bad_id])

    assert error_code(e) == "InvalidInstanceID.Malformed"


def test_describe_instances_other_accounts_instance_fails_not_found(ec2_b, booted):
    with pytest.raises(ClientError) as e:
        ec2_b.describe_instances(InstanceIds=[booted.instance_id])

    assert error_code(e) == "InvalidInstanceID.NotFound"
    assert booted.instance_id not in ids_of(ec2_b.describe_instances())


def test_describe_instances_other_region_fails_invalid_instance_id_not_found(ec2_a_west, booted):
    with pytest.raises(ClientError) as e:
        ec2_a_west.describe_instances(InstanceIds=[booted.instance_id])

    assert error_code(e) == "InvalidInstanceID.NotFound"


def test_stop_instances_other_accounts_instance_fails_not_found(ec2_a, ec2_b, stopped):
    with pytest.raises(ClientError) as e:
        ec2_b.stop_instances(InstanceIds=[stopped])

    assert error_code(e) == "InvalidInstanceID.NotFound"


# --------------------------------------------------------------------------
# DescribeInstanceStatus
# --------------------------------------------------------------------------


def test_describe_instance_status_running_instance_reports_ok(ec2_a, booted):
    statuses = ec2_a.describe_instance_status(InstanceIds=[booted.instance_id])["InstanceStatuses"]

    assert [
        (s["InstanceId"], s["AvailabilityZone"], s["InstanceState"]["Name"],
         s["InstanceStatus"]["Status"], s["SystemStatus"]["Status"])
        for s in statuses
    ] == [(booted.instance_id, ZONE, "running", "ok", "ok")]


def test_describe_instance_status_without_ids_lists_running_not_stopped(ec2_a, booted, stopped):
    listed = [s["InstanceId"] for s in ec2_a.describe_instance_status()["InstanceStatuses"]]

    assert (booted.instance_id in listed, stopped in listed) == (True, False)


def test_describe_instance_status_stopped_instance_absent_by_default(ec2_a, stopped):
    statuses = ec2_a.describe_instance_status(InstanceIds=[stopped])["InstanceStatuses"]

    assert statuses == []


def test_describe_instance_status_include_all_lists_stopped_instance(ec2_a, stopped):
    statuses = ec2_a.describe_instance_status(InstanceIds=[stopped], IncludeAllInstances=True)[
        "InstanceStatuses"
    ]

    assert [(s["InstanceId"], s["InstanceState"]) for s in statuses] == [
        (stopped, {"Code": 80, "Name": "stopped"})
    ]


# --------------------------------------------------------------------------
# GetConsoleOutput
# --------------------------------------------------------------------------


def test_get_console_output_running_instance_shows_boot_marker_and_user_data(ec2_a, booted):
    resp = ec2_a.get_console_output(InstanceId=booted.instance_id)

    assert resp["InstanceId"] == booted.instance_id
    out = resp["Output"]
    assert f"{BOOT_MARKER} instance={booted.instance_id} boot=1" in out
    user_data = out[out.index("KILN-TINY-USER-DATA-BEGIN"):out.index("KILN-TINY-USER-DATA-END status=0")]
    assert USER_DATA_OUTPUT in user_data


def test_get_console_output_unknown_instance_fails_invalid_instance_id_not_found(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.get_console_output(InstanceId=UNKNOWN_INSTANCE)

    assert error_code(e) == "InvalidInstanceID.NotFound"


# --------------------------------------------------------------------------
# Stop / Start
# --------------------------------------------------------------------------


def test_stop_instances_running_reports_stopping_from_running(restarted):
    changes = restarted.stop_answer["StoppingInstances"]

    assert [(c["InstanceId"], state_pair(c)) for c in changes] == [
        (restarted.instance_id, ((16, "running"), (64, "stopping")))
    ]


def test_stop_instances_then_waiter_describes_stopped_user_initiated(restarted):
    i = restarted.stopped_description

    assert (i["State"], i["StateReason"]["Code"]) == (
        {"Code": 80, "Name": "stopped"}, "Client.UserInitiatedShutdown"
    )
    assert i["StateTransitionReason"].startswith("User initiated (")


def test_get_console_output_stopped_instance_still_returns_output(restarted):
    out = restarted.stopped_console

    assert f"{BOOT_MARKER} instance={restarted.instance_id} boot=1" in out
    assert USER_DATA_OUTPUT in out


def test_start_instances_stopped_reports_pending_from_stopped(restarted):
    changes = restarted.start_answer["StartingInstances"]

    assert [(c["InstanceId"], state_pair(c)) for c in changes] == [
        (restarted.instance_id, ((80, "stopped"), (0, "pending")))
    ]


def test_start_instances_stopped_boots_again_with_user_data_once(ec2_a, restarted):
    out = restarted.console

    assert f"{BOOT_MARKER} instance={restarted.instance_id} boot=2" in out
    assert out.count("KILN-TINY-USER-DATA-BEGIN") == 1
    assert state_of(ec2_a, restarted.instance_id) == "running"


def test_start_instances_running_instance_is_no_op(ec2_a, booted):
    changes = ec2_a.start_instances(InstanceIds=[booted.instance_id])["StartingInstances"]

    assert [state_pair(c) for c in changes] == [((16, "running"), (16, "running"))]
    assert state_of(ec2_a, booted.instance_id) == "running"


def test_stop_instances_dry_run_fails_dry_run_operation_and_keeps_running(ec2_a, booted):
    with pytest.raises(ClientError) as e:
        ec2_a.stop_instances(InstanceIds=[booted.instance_id], DryRun=True)

    assert error_code(e) == "DryRunOperation"
    time.sleep(1)
    assert state_of(ec2_a, booted.instance_id) == "running"


def test_stop_instances_force_stops_guest_that_ignores_power_button(ec2_a, fleet):
    instance_id = fleet.run(UserData=IGNORE_POWER_BUTTON)["Instances"][0]["InstanceId"]
    wait_console(ec2_a, instance_id, READY_MARKER, after="ignoring-power-button")
    started = time.monotonic()

    changes = ec2_a.stop_instances(InstanceIds=[instance_id], Force=True)["StoppingInstances"]
    ec2_a.get_waiter("instance_stopped").wait(InstanceIds=[instance_id], WaiterConfig=FAST_WAITER)

    # Without Force, this guest would hold the stop for the whole 20 s --stop-timeout.
    assert time.monotonic() - started < 10
    assert [state_pair(c) for c in changes] == [((16, "running"), (64, "stopping"))]


def test_stop_instances_terminated_instance_fails_incorrect_instance_state(ec2_a, terminated):
    with pytest.raises(ClientError) as e:
        ec2_a.stop_instances(InstanceIds=[terminated.instance_id])

    assert error_code(e) == "IncorrectInstanceState"


def test_start_instances_terminated_instance_fails_incorrect_instance_state(ec2_a, terminated):
    with pytest.raises(ClientError) as e:
        ec2_a.start_instances(InstanceIds=[terminated.instance_id])

    assert error_code(e) == "IncorrectInstanceState"


def test_stop_instances_unknown_instance_fails_invalid_instance_id_not_found(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.stop_instances(InstanceIds=[UNKNOWN_INSTANCE])

    assert error_code(e) == "InvalidInstanceID.NotFound"


# --------------------------------------------------------------------------
# TerminateInstances
# --------------------------------------------------------------------------


def test_terminate_instances_stopped_reports_shutting_down_from_stopped(terminated):
    changes = terminated.terminate_answer["TerminatingInstances"]

    assert [(c["InstanceId"], state_pair(c)) for c in changes] == [
        (terminated.instance_id, ((80, "stopped"), (32, "shutting-down")))
    ]


def test_terminate_instances_then_instance_is_described_terminated(ec2_a, terminated):
    i = describe(ec2_a, terminated.instance_id)

    assert (i["State"], i.get("BlockDeviceMappings", [])) == ({"Code": 48, "Name": "terminated"}, [])


def test_terminate_instances_delete_on_termination_volume_is_deleted(ec2_a, terminated):
    with pytest.raises(ClientError) as e:
        ec2_a.describe_volumes(VolumeIds=[terminated.root_volume_id])

    assert error_code(e) == "InvalidVolume.NotFound"


def test_terminate_instances_kept_volume_becomes_available(ec2_a, terminated):
    kept = volume(ec2_a, terminated.kept_volume_id)

    assert (kept["State"], kept.get("Attachments", [])) == ("available", [])


def test_terminate_instances_twice_reports_terminated_again(ec2_a, terminated):
    changes = ec2_a.terminate_instances(InstanceIds=[terminated.instance_id])["TerminatingInstances"]

    assert [state_pair(c) for c in changes] == [((48, "terminated"), (48, "terminated"))]


def test_terminate_instances_running_instance_shuts_down_and_deletes_root(ec2_a, restarted):
    instance_id = restarted.instance_id
    root = volumes_by_device(describe(ec2_a, instance_id))["/dev/xvda"]

    changes = ec2_a.terminate_instances(InstanceIds=[instance_id])["TerminatingInstances"]
    ec2_a.get_waiter("instance_terminated").wait(InstanceIds=[instance_id], WaiterConfig=FAST_WAITER)

    assert [state_pair(c) for c in changes] == [((16, "running"), (32, "shutting-down"))]
    assert ec2_a.describe_volumes(Filters=[{"Name": "volume-id", "Values": [root]}])["Volumes"] == []


def test_terminate_instances_disable_api_termination_fails_operation_not_permitted(ec2_a, fleet):
    instance_id = fleet.run_stopped(DisableApiTermination=True)["Instances"][0]["InstanceId"]

    with pytest.raises(ClientError) as e:
        ec2_a.terminate_instances(InstanceIds=[instance_id])

    assert error_code(e) == "OperationNotPermitted"
    assert state_of(ec2_a, instance_id) == "stopped"


def test_terminate_instances_after_allowing_termination_terminates(ec2_a, fleet):
    instance_id = fleet.run_stopped(DisableApiTermination=True)["Instances"][0]["InstanceId"]
    ec2_a.modify_instance_attribute(InstanceId=instance_id, DisableApiTermination={"Value": False})

    ec2_a.terminate_instances(InstanceIds=[instance_id])

    ec2_a.get_waiter("instance_terminated").wait(InstanceIds=[instance_id], WaiterConfig=FAST_WAITER)
    assert state_of(ec2_a, instance_id) == "terminated"


# --------------------------------------------------------------------------
# guest-initiated shutdown
# --------------------------------------------------------------------------


def test_guest_shutdown_behavior_stop_stops_instance_with_instance_initiated_reason(ec2_a, self_shutdown):
    instance_id = self_shutdown["stop"]

    wait_state(ec2_a, [instance_id], {"stopped"}, timeout=BOOT_TIMEOUT_S)

    i = describe(ec2_a, instance_id)
    assert i["StateReason"]["Code"] == "Client.InstanceInitiatedShutdown"
    assert [m["DeviceName"] for m in i["BlockDeviceMappings"]] == ["/dev/xvda"]


def test_guest_shutdown_behavior_terminate_terminates_instance(ec2_a, self_shutdown):
    instance_id = self_shutdown["terminate"]

    wait_state(ec2_a, [instance_id], {"terminated"}, timeout=BOOT_TIMEOUT_S)

    i = describe(ec2_a, instance_id)
    assert i["StateReason"]["Code"] == "Client.InstanceInitiatedShutdown"


# --------------------------------------------------------------------------
# DescribeInstanceAttribute / ModifyInstanceAttribute
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "attribute, key, expected",
    [
        ("instanceType", "InstanceType", {"Value": "t3.micro"}),
        ("userData", "UserData", {"Value": base64.b64encode(USER_DATA.encode()).decode()}),
        ("disableApiTermination", "DisableApiTermination", {"Value": False}),
        ("instanceInitiatedShutdownBehavior", "InstanceInitiatedShutdownBehavior", {"Value": "stop"}),
        ("rootDeviceName", "RootDeviceName", {"Value": "/dev/xvda"}),
    ],
)
def test_describe_instance_attribute_returns_launch_value(ec2_a, booted, attribute, key, expected):
    resp = ec2_a.describe_instance_attribute(InstanceId=booted.instance_id, Attribute=attribute)

    assert (resp["InstanceId"], resp[key]) == (booted.instance_id, expected)


def test_describe_instance_attribute_block_device_mapping_lists_root(ec2_a, booted):
    resp = ec2_a.describe_instance_attribute(InstanceId=booted.instance_id, Attribute="blockDeviceMapping")

    assert [(m["DeviceName"], m["Ebs"]["VolumeId"], m["Ebs"]["Status"], m["Ebs"]["DeleteOnTermination"])
            for m in resp["BlockDeviceMappings"]] == [("/dev/xvda", booted.root_volume_id, "attached", True)]


def test_describe_instance_attribute_launch_flags_are_returned(ec2_a, fleet):
    instance_id = fleet.run_stopped(
        DisableApiTermination=True, InstanceInitiatedShutdownBehavior="terminate"
    )["Instances"][0]["InstanceId"]

    protection = ec2_a.describe_instance_attribute(InstanceId=instance_id, Attribute="disableApiTermination")
    behaviour = ec2_a.describe_instance_attribute(
        InstanceId=instance_id, Attribute="instanceInitiatedShutdownBehavior"
    )

    assert (protection["DisableApiTermination"], behaviour["InstanceInitiatedShutdownBehavior"]) == (
        {"Value": True}, {"Value": "terminate"}
    )


@pytest.mark.parametrize(
    "change",
    [{"InstanceType": {"Value": "t3.small"}}, {"UserData": {"Value": b"echo changed\n"}}],
    ids=["instance-type", "user-data"],
)
def test_modify_instance_attribute_running_instance_fails_incorrect_instance_state(ec2_a, booted, change):
    with pytest.raises(ClientError) as e:
        ec2_a.modify_instance_attribute(InstanceId=booted.instance_id, **change)

    assert error_code(e) == "IncorrectInstanceState"
    assert describe(ec2_a, booted.instance_id)["InstanceType"] == "t3.micro"


def test_modify_instance_attribute_stopped_instance_type_is_described(ec2_a, stopped):
    ec2_a.modify_instance_attribute(InstanceId=stopped, InstanceType={"Value": "t3.small"})

    attribute = ec2_a.describe_instance_attribute(InstanceId=stopped, Attribute="instanceType")
    assert (describe(ec2_a, stopped)["InstanceType"], attribute["InstanceType"]) == (
        "t3.small", {"Value": "t3.small"}
    )


def test_modify_instance_attribute_stopped_user_data_is_described(ec2_a, stopped):
    ec2_a.modify_instance_attribute(InstanceId=stopped, UserData={"Value": b"echo changed\n"})

    attribute = ec2_a.describe_instance_attribute(InstanceId=stopped, Attribute="userData")
    assert base64.b64decode(attribute["UserData"]["Value"]) == b"echo changed\n"


def test_modify_instance_attribute_unknown_type_fails_invalid_parameter_value(ec2_a, stopped):
    with pytest.raises(ClientError) as e:
        ec2_a.modify_instance_attribute(InstanceId=stopped, InstanceType={"Value": "t3.gigantic"})

    assert error_code(e) == "InvalidParameterValue"


# --------------------------------------------------------------------------
# tags on instances
# --------------------------------------------------------------------------


def test_create_tags_instance_then_describe_tags_lists_instance_tag(ec2_a, booted):
    key = unique("k")
    ec2_a.create_tags(Resources=[booted.instance_id], Tags=[{"Key": key, "Value": "v1"}])

    tags = ec2_a.describe_tags(
        Filters=[{"Name": "resource-id", "Values": [booted.instance_id]}, {"Name": "key", "Values": [key]}]
    )["Tags"]

    assert tags == [{"Key": key, "ResourceId": booted.instance_id, "ResourceType": "instance", "Value": "v1"}]
    assert tags_of(describe(ec2_a, booted.instance_id))[key] == "v1"
    ec2_a.delete_tags(Resources=[booted.instance_id], Tags=[{"Key": key}])


def test_describe_tags_resource_type_instance_lists_instance(ec2_a, booted):
    tags = ec2_a.describe_tags(
        Filters=[{"Name": "resource-type", "Values": ["instance"]}, {"Name": "key", "Values": [booted.tag_key]}]
    )["Tags"]

    assert [(t["ResourceId"], t["ResourceType"]) for t in tags] == [(booted.instance_id, "instance")]


def test_delete_tags_instance_removes_tag(ec2_a, booted):
    key = unique("k")
    ec2_a.create_tags(Resources=[booted.instance_id], Tags=[{"Key": key, "Value": "v"}])

    ec2_a.delete_tags(Resources=[booted.instance_id], Tags=[{"Key": key}])

    assert key not in tags_of(describe(ec2_a, booted.instance_id))
    assert ec2_a.describe_tags(
        Filters=[{"Name": "resource-id", "Values": [booted.instance_id]}, {"Name": "key", "Values": [key]}]
    )["Tags"] == []


# --------------------------------------------------------------------------
# AttachVolume / DetachVolume
# --------------------------------------------------------------------------


def test_attach_volume_stopped_instance_attaches_volume(ec2_a, stopped):
    volume_id = new_volume(ec2_a)

    answer = ec2_a.attach_volume(VolumeId=volume_id, InstanceId=stopped, Device="/dev/sdh")

    try:
        assert (answer["InstanceId"], answer["Device"], answer["State"] in ("attaching", "attached")) == (
            stopped, "/dev/sdh", True
        )
        attached = wait_volume(ec2_a, volume_id, "in-use", "attached")
        assert [(a["InstanceId"], a["Device"]) for a in attached["Attachments"]] == [(stopped, "/dev/sdh")]
        assert volumes_by_device(describe(ec2_a, stopped))["/dev/sdh"] == volume_id
    finally:
        ec2_a.detach_volume(VolumeId=volume_id)
        wait_volume(ec2_a, volume_id, "available")
        ec2_a.delete_volume(VolumeId=volume_id)


def test_detach_volume_stopped_instance_makes_volume_available(ec2_a, stopped):
    volume_id = new_volume(ec2_a)
    ec2_a.attach_volume(VolumeId=volume_id, InstanceId=stopped, Device="/dev/sdi")
    wait_volume(ec2_a, volume_id, "in-use", "attached")

    ec2_a.detach_volume(VolumeId=volume_id)

    wait_volume(ec2_a, volume_id, "available")
    assert "/dev/sdi" not in volumes_by_device(describe(ec2_a, stopped))
    ec2_a.delete_volume(VolumeId=volume_id)


def test_attach_volume_other_zone_fails_invalid_volume_zone_mismatch(ec2_a, stopped):
    volume_id = new_volume(ec2_a, zone=OTHER_ZONE)

    with pytest.raises(ClientError) as e:
        ec2_a.attach_volume(VolumeId=volume_id, InstanceId=stopped, Device="/dev/sdj")

    assert error_code(e) == "InvalidVolume.ZoneMismatch"
    ec2_a.delete_volume(VolumeId=volume_id)


def test_attach_volume_device_in_use_fails_invalid_parameter_value(ec2_a, stopped):
    volume_id = new_volume(ec2_a)

    with pytest.raises(ClientError) as e:
        ec2_a.attach_volume(VolumeId=volume_id, InstanceId=stopped, Device="/dev/xvda")

    assert error_code(e) == "InvalidParameterValue"
    assert volume(ec2_a, volume_id)["State"] == "available"
    ec2_a.delete_volume(VolumeId=volume_id)


def test_attach_volume_in_use_volume_fails_volume_in_use(ec2_a, booted, stopped):
    with pytest.raises(ClientError) as e:
        ec2_a.attach_volume(VolumeId=booted.root_volume_id, InstanceId=stopped, Device="/dev/sdk")

    assert error_code(e) == "VolumeInUse"


def test_start_instances_without_root_volume_fails(ec2_a, fleet):
    instance_id = fleet.run_stopped()["Instances"][0]["InstanceId"]
    root = volumes_by_device(describe(ec2_a, instance_id))["/dev/xvda"]
    ec2_a.detach_volume(VolumeId=root)
    wait_volume(ec2_a, root, "available")
    try:
        with pytest.raises(ClientError) as e:
            ec2_a.start_instances(InstanceIds=[instance_id])

        # EC2: InvalidParameterValue "Invalid value 'i-...' for instanceId. Instance does not
        # have a volume attached at root (/dev/xvda)".
        assert error_code(e) == "InvalidParameterValue"
        assert state_of(ec2_a, instance_id) == "stopped"
    finally:
        fleet.end(instance_id)
        ec2_a.delete_volume(VolumeId=root)


def test_detach_volume_available_volume_fails_incorrect_state(ec2_a):
    volume_id = new_volume(ec2_a)

    with pytest.raises(ClientError) as e:
        ec2_a.detach_volume(VolumeId=volume_id)

    assert error_code(e) == "IncorrectState"
    ec2_a.delete_volume(VolumeId=volume_id)


# --------------------------------------------------------------------------
# RebootInstances
# --------------------------------------------------------------------------


def test_reboot_instances_stopped_instance_fails_incorrect_instance_state(ec2_a, stopped):
    with pytest.raises(ClientError) as e:
        ec2_a.reboot_instances(InstanceIds=[stopped])

    assert error_code(e) == "IncorrectInstanceState"


def test_reboot_instances_running_instance_boots_again_and_stays_running(ec2_a, booted):
    ec2_a.reboot_instances(InstanceIds=[booted.instance_id])

    out = wait_console(
        ec2_a, booted.instance_id, READY_MARKER, after=f"{BOOT_MARKER} instance={booted.instance_id} boot=2"
    )

    assert out.count("KILN-TINY-USER-DATA-BEGIN") == 1
    assert state_of(ec2_a, booted.instance_id) == "running"


# --------------------------------------------------------------------------
# the real aws CLI
# --------------------------------------------------------------------------


def test_aws_cli_run_describe_terminate_instance(aws_cli, ec2_a, image_id):
    name = unique("cli-instance")
    run = aws_cli(
        "ec2", "run-instances", "--image-id", image_id, "--count", "1", "--instance-type", "t3.small",
        "--tag-specifications", f"ResourceType=instance,Tags=[{{Key=Name,Value={name}}}]",
    )
    instance_id = run["Instances"][0]["InstanceId"]
    try:
        described = aws_cli(
            "ec2", "describe-instances", "--filters", f"Name=tag:Name,Values={name}",
            "--query", "Reservations[].Instances[].[InstanceId,InstanceType,ImageId]",
        )
        ended = aws_cli("ec2", "terminate-instances", "--instance-ids", instance_id)
    finally:
        dispose(ec2_a, [instance_id])

    assert described == [[instance_id, "t3.small", image_id]]
    assert [c["InstanceId"] for c in ended["TerminatingInstances"]] == [instance_id]
    assert ended["TerminatingInstances"][0]["CurrentState"]["Name"] in ("shutting-down", "terminated")


def test_create_snapshots_of_instance_excluding_boot_volume_snapshots_data_volumes_only(ec2_a, fleet):
    instance_id = fleet.run_stopped(
        BlockDeviceMappings=[{"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 1}}]
    )["Instances"][0]["InstanceId"]
    try:
        devices = volumes_by_device(describe(ec2_a, instance_id))

        resp = ec2_a.create_snapshots(
            InstanceSpecification={"InstanceId": instance_id, "ExcludeBootVolume": True},
            Description="data volumes",
        )

        assert [s["VolumeId"] for s in resp["Snapshots"]] == [devices["/dev/sdf"]]
        snapshot_id = resp["Snapshots"][0]["SnapshotId"]
        ec2_a.get_waiter("snapshot_completed").wait(
            SnapshotIds=[snapshot_id], WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )
        snap = ec2_a.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
        assert (snap["Description"], snap["VolumeId"]) == ("data volumes", devices["/dev/sdf"])
        ec2_a.delete_snapshot(SnapshotId=snapshot_id)
    finally:
        fleet.end(instance_id)


def test_create_snapshots_unknown_instance_fails_invalid_instance_id_not_found(ec2_a):
    with pytest.raises(ClientError) as e:
        ec2_a.create_snapshots(InstanceSpecification={"InstanceId": "i-0123456789abcdef0"})

    assert error_code(e) == "InvalidInstanceID.NotFound"
