#!/usr/bin/env python3
"""DescribeImages benchmark: Kiln against moto's server, same client, same machine, same run.

Default mode (issue 2, "Benchmark"):
  * starts `kiln serve` (a prebuilt binary, --kiln-bin) on a free 127.0.0.1 port with a
    temporary data dir, and moto's server (`python -m moto.server`) on another free
    loopback port;
  * loads both with N images (--images, default 10,000), names `bench-{i:06d}`, 2-3 tags
    each, using the same RegisterImage call (Kiln needs a completed snapshot for the block
    device mapping: one empty snapshot is created through the EBS direct API first);
  * measures, with the same client code for both servers, sequentially from one client:
      list-page     DescribeImages Owners=self MaxResults=1000 (one page)
      list-1000     DescribeImages Owners=self name=bench-000*  (1,000 images on both servers;
                    moto ignores MaxResults, so this is the like-for-like 1,000-image listing)
      name-wild     DescribeImages Owners=self name=bench-00012*          (10 images)
      tag           DescribeImages Owners=self tag:Batch=b00042           (10 images)
      image-id      DescribeImages ImageId.1=<one id> (a different id each request)
    each through boto3 (request + response parsing) and as a raw SigV4-signed HTTP round
    trip (http.client keep-alive connection, body read but not parsed; signing is done
    before the timer starts);
  * prints a Markdown report (requests/s, p50, p99, Kiln/moto ratio) to stdout.

Scale mode (--scale 100000): Kiln only; loads N images and reports single-ImageId lookup
p50/p99 (raw and boto3), the other queries, and the server's RSS (/proc/PID/status).

Every loop is bounded in count and time, all traffic goes to 127.0.0.1, and both servers
are stopped (SIGTERM, then SIGKILL by pid) on exit.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import configparser
import datetime as dt
import http.client
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ["no_proxy"] = os.environ["NO_PROXY"]
for _v in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "AWS_ENDPOINT_URL",
           "AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL_EBS"):
    os.environ.pop(_v, None)

import boto3  # noqa: E402
import botocore  # noqa: E402
from botocore.auth import SigV4Auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402
from botocore.serialize import create_serializer  # noqa: E402

LOOPBACK = "127.0.0.1"
REGION = "us-east-1"
CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------

STARTED: list["Server"] = []


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, name: str, argv: list[str], env: dict, log_path: str, port: int):
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.port = port
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self) -> None:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        STARTED.append(self)
        log(f"started {self.name} pid {self.proc.pid}: {' '.join(self.argv)}")

    def log_tail(self, n: int = 30) -> str:
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode(errors="replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return ""

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not accept connections on port {self.port} "
                           f"within {timeout}s:\n{self.log_tail()}")

    def status_kb(self) -> dict:
        """VmRSS / VmHWM of the server process in kB (None when unavailable)."""
        out = {"VmRSS": None, "VmHWM": None}
        if self.proc is None or self.proc.poll() is not None:
            return out
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    k, _, v = line.partition(":")
                    if k in out:
                        out[k] = int(v.split()[0])
        except OSError:
            pass
        return out

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log(f"{self.name} pid {self.proc.pid} ignored SIGTERM for 10 s; SIGKILL")
                self.proc.kill()
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        if self._log:
            self._log.close()
            self._log = None


def stop_all() -> None:
    while STARTED:
        s = STARTED.pop()
        try:
            s.stop()
            log(f"stopped {s.name}")
        except Exception as e:  # noqa: BLE001
            log(f"stopping {s.name} failed: {e!r}")


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


# --------------------------------------------------------------------------------------
# Targets (a server plus credentials)
# --------------------------------------------------------------------------------------

class Target:
    def __init__(self, name: str, server: Server, access_key: str, secret_key: str):
        self.name = name
        self.server = server
        self.endpoint = f"http://{LOOPBACK}:{server.port}"
        self.access_key = access_key
        self.secret_key = secret_key
        self.ids: list[str] = []
        self.tags_via_create_tags = False
        self.load_seconds = None
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.rss = {}
        self.restart_seconds = None

    def client(self, service: str = "ec2", pool: int = 16):
        cfg = Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=300,
                     max_pool_connections=pool, tcp_keepalive=True)
        return boto3.session.Session().client(
            service, endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=cfg)


def start_kiln(kiln_bin: str, workdir: str) -> Target:
    if not os.access(kiln_bin, os.X_OK):
        raise RuntimeError(f"kiln binary {kiln_bin} not found or not executable (build it first: "
                           f"cargo build --release)")
    port = free_port()
    data_dir = os.path.join(workdir, "kiln-data")
    os.makedirs(data_dir, exist_ok=True)
    srv = Server("kiln", [kiln_bin, "serve", "--listen", f"{LOOPBACK}:{port}",
                          "--data-dir", data_dir],
                 dict(os.environ), os.path.join(workdir, "kiln.log"), port)
    srv.start()
    srv.wait_ready(60)
    cred_path = os.path.join(data_dir, "credentials")
    deadline = time.monotonic() + 30
    cp = None
    while time.monotonic() < deadline:
        if os.path.exists(cred_path):
            cp = configparser.ConfigParser()
            cp.read(cred_path)
            if cp.has_section("kiln") and cp.has_option("kiln", "aws_secret_access_key"):
                break
        time.sleep(0.1)
    else:
        raise RuntimeError(f"kiln did not write {cred_path}:\n{srv.log_tail()}")
    return Target("kiln", srv, cp.get("kiln", "aws_access_key_id"),
                  cp.get("kiln", "aws_secret_access_key"))


def start_moto(workdir: str) -> Target:
    port = free_port()
    env = dict(os.environ)
    env["MOTO_EC2_LOAD_DEFAULT_AMIS"] = "false"  # only the benchmark's images, as in Kiln
    srv = Server("moto", [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)],
                 env, os.path.join(workdir, "moto.log"), port)
    srv.start()
    srv.wait_ready(60)
    return Target("moto", srv, "testing", "testing")


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------

TIERS = ("gold", "silver", "bronze")


def image_name(i: int) -> str:
    return f"bench-{i:06d}"


def image_tags(i: int) -> list[dict]:
    tags = [{"Key": "Project", "Value": "kiln-bench"},
            {"Key": "Batch", "Value": f"b{i // 10:05d}"}]
    if i % 2 == 0:
        tags.append({"Key": "Tier", "Value": TIERS[i % 3]})
    return tags


def register_kwargs(i: int, snapshot_id: str) -> dict:
    return dict(
        Name=image_name(i),
        Description=f"Kiln benchmark image {i}",
        Architecture="x86_64",
        RootDeviceName="/dev/xvda",
        VirtualizationType="hvm",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda",
                              "Ebs": {"SnapshotId": snapshot_id, "VolumeSize": 8,
                                      "VolumeType": "gp3", "DeleteOnTermination": True}}],
        TagSpecifications=[{"ResourceType": "image", "Tags": image_tags(i)}],
    )


def empty_snapshot(t: Target) -> str:
    ebs = t.client("ebs")
    r = ebs.start_snapshot(VolumeSize=8, Description="kiln bench empty snapshot")
    sid = r["SnapshotId"]
    c = ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=0)
    if c.get("Status") != "completed":
        # Kiln completes at once per docs/CONTRACT.md; poll a little in case it does not.
        ec2 = t.client()
        for _ in range(100):
            s = ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
            if s["State"] == "completed":
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"{t.name}: snapshot {sid} never completed ({c})")
    return sid


def load_images(t: Target, n: int, workers: int, timeout: float) -> None:
    t0 = time.monotonic()
    sid = empty_snapshot(t)
    log(f"{t.name}: empty snapshot {sid}; registering {n} images with {workers} workers")

    ec2 = t.client()
    # Probe with image 0: does the server apply TagSpecifications? (moto 5 ignores them;
    # then tags are added with CreateTags, one call per image.)
    first = ec2.register_image(**register_kwargs(0, sid))["ImageId"]
    got = ec2.describe_images(ImageIds=[first])["Images"]
    if not got or not got[0].get("Tags"):
        t.tags_via_create_tags = True
        ec2.create_tags(Resources=[first], Tags=image_tags(0))
        log(f"{t.name}: RegisterImage ignored TagSpecifications; tagging with CreateTags")
    ids: list[str | None] = [None] * n
    ids[0] = first

    local = threading.local()

    def one(i: int) -> str:
        c = getattr(local, "c", None)
        if c is None:
            c = local.c = t.client(pool=2)
        iid = c.register_image(**register_kwargs(i, sid))["ImageId"]
        if t.tags_via_create_tags:
            c.create_tags(Resources=[iid], Tags=image_tags(i))
        return iid

    deadline = time.monotonic() + timeout
    errors: list[str] = []
    done = 1
    next_report = time.monotonic() + 15
    chunk = 2000
    with cf.ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(1, n, chunk):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{t.name}: loading exceeded {timeout}s after {done} images")
            futs = {pool.submit(one, i): i for i in range(start, min(n, start + chunk))}
            for f in cf.as_completed(futs):
                i = futs[f]
                try:
                    ids[i] = f.result()
                    done += 1
                except Exception as e:  # noqa: BLE001
                    errors.append(f"image {i}: {e!r}")
            if errors:
                raise RuntimeError(f"{t.name}: {len(errors)} RegisterImage errors, first: "
                                   f"{errors[0]}")
            if time.monotonic() > next_report:
                next_report = time.monotonic() + 15
                el = time.monotonic() - t0
                log(f"{t.name}: {done}/{n} images in {el:.0f}s ({done / el:.0f}/s)")
    t.ids = ids  # type: ignore[assignment]
    t.load_seconds = time.monotonic() - t0
    log(f"{t.name}: loaded {n} images in {t.load_seconds:.1f}s ({n / t.load_seconds:.0f}/s)")


# --------------------------------------------------------------------------------------
# Verification (correctness of what we are about to time)
# --------------------------------------------------------------------------------------

def verify(t: Target, n: int, scen: dict) -> None:
    ec2 = t.client()
    p = t.problems
    # 1. walking all pages of Owners=self returns exactly the loaded images
    seen: list[str] = []
    token = None
    pages = 0
    for _ in range(n // 1000 + 10):
        kw = {"Owners": ["self"], "MaxResults": 1000}
        if token:
            kw["NextToken"] = token
        r = ec2.describe_images(**kw)
        pages += 1
        seen.extend(im["ImageId"] for im in r["Images"])
        token = r.get("NextToken")
        if not token:
            break
    else:
        p.append(f"pagination did not end after {pages} pages")
    if len(seen) != len(set(seen)):
        p.append(f"pagination repeated {len(seen) - len(set(seen))} images")
    if set(seen) != set(t.ids):
        p.append(f"walking pages gave {len(set(seen))} images, expected {n} "
                 f"(missing {len(set(t.ids) - set(seen))}, extra {len(set(seen) - set(t.ids))})")
    log(f"{t.name}: walked {pages} page(s), {len(seen)} images")
    # 2. the result set of each query is checked on its first request in measure_target
    # 3. one image in detail
    i = min(4, n - 1)
    imgs = ec2.describe_images(ImageIds=[t.ids[i]])["Images"]
    if len(imgs) != 1:
        p.append(f"ImageIds=[{t.ids[i]}] returned {len(imgs)} images")
    else:
        im = imgs[0]
        want_tags = {(x["Key"], x["Value"]) for x in image_tags(i)}
        got_tags = {(x["Key"], x["Value"]) for x in im.get("Tags", [])}
        if im.get("Name") != image_name(i):
            p.append(f"image {i}: Name {im.get('Name')!r}")
        if got_tags != want_tags:
            p.append(f"image {i}: tags {sorted(got_tags)} != {sorted(want_tags)}")
        if im.get("State") != "available":
            p.append(f"image {i}: State {im.get('State')!r}")
    for x in p:
        log(f"{t.name}: PROBLEM {x}")


# --------------------------------------------------------------------------------------
# Scenarios and measurement
# --------------------------------------------------------------------------------------

def scenarios(n: int, id_sample: list[int]) -> dict:
    tag_batch = min(42, (n - 1) // 10)
    tag_value = f"b{tag_batch:05d}"
    sc = {
        "list-page": {
            "label": "DescribeImages MaxResults=1000",
            "params": lambda k: {"Owners": ["self"], "MaxResults": 1000},
            "expect_count": min(1000, n), "expect_idx": None,
        },
        "list-1000": {
            "label": "DescribeImages name=bench-000*",
            "params": lambda k: {"Owners": ["self"],
                                 "Filters": [{"Name": "name", "Values": ["bench-000*"]}]},
            "expect_idx": [i for i in range(n) if image_name(i).startswith("bench-000")],
        },
        "name-wild": {
            "label": "DescribeImages name=bench-00012*",
            "params": lambda k: {"Owners": ["self"],
                                 "Filters": [{"Name": "name", "Values": ["bench-00012*"]}]},
            "expect_idx": [i for i in range(n) if image_name(i).startswith("bench-00012")],
        },
        "tag": {
            "label": f"DescribeImages tag:Batch={tag_value}",
            "params": lambda k: {"Owners": ["self"],
                                 "Filters": [{"Name": "tag:Batch", "Values": [tag_value]}]},
            "expect_idx": [i for i in range(n) if i // 10 == tag_batch],
        },
        "image-id": {
            "label": "DescribeImages ImageId.1=<one id>",
            "params": None,  # filled per target (needs its ids)
            "expect_idx": None, "expect_count": 1,
        },
    }
    for v in sc.values():
        if "expect_idx" in v and v["expect_idx"] is not None:
            v["expect_count"] = len(v["expect_idx"])
    sc["image-id"]["id_sample"] = id_sample
    return sc


def pct(sorted_vals: list[float], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = (len(sorted_vals) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


class RawClient:
    """SigV4-signed POST / over one keep-alive http.client connection; body read, not parsed."""

    def __init__(self, t: Target, timeout: float):
        self.t = t
        self.timeout = timeout
        self.url = t.endpoint + "/"
        self.creds = Credentials(t.access_key, t.secret_key)
        self.model = t.client().meta.service_model.operation_model("DescribeImages")
        self.serializer = create_serializer("ec2")
        self.conn = None

    def body(self, params: dict) -> str:
        req = self.serializer.serialize_to_request(params, self.model)
        return urllib.parse.urlencode(req["body"])

    def headers(self, body: str) -> dict:
        r = AWSRequest(method="POST", url=self.url, data=body,
                       headers={"Content-Type": CONTENT_TYPE})
        SigV4Auth(self.creds, "ec2", REGION).add_auth(r)
        return dict(r.headers.items())

    def call(self, params: dict) -> tuple[int, bytes, float]:
        body = self.body(params)
        hdrs = self.headers(body)
        payload = body.encode()
        if self.conn is None:
            self.conn = http.client.HTTPConnection(LOOPBACK, self.t.server.port,
                                                   timeout=self.timeout)
            self.conn.connect()
        t0 = time.perf_counter()
        try:
            self.conn.request("POST", "/", body=payload, headers=hdrs)
            resp = self.conn.getresponse()
            data = resp.read()
        except Exception:
            self.conn.close()
            self.conn = None
            raise
        elapsed = time.perf_counter() - t0
        if resp.getheader("Connection", "").lower() == "close" or resp.will_close:
            self.conn.close()
            self.conn = None
        return resp.status, data, elapsed

    def close(self):
        if self.conn:
            self.conn.close()


def run_loop(fn, max_requests: int, max_seconds: float, warmup: int) -> dict:
    """Call fn(first: bool) -> seconds. Warm-up requests are untimed (the first one also
    validates the answer); then timed requests until max_requests or max_seconds.
    A request slower than the whole cell budget is not repeated: the first warm-up
    request becomes the only sample (marked single_slow)."""
    errors = 0
    first_error = None
    lat: list[float] = []
    single_slow = False
    wstart = time.monotonic()
    for w in range(max(1, warmup)):
        try:
            el = fn(w == 0)
        except Exception as e:  # noqa: BLE001
            errors += 1
            first_error = first_error or repr(e)
            if errors > 3:
                break
            continue
        if w == 0 and el >= max_seconds:
            lat.append(el)
            single_slow = True
            break
        if time.monotonic() - wstart > max_seconds / 3:
            break
    start = time.monotonic()
    deadline = start + max_seconds
    while not single_slow and len(lat) < max_requests and time.monotonic() < deadline \
            and errors <= 20:
        try:
            lat.append(fn(False))
        except Exception as e:  # noqa: BLE001
            errors += 1
            first_error = first_error or repr(e)
    wall = time.monotonic() - start
    lat.sort()
    timed = sum(lat)
    return {
        "n": len(lat), "errors": errors, "first_error": first_error,
        "single_slow": single_slow, "wall_s": wall,
        "rps": (len(lat) / timed) if timed > 0 else float("nan"),
        "mean_ms": (timed / len(lat) * 1e3) if lat else float("nan"),
        "p50_ms": pct(lat, 50) * 1e3, "p99_ms": pct(lat, 99) * 1e3,
        "max_ms": (lat[-1] * 1e3) if lat else float("nan"),
    }


def measure_target(t: Target, scen: dict, args, only: list[str] | None = None) -> dict:
    results: dict = {}
    boto = t.client(pool=2)
    raw = RawClient(t, timeout=600)
    id_sample = scen["image-id"]["id_sample"]
    idset = set(t.ids)
    for key, sc in scen.items():
        if only and key not in only:
            continue
        if key == "image-id":
            def params(k, _ids=[t.ids[i] for i in id_sample]):
                return {"ImageIds": [_ids[k % len(_ids)]]}
            expect_ids = None
        else:
            params = sc["params"]
            expect_ids = None if sc.get("expect_idx") is None else \
                {t.ids[i] for i in sc["expect_idx"]}
        expect = sc["expect_count"]
        res = {"label": sc["label"], "count": None}
        counter = {"k": 0}

        def check(count: int, got_ids: set | None, mode: str, p: dict) -> None:
            if res["count"] is None or mode == "boto3":
                res["count"] = count
            if key == "list-page" and count == len(t.ids) and count > expect:
                note = ("ignores MaxResults: DescribeImages MaxResults=1000 returned all "
                        f"{count} images")
                if note not in t.notes:
                    t.notes.append(note)
                return
            if count != expect:
                t.problems.append(f"{key} {mode}: {count} images returned, expected {expect}")
            elif got_ids is not None:
                want = expect_ids if expect_ids is not None else \
                    (set(p["ImageIds"]) if "ImageIds" in p else None)
                if want is not None and got_ids != want:
                    t.problems.append(f"{key}: wrong images (missing {len(want - got_ids)}, "
                                      f"extra {len(got_ids - want)})")
                elif want is None and not got_ids <= idset:
                    t.problems.append(f"{key}: returned images that were not loaded")

        def f_boto(first: bool) -> float:
            counter["k"] += 1
            p = params(counter["k"])
            t0 = time.perf_counter()
            r = boto.describe_images(**p)
            el = time.perf_counter() - t0
            if first:
                check(len(r["Images"]), {im["ImageId"] for im in r["Images"]}, "boto3", p)
            return el

        def f_raw(first: bool) -> float:
            counter["k"] += 1
            st, data, el = raw.call(params(counter["k"]))
            if st != 200:
                raise RuntimeError(f"HTTP {st}: {data[:300]!r}")
            if first:
                check(data.count(b"<imageId>"), None, "raw", {})
            return el

        for mode, fn in (("raw", f_raw), ("boto3", f_boto)):
            r = run_loop(fn, args.requests, args.seconds, args.warmup)
            res[mode] = r
            log(f"{t.name} {key:<10} {mode:<5} n={r['n']:<5} {r['rps']:9.1f} req/s  "
                f"p50 {r['p50_ms']:8.2f} ms  p99 {r['p99_ms']:8.2f} ms  "
                f"items {res['count']}  errors {r['errors']}")
            if r["errors"]:
                t.problems.append(f"{key} {mode}: {r['errors']} errors, first {r['first_error']}")
        if res["count"] is None:
            res["count"] = 0
        results[key] = res
    raw.close()
    return results


def restart_rss(t: Target) -> None:
    """Stop Kiln, start it again on the same data dir (state reloaded from SQLite), answer one
    lookup, and record RSS: separates what the data costs from what loading left behind."""
    old = t.server
    old.stop()
    if old in STARTED:
        STARTED.remove(old)
    port = free_port()
    argv = list(old.argv)
    argv[argv.index("--listen") + 1] = f"{LOOPBACK}:{port}"
    srv = Server("kiln", argv, old.env, old.log_path + ".restart", port)
    t0 = time.monotonic()
    srv.start()
    srv.wait_ready(300)
    t.server = srv
    t.endpoint = f"http://{LOOPBACK}:{port}"
    i = len(t.ids) // 2
    imgs = t.client().describe_images(ImageIds=[t.ids[i]])["Images"]
    t.restart_seconds = time.monotonic() - t0
    if len(imgs) != 1 or imgs[0].get("Name") != image_name(i):
        t.problems.append(f"after restart, image {i} lookup returned {imgs!r:.300}")
    page = t.client().describe_images(Owners=["self"], MaxResults=1000)["Images"]
    if len(page) != min(1000, len(t.ids)):
        t.problems.append(f"after restart, first page has {len(page)} images")
    t.rss["after_restart"] = srv.status_kb()
    log(f"kiln: restarted in {t.restart_seconds:.1f}s to first answer; RSS "
        f"{kb(t.rss['after_restart'].get('VmRSS'))}")


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------

def machine_facts(with_moto: bool = True) -> list[str]:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import importlib.metadata as md
    try:
        moto_v = md.version("moto")
    except md.PackageNotFoundError:
        moto_v = "?"
    mem_gib = "?"
    try:
        with open("/proc/meminfo") as f:
            mem_gib = f"{int(f.readline().split()[1]) / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    facts = [
        f"- Date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {os.cpu_count()} cores ({cpu}), {mem_gib} RAM, {platform.platform()}",
        f"- Client: Python {platform.python_version()}, boto3 {boto3.__version__}, "
        f"botocore {botocore.__version__}; one client, sequential requests, keep-alive",
    ]
    if with_moto:
        facts.append(f"- moto[server] {moto_v} (`python -m moto.server`, "
                     f"MOTO_EC2_LOAD_DEFAULT_AMIS=false)")
    return facts


def fmt(x: float, digits: int = 2) -> str:
    if x != x:  # NaN
        return "-"
    if x >= 1000:
        return f"{x:,.0f}"
    if x >= 100:
        return f"{x:.0f}"
    if 0 < x < 1:
        return f"{x:.3g}"
    return f"{x:.{digits}f}"


def kb(v) -> str:
    return "-" if v is None else f"{v / 1024:.1f} MiB"


def report(args, n: int, targets: list[Target], results: dict, scen: dict, scale: bool) -> str:
    out = []
    title = (f"Kiln DescribeImages at {n:,} images (scale mode)" if scale
             else f"DescribeImages: Kiln vs moto, {n:,} images")
    out.append(f"## {title}\n")
    out.extend(machine_facts(any(t.name == "moto" for t in targets)))
    out.append(f"- Per measurement: at most {args.requests} requests or {args.seconds:g} s "
               f"(after {args.warmup} warm-up requests); req/s = completed requests / time "
               f"inside the timed section; raw = SigV4 signed before the timer, HTTP round trip "
               f"with the body read but not parsed; boto3 = `client.describe_images` incl. "
               f"serialization, signing and XML parsing")
    for t in targets:
        how = "RegisterImage + CreateTags" if t.tags_via_create_tags else \
            "RegisterImage with TagSpecifications"
        if t.load_seconds:
            out.append(f"- Load {t.name}: {n:,} images in {t.load_seconds:.1f} s "
                       f"({n / t.load_seconds:,.0f}/s, {args.workers} client threads, {how})")
    out.append("")
    names = [t.name for t in targets]
    kiln_moto = names == ["kiln", "moto"]
    if kiln_moto:
        out.append("| Query | Client | Items Kiln/moto | Kiln req/s | Kiln p50 ms | Kiln p99 ms "
                   "| moto req/s | moto p50 ms | moto p99 ms | Kiln/moto req/s |")
        out.append("|---|---|---|--:|--:|--:|--:|--:|--:|--:|")
    else:
        out.append("| Query | Client | Items | req/s | p50 ms | p99 ms | max ms | n |")
        out.append("|---|---|---|--:|--:|--:|--:|--:|")
    for key, sc in scen.items():
        if key not in results[names[0]]:
            continue
        for mode in ("raw", "boto3"):
            if kiln_moto:
                k = results["kiln"][key]
                m = results["moto"][key]
                kr, mr = k[mode], m[mode]
                ratio = kr["rps"] / mr["rps"] if mr["rps"] and mr["rps"] == mr["rps"] else float("nan")
                out.append(f"| {sc['label']} | {mode} | {k['count']:,}/{m['count']:,} | "
                           f"{fmt(kr['rps'], 1)} | {fmt(kr['p50_ms'])} | {fmt(kr['p99_ms'])} | "
                           f"{fmt(mr['rps'], 1)} | {fmt(mr['p50_ms'])} | {fmt(mr['p99_ms'])} | "
                           f"**{fmt(ratio, 1)}×** |")
            else:
                r = results[names[0]][key]
                x = r[mode]
                out.append(f"| {sc['label']} | {mode} | {r['count']:,} | {fmt(x['rps'], 1)} | "
                           f"{fmt(x['p50_ms'])} | {fmt(x['p99_ms'])} | {fmt(x['max_ms'])} | "
                           f"{x['n']} |")
    out.append("")
    if kiln_moto:
        out.append("Samples per cell (Kiln/moto): " + ", ".join(
            f"{key} {mode} {results['kiln'][key][mode]['n']}/{results['moto'][key][mode]['n']}"
            for key in results["kiln"] for mode in ("raw", "boto3")))
        out.append("")
        if any("ignores MaxResults" in x for x in next(t for t in targets if t.name == "moto").notes):
            out.append("Note: moto ignores `MaxResults` for DescribeImages and returns every "
                       "image, so the `MaxResults=1000` row compares a 1,000-image page (Kiln) "
                       "with the full list (moto). The `name=bench-000*` row returns exactly "
                       "1,000 images from both and is the like-for-like 1,000-image listing.")
            out.append("")
        slow = [f"{key} {mode}" for key in results["moto"] for mode in ("raw", "boto3")
                if results["moto"][key][mode].get("single_slow")]
        if slow:
            out.append("A single moto request took longer than the per-cell time budget in: "
                       + ", ".join(slow) + "; that one request (the first, after no warm-up) "
                       "is the only sample there.")
            out.append("")
    out.append("| Server | RSS after load | RSS after queries | peak RSS (VmHWM) "
               "| RSS after restart + 2 queries | restart to first answer |")
    out.append("|---|--:|--:|--:|--:|--:|")
    for t in targets:
        a, b = t.rss.get("after_load", {}), t.rss.get("after_queries", {})
        c = t.rss.get("after_restart", {})
        rs = "-" if t.restart_seconds is None else f"{t.restart_seconds:.1f} s"
        out.append(f"| {t.name} | {kb(a.get('VmRSS'))} | {kb(b.get('VmRSS'))} | "
                   f"{kb(b.get('VmHWM') or a.get('VmHWM'))} | {kb(c.get('VmRSS'))} | {rs} |")
    out.append("")
    notes = [(t.name, x) for t in targets for x in t.notes]
    if notes:
        out.append("Notes:")
        for name, x in notes:
            out.append(f"- {name}: {x}")
        out.append("")
    probs = [(t.name, p) for t in targets for p in t.problems]
    if probs:
        out.append("Problems seen:")
        for name, p in probs:
            out.append(f"- {name}: {p}")
    else:
        out.append("Problems seen: none (results verified: pagination walk, filter result sets, "
                   "tags, per-request HTTP status).")
    out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kiln-bin", default="/work/main/target/release/kiln")
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--scale", type=int, default=0,
                    help="Kiln-only scale mode with this many images (e.g. 100000)")
    ap.add_argument("--servers", default="kiln,moto",
                    help="comma list of kiln,moto (default both; scale mode: kiln)")
    ap.add_argument("--workers", type=int, default=8, help="loader threads")
    ap.add_argument("--requests", type=int, default=2000, help="max timed requests per cell")
    ap.add_argument("--seconds", type=float, default=15.0, help="max seconds per cell")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--load-timeout", type=float, default=3600.0)
    ap.add_argument("--json", help="also write raw results as JSON to this path")
    ap.add_argument("--no-restart", action="store_true",
                    help="skip restarting Kiln at the end to measure RSS with reloaded state")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data)")
    args = ap.parse_args()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    scale = args.scale > 0
    n = args.scale if scale else args.images
    if n < 1:
        ap.error("need at least one image")
    servers = ["kiln"] if scale else [s.strip() for s in args.servers.split(",") if s.strip()]
    rng = random.Random(20240601)
    id_sample = [rng.randrange(n) for _ in range(min(n * 2, 5000))]
    scen = scenarios(n, id_sample)

    workdir = tempfile.mkdtemp(prefix="kiln-bench-")
    log(f"work dir {workdir}")
    targets: list[Target] = []
    results: dict = {}
    rc = 0
    try:
        for s in servers:
            if s == "kiln":
                targets.append(start_kiln(args.kiln_bin, workdir))
            elif s == "moto":
                targets.append(start_moto(workdir))
            else:
                ap.error(f"unknown server {s}")
        for t in targets:
            load_images(t, n, args.workers, args.load_timeout)
            t.rss["after_load"] = t.server.status_kb()
            verify(t, n, scen)
        for t in targets:
            results[t.name] = measure_target(t, scen, args)
            t.rss["after_queries"] = t.server.status_kb()
            if not t.server.alive():
                t.problems.append(f"server exited with {t.server.proc.returncode}")
        for t in targets:
            if t.name == "kiln" and not args.no_restart:
                restart_rss(t)
        text = report(args, n, targets, results, scen, scale)
        print(text, flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"images": n, "scale": scale, "results": results,
                           "rss_kb": {t.name: t.rss for t in targets},
                           "load_seconds": {t.name: t.load_seconds for t in targets},
                           "restart_seconds": {t.name: t.restart_seconds for t in targets},
                           "problems": {t.name: t.problems for t in targets},
                           "notes": {t.name: t.notes for t in targets}}, f, indent=1)
        if any(t.problems for t in targets):
            rc = 2
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001
        log(f"FAILED: {e!r}")
        for t in targets:
            tail = t.server.log_tail(20)
            if tail:
                log(f"--- last lines of {t.name} log ---\n{tail}")
        rc = 1
    finally:
        stop_all()
        if args.keep or rc == 1:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
