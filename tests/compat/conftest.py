"""Fixtures for the Kiln compatibility suite.

One real `kiln serve` process is started for the whole session on a free
loopback port with a fresh data directory; every test talks to it with boto3
or the real `aws` CLI, exactly as a user would. Tests stay independent inside
the shared server by using unique names (uuid) and unique tags.

Environment:
    KILN_BIN   path of the kiln binary (default: <repo>/target/debug/kiln)
"""

from __future__ import annotations

import configparser
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from compat_helpers import (
    Account,
    PRIMARY,
    REGIONS,
    SECONDARY,
    STARTUP_TIMEOUT_S,
    http_send,
    sigv4_sign,
    unique,
    uri_encode,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------
# server process
# --------------------------------------------------------------------------


@dataclass
class KilnServer:
    binary: Path
    data_dir: Path
    url: str
    host: str
    port: int
    proc: subprocess.Popen
    stderr_path: Path

    def stderr_tail(self, limit: int = 4000) -> str:
        text = self.stderr_path.read_text(errors="replace")
        return text[-limit:]

    def cli(self, *args: str) -> str:
        """Run `kiln --data-dir DIR ARGS...` and return its stdout."""
        proc = subprocess.run(
            [str(self.binary), "--data-dir", str(self.data_dir), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, (
            f"kiln {' '.join(args)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
        return proc.stdout

    def cli_json(self, *args: str) -> dict:
        out = self.cli(*args)
        start, end = out.find("{"), out.rfind("}")
        assert start >= 0 and end > start, f"no JSON object in output of kiln {args}: {out!r}"
        return json.loads(out[start : end + 1])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def kiln(tmp_path_factory) -> KilnServer:
    """The real kiln server, started once per session, stopped at the end."""
    binary = Path(os.environ.get("KILN_BIN", REPO_ROOT / "target" / "debug" / "kiln"))
    if not binary.exists():
        pytest.fail(f"kiln binary not found at {binary}: run `cargo build` or set KILN_BIN")
    data_dir = tmp_path_factory.mktemp("kiln-data")
    logs = tmp_path_factory.mktemp("kiln-logs")
    stdout_path, stderr_path = logs / "stdout.log", logs / "stderr.log"
    host, port = "127.0.0.1", _free_port()
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "info")
    # The tiny test image instances boot from (built from the Debian kernel and busybox
    # packages that scripts/fetch-guest-packages downloads; cached after the first build).
    built = subprocess.run(
        [str(binary), "--data-dir", str(data_dir), "quickstart", "--regions", ",".join(REGIONS)],
        capture_output=True,
        text=True,
        env=env,
    )
    if built.returncode != 0:
        pytest.fail(f"kiln quickstart failed:\n{built.stdout}\n{built.stderr}")
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            [
                str(binary),
                "serve",
                "--listen",
                f"{host}:{port}",
                "--data-dir",
                str(data_dir),
                "--regions",
                ",".join(REGIONS),
                # No KVM probe (these hosts fail it after 20 s of a busy core) and a short
                # grace period for guests that ignore the power button.
                "--accelerator",
                "tcg",
                "--stop-timeout",
                "20",
            ],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    server = KilnServer(binary, data_dir, f"http://{host}:{port}", host, port, proc, stderr_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"kiln serve exited with {proc.returncode} during startup.\n"
                    f"stdout:\n{stdout_path.read_text(errors='replace')[-2000:]}\n"
                    f"stderr:\n{server.stderr_tail()}"
                )
            if _port_open(host, port) and (data_dir / "credentials").exists():
                break
            if time.monotonic() > deadline:
                pytest.fail(
                    f"kiln serve did not accept connections on {host}:{port} "
                    f"(or write {data_dir}/credentials) within {STARTUP_TIMEOUT_S:.0f} s.\n"
                    f"stderr:\n{server.stderr_tail()}"
                )
            time.sleep(0.05)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        kill_guests(data_dir)


def kill_guests(data_dir: Path) -> None:
    """Ends QEMU processes of instances under `data_dir` (guests outlive `kiln serve` by
    design, so a test run must end the ones it leaves behind)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cmdline.startswith("qemu-system") and str(data_dir) in cmdline:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except OSError:
                pass


# --------------------------------------------------------------------------
# accounts
# --------------------------------------------------------------------------


def _account_from_json(name: str, data: dict) -> Account:
    return Account(name, str(data["AccountId"]), data["AccessKeyId"], data["SecretAccessKey"])


@pytest.fixture(scope="session")
def account_a(kiln) -> Account:
    """The account kiln creates on first start (DIR/credentials, profile kiln)."""
    creds = configparser.ConfigParser()
    creds.read(kiln.data_dir / "credentials")
    assert "kiln" in creds, f"no [kiln] profile in {kiln.data_dir}/credentials"
    key_id = creds["kiln"]["aws_access_key_id"]
    secret = creds["kiln"]["aws_secret_access_key"]
    # The credentials file has no account id; StartSnapshot reports the caller as OwnerId.
    ebs = _make_client(kiln, "ebs", key_id, secret, PRIMARY)
    owner_id = ebs.start_snapshot(VolumeSize=1, Description="account-id probe")["OwnerId"]
    return Account("default", owner_id, key_id, secret)


@pytest.fixture(scope="session")
def account_b(kiln) -> Account:
    """A second account, created with `kiln account create bob --json`."""
    return _account_from_json("bob", kiln.cli_json("account", "create", "bob", "--json"))


@pytest.fixture(scope="session")
def org_arn() -> str:
    return "arn:aws:organizations::111122223333:organization/o-kilncompat1"


@pytest.fixture(scope="session")
def account_c(kiln, org_arn) -> Account:
    """A third account that is a member of an organization (for org launch permissions)."""
    data = kiln.cli_json(
        "account", "create", "carol", "--organization-arn", org_arn, "--json"
    )
    return _account_from_json("carol", data)


@pytest.fixture(scope="session")
def ou_arn() -> str:
    return "arn:aws:organizations::111122223333:ou/o-kilncompat1/ou-kiln-compat01"


@pytest.fixture(scope="session")
def account_d(kiln, org_arn, ou_arn) -> Account:
    """A fourth account: same organization as C, and member of an organizational unit."""
    data = kiln.cli_json(
        "account", "create", "dave",
        "--organization-arn", org_arn,
        "--organizational-unit-arn", ou_arn,
        "--json",
    )
    return _account_from_json("dave", data)


@pytest.fixture(scope="session")
def account_kiln(kiln) -> Account:
    """A fresh access key of the built-in `kiln` owner account (alias kiln)."""
    return _account_from_json("kiln", kiln.cli_json("account", "add-key", "kiln", "--json"))


# --------------------------------------------------------------------------
# boto3 clients
# --------------------------------------------------------------------------

_CLIENT_CONFIG = Config(
    retries={"total_max_attempts": 1},
    connect_timeout=5,
    read_timeout=30,
)


def _make_client(kiln: KilnServer, service: str, key_id: str, secret: str, region: str, **cfg):
    config = _CLIENT_CONFIG.merge(Config(**cfg)) if cfg else _CLIENT_CONFIG
    return boto3.session.Session().client(
        service,
        region_name=region,
        endpoint_url=kiln.url,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=config,
    )


@pytest.fixture(scope="session")
def client(kiln):
    """client(service, account, region=us-east-1, **Config kwargs) -> cached boto3 client."""
    cache = {}

    def make(service: str, account: Account, region: str = PRIMARY, **cfg):
        key = (service, account.access_key_id, account.secret_access_key, region, tuple(sorted(cfg.items())))
        if key not in cache:
            cache[key] = _make_client(
                kiln, service, account.access_key_id, account.secret_access_key, region, **cfg
            )
        return cache[key]

    return make


@pytest.fixture(scope="session")
def ec2_a(client, account_a):
    return client("ec2", account_a, PRIMARY)


@pytest.fixture(scope="session")
def ec2_a_west(client, account_a):
    return client("ec2", account_a, SECONDARY)


@pytest.fixture(scope="session")
def ec2_b(client, account_b):
    return client("ec2", account_b, PRIMARY)


@pytest.fixture(scope="session")
def ec2_b_west(client, account_b):
    return client("ec2", account_b, SECONDARY)


@pytest.fixture(scope="session")
def ec2_c(client, account_c):
    return client("ec2", account_c, PRIMARY)


@pytest.fixture(scope="session")
def ec2_d(client, account_d):
    return client("ec2", account_d, PRIMARY)


@pytest.fixture(scope="session")
def ec2_kiln(client, account_kiln):
    return client("ec2", account_kiln, PRIMARY)


@pytest.fixture(scope="session")
def ebs_a(client, account_a):
    return client("ebs", account_a, PRIMARY)


@pytest.fixture(scope="session")
def ebs_a_west(client, account_a):
    return client("ebs", account_a, SECONDARY)


@pytest.fixture(scope="session")
def ebs_b(client, account_b):
    return client("ebs", account_b, PRIMARY)


# --------------------------------------------------------------------------
# resource helpers
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def make_snapshot(client, account_a):
    """make_snapshot(account=A, region=us-east-1, size=8, description=None, tags=None,
    complete=True) -> snapshot id. Uses EBS direct StartSnapshot/CompleteSnapshot."""

    def make(account=None, region=PRIMARY, size=8, description=None, tags=None, complete=True):
        ebs = client("ebs", account or account_a, region)
        kwargs = {"VolumeSize": size}
        if description is not None:
            kwargs["Description"] = description
        if tags:
            kwargs["Tags"] = [{"Key": k, "Value": v} for k, v in tags.items()]
        started = ebs.start_snapshot(**kwargs)
        snapshot_id = started["SnapshotId"]
        if complete:
            done = ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=0)
            assert done["Status"] == "completed", done
        return snapshot_id

    return make


@dataclass
class RegisteredImage:
    image_id: str
    name: str
    snapshot_id: str
    region: str


@pytest.fixture(scope="session")
def register_image(client, account_a, make_snapshot):
    """register_image(account=A, region=us-east-1, name=unique, tags=None, snapshot_id=new,
    **RegisterImage kwargs) -> RegisteredImage. HVM x86_64 image, root /dev/xvda on a
    fresh completed 8 GiB snapshot unless given."""

    def register(account=None, region=PRIMARY, name=None, tags=None, snapshot_id=None, **kwargs):
        account = account or account_a
        ec2 = client("ec2", account, region)
        name = name or unique("img")
        snapshot_id = snapshot_id or make_snapshot(account, region)
        params = {
            "Name": name,
            "Architecture": "x86_64",
            "RootDeviceName": "/dev/xvda",
            "VirtualizationType": "hvm",
            "BlockDeviceMappings": [
                {
                    "DeviceName": "/dev/xvda",
                    "Ebs": {"SnapshotId": snapshot_id, "VolumeSize": 8, "VolumeType": "gp3"},
                }
            ],
        }
        if tags:
            params["TagSpecifications"] = [
                {"ResourceType": "image", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
            ]
        params.update(kwargs)
        image_id = ec2.register_image(**params)["ImageId"]
        return RegisteredImage(image_id, name, snapshot_id, region)

    return register


@pytest.fixture(scope="session")
def describe_image(client, account_a):
    """describe_image(image_id, account=A, region=us-east-1, **kwargs) -> the one Image dict."""

    def describe(image_id, account=None, region=PRIMARY, **kwargs):
        ec2 = client("ec2", account or account_a, region)
        images = ec2.describe_images(ImageIds=[image_id], **kwargs)["Images"]
        assert [i["ImageId"] for i in images] == [image_id]
        return images[0]

    return describe


# --------------------------------------------------------------------------
# the real `aws` CLI
# --------------------------------------------------------------------------


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self):
        return json.loads(self.stdout) if self.stdout.strip() else None


@pytest.fixture(scope="session")
def aws_cli(kiln, account_a, tmp_path_factory):
    """aws_cli(*args, account=A, region=us-east-1, profile=False, check=True)

    Runs `aws --endpoint-url URL --region R --output json ARGS...`. With profile=True it
    uses AWS_SHARED_CREDENTIALS_FILE=DIR/credentials and AWS_PROFILE=kiln (account A);
    otherwise AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY of `account`. Returns parsed JSON
    (None for empty output) when check=True, else the CliResult."""
    home = tmp_path_factory.mktemp("aws-home")

    def run(*args, account=None, region=PRIMARY, profile=False, check=True, timeout=120):
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            {
                "HOME": str(home),
                "AWS_CONFIG_FILE": str(home / "config-does-not-exist"),
                "AWS_PAGER": "",
                "AWS_EC2_METADATA_DISABLED": "true",
            }
        )
        if profile:
            env["AWS_SHARED_CREDENTIALS_FILE"] = str(kiln.data_dir / "credentials")
            env["AWS_PROFILE"] = "kiln"
        else:
            acct = account or account_a
            env["AWS_SHARED_CREDENTIALS_FILE"] = str(home / "credentials-does-not-exist")
            env["AWS_ACCESS_KEY_ID"] = acct.access_key_id
            env["AWS_SECRET_ACCESS_KEY"] = acct.secret_access_key
        cmd = ["aws", "--endpoint-url", kiln.url, "--region", region, "--output", "json", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        result = CliResult(proc.returncode, proc.stdout, proc.stderr)
        if not check:
            return result
        assert proc.returncode == 0, (
            f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
        return result.json

    return run


# --------------------------------------------------------------------------
# raw signed HTTP
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def raw_ec2(kiln, account_a):
    """raw_ec2(params, account=A, region=us-east-1, method='POST', when=None,
    unsigned_payload=False, secret=None) -> RawResponse. Sends an EC2 Query request
    signed with SigV4 (service ec2) without botocore."""

    def send(params, account=None, region=PRIMARY, method="POST", when=None,
             unsigned_payload=False, secret=None):
        acct = account or account_a
        host = f"{kiln.host}:{kiln.port}"
        secret = secret or acct.secret_access_key
        if method == "POST":
            body = urllib.parse.urlencode(params).encode()
            headers = sigv4_sign(
                "POST", host, "/", {}, body, acct.access_key_id, secret, region,
                when=when, unsigned_payload=unsigned_payload,
                extra_headers={"content-type": "application/x-www-form-urlencoded; charset=utf-8"},
            )
            return http_send(kiln.url + "/", "POST", headers, body)
        headers = sigv4_sign(
            "GET", host, "/", params, b"", acct.access_key_id, secret, region,
            when=when, unsigned_payload=unsigned_payload,
        )
        query = "&".join(f"{uri_encode(k)}={uri_encode(v)}" for k, v in sorted(params.items()))
        return http_send(f"{kiln.url}/?{query}", "GET", headers, None)

    return send


# --------------------------------------------------------------------------
# an image that becomes deprecated while the suite runs
# --------------------------------------------------------------------------


@dataclass
class DeprecatingImage:
    image_id: str | None
    name: str | None
    deprecate_at: dt.datetime
    error: str | None

    def wait_until_deprecated(self):
        time.sleep(max(0.0, (self.deprecate_at - dt.datetime.now(dt.timezone.utc)).total_seconds() + 1))


@pytest.fixture(scope="session", autouse=True)
def deprecating_image(client, account_a, account_b, register_image):
    """An image of account A, shared with B, whose DeprecateAt is the next whole minute at
    least 5 s after session start (AWS forbids past times and rounds to minutes). Created
    at session start so that it is usually deprecated by the time its tests run; they wait
    for the remainder otherwise. Errors are recorded, not raised, so that a broken
    EnableImageDeprecation fails only the tests that use this image."""
    now = dt.datetime.now(dt.timezone.utc)
    at = (now + dt.timedelta(seconds=65)).replace(second=0, microsecond=0)
    try:
        ec2 = client("ec2", account_a)
        image = register_image(name=unique("deprecating"))
        ec2.modify_image_attribute(
            ImageId=image.image_id, LaunchPermission={"Add": [{"UserId": account_b.account_id}]}
        )
        ec2.enable_image_deprecation(ImageId=image.image_id, DeprecateAt=at)
        return DeprecatingImage(image.image_id, image.name, at, None)
    except Exception as exc:  # recorded; asserted by the tests that use it
        return DeprecatingImage(None, None, at, repr(exc))
