#!/usr/bin/env python3
"""Instances benchmark: launch times, volumes from snapshots, CreateImage cost, memory per
instance and ten concurrent launches, measured with the Quick Start image in one run, with
a bare-QEMU boot of the same kernel and ramdisk as the reference.

Setup: `kiln --data-dir D quickstart --regions us-east-1`, then `kiln serve --data-dir D
--listen 127.0.0.1:PORT --regions us-east-1 --accelerator tcg --stop-timeout 20` (D a short
temporary directory under --workdir, PORT a free loopback port; credentials from
D/credentials, profile `kiln`). The image is DescribeImages Owners=kiln, name kiln-tiny-*,
image-type machine. Instances are --instance-type (default t3.micro: 2 vCPUs, 1 GiB).

1. Launch (--launches, default 5, one at a time, each terminated and `terminated` before the
   next): RunInstances -> API response, -> `running` (DescribeInstances polled every
   --poll-state s), -> `KILN-TINY-BOOTED` and `KILN-TINY-READY` in GetConsoleOutput (polled
   every --poll-console s once running). Interleaved with each launch, the reference: the
   wall time of
     qemu-system-x86_64 -M pc -accel tcg -m 1024 -nodefaults -display none -serial file:LOG
       -kernel VMLINUZ -initrd INITRD -no-reboot
       -append 'console=ttyS0 quiet panic=-1 rdinit=/bin/busybox -- poweroff -f'
   (the same kernel and ramdisk, from ~/.cache/kiln/quickstart/*/, booted to userspace and
   powered off, without Kiln), once as given (1 vCPU) and once with `-smp N`, N the vCPUs
   Kiln gives the instance type (what Kiln's QEMU gets).
2. Memory: VmRSS of `kiln serve` (/proc/PID/status) with 0, 1 and 3 running instances (each
   at KILN-TINY-READY, then --settle s, median of 5 samples 0.5 s apart), and 0 again after
   terminating them; and each instance's QEMU VmRSS (context: it holds the guest's touched
   RAM, which is not Kiln's).
3. CreateImage: an instance with a 2 GiB root volume (BlockDeviceMappings /dev/xvda
   VolumeSize 2) and user data that writes random data: 10 MiB to /data.bin (`dd
   if=/dev/urandom of=/data.bin bs=1M count=10; sync`), or 1 GiB to the block device past
   the 1 GiB ext4 root (`dd if=/dev/urandom of=/dev/vda bs=1M seek=1024 count=1024
   conv=fsync`), then prints a marker; after KILN-TINY-READY, CreateImage(NoReboot=True)
   -> API response -> image `available` (DescribeImages polled every --poll-image s). Stored
   bytes: `kiln usage image AMI --json` (UniqueBytes: only this image's blocks) and the
   growth of D/blocks (block files' sizes) across the CreateImage.
4. Volumes: snapshots made with the EBS direct API (StartSnapshot, PutSnapshotBlock with
   distinct random 512 KiB blocks spread evenly over the volume, CompleteSnapshot LINEAR,
   DescribeSnapshots until `completed`): 1 GiB with 16 blocks, 64 GiB with 16 blocks, 64 GiB
   with 1024 blocks. From each, --volumes (default 5) times, one at a time: CreateVolume ->
   API response -> `available` (DescribeVolumes polled every --poll-volume s); each volume
   is deleted before the next.
5. Concurrency: --concurrent (default 10) RunInstances calls, MinCount=MaxCount=1, from as
   many threads released together; time from the release until the last is `running` and
   until the last shows KILN-TINY-BOOTED (one poller: DescribeInstances for all, then
   GetConsoleOutput for each running instance without the marker, every --poll-concurrent s);
   then TerminateInstances for all, time until all are `terminated`.

Every wait has a timeout, every loop a bound. On exit (also on errors and signals) every
instance the script launched is terminated, the server is stopped (SIGTERM, then SIGKILL by
pid), qemu-system processes whose command line contains the data dir are killed by pid
(SIGKILL), and the temporary directory is removed unless --keep. Load average
(/proc/loadavg) is recorded at the start, before each section and at the end: other work
on the machine shows up in these times (TCG guests are CPU-bound).
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures as cf
import configparser
import datetime as dt
import glob
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ["no_proxy"] = os.environ["NO_PROXY"]
for _v in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "AWS_ENDPOINT_URL",
           "AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL_EBS", "AWS_PROFILE",
           "AWS_SHARED_CREDENTIALS_FILE"):
    os.environ.pop(_v, None)

import boto3  # noqa: E402
import botocore  # noqa: E402
from botocore.config import Config  # noqa: E402

LOOPBACK = "127.0.0.1"
REGION = "us-east-1"
BLOCK = 524_288
GIB = 1 << 30
MIB = 1 << 20
MB = 1e6
BOOT_MARKER = "KILN-TINY-BOOTED"
READY_MARKER = "KILN-TINY-READY"
DONE_MARKER = "KILN-BENCH-WRITE-DONE"


def log(msg: str) -> None:
    print(f"[instances-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg() -> list[str]:
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[:3]
    except OSError:
        return ["?", "?", "?"]


def stats(values: list[float]) -> dict:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"n": 0, "median": None, "min": None, "max": None, "values": values}
    return {"n": len(vals), "median": statistics.median(vals), "min": min(vals),
            "max": max(vals), "values": values}


def proc_status(pid: int) -> dict:
    """VmRSS, VmHWM, RssAnon, RssFile, RssShmem in kB (missing keys absent)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "Threads"):
                    out[k] = int(v.split()[0])
    except (OSError, ValueError):
        pass
    return out


def proc_cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def qemu_pids(needle: str) -> dict[int, list[str]]:
    """qemu-system-* processes whose command line contains `needle` (the data dir)."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        argv = proc_cmdline(int(d))
        if argv and os.path.basename(argv[0]).startswith("qemu-system") and \
                any(needle in a for a in argv):
            out[int(d)] = argv
    return out


def store_bytes(data_dir: str) -> dict:
    root = os.path.join(data_dir, "blocks")
    files = size = alloc = 0
    for dirpath, dirnames, filenames in os.walk(root):
        if os.path.abspath(dirpath) == os.path.abspath(os.path.join(root, "tmp")):
            dirnames[:] = []
            continue
        for name in filenames:
            try:
                st = os.stat(os.path.join(dirpath, name))
            except OSError:
                continue
            files += 1
            size += st.st_size
            alloc += st.st_blocks * 512
    return {"files": files, "bytes": size, "allocated": alloc}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# --------------------------------------------------------------------------------------
# Kiln
# --------------------------------------------------------------------------------------

class Kiln:
    """One data dir, quickstart, one `kiln serve`; remembers every instance launched."""

    def __init__(self, binary: str, data_dir: str, log_path: str, stop_timeout: int):
        self.binary = binary
        self.data_dir = data_dir
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self._log = None
        self.instances: set[str] = set()
        self.lock = threading.Lock()
        t0 = time.perf_counter()
        r = subprocess.run([binary, "--data-dir", data_dir, "quickstart", "--regions", REGION],
                           capture_output=True, text=True, timeout=900)
        self.quickstart_seconds = time.perf_counter() - t0
        self.quickstart_output = (r.stdout + r.stderr).strip()
        if r.returncode != 0:
            raise RuntimeError(f"kiln quickstart exited {r.returncode}:\n{self.quickstart_output}")
        self.port = free_port()
        self.argv = [binary, "--data-dir", data_dir, "serve", "--listen",
                     f"{LOOPBACK}:{self.port}", "--regions", REGION, "--accelerator", "tcg",
                     "--stop-timeout", str(stop_timeout)]
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log(f"started kiln pid {self.proc.pid} port {self.port} data {data_dir}")
        self._wait_ready()
        self.endpoint = f"http://{LOOPBACK}:{self.port}"
        self.ec2 = self.client("ec2")
        self.ebs = self.client("ebs", pool=8)

    def client(self, service: str = "ec2", pool: int = 4):
        cfg = Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=300,
                     max_pool_connections=pool, tcp_keepalive=True)
        return boto3.session.Session().client(
            service, endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id=self.key, aws_secret_access_key=self.secret, config=cfg)

    def _wait_ready(self) -> None:
        cred = os.path.join(self.data_dir, "credentials")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kiln exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=0.5):
                    pass
                cp = configparser.ConfigParser()
                cp.read(cred)
                if cp.has_option("kiln", "aws_secret_access_key"):
                    self.key = cp.get("kiln", "aws_access_key_id")
                    self.secret = cp.get("kiln", "aws_secret_access_key")
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"kiln did not become ready in 60 s:\n{self.log_tail()}")

    def log_tail(self, n: int = 30) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return "\n".join(f.read().decode(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def rss(self) -> dict:
        return proc_status(self.proc.pid) if self.proc and self.proc.poll() is None else {}

    def usage_image(self, ami: str) -> dict | None:
        try:
            out = subprocess.run([self.binary, "--data-dir", self.data_dir, "usage", "image",
                                  ami, "--json"], capture_output=True, text=True, timeout=300,
                                 check=True).stdout
            return json.loads(out[out.find("{"):])
        except (subprocess.SubprocessError, ValueError) as e:
            log(f"kiln usage image {ami} failed: {e}")
            return None

    # -- instances --------------------------------------------------------------------

    def run_instance(self, ec2, image_id: str, instance_type: str, **kw) -> tuple[str, float]:
        t0 = time.perf_counter()
        r = ec2.run_instances(ImageId=image_id, InstanceType=instance_type, MinCount=1,
                              MaxCount=1, **kw)
        resp = time.perf_counter() - t0
        iid = r["Instances"][0]["InstanceId"]
        with self.lock:
            self.instances.add(iid)
        return iid, resp

    def state(self, iid: str, ec2=None) -> tuple[str, dict]:
        inst = (ec2 or self.ec2).describe_instances(
            InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        return inst["State"]["Name"], inst

    def console(self, iid: str, ec2=None) -> str:
        return (ec2 or self.ec2).get_console_output(InstanceId=iid).get("Output") or ""

    def terminate(self, ids: list[str], timeout: float = 180) -> float | None:
        """TerminateInstances; seconds until all are `terminated` (None on timeout)."""
        ids = list(ids)
        if not ids:
            return 0.0
        t0 = time.perf_counter()
        self.ec2.terminate_instances(InstanceIds=ids)
        left = set(ids)
        while left and time.perf_counter() - t0 < timeout:
            for res in self.ec2.describe_instances(InstanceIds=list(left))["Reservations"]:
                for inst in res["Instances"]:
                    if inst["State"]["Name"] == "terminated":
                        left.discard(inst["InstanceId"])
            if left:
                time.sleep(0.1)
        with self.lock:
            self.instances -= set(ids) - left
        return None if left else time.perf_counter() - t0

    def terminate_all(self) -> None:
        with self.lock:
            ids = sorted(self.instances)
        if not ids:
            return
        try:
            log(f"terminating leftover instances {' '.join(ids)}")
            if self.terminate(ids, timeout=90) is None:
                log("leftover instances not terminated within 90 s")
        except Exception as e:  # noqa: BLE001
            log(f"terminating leftover instances failed: {e!r}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                log(f"kiln pid {self.proc.pid} ignored SIGTERM for 30 s; SIGKILL")
                self.proc.kill()
                self.proc.wait(timeout=30)
        if self._log:
            self._log.close()
            self._log = None


def wait_until(fn, timeout: float, poll: float, what: str):
    """Calls fn() until it returns a non-None value; raises TimeoutError after `timeout`."""
    t0 = time.perf_counter()
    while True:
        v = fn()
        if v is not None:
            return v
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"{what}: not done after {timeout:.0f} s")
        time.sleep(poll)


def launch_and_boot(k: Kiln, image_id: str, itype: str, args, timeout: float,
                    markers=(BOOT_MARKER, READY_MARKER), **kw) -> dict:
    """RunInstances, then times to `running` and to each console marker (seconds from the
    RunInstances call). Raises if the instance leaves pending/running or a wait times out."""
    t0 = time.perf_counter()
    iid, resp = k.run_instance(k.ec2, image_id, itype, **kw)
    out = {"instance_id": iid, "response": resp, "running": None}
    for m in markers:
        out[m] = None
    deadline = t0 + timeout
    state = "pending"
    while time.perf_counter() < deadline:
        state, inst = k.state(iid)
        if state == "running":
            out["running"] = time.perf_counter() - t0
            break
        if state != "pending":
            raise RuntimeError(f"{iid} went {state} ({inst.get('StateReason')}) instead of "
                               f"running\n{k.log_tail()}")
        time.sleep(args.poll_state)
    else:
        raise TimeoutError(f"{iid} not running after {timeout:.0f} s (state {state})")
    text = ""
    while time.perf_counter() < deadline:
        text = k.console(iid)
        now = time.perf_counter() - t0
        for m in markers:
            if out[m] is None and m in text:
                out[m] = now
        if all(out[m] is not None for m in markers):
            break
        if "kiln-tiny: cannot mount" in text:
            raise RuntimeError(f"{iid}: guest could not mount its root:\n{text[-2000:]}")
        time.sleep(args.poll_console)
    else:
        state, inst = k.state(iid)
        raise TimeoutError(f"{iid}: markers {[m for m in markers if out[m] is None]} not on the "
                           f"console after {timeout:.0f} s (state {state}); console tail:\n"
                           f"{text[-2000:]}")
    out["console_tail"] = text[-2000:]
    return out


# --------------------------------------------------------------------------------------
# Reference: bare QEMU
# --------------------------------------------------------------------------------------

def quickstart_files() -> tuple[str, str] | None:
    base = os.environ.get("KILN_CACHE") or os.path.expanduser("~/.cache/kiln")
    cands = sorted(glob.glob(os.path.join(base, "quickstart", "*", "vmlinuz")),
                   key=os.path.getmtime, reverse=True)
    for v in cands:
        i = os.path.join(os.path.dirname(v), "initrd.img")
        if os.path.exists(i):
            return v, i
    return None


def reference_argv(vmlinuz: str, initrd: str, log_path: str, smp: int | None) -> list[str]:
    argv = ["qemu-system-x86_64", "-M", "pc", "-accel", "tcg", "-m", "1024", "-nodefaults",
            "-display", "none", "-serial", f"file:{log_path}", "-kernel", vmlinuz, "-initrd",
            initrd, "-append", "console=ttyS0 quiet panic=-1 rdinit=/bin/busybox -- poweroff -f",
            "-no-reboot"]
    if smp:
        argv[argv.index("-m"):argv.index("-m")] = ["-smp", str(smp)]
    return argv


def reference_boot(argv: list[str], log_path: str, timeout: float) -> dict:
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, start_new_session=True)
    try:
        _, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise TimeoutError(f"reference QEMU did not exit within {timeout:.0f} s")
    wall = time.perf_counter() - t0
    try:
        with open(log_path, "rb") as f:
            console = f.read().decode(errors="replace")
    except OSError:
        console = ""
    if p.returncode != 0:
        raise RuntimeError(f"reference QEMU exited {p.returncode}: {err.decode(errors='replace')}")
    return {"wall": wall, "powered_off": "Power down" in console, "console_tail": console[-300:]}


# --------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------

def section_launch(k: Kiln, image_id: str, args, ref_files, smp_kiln: int, work: str,
                   results: dict, problems: list[str]) -> None:
    rows, refs1, refs2 = [], [], []
    for n in range(args.launches):
        r = launch_and_boot(k, image_id, args.instance_type, args, args.boot_timeout)
        if n == 0:
            pids = qemu_pids(k.data_dir)
            results["kiln_qemu_argv"] = next(iter(pids.values()), None)
        r["terminate"] = k.terminate([r["instance_id"]])
        rows.append(r)
        log(f"launch {n + 1}: response {r['response'] * 1000:.0f} ms, running {r['running']:.2f} s,"
            f" {BOOT_MARKER} {r[BOOT_MARKER]:.2f} s, {READY_MARKER} {r[READY_MARKER]:.2f} s, "
            f"terminated in {r['terminate'] if r['terminate'] is None else round(r['terminate'], 2)} s")
        if r["terminate"] is None:
            problems.append(f"launch {n + 1}: {r['instance_id']} not terminated in time")
        if ref_files:
            for smp, dest in ((None, refs1), (smp_kiln, refs2)):
                if smp == 1 and dest is refs2:
                    continue
                lp = os.path.join(work, f"ref-{n}-{smp or 1}.log")
                try:
                    rr = reference_boot(reference_argv(*ref_files, lp, smp), lp, args.boot_timeout)
                except (RuntimeError, TimeoutError) as e:
                    problems.append(f"reference boot (smp {smp or 1}): {e}")
                    continue
                dest.append(rr)
                log(f"reference QEMU (smp {smp or 1}): {rr['wall']:.2f} s"
                    + ("" if rr["powered_off"] else " (no 'Power down' on its console)"))
    results["launch"] = {
        "rows": rows,
        "response": stats([r["response"] for r in rows]),
        "running": stats([r["running"] for r in rows]),
        "booted": stats([r[BOOT_MARKER] for r in rows]),
        "ready": stats([r[READY_MARKER] for r in rows]),
        "terminate": stats([r["terminate"] for r in rows]),
    }
    results["reference"] = {
        "files": ref_files,
        "argv_smp1": reference_argv(*ref_files, "LOG", None) if ref_files else None,
        "smp1": {"rows": refs1, "wall": stats([r["wall"] for r in refs1])},
        "smp_kiln": {"smp": smp_kiln, "rows": refs2, "wall": stats([r["wall"] for r in refs2])},
    }


def rss_sample(k: Kiln, settle: float) -> dict:
    time.sleep(settle)
    samples = []
    for _ in range(5):
        samples.append(k.rss())
        time.sleep(0.5)
    med = {key: statistics.median([s.get(key, 0) for s in samples])
           for key in ("VmRSS", "RssAnon", "RssFile", "VmHWM", "Threads")}
    qemus = {pid: proc_status(pid) for pid in qemu_pids(k.data_dir)}
    return {"kiln": med, "kiln_samples": [s.get("VmRSS") for s in samples],
            "qemu": {str(pid): st for pid, st in qemus.items()}}


def section_memory(k: Kiln, image_id: str, args, results: dict, problems: list[str]) -> None:
    points = {"0": rss_sample(k, args.settle)}
    ids = []
    log(f"memory: kiln VmRSS with 0 instances {points['0']['kiln']['VmRSS']:.0f} kB")
    for target in (1, 3):
        while len(ids) < target:
            r = launch_and_boot(k, image_id, args.instance_type, args, args.boot_timeout)
            ids.append(r["instance_id"])
        points[str(target)] = rss_sample(k, args.settle)
        q = points[str(target)]["qemu"]
        log(f"memory: kiln VmRSS with {target} instances {points[str(target)]['kiln']['VmRSS']:.0f}"
            f" kB; QEMU VmRSS {', '.join(str(v.get('VmRSS')) for v in q.values())} kB")
        if len(q) != target:
            problems.append(f"memory: {len(q)} QEMU processes with {target} running instances")
    term = k.terminate(ids)
    if term is None:
        problems.append("memory: instances not terminated in time")
    points["0 after"] = rss_sample(k, args.settle)
    base = points["0"]["kiln"]["VmRSS"]
    qrss = [v.get("VmRSS") for v in points["3"]["qemu"].values() if v.get("VmRSS")]
    results["memory"] = {
        "points": points,
        "kiln_delta_1_kb": points["1"]["kiln"]["VmRSS"] - base,
        "kiln_delta_per_instance_3_kb": (points["3"]["kiln"]["VmRSS"] - base) / 3,
        "kiln_after_terminate_delta_kb": points["0 after"]["kiln"]["VmRSS"] - base,
        "qemu_rss_kb": stats(qrss),
        "guest_ram_mib": results.get("instance_type", {}).get("memory_mib"),
    }


def ud_write(mib: int, block_device: bool) -> str:
    if block_device:
        cmd = (f"dd if=/dev/urandom of=/dev/vda bs=1M seek=1024 count={mib} conv=fsync "
               f"2>&1 | tail -1")
    else:
        cmd = f"dd if=/dev/urandom of=/data.bin bs=1M count={mib} 2>&1 | tail -1; sync"
    return (f"#!/bin/sh\nt0=$(cat /proc/uptime)\n{cmd}\nt1=$(cat /proc/uptime)\n"
            f"echo \"{DONE_MARKER} mib={mib} uptime_start=${{t0%% *}} uptime_end=${{t1%% *}}\"\n")


def section_create_image(k: Kiln, image_id: str, args, results: dict,
                         problems: list[str]) -> None:
    out = []
    for mib, on_dev in ((10, False), (1024, True)):
        ud = ud_write(mib, on_dev)
        r = launch_and_boot(k, image_id, args.instance_type, args, args.write_timeout,
                            markers=(BOOT_MARKER, DONE_MARKER, READY_MARKER), UserData=ud,
                            BlockDeviceMappings=[{"DeviceName": "/dev/xvda",
                                                  "Ebs": {"VolumeSize": 2}}])
        iid = r["instance_id"]
        tail = r["console_tail"]
        done_line = next((ln for ln in tail.splitlines() if ln.startswith(DONE_MARKER)), "")
        guest_secs = None
        try:
            f = dict(x.split("=", 1) for x in done_line.split()[1:])
            guest_secs = round(float(f["uptime_end"]) - float(f["uptime_start"]), 2)
        except (ValueError, KeyError):
            pass
        if "USER-DATA-END status=0" not in tail:
            problems.append(f"create-image {mib} MiB: user data did not end with status 0")
        log(f"create-image {mib} MiB: written in {guest_secs} s guest time, READY at "
            f"{r[READY_MARKER]:.1f} s")
        st0 = store_bytes(k.data_dir)
        t0 = time.perf_counter()
        ami = k.ec2.create_image(InstanceId=iid, Name=f"bench-{mib}mib-{int(time.time())}",
                                 NoReboot=True)["ImageId"]
        resp = time.perf_counter() - t0

        def avail():
            img = k.ec2.describe_images(ImageIds=[ami])["Images"]
            s = img[0]["State"] if img else "missing"
            if s == "available":
                return time.perf_counter() - t0
            if s not in ("pending",):
                raise RuntimeError(f"image {ami} went {s}: {img[0].get('StateReason') if img else ''}")
            return None
        available = wait_until(avail, args.image_timeout, args.poll_image, f"image {ami}")
        st1 = store_bytes(k.data_dir)
        usage = k.usage_image(ami)
        term = k.terminate([iid])
        row = {"mib": mib, "target": "/dev/vda past the filesystem" if on_dev else "/data.bin",
               "user_data": ud, "instance": r, "guest_write_seconds": guest_secs,
               "image_id": ami, "response": resp, "available": available,
               "store_before": st0, "store_after": st1,
               "store_growth": st1["bytes"] - st0["bytes"],
               "store_growth_files": st1["files"] - st0["files"],
               "usage": usage, "unique_bytes": (usage or {}).get("UniqueBytes"),
               "referenced_bytes": (usage or {}).get("ReferencedBytes"),
               "terminate": term}
        out.append(row)
        log(f"create-image {mib} MiB: response {resp * 1000:.0f} ms, available {available:.2f} s, "
            f"store +{row['store_growth'] / MB:.1f} MB, usage unique "
            f"{(row['unique_bytes'] or 0) / MB:.1f} MB")
    small, big = out
    results["create_image"] = {
        "rows": out,
        "ratio_time": big["available"] / small["available"] if small["available"] else None,
        "ratio_store": big["store_growth"] / small["store_growth"] if small["store_growth"] else None,
        "ratio_unique": (big["unique_bytes"] / small["unique_bytes"]
                         if small.get("unique_bytes") and big.get("unique_bytes") else None),
    }


def make_snapshot(k: Kiln, size_gib: int, nblocks: int, threads: int) -> dict:
    total = size_gib * GIB // BLOCK
    step = total // nblocks
    indexes = [i * step + step // 2 for i in range(nblocks)]
    t0 = time.perf_counter()
    sid = k.ebs.start_snapshot(VolumeSize=size_gib, Timeout=120,
                               Description=f"kiln bench {size_gib} GiB {nblocks} blocks")["SnapshotId"]
    digests: dict[int, bytes] = {}

    def put(i: int) -> None:
        data = os.urandom(BLOCK)
        h = hashlib.sha256(data).digest()
        digests[i] = h
        k.ebs.put_snapshot_block(SnapshotId=sid, BlockIndex=i, BlockData=data,
                                 DataLength=len(data), Checksum=b64(h),
                                 ChecksumAlgorithm="SHA256")
    with cf.ThreadPoolExecutor(threads) as ex:
        list(ex.map(put, indexes))
    linear = hashlib.sha256(b"".join(digests[i] for i in indexes)).digest()
    k.ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=len(indexes),
                            Checksum=b64(linear), ChecksumAlgorithm="SHA256",
                            ChecksumAggregationMethod="LINEAR")

    def done():
        s = k.ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]["State"]
        if s == "completed":
            return True
        if s == "error":
            raise RuntimeError(f"snapshot {sid} went to error")
        return None
    wait_until(done, 300, 0.1, f"snapshot {sid}")
    return {"snapshot_id": sid, "size_gib": size_gib, "blocks": nblocks,
            "first_index": indexes[0], "last_index": indexes[-1], "step": step,
            "seconds": time.perf_counter() - t0}


def section_volumes(k: Kiln, args, results: dict, problems: list[str]) -> None:
    az = k.ec2.describe_availability_zones()["AvailabilityZones"][0]["ZoneName"]
    out = []
    for size_gib, nblocks in ((1, 16), (64, 16), (64, 1024)):
        snap = make_snapshot(k, size_gib, nblocks, args.upload_threads)
        log(f"snapshot {snap['snapshot_id']}: {size_gib} GiB, {nblocks} blocks in "
            f"{snap['seconds']:.1f} s")
        rows = []
        for n in range(args.volumes):
            t0 = time.perf_counter()
            v = k.ec2.create_volume(SnapshotId=snap["snapshot_id"], AvailabilityZone=az)
            resp = time.perf_counter() - t0
            vid = v["VolumeId"]

            def avail():
                s = k.ec2.describe_volumes(VolumeIds=[vid])["Volumes"][0]["State"]
                if s == "available":
                    return time.perf_counter() - t0
                if s != "creating":
                    raise RuntimeError(f"volume {vid} went {s}")
                return None
            available = wait_until(avail, args.volume_timeout, args.poll_volume, f"volume {vid}")
            size = k.ec2.describe_volumes(VolumeIds=[vid])["Volumes"][0]["Size"]
            if size != size_gib:
                problems.append(f"volume {vid} from a {size_gib} GiB snapshot has size {size}")
            rows.append({"volume_id": vid, "response": resp, "available": available,
                         "state_in_response": v.get("State")})
            k.ec2.delete_volume(VolumeId=vid)
        s_resp = stats([r["response"] for r in rows])
        s_av = stats([r["available"] for r in rows])
        log(f"create-volume from {size_gib} GiB / {nblocks} blocks: response median "
            f"{s_resp['median'] * 1000:.1f} ms, available median {s_av['median'] * 1000:.1f} ms")
        out.append({"snapshot": snap, "rows": rows, "response": s_resp, "available": s_av})
    results["volumes"] = out


def section_concurrent(k: Kiln, image_id: str, args, results: dict,
                       problems: list[str]) -> None:
    n = args.concurrent
    clients = [k.client("ec2") for _ in range(n)]
    barrier = threading.Barrier(n + 1)
    start = [0.0]
    launched: list[dict | None] = [None] * n

    def one(i: int) -> None:
        barrier.wait(timeout=60)
        t = time.perf_counter()
        try:
            iid, resp = k.run_instance(clients[i], image_id, args.instance_type)
            launched[i] = {"instance_id": iid, "call_at": t - start[0],
                           "responded_at": time.perf_counter() - start[0], "response": resp}
        except Exception as e:  # noqa: BLE001
            launched[i] = {"error": repr(e), "call_at": t - start[0]}

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    start[0] = time.perf_counter()
    barrier.wait(timeout=60)
    for t in threads:
        t.join(timeout=120)
    rows = [r or {"error": "no answer"} for r in launched]
    for r in rows:
        if "error" in r:
            problems.append(f"concurrent RunInstances failed: {r['error']}")
    ok = {r["instance_id"]: r for r in rows if "instance_id" in r}
    for r in ok.values():
        r.update(running=None, booted=None, state=None)
    deadline = start[0] + args.concurrent_timeout
    load_peak = 0.0
    while time.perf_counter() < deadline:
        now = time.perf_counter() - start[0]
        for res in k.ec2.describe_instances(InstanceIds=list(ok))["Reservations"]:
            for inst in res["Instances"]:
                r = ok[inst["InstanceId"]]
                r["state"] = inst["State"]["Name"]
                if r["state"] == "running" and r["running"] is None:
                    r["running"] = now
                if r["state"] not in ("pending", "running") and not r.get("left"):
                    r["left"] = f"{r['state']} {inst.get('StateReason')}"
        for iid, r in ok.items():
            if r["state"] == "running" and r["booted"] is None:
                if BOOT_MARKER in k.console(iid):
                    r["booted"] = time.perf_counter() - start[0]
        try:
            load_peak = max(load_peak, float(loadavg()[0]))
        except ValueError:
            pass
        if all(r["booted"] is not None or r.get("left") for r in ok.values()):
            break
        time.sleep(args.poll_concurrent)
    for iid, r in ok.items():
        if r.get("left"):
            problems.append(f"concurrent: {iid} went {r['left']} before booting")
        elif r["running"] is None:
            problems.append(f"concurrent: {iid} not running within {args.concurrent_timeout} s")
        elif r["booted"] is None:
            problems.append(f"concurrent: {iid} no {BOOT_MARKER} within {args.concurrent_timeout} s")
    qemus = qemu_pids(k.data_dir)
    kiln_rss = k.rss().get("VmRSS")
    t_term = k.terminate(list(ok), timeout=args.concurrent_timeout)
    if t_term is None:
        problems.append("concurrent: not all terminated in time")
    all_running = len(ok) == n and all(r["running"] is not None for r in ok.values())
    all_booted = len(ok) == n and all(r["booted"] is not None for r in ok.values())
    results["concurrent"] = {
        "n": n, "rows": rows,
        "all_running": all_running, "all_booted": all_booted,
        "last_response": max((r["responded_at"] for r in ok.values()), default=None),
        "last_running": max((r["running"] for r in ok.values() if r["running"] is not None),
                            default=None),
        "first_running": min((r["running"] for r in ok.values() if r["running"] is not None),
                             default=None),
        "last_booted": max((r["booted"] for r in ok.values() if r["booted"] is not None),
                           default=None),
        "first_booted": min((r["booted"] for r in ok.values() if r["booted"] is not None),
                            default=None),
        "booted": stats([r["booted"] for r in ok.values()]),
        "qemu_processes_at_end": len(qemus),
        "kiln_rss_kb_with_all": kiln_rss,
        "loadavg_1m_peak": load_peak,
        "terminate_all": t_term,
    }
    log(f"concurrent: all running {all_running} (last at "
        f"{results['concurrent']['last_running']}), all booted {all_booted} (last at "
        f"{results['concurrent']['last_booted']}), terminated in {t_term} s")


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------

def f2(x, d=2):
    if x is None or x != x:
        return "-"
    return f"{x:,.{d}f}"


def ms(x):
    return "-" if x is None else f"{x * 1000:,.1f} ms"


def rng(s: dict, d=2, scale=1.0, unit=" s") -> str:
    if not s or not s.get("n"):
        return "-"
    return (f"{f2(s['median'] * scale, d)}{unit} ({f2(s['min'] * scale, d)}–"
            f"{f2(s['max'] * scale, d)})")


def mb(b):
    return "-" if b is None else f"{b / MB:,.1f} MB"


def report(args, facts: dict, res: dict, problems: list[str], cmdline: str) -> str:
    o = []
    it = res.get("instance_type", {})
    o.append("## Instances: launch, volumes from snapshots, CreateImage, memory, concurrency\n")
    o.append(f"- Command: `{cmdline}`")
    o.append(f"- Date: {facts['date']}; Kiln {facts['kiln_commit']} ({facts['kiln_bin']})")
    o.append(f"- Machine: {facts['cores']} cores ({facts['cpu']}), {facts['mem_gib']:.0f} GiB RAM, "
             f"{facts['kernel']}; {facts['qemu']}; Python {facts['python']}, boto3 "
             f"{facts['boto3']}")
    o.append(f"- Load average (1/5/15 min) at start {' '.join(res['loadavg_start'])}, at end "
             f"{' '.join(res.get('loadavg_end', ['?']))}; per section: " + "; ".join(
                 f"{k_} {' '.join(v)}" for k_, v in res.get("loadavg_sections", {}).items()))
    o.append(f"- Kiln: `kiln serve --regions us-east-1 --accelerator tcg --stop-timeout "
             f"{args.stop_timeout}`, Quick Start image {res.get('image_id')} "
             f"({res.get('image_name')}); instances {args.instance_type} ({it.get('vcpus')} vCPUs, "
             f"{it.get('memory_mib')} MiB)")
    o.append(f"- Polling: state every {args.poll_state} s, console every {args.poll_console} s "
             f"(single launches), {args.poll_concurrent} s (concurrent); the times include up "
             f"to one poll interval plus the poll's round trip")
    o.append("")
    o.append("| Measurement | Median (min–max) | n |")
    o.append("|---|--:|--:|")
    L = res.get("launch")
    if L:
        n = L["running"]["n"]
        o.append(f"| RunInstances → API response | {rng(L['response'], 1, 1000, ' ms')} | {n} |")
        o.append(f"| RunInstances → `running` | {rng(L['running'])} | {n} |")
        o.append(f"| RunInstances → `{BOOT_MARKER}` on the console | {rng(L['booted'])} | {n} |")
        o.append(f"| RunInstances → `{READY_MARKER}` on the console | {rng(L['ready'])} | {n} |")
        o.append(f"| TerminateInstances → `terminated` | {rng(L['terminate'])} | "
                 f"{L['terminate']['n']} |")
    R = res.get("reference")
    if R:
        o.append(f"| Reference: bare QEMU boot to userspace + poweroff, 1 vCPU (as specified) | "
                 f"{rng(R['smp1']['wall'])} | {R['smp1']['wall']['n']} |")
        if R["smp_kiln"]["rows"]:
            o.append(f"| Reference: the same with `-smp {R['smp_kiln']['smp']}` (Kiln's vCPUs "
                     f"for {args.instance_type}) | {rng(R['smp_kiln']['wall'])} | "
                     f"{R['smp_kiln']['wall']['n']} |")
    V = res.get("volumes")
    if V:
        for v in V:
            s = v["snapshot"]
            o.append(f"| CreateVolume from {s['size_gib']} GiB snapshot ({s['blocks']} blocks) → "
                     f"API response | {rng(v['response'], 1, 1000, ' ms')} | {v['response']['n']} |")
            o.append(f"| CreateVolume from {s['size_gib']} GiB snapshot ({s['blocks']} blocks) → "
                     f"`available` | {rng(v['available'], 0, 1000, ' ms')} | "
                     f"{v['available']['n']} |")
    C = res.get("create_image")
    if C:
        for r in C["rows"]:
            o.append(f"| CreateImage NoReboot after {r['mib']} MiB written → API response | "
                     f"{ms(r['response'])} | 1 |")
            o.append(f"| CreateImage NoReboot after {r['mib']} MiB written → `available` | "
                     f"{f2(r['available'])} s | 1 |")
            o.append(f"| … stored: `kiln usage image` UniqueBytes / DATA/blocks growth | "
                     f"{mb(r['unique_bytes'])} / {mb(r['store_growth'])} | 1 |")
        o.append(f"| CreateImage 1 GiB ÷ 10 MiB: time / stored (blocks growth) | "
                 f"{f2(C['ratio_time'], 1)}× / {f2(C['ratio_store'], 1)}× | |")
    M = res.get("memory")
    if M:
        p = M["points"]
        o.append(f"| kiln serve VmRSS with 0 / 1 / 3 running / 0 after terminating | "
                 f"{p['0']['kiln']['VmRSS'] / 1024:,.1f} / {p['1']['kiln']['VmRSS'] / 1024:,.1f} / "
                 f"{p['3']['kiln']['VmRSS'] / 1024:,.1f} / {p['0 after']['kiln']['VmRSS'] / 1024:,.1f}"
                 f" MiB | |")
        o.append(f"| kiln serve RSS per running instance: (1 − 0) / ((3 − 0) ÷ 3) | "
                 f"{M['kiln_delta_1_kb'] / 1024:,.2f} / "
                 f"{M['kiln_delta_per_instance_3_kb'] / 1024:,.2f} MiB | |")
        q = M["qemu_rss_kb"]
        if q["n"]:
            o.append(f"| QEMU VmRSS per instance, 3 running (guest RAM {M['guest_ram_mib']} MiB"
                     f" configured; context, not Kiln's) | {rng(q, 1, 1 / 1024, ' MiB')} | "
                     f"{q['n']} |")
    X = res.get("concurrent")
    if X:
        ok = sum(1 for r in X["rows"] if r.get("running") is not None)
        bt = sum(1 for r in X["rows"] if r.get("booted") is not None)
        o.append(f"| {X['n']} concurrent RunInstances: reached `running` / `{BOOT_MARKER}` | "
                 f"{ok} / {bt} of {X['n']} | |")
        o.append(f"| … time until the last is `running` (first) | {f2(X['last_running'])} s "
                 f"({f2(X['first_running'])} s) | |")
        o.append(f"| … time until the last shows `{BOOT_MARKER}` (first; median) | "
                 f"{f2(X['last_booted'])} s ({f2(X['first_booted'])} s; "
                 f"{f2(X['booted']['median'])} s) | |")
        o.append(f"| … TerminateInstances (all) → all `terminated` | {f2(X['terminate_all'])} s "
                 f"| |")
    o.append("")
    if L:
        o.append("Single launches (s from the RunInstances call): " + "; ".join(
            f"{r['instance_id']}: running {f2(r['running'])}, booted {f2(r[BOOT_MARKER])}, "
            f"ready {f2(r[READY_MARKER])}" for r in L["rows"]))
        o.append("")
    if R:
        o.append("Reference boots (s): 1 vCPU " + ", ".join(f2(r["wall"]) for r in R["smp1"]["rows"])
                 + (f"; {R['smp_kiln']['smp']} vCPUs "
                    + ", ".join(f2(r["wall"]) for r in R["smp_kiln"]["rows"])
                    if R["smp_kiln"]["rows"] else "")
                 + ". Kiln's boot goes further than the reference: after the ramdisk it loads "
                   "the virtio modules, mounts the root volume over NBD, switch_roots and runs "
                   "the image's init, which prints the marker.")
        o.append("")
    if C:
        for r in C["rows"]:
            o.append(f"CreateImage {r['mib']} MiB ({r['target']}): guest wrote it in "
                     f"{f2(r['guest_write_seconds'])} s (guest uptime), image {r['image_id']}, "
                     f"DATA/blocks +{r['store_growth_files']} block files "
                     f"(+{mb(r['store_growth'])}), `kiln usage image`: referenced "
                     f"{mb(r['referenced_bytes'])}, unique {mb(r['unique_bytes'])}.")
        o.append("")
    if V:
        o.append("Snapshots (EBS direct API, boto3, distinct random blocks spread evenly): " +
                 "; ".join(f"{v['snapshot']['size_gib']} GiB / {v['snapshot']['blocks']} blocks "
                           f"in {f2(v['snapshot']['seconds'])} s" for v in V) + ".")
        o.append("")
    if X:
        o.append(f"Concurrent launches (s from the release of the {X['n']} threads): " + "; ".join(
            f"{r.get('instance_id', '?')}: response {f2(r.get('responded_at'), 3)}, running "
            f"{f2(r.get('running'))}, booted {f2(r.get('booted'))}" for r in X["rows"])
            + f". Peak 1-min load average seen while waiting: {f2(X['loadavg_1m_peak'])}.")
        o.append("")
    o.append("Problems: " + ("none." if not problems else "; ".join(problems)))
    return "\n".join(o) + "\n"


def machine_facts() -> dict:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) * 1024
    try:
        qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True,
                              text=True, timeout=30).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        qemu = "qemu-system-x86_64 ?"
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(), "cpu": cpu, "mem_gib": mem / GIB,
        "kernel": platform.platform(), "qemu": qemu, "python": platform.python_version(),
        "boto3": boto3.__version__, "botocore": botocore.__version__,
    }


def git_state(start: str) -> str:
    try:
        root = subprocess.run(["git", "-C", start, "rev-parse", "--show-toplevel"],
                              capture_output=True, text=True, check=True).stdout.strip()
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "src",
                                "Cargo.toml", "Cargo.lock"], capture_output=True,
                               text=True).stdout.strip()
        return head + (" + uncommitted changes in src/" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------

SECTIONS = ("launch", "memory", "create-image", "volumes", "concurrent")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln-bin", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                       "..", "target", "release", "kiln"))
    ap.add_argument("--workdir", default="/tmp",
                    help="where the temporary data dir is made (keep it short: unix socket "
                         "paths under it must stay below 108 bytes)")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma-separated, run in this order: {','.join(SECTIONS)}")
    ap.add_argument("--instance-type", default="t3.micro")
    ap.add_argument("--launches", type=int, default=5)
    ap.add_argument("--volumes", type=int, default=5, help="CreateVolume calls per snapshot")
    ap.add_argument("--concurrent", type=int, default=10)
    ap.add_argument("--upload-threads", type=int, default=4)
    ap.add_argument("--stop-timeout", type=int, default=20)
    ap.add_argument("--settle", type=float, default=3.0,
                    help="seconds to wait before sampling RSS")
    ap.add_argument("--poll-state", type=float, default=0.05)
    ap.add_argument("--poll-console", type=float, default=0.1)
    ap.add_argument("--poll-image", type=float, default=0.05)
    ap.add_argument("--poll-volume", type=float, default=0.01)
    ap.add_argument("--poll-concurrent", type=float, default=0.25)
    ap.add_argument("--boot-timeout", type=float, default=240)
    ap.add_argument("--write-timeout", type=float, default=1200,
                    help="launch to the write's done marker (the 1 GiB write)")
    ap.add_argument("--image-timeout", type=float, default=900)
    ap.add_argument("--volume-timeout", type=float, default=120)
    ap.add_argument("--concurrent-timeout", type=float, default=900)
    ap.add_argument("--json", help="write all figures to this file")
    ap.add_argument("--keep", action="store_true", help="keep the data dir and logs")
    args = ap.parse_args()
    cmdline = "python3 bench/instances_bench.py " + " ".join(sys.argv[1:])
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if any(s not in SECTIONS for s in sections):
        log(f"--sections takes some of {','.join(SECTIONS)}")
        return 2

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    kiln_bin = os.path.abspath(args.kiln_bin)
    if not os.access(kiln_bin, os.X_OK):
        log(f"{kiln_bin} missing: cargo build --release")
        return 2
    need = 3 * GIB
    if "create-image" not in sections:
        need = GIB
    free = shutil.disk_usage(args.workdir).free
    if free < need:
        log(f"{args.workdir} has {free / GIB:.1f} GiB free; this run needs about {need / GIB:.0f} GiB")
        return 2

    facts = machine_facts()
    facts["kiln_commit"] = git_state(os.path.dirname(kiln_bin))
    facts["kiln_bin"] = (f"{kiln_bin}, built {dt.datetime.fromtimestamp(os.path.getmtime(kiln_bin), dt.timezone.utc):%Y-%m-%d %H:%M UTC}")
    results: dict = {"args": vars(args), "facts": facts, "loadavg_start": loadavg(),
                     "loadavg_sections": {}, "sections": sections}
    problems: list[str] = []
    work = tempfile.mkdtemp(prefix="kb", dir=args.workdir)
    data_dir = os.path.join(work, "d")
    # A private copy: a concurrent `cargo build` may replace target/release/kiln.
    private_bin = os.path.join(work, "kiln")
    shutil.copy2(kiln_bin, private_bin)
    k: Kiln | None = None
    rc = 0
    try:
        k = Kiln(private_bin, data_dir, os.path.join(work, "kiln.log"), args.stop_timeout)
        results["quickstart"] = {"seconds": k.quickstart_seconds, "output": k.quickstart_output}
        results["kiln_rss_kb_at_start"] = k.rss().get("VmRSS")
        images = k.ec2.describe_images(Owners=["kiln"], Filters=[
            {"Name": "name", "Values": ["kiln-tiny-*"]},
            {"Name": "image-type", "Values": ["machine"]}])["Images"]
        if not images:
            raise RuntimeError("no kiln-tiny-* machine image after quickstart")
        image = sorted(images, key=lambda i: i.get("CreationDate", ""))[-1]
        results["image_id"], results["image_name"] = image["ImageId"], image["Name"]
        itypes = k.ec2.describe_instance_types(InstanceTypes=[args.instance_type])["InstanceTypes"]
        vcpus = itypes[0]["VCpuInfo"]["DefaultVCpus"] if itypes else None
        results["instance_type"] = {"name": args.instance_type, "vcpus": vcpus,
                                    "memory_mib": itypes[0]["MemoryInfo"]["SizeInMiB"] if itypes else None}
        ref_files = quickstart_files()
        if not ref_files:
            problems.append("no ~/.cache/kiln/quickstart/*/vmlinuz + initrd.img: reference skipped")
        for sec in sections:
            results["loadavg_sections"][sec] = loadavg()
            log(f"section {sec} (load average {' '.join(loadavg())})")
            t0 = time.perf_counter()
            try:
                if sec == "launch":
                    section_launch(k, image["ImageId"], args, ref_files, vcpus or 1, work,
                                   results, problems)
                elif sec == "memory":
                    section_memory(k, image["ImageId"], args, results, problems)
                elif sec == "create-image":
                    section_create_image(k, image["ImageId"], args, results, problems)
                elif sec == "volumes":
                    section_volumes(k, args, results, problems)
                elif sec == "concurrent":
                    section_concurrent(k, image["ImageId"], args, results, problems)
            except Exception as e:  # noqa: BLE001 - record, clean up, go on with the next
                problems.append(f"section {sec} failed: {type(e).__name__}: {e}")
                log(f"section {sec} failed: {e!r}\n{k.log_tail(15)}")
                k.terminate_all()
            results.setdefault("section_seconds", {})[sec] = time.perf_counter() - t0
        if k.proc.poll() is not None:
            problems.append(f"kiln serve exited {k.proc.returncode} during the run")
    except (KeyboardInterrupt, SystemExit) as e:
        problems.append(f"interrupted ({type(e).__name__} {getattr(e, 'code', '')}): the "
                        f"figures are incomplete")
        log("interrupted; cleaning up")
        rc = 130
    except Exception as e:  # noqa: BLE001
        problems.append(f"setup failed: {type(e).__name__}: {e}")
        log(f"failed: {e!r}")
        rc = 1
    finally:
        if k is not None:
            k.terminate_all()
            results["kiln_log_warnings"] = [ln for ln in k.log_tail(100000).splitlines()
                                            if " WARN " in ln or " ERROR " in ln][-30:]
            k.stop()
        for pid, argv in qemu_pids(work).items():
            log(f"SIGKILL leftover QEMU pid {pid} ({' '.join(argv[:3])} ...)")
            problems.append(f"leftover QEMU pid {pid} killed at the end")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        results["loadavg_end"] = loadavg()
        results["problems"] = problems
        text = report(args, facts, results, problems, cmdline)
        print(text)
        if args.json:
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2, default=str)
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return rc or (1 if problems else 0)


if __name__ == "__main__":
    sys.exit(main())
