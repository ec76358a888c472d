#!/usr/bin/env python3
"""Snapshot-data benchmark (issue 3, "Benchmark"): disk import, incremental snapshots and
storage growth, measured side by side in one run.

1. Import. A raw disk image of --size-gib GiB (default 4) is generated once: 40% random
   data, 30% zeros, 30% copies of earlier random regions (regions of 1..32 blocks of
   512 KiB; copies are aligned on 512 KiB, zeros are written, the file is not sparse).
   For each page-cache mode (--cache cold,warm), --rounds times (default 1; the report gives
   the median and the range), the same file is
     - read with `cat FILE > /dev/null` (the read ceiling),
     - hashed with `sha256sum FILE`, and (reference: SHA-NI on one core) with
       `openssl dgst -sha256 FILE` when openssl is installed,
     - copied with `cp FILE COPY`, then `sync -f COPY` (timed separately),
     - imported into a fresh Kiln (new data dir, new `kiln serve`) with EC2 ImportSnapshot
       (DiskContainer Url=file:///..., Format=raw), timed from the ImportSnapshot call to
       DescribeImportSnapshotTasks reporting `completed` (polled every --poll seconds).
   cold = the file's pages are evicted (sync + posix_fadvise DONTNEED, checked with
   fincore) before each command; warm = the file is read once before each command and is
   fully in the page cache (checked with fincore).
   During each import the script records the task's phases (inspect, hash+store, sync+seal),
   Kiln's CPU time per thread, its read/write bytes (/proc/PID/io), the whole machine's CPU
   split (/proc/stat) and a `top -b -H` frame of Kiln's threads from about 40% done.

2. Incremental. On the server of the first cache mode: 1% (--change-pct) of the image's
   blocks, at random positions, get new random content; a child snapshot of the (first) imported
   one is written with the EBS direct API (StartSnapshot ParentSnapshotId, PutSnapshotBlock
   for the changed blocks only, on --upload-threads threads, CompleteSnapshot with the
   LINEAR checksum, then DescribeSnapshots until `completed`). Its time is compared with the
   import's time (median per cache mode) and the full EBS upload's, and the extra bytes in
   the block store with what the imported snapshot stored.
   EBS client (--ebs-client): boto3's Python CPU per 512 KiB PutSnapshotBlock (request
   building, user agent, hashing) can exceed Kiln's time to answer it, and with the GIL the
   client then sets the pace; so the script also has a lean client (botocore's SigV4
   signer + http.client keep-alive connections, one per thread). With `both` (default) the
   incremental step runs twice from the same parent with the same blocks, lean client first,
   then boto3 (a second child); store growth is taken from the first run only, since the
   second one's blocks are already stored. Steps 3 and 4 use the lean client unless
   --ebs-client boto3.

3. Ten versions. On the server of the last cache mode: versions 2..10 (--versions), each a
   child of the previous one with 2% (--version-change-pct) of the blocks changed. The
   block store after ten versions is compared with the store after one.

4. Reference (skip with --no-ebs-full): the first version uploaded whole through the EBS
   direct API (every non-zero block, read from the file, hashed and PUT on
   --upload-threads threads) into another fresh Kiln: the like-for-like "first snapshot"
   for step 2.

Correctness is checked before anything is reported: the imported snapshot lists exactly
the non-zero blocks of the file, sampled blocks read back equal the file, the block store
holds each distinct block exactly once, ListChangedBlocks lists exactly the changed blocks,
and the latest version reads back its new and its unchanged blocks.

Stored bytes = sum of the sizes of the block files under DATA/blocks (DATA/blocks/tmp
excluded); `kiln usage --json` is run as a cross-check. MB = 10^6 bytes.

Everything runs on 127.0.0.1 with temporary directories under --workdir (default /tmp);
every server this script starts is stopped by pid, and every file it made is removed unless
--keep. It refuses to start without about 5 x size + 1 GiB free in --workdir. Needs: Python 3.9+, boto3, coreutils, util-linux (fincore), procps (top);
`cryptography` makes data generation fast (falls back to random.randbytes).
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures as cf
import configparser
import datetime as dt
import hashlib
import http.client
import json
import os
import platform
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ["no_proxy"] = os.environ["NO_PROXY"]
for _v in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "AWS_ENDPOINT_URL",
           "AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL_EBS", "AWS_PROFILE",
           "AWS_SHARED_CREDENTIALS_FILE"):
    os.environ.pop(_v, None)

import boto3  # noqa: E402
import botocore  # noqa: E402
from botocore.auth import SigV4Auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402

LOOPBACK = "127.0.0.1"
REGION = "us-east-1"
BLOCK = 524_288
GIB = 1 << 30
MB = 1e6
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[import-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# Deterministic random data
# --------------------------------------------------------------------------------------

class Stream:
    """Deterministic incompressible bytes: AES-128-CTR keystream keyed by (seed, label)
    when `cryptography` is available, else random.Random(seed, label).randbytes."""

    def __init__(self, seed: int, label: str):
        key = hashlib.sha256(f"kiln-bench:{seed}:{label}".encode()).digest()
        try:
            from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
            self._enc = Cipher(algorithms.AES(key[:16]), modes.CTR(key[16:])).encryptor()
            self._rng = None
        except ImportError:  # pragma: no cover - slower fallback
            self._enc = None
            self._rng = random.Random(key)
        self._zeros = bytes(BLOCK)

    def block(self) -> bytes:
        if self._enc is not None:
            return self._enc.update(self._zeros)
        return self._rng.randbytes(BLOCK)


# --------------------------------------------------------------------------------------
# The image
# --------------------------------------------------------------------------------------

def plan_layout(n_blocks: int, mix: tuple[float, float, float], rng: random.Random):
    """Returns a list of (kind, length, source) regions: kind 'R' (random), 'Z' (zeros) or
    'C' (copy of `length` earlier random blocks starting at random-block ordinal `source`)."""
    quota = {"R": round(n_blocks * mix[0]), "Z": round(n_blocks * mix[1])}
    quota["C"] = n_blocks - quota["R"] - quota["Z"]
    regions = []
    random_written = 0
    left = n_blocks
    while left > 0:
        kinds = [k for k in ("R", "Z", "C") if quota[k] > 0 and (k != "C" or random_written > 0)]
        if not kinds:  # only copies left and no random data yet: cannot happen after the first R
            kinds = ["R"]
            quota["R"] += quota["C"]
            quota["C"] = 0
        kind = rng.choices(kinds, weights=[quota[k] for k in kinds])[0]
        length = min(rng.randint(1, 32), quota[kind], left)
        source = None
        if kind == "C":
            length = min(length, random_written)
            source = rng.randrange(0, random_written - length + 1)
        regions.append((kind, length, source))
        quota[kind] -= length
        left -= length
        if kind == "R":
            random_written += length
    return regions


def make_image(path: str, size: int, mix, seed: int) -> dict:
    """Writes the image; returns its layout facts (block kinds and expected store)."""
    n_blocks = size // BLOCK
    rng = random.Random(seed)
    regions = plan_layout(n_blocks, mix, rng)
    data = Stream(seed, "image")
    random_positions: list[int] = []   # block index of the k-th random block
    kinds = bytearray(n_blocks)        # 0 zero, 1 random, 2 copy
    zero = bytes(BLOCK)
    t0 = time.perf_counter()
    with open(path, "w+b") as f:
        idx = 0
        for kind, length, source in regions:
            for j in range(length):
                if kind == "R":
                    f.write(data.block())
                    random_positions.append(idx)
                    kinds[idx] = 1
                elif kind == "Z":
                    f.write(zero)
                else:
                    f.flush()
                    src = random_positions[source + j]
                    f.write(os.pread(f.fileno(), BLOCK, src * BLOCK))
                    kinds[idx] = 2
                idx += 1
        f.flush()
        os.fsync(f.fileno())
    secs = time.perf_counter() - t0
    n_random = kinds.count(1)
    n_copy = kinds.count(2)
    return {
        "path": path,
        "size": size,
        "blocks": n_blocks,
        "random_blocks": n_random,
        "zero_blocks": n_blocks - n_random - n_copy,
        "copy_blocks": n_copy,
        "regions": len(regions),
        "nonzero": [i for i in range(n_blocks) if kinds[i]],
        "generate_seconds": secs,
        # Every random block is distinct; copies duplicate random blocks; zeros are elided.
        "expected_stored_blocks": n_random,
    }


# --------------------------------------------------------------------------------------
# Page cache and timed commands
# --------------------------------------------------------------------------------------

def fincore_pages(path: str) -> tuple[int, int]:
    """(resident bytes, file bytes) of a file in the page cache."""
    try:
        out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES,SIZE", path],
                             capture_output=True, text=True, timeout=60, check=True).stdout.split()
        return int(out[0]), int(out[1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return -1, os.path.getsize(path)


def sync_all() -> None:
    subprocess.run(["sync"], check=False, timeout=600)


def evict(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def prepare_cache(path: str, mode: str) -> float:
    """Puts the file in the requested page-cache state; returns the resident fraction."""
    sync_all()
    if mode == "cold":
        evict(path)
    else:
        subprocess.run(["cat", path], stdout=subprocess.DEVNULL, check=True, timeout=1800)
    res, size = fincore_pages(path)
    return res / size if res >= 0 and size else float("nan")


def timed(argv: list[str], stdout=subprocess.DEVNULL) -> dict:
    """Runs a command; wall time (perf_counter) and the child's user/sys CPU (wait4)."""
    sys0 = proc_stat_cpu()
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    busy = machine_busy(sys0, proc_stat_cpu(), wall)
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    if p.stderr:
        p.stderr.close()
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}: {err.strip()}")
    return {"argv": argv, "wall": wall, "user": ru.ru_utime, "sys": ru.ru_stime,
            "others": max(0.0, busy - (ru.ru_utime + ru.ru_stime) / wall)}


def machine_busy(sys0: dict, sys1: dict, wall: float) -> float:
    """Cores busy (not idle, not iowait) on the whole machine between two /proc/stat reads."""
    d = {k: sys1[k] - sys0[k] for k in sys0}
    return (sum(d.values()) - d["idle"] - d["iowait"]) / CLK_TCK / wall


# --------------------------------------------------------------------------------------
# /proc sampling
# --------------------------------------------------------------------------------------

def proc_stat_cpu() -> dict:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    names = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]
    return dict(zip(names, v))


def proc_io(pid: int) -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k] = int(v)
    except OSError:
        pass
    return out


def proc_cpu(pid: int) -> float:
    return sum(proc_counters(pid)[k] for k in ("utime", "stime"))


def proc_counters(pid: int) -> dict:
    """User/system CPU s and page faults of a whole process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    out = {"utime": int(fields[11]) / CLK_TCK, "stime": int(fields[12]) / CLK_TCK,
           "minflt": int(fields[7]), "majflt": int(fields[9])}
    return out


def thread_cpu(pid: int) -> dict[int, tuple[str, float, float]]:
    """Per thread of `pid`: (name, user CPU s, system CPU s)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                raw = f.read()
            comm = raw[raw.index("(") + 1:raw.rindex(")")]
            fields = raw.rsplit(")", 1)[1].split()
            out[int(tid)] = (comm, int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK)
        except (OSError, ValueError):
            continue
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
    meta = 0
    for name in ("kiln.db", "kiln.db-wal", "kiln.db-shm"):
        try:
            meta += os.path.getsize(os.path.join(data_dir, name))
        except OSError:
            pass
    return {"files": files, "bytes": size, "allocated": alloc, "metadata": meta}


# --------------------------------------------------------------------------------------
# Kiln
# --------------------------------------------------------------------------------------

STARTED: list["Kiln"] = []


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


class Kiln:
    def __init__(self, binary: str, workdir: str, name: str, threads: int,
                 serve_args: list[str] | None = None):
        self.binary = binary
        self.name = name
        self.data_dir = os.path.join(workdir, f"kiln-{name}")
        os.makedirs(self.data_dir)
        self.port = free_port()
        self.log_path = os.path.join(workdir, f"kiln-{name}.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [binary, "--data-dir", self.data_dir, "serve", "--listen", f"{LOOPBACK}:{self.port}",
             *(serve_args or [])],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True)
        STARTED.append(self)
        log(f"started kiln {name} pid {self.proc.pid} port {self.port} data {self.data_dir}")
        self._wait_ready()
        cfg = Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=600,
                     max_pool_connections=max(threads, 4), tcp_keepalive=True)
        sess = boto3.session.Session(aws_access_key_id=self.key, aws_secret_access_key=self.secret,
                                     region_name=REGION)
        endpoint = f"http://{LOOPBACK}:{self.port}"
        self.ec2 = sess.client("ec2", endpoint_url=endpoint, config=cfg)
        self.ebs = sess.client("ebs", endpoint_url=endpoint, config=cfg)
        self.lean = LeanEbs(LOOPBACK, self.port, self.key, self.secret)

    def log_tail(self, n: int = 30) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return "\n".join(f.read().decode(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

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

    def usage(self) -> dict | None:
        try:
            out = subprocess.run([self.binary, "--data-dir", self.data_dir, "usage", "--json"],
                                 capture_output=True, text=True, timeout=300, check=True).stdout
            return json.loads(out[out.find("{"):])
        except (subprocess.SubprocessError, ValueError) as e:
            log(f"kiln usage failed: {e}")
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                log(f"kiln {self.name} pid {self.proc.pid} ignored SIGTERM; SIGKILL")
                self.proc.kill()
                self.proc.wait(timeout=20)
        if getattr(self, "lean", None) is not None:
            self.lean.close()
        self._log.close()
        if self in STARTED:
            STARTED.remove(self)


def usage_referenced(u: dict | None) -> int | None:
    if not u:
        return None
    try:
        return sum(int(t["ReferencedBytes"]) for t in u.get("Totals", []))
    except (KeyError, TypeError, ValueError):
        return None


def stop_all() -> None:
    while STARTED:
        k = STARTED[-1]
        try:
            k.stop()
            log(f"stopped kiln {k.name}")
        except Exception as e:  # noqa: BLE001
            log(f"stopping kiln {k.name} failed: {e!r}")
            STARTED.remove(k)


# --------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------

def run_import(k: Kiln, path: str, poll: float, workdir: str, tag: str) -> dict:
    pid = k.proc.pid
    cpu0, io0, sys0, pc0 = proc_cpu(pid), proc_io(pid), proc_stat_cpu(), proc_counters(pid)
    threads0 = thread_cpu(pid)
    threads_last = dict(threads0)
    phases: dict[str, float] = {}
    top_proc = None
    t0 = time.perf_counter()
    r = k.ec2.import_snapshot(DiskContainer={"Url": f"file://{path}", "Format": "raw"},
                              Description=f"kiln bench {tag}")
    task_id = r["ImportTaskId"]
    phases["accepted"] = time.perf_counter() - t0
    last = None
    while True:
        d = k.ec2.describe_import_snapshot_tasks(ImportTaskIds=[task_id])
        det = d["ImportSnapshotTasks"][0]["SnapshotTaskDetail"]
        now = time.perf_counter() - t0
        for tid, v in thread_cpu(pid).items():
            threads_last[tid] = v
        status, msg, prog = det.get("Status"), det.get("StatusMessage"), det.get("Progress")
        state = (status, msg, prog)
        if state != last:
            last = state
            if msg and f"msg:{msg}" not in phases:
                phases[f"msg:{msg}"] = now
            if prog is not None:
                phases.setdefault(f"progress:{prog}", now)
        if top_proc is None and prog is not None and prog.isdigit() and int(prog) >= 40:
            # Two frames 1 s apart; the second one's percentages cover that second.
            try:
                top_proc = subprocess.Popen(["top", "-b", "-H", "-d", "1", "-n", "2", "-w", "160",
                                             "-p", str(pid)], stdout=subprocess.PIPE,
                                            stderr=subprocess.DEVNULL, text=True)
            except OSError:
                top_proc = False
        if status == "completed":
            wall = now
            break
        if status in ("deleted", "deleting") or (status and status not in ("active",)):
            raise RuntimeError(f"import task {task_id} ended {status}: {msg}\n{k.log_tail()}")
        if now > 3600:
            raise RuntimeError(f"import task {task_id} not done after 1 h: {det}")
        time.sleep(poll)
    cpu1, io1, sys1, pc1 = proc_cpu(pid), proc_io(pid), proc_stat_cpu(), proc_counters(pid)
    top_text = None
    if top_proc:
        try:
            out, _ = top_proc.communicate(timeout=15)
            frames = out.split("\ntop - ")
            top_text = "top - " + frames[-1] if len(frames) > 1 else out
        except subprocess.TimeoutExpired:
            top_proc.kill()
            top_proc.communicate()
    snapshot_id = det["SnapshotId"]
    per_thread = []
    for tid, (comm, u, sy) in threads_last.items():
        _, u0, s0 = threads0.get(tid, (comm, 0.0, 0.0))
        if u + sy - u0 - s0 > 0.005:
            per_thread.append({"tid": tid, "comm": comm, "cpu": u + sy - u0 - s0,
                               "user": u - u0, "sys": sy - s0})
    per_thread.sort(key=lambda x: -x["cpu"])
    dsys = {key: sys1[key] - sys0[key] for key in sys0}
    total_ticks = sum(dsys.values()) or 1
    if top_text:
        with open(os.path.join(workdir, f"top-{tag}.txt"), "w") as f:
            f.write(top_text)
    return {
        "task_id": task_id,
        "snapshot_id": snapshot_id,
        "wall": wall,
        "phases": phases,
        "kiln_cpu": cpu1 - cpu0,
        "kiln_counters": {k_: pc1[k_] - pc0[k_] for k_ in pc0},
        "threads": per_thread[:8],
        "read_bytes": io1.get("read_bytes", 0) - io0.get("read_bytes", 0),
        "rchar": io1.get("rchar", 0) - io0.get("rchar", 0),
        "write_bytes": io1.get("write_bytes", 0) - io0.get("write_bytes", 0),
        "machine_cpu_pct": {key: 100.0 * v / total_ticks for key, v in dsys.items()},
        "machine_busy_cores": (total_ticks - dsys["idle"] - dsys["iowait"]) / CLK_TCK / wall,
        "top": top_text,
    }


def import_phases(imp: dict) -> dict:
    """Splits the import wall time using the task's observed states (poll resolution)."""
    ph = imp["phases"]
    start_store = ph.get("msg:importing")
    end_store = ph.get("progress:100")
    out = {"inspect": start_store, "store": None, "sync_seal": None}
    if start_store is not None:
        if end_store is not None and end_store >= start_store:
            out["store"] = end_store - start_store
            out["sync_seal"] = imp["wall"] - end_store
        else:
            out["store"] = imp["wall"] - start_store
    return out


# --------------------------------------------------------------------------------------
# EBS direct API
# --------------------------------------------------------------------------------------

def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


class LeanEbs:
    """A minimal EBS direct API client: requests signed with botocore's own SigV4 signer
    (service "ebs", us-east-1, the Kiln data dir's `kiln` credentials) and sent on
    http.client keep-alive connections, one per thread (thread-local, TCP_NODELAY like
    urllib3). No user agent, retries, parameter validation or response parsing beyond
    json.loads; PutSnapshotBlock is signed with `x-amz-content-sha256: UNSIGNED-PAYLOAD`
    (the ebs model's v4-unsigned-body), so its body is hashed once, for x-amz-Checksum.
    Non-2xx answers raise with the response body."""

    name = "lean"

    def __init__(self, host: str, port: int, key: str, secret: str):
        self.host = f"{host}:{port}"
        self._addr = (host, port)
        self._signer = SigV4Auth(Credentials(key, secret), "ebs", REGION)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[http.client.HTTPConnection] = []
        self.reconnects = 0

    def _conn(self) -> http.client.HTTPConnection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = http.client.HTTPConnection(*self._addr, timeout=600)
            self._local.conn = c
            with self._lock:
                self._conns.append(c)
        if c.sock is None:
            c.connect()
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return c

    def close(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            c.close()
        self._local = threading.local()

    def request(self, method: str, path: str, headers: dict[str, str], body: bytes = b"",
                signed_body: bool = True) -> tuple[int, dict, bytes]:
        h = {"Host": self.host, **headers}
        if not signed_body:
            h["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"
        req = AWSRequest(method=method, url=f"http://{self.host}{path}", headers=h, data=body)
        self._signer.add_auth(req)   # signs every header given (none is blacklisted)
        send = list(req.headers.items()) + [("Content-Length", str(len(body)))]
        for attempt in (0, 1):
            c = self._conn()
            reused = getattr(c, "_kiln_used", False)
            try:
                c.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
                for k_, v in send:
                    c.putheader(k_, v)
                c.endheaders(body or None)
                resp = c.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                c.close()
                if attempt or not reused:
                    raise
                # The server closed an idle keep-alive connection: once more, on a new one.
                with self._lock:
                    self.reconnects += 1
                continue
            c._kiln_used = True
            if resp.will_close:
                c.close()
                c._kiln_used = False
            if not 200 <= resp.status < 300:
                raise RuntimeError(f"EBS {method} {path}: HTTP {resp.status} {resp.reason}: "
                                   f"{data.decode(errors='replace')[:2000]}")
            return resp.status, dict(resp.getheaders()), data
        raise AssertionError("unreachable")

    def start_snapshot(self, VolumeSize: int, Timeout: int, Description: str,  # noqa: N803
                       ParentSnapshotId: str | None = None) -> dict:
        doc = {"VolumeSize": VolumeSize, "Timeout": Timeout, "Description": Description,
               "ClientToken": str(uuid.uuid4())}
        if ParentSnapshotId:
            doc["ParentSnapshotId"] = ParentSnapshotId
        _, _, data = self.request("POST", "/snapshots", {"Content-Type": "application/json"},
                                  json.dumps(doc).encode())
        return json.loads(data)

    def put_snapshot_block(self, SnapshotId: str, BlockIndex: int, BlockData: bytes,  # noqa: N803
                           DataLength: int, Checksum: str, ChecksumAlgorithm: str) -> dict:
        _, hdrs, _ = self.request(
            "PUT", f"/snapshots/{SnapshotId}/blocks/{BlockIndex}",
            {"x-amz-Data-Length": str(DataLength), "x-amz-Checksum": Checksum,
             "x-amz-Checksum-Algorithm": ChecksumAlgorithm,
             "Content-Type": "application/octet-stream"},
            BlockData, signed_body=False)
        return hdrs

    def complete_snapshot(self, SnapshotId: str, ChangedBlocksCount: int, Checksum: str,  # noqa: N803
                          ChecksumAlgorithm: str, ChecksumAggregationMethod: str) -> dict:
        _, _, data = self.request(
            "POST", f"/snapshots/completion/{SnapshotId}",
            {"x-amz-ChangedBlocksCount": str(ChangedBlocksCount), "x-amz-Checksum": Checksum,
             "x-amz-Checksum-Algorithm": ChecksumAlgorithm,
             "x-amz-Checksum-Aggregation-Method": ChecksumAggregationMethod})
        return json.loads(data) if data else {}


def ebs_snapshot(k: Kiln, volume_gib: int, parent: str | None, blocks, threads: int,
                 reader=None, client: str = "boto3") -> dict:
    """Writes a snapshot through the EBS direct API: `blocks` is a dict index -> bytes, or
    (with `reader`) a list of indexes whose bytes reader(index) returns inside the timed
    section. Checksums are computed inside the timed section, as a client would.
    client: "boto3" (k.ebs) or "lean" (k.lean) for StartSnapshot, PutSnapshotBlock and
    CompleteSnapshot; DescribeSnapshots is polled with boto3 either way."""
    ebs = k.lean if client == "lean" else k.ebs
    indexes = sorted(blocks)
    digests: dict[int, bytes] = {}
    put_secs: list[float] = []   # each PutSnapshotBlock call, from the calling thread

    def put(i: int, sid: str) -> None:
        data = reader(i) if reader else blocks[i]
        h = hashlib.sha256(data).digest()
        digests[i] = h
        t = time.perf_counter()
        ebs.put_snapshot_block(SnapshotId=sid, BlockIndex=i, BlockData=data,
                               DataLength=len(data), Checksum=b64(h),
                               ChecksumAlgorithm="SHA256")
        put_secs.append(time.perf_counter() - t)

    reconnects0 = k.lean.reconnects
    me0, srv0 = resource.getrusage(resource.RUSAGE_SELF), proc_counters(k.proc.pid)
    t0 = time.perf_counter()
    kwargs = {"ParentSnapshotId": parent} if parent else {}
    sid = ebs.start_snapshot(VolumeSize=volume_gib, Timeout=120, Description="kiln bench",
                             **kwargs)["SnapshotId"]
    t_started = time.perf_counter() - t0
    me_s = resource.getrusage(resource.RUSAGE_SELF)
    with cf.ThreadPoolExecutor(threads) as pool:
        for f in cf.as_completed([pool.submit(put, i, sid) for i in indexes]):
            f.result()
    t_put = time.perf_counter() - t0
    me_p = resource.getrusage(resource.RUSAGE_SELF)
    linear = hashlib.sha256(b"".join(digests[i] for i in indexes)).digest()
    done = ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=len(indexes),
                                 Checksum=b64(linear), ChecksumAlgorithm="SHA256",
                                 ChecksumAggregationMethod="LINEAR")
    status = done.get("Status")
    while status != "completed":
        if status == "error" or time.perf_counter() - t0 > 600:
            raise RuntimeError(f"snapshot {sid} ended {status}")
        time.sleep(0.05)
        status = k.ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]["State"]
    wall = time.perf_counter() - t0
    me1, srv1 = resource.getrusage(resource.RUSAGE_SELF), proc_counters(k.proc.pid)
    if client == "lean":
        k.lean.close()   # the pool's threads are gone; their connections go too
    cpu = lambda a, b: (b.ru_utime - a.ru_utime) + (b.ru_stime - a.ru_stime)  # noqa: E731
    ps = sorted(put_secs)
    pct = lambda q: ps[min(len(ps) - 1, int(q * len(ps)))] if ps else float("nan")  # noqa: E731
    return {"snapshot_id": sid, "client": client, "wall": wall, "blocks": len(indexes),
            "bytes": len(indexes) * BLOCK,
            "phases": {"start": t_started, "puts": t_put - t_started, "complete": wall - t_put},
            "client_cpu": cpu(me0, me1), "client_cpu_puts": cpu(me_s, me_p),
            "put_ms": {"median": 1000 * pct(0.5), "p90": 1000 * pct(0.9),
                       "max": 1000 * ps[-1] if ps else float("nan")},
            "lean_reconnects": k.lean.reconnects - reconnects0,
            "server_cpu": (srv1["utime"] - srv0["utime"]) + (srv1["stime"] - srv0["stime"])}


def list_blocks(k: Kiln, sid: str) -> dict[int, str]:
    out, token = {}, None
    while True:
        kw = {"SnapshotId": sid, "MaxResults": 10000}
        if token:
            kw["NextToken"] = token
        page = k.ebs.list_snapshot_blocks(**kw)
        for b in page.get("Blocks", []):
            out[b["BlockIndex"]] = b["BlockToken"]
        token = page.get("NextToken")
        if not token:
            return out


def list_changed(k: Kiln, first: str, second: str) -> set[int]:
    out, token = set(), None
    while True:
        kw = {"FirstSnapshotId": first, "SecondSnapshotId": second, "MaxResults": 10000}
        if token:
            kw["NextToken"] = token
        page = k.ebs.list_changed_blocks(**kw)
        out.update(b["BlockIndex"] for b in page.get("ChangedBlocks", []))
        token = page.get("NextToken")
        if not token:
            return out


def get_block(k: Kiln, sid: str, index: int, token: str) -> bytes:
    r = k.ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=index, BlockToken=token)
    return r["BlockData"].read()


def check(cond: bool, what: str, problems: list[str]) -> None:
    if not cond:
        problems.append(what)
        log(f"CHECK FAILED: {what}")


def verify_import(k: Kiln, sid: str, layout: dict, rng: random.Random, problems: list[str]):
    listed = list_blocks(k, sid)
    check(set(listed) == set(layout["nonzero"]),
          f"{sid} lists {len(listed)} blocks, the file has {len(layout['nonzero'])} non-zero blocks",
          problems)
    with open(layout["path"], "rb") as f:
        for i in rng.sample(sorted(listed), min(8, len(listed))):
            check(get_block(k, sid, i, listed[i]) == os.pread(f.fileno(), BLOCK, i * BLOCK),
                  f"{sid} block {i} differs from the file", problems)
    st = store_bytes(k.data_dir)
    check(st["files"] == layout["expected_stored_blocks"],
          f"store holds {st['files']} blocks, expected {layout['expected_stored_blocks']} "
          f"(distinct non-zero blocks)", problems)
    return listed


def change_set(layout: dict, pct: float, rng: random.Random, stream: Stream) -> dict[int, bytes]:
    n = max(1, round(layout["blocks"] * pct / 100))
    return {i: stream.block() for i in sorted(rng.sample(range(layout["blocks"]), n))}


def verify_child(k: Kiln, parent: str, child: str, changes: dict[int, bytes], current_file_block,
                 rng: random.Random, problems: list[str]) -> None:
    changed = list_changed(k, parent, child)
    check(changed == set(changes),
          f"ListChangedBlocks {parent}->{child}: {len(changed)} blocks, expected {len(changes)}",
          problems)
    listed = list_blocks(k, child)
    for i in rng.sample(sorted(changes), min(4, len(changes))):
        check(i in listed and get_block(k, child, i, listed[i]) == changes[i],
              f"{child} changed block {i} does not read back", problems)
    unchanged = [i for i in listed if i not in changes]
    for i in rng.sample(unchanged, min(4, len(unchanged))):
        check(get_block(k, child, i, listed[i]) == current_file_block(i),
              f"{child} unchanged block {i} differs", problems)


def measure_round(args, kiln_bin, work, image, copy, mode, rnd, layout, rng, problems) -> dict:
    """One round of one cache mode: cat, sha256sum, cp (+ sync), Kiln import (fresh server)."""
    r = {"round": rnd + 1}
    tag = f"[{mode} {rnd + 1}/{args.rounds}]"
    res = prepare_cache(image, mode)
    r["read"] = timed(["cat", image])
    log(f"{tag} cat: {r['read']['wall']:.2f} s (resident before: {res:.0%})")
    res = prepare_cache(image, mode)
    r["sha256sum"] = timed(["sha256sum", image])
    log(f"{tag} sha256sum: {r['sha256sum']['wall']:.2f} s (resident before: {res:.0%})")
    if shutil.which("openssl"):
        res = prepare_cache(image, mode)
        r["openssl"] = timed(["openssl", "dgst", "-sha256", image])
        log(f"{tag} openssl dgst -sha256: {r['openssl']['wall']:.2f} s (resident before: {res:.0%})")
    res = prepare_cache(image, mode)
    r["cp"] = timed(["cp", image, copy])
    sy = timed(["sync", "-f", copy])
    w = r["cp"]["wall"] + sy["wall"]
    r["cp_sync"] = {"argv": ["cp", image, copy, "&&", "sync", "-f", copy], "wall": w,
                    "user": r["cp"]["user"] + sy["user"], "sys": r["cp"]["sys"] + sy["sys"],
                    "others": (r["cp"]["others"] * r["cp"]["wall"] + sy["others"] * sy["wall"]) / w}
    log(f"{tag} cp: {r['cp']['wall']:.2f} s, + sync {sy['wall']:.2f} s (resident before: {res:.0%})")
    os.unlink(copy)
    sync_all()
    k = Kiln(kiln_bin, work, f"{mode}-{rnd + 1}", args.upload_threads, args.serve_arg)
    res = prepare_cache(image, mode)
    r["resident_before_import"] = res
    r["kiln"] = run_import(k, image, args.poll, work, f"{mode}-{rnd + 1}")
    log(f"{tag} kiln import: {r['kiln']['wall']:.2f} s, phases "
        f"{ {k_: round(v, 2) for k_, v in import_phases(r['kiln']).items() if v is not None} }, "
        f"kiln CPU {r['kiln']['kiln_cpu']:.1f} s (resident before: {res:.0%})")
    st = store_bytes(k.data_dir)
    st["usage_referenced"] = usage_referenced(k.usage())
    r["store"] = st
    verify_import(k, r["kiln"]["snapshot_id"], layout, rng, problems)
    r["server"] = k
    return r


STEPS = ("read", "sha256sum", "openssl", "cp", "cp_sync", "kiln")


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def summarize(m: dict) -> None:
    """Median and range of each step's wall time over the rounds, and of Kiln's ratio."""
    m["summary"] = {}
    for key in STEPS:
        if any(key not in r for r in m["rounds"]):
            continue
        walls = [r[key]["wall"] for r in m["rounds"]]
        ratios = [r[key]["wall"] / r["kiln"]["wall"] for r in m["rounds"]]
        m["summary"][key] = {"wall": median(walls), "min": min(walls), "max": max(walls),
                             "ratio": median(ratios), "ratio_min": min(ratios),
                             "ratio_max": max(ratios)}


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------

def machine_facts() -> dict:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) * 1024
    fs = subprocess.run(["df", "-hT", "/tmp"], capture_output=True, text=True).stdout.splitlines()
    flags = open("/proc/cpuinfo").read()
    def ver(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]
        except (OSError, IndexError):
            return "?"
    block = Stream(0, "hash-reference").block()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 1.0:
        hashlib.sha256(block).digest()
        n += 1
    sha_ref = n * BLOCK / MB / (time.perf_counter() - t0)
    return {
        "sha256_one_core_mbs": sha_ref,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "cpu": cpu,
        "sha_ni": " sha_ni" in flags,
        "mem_gib": mem / GIB,
        "kernel": platform.platform(),
        "fs": fs[-1] if fs else "?",
        "loadavg": open("/proc/loadavg").read().split()[:3],
        "python": platform.python_version(),
        "boto3": boto3.__version__,
        "botocore": botocore.__version__,
        "coreutils": ver(["sha256sum", "--version"]),
    }


def git_state(start: str) -> str:
    try:
        root = subprocess.run(["git", "-C", start, "rev-parse", "--show-toplevel"],
                              capture_output=True, text=True, check=True).stdout.strip()
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "src", "Cargo.toml",
                                "Cargo.lock"], capture_output=True, text=True).stdout.strip()
        return head + (" + uncommitted changes in src/" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


def f2(x, d=2):
    if x is None or x != x:
        return "-"
    return f"{x:,.{d}f}"


def mb(b):
    return f"{b / MB:,.0f} MB" if b >= 10 * MB else f"{b / MB:,.1f} MB"


def mib(b):
    return f"{b / (1 << 20):,.1f} MiB"


def yesno(ok):
    return "**yes**" if ok else "**no**"


CLIENT_LABEL = {"lean": "lean client", "boto3": "boto3"}


def report(args, facts, layout, modes, incs, ver, full, problems, cmdline) -> str:
    size = layout["size"]
    inc = incs[0] if incs else None
    o = []
    o.append(f"## Snapshot data: {args.size_gib:g} GiB import, incremental snapshots, ten versions\n")
    o.append(f"- Command: `{cmdline}`")
    o.append(f"- Date: {facts['date']}; load average at start {' '.join(facts['loadavg'])}")
    o.append(f"- Machine: {facts['cores']} cores ({facts['cpu']}, SHA-NI "
             f"{'yes' if facts['sha_ni'] else 'no'}), {facts['mem_gib']:.0f} GiB RAM, "
             f"{facts['kernel']}")
    o.append(f"- Kiln: {facts.get('kiln_bin', '?')}, commit {facts.get('kiln_commit', '?')}")
    o.append(f"- File system (source, copy and Kiln data dirs): `{facts['fs']}`")
    o.append(f"- Tools: {facts['coreutils']}; Python {facts['python']}, boto3 {facts['boto3']}. "
             f"Reference: SHA-256 of a 512 KiB block in memory on one core (OpenSSL via Python "
             f"hashlib) runs at {facts['sha256_one_core_mbs']:,.0f} MB/s on this machine.")
    o.append(f"- Image: {mib(size)} raw, {layout['blocks']} blocks of 512 KiB in "
             f"{layout['regions']} regions: {layout['random_blocks']} random, "
             f"{layout['zero_blocks']} zero, {layout['copy_blocks']} copies of earlier random "
             f"blocks (512 KiB-aligned); zeros written (not sparse). Distinct non-zero data: "
             f"{mib(layout['expected_stored_blocks'] * BLOCK)}.")
    o.append(f"- MB/s = {mib(size)} ({size / MB:,.0f} MB) / wall seconds (MB = 10^6 B). "
             f"Kiln import: ImportSnapshot call to DescribeImportSnapshotTasks `completed`, "
             f"polled every {args.poll:g} s; includes Kiln's syncfs of the data file system. "
             f"`cp` is without fsync; `cp + sync` adds `sync -f` of the copy's file system.")
    o.append("- cold = file evicted from the page cache (fsync + posix_fadvise DONTNEED, "
             "fincore checked) before each command; warm = file read once before each "
             f"command (fully resident). Per cache mode, {args.rounds} round(s) of: cat, "
             "sha256sum, cp + sync, Kiln import into a fresh data dir and server.")
    o.append(f"- EBS direct API client (`--ebs-client {args.ebs_client}`): *boto3* = "
             f"boto3 {facts['boto3']} `ebs` client; *lean client* = the script's minimal client: "
             "botocore's SigV4 signer (PutSnapshotBlock with `x-amz-content-sha256: "
             "UNSIGNED-PAYLOAD`) and http.client keep-alive connections, one per upload thread, "
             "without boto3's per-request Python work (client CPU per block is given below). "
             "Each client makes its own "
             "StartSnapshot, PutSnapshotBlock and CompleteSnapshot calls; DescribeSnapshots is "
             "polled with boto3 (every 0.05 s) until `completed`."
             + (" The incremental step runs twice from the same parent with the same changed "
                "blocks: first with the lean client, then with boto3 (a second child). Only the "
                "first run's blocks are new to the store, so store growth is the first run's."
                if len(incs) > 1 else "")
             + (" The ten versions and the full EBS upload use "
                + ("the lean client." if (ver or full)["client"] == "lean" else "boto3.")
                if ver or full else "")
             + "\n")

    rounds = args.rounds
    rng_note = f" (min–max of {rounds})" if rounds > 1 else ""
    o.append(f"| Step | Cache | Wall s{', median' if rounds > 1 else ''}{rng_note} | MB/s | "
             f"Kiln's MB/s ÷ this MB/s{rng_note} |")
    o.append("|---|---|--:|--:|--:|")

    def cell(sm, key):
        lo, hi = ("min", "max") if key == "wall" else (key + "_min", key + "_max")
        if rounds == 1:
            return f2(sm[key])
        return f"{f2(sm[key])} ({f2(sm[lo])}–{f2(sm[hi])})"

    labels = (("`cat FILE > /dev/null`", "read"), ("`sha256sum FILE`", "sha256sum"),
              ("`openssl dgst -sha256 FILE` (reference: SHA-NI, one core)", "openssl"),
              ("`cp FILE COPY`", "cp"), ("`cp FILE COPY` + `sync -f`", "cp_sync"))
    for m in modes:
        sm = m["summary"]
        for label, key in labels:
            if key not in sm:
                continue
            o.append(f"| {label} | {m['mode']} | {cell(sm[key], 'wall')} | "
                     f"{f2(size / MB / sm[key]['wall'], 0)} | {cell(sm[key], 'ratio')}× |")
        kw = sm["kiln"]["wall"]
        o.append(f"| **Kiln ImportSnapshot** (fresh store) | {m['mode']} | **{cell(sm['kiln'], 'wall')}** | "
                 f"**{f2(size / MB / kw, 0)}** | 1.00× |")
    if full:
        w = full["wall"]
        o.append(f"| Kiln EBS direct upload of v1, {full['blocks']} non-zero blocks, "
                 f"{args.upload_threads} threads, {CLIENT_LABEL[full['client']]} (fresh store) "
                 f"| warm | {f2(w)} | {f2(size / MB / w, 0)} | - |")
    for r in incs:
        again = " (second run: blocks already stored)" if r["run"] > 1 else ""
        o.append(f"| Kiln incremental, {r['blocks']} changed blocks ({args.change_pct:g}%), "
                 f"EBS direct API, {CLIENT_LABEL[r['client']]}, {args.upload_threads} threads"
                 f"{again} | - | {f2(r['wall'], 3)} | - | - |")
    o.append("")

    o.append("| Target | Measured | Target | Met |")
    o.append("|---|---|---|---|")
    for m in modes:
        sm = m["summary"]
        r_sha, r_cp, r_cps = sm["sha256sum"], sm["cp"], sm["cp_sync"]
        o.append(f"| Import vs `sha256sum` ({m['mode']}) | {cell(r_sha, 'ratio')}× sha256sum's MB/s "
                 f"| ≥ 1.5× | {yesno(r_sha['ratio'] >= 1.5)} |")
        o.append(f"| Import vs `cp` ({m['mode']}) | {cell(r_cp, 'ratio')}× cp's MB/s (vs cp + sync: "
                 f"{cell(r_cps, 'ratio')}×) | ≥ 0.5× (within 2×) | {yesno(r_cp['ratio'] >= 0.5)} |")
    med = "median " if rounds > 1 else ""
    for r in incs:
        # Met: against the first cache mode's import, as the "first snapshot".
        first = modes[0]["summary"]["kiln"]["wall"]
        pct_t = 100 * r["wall"] / first
        parts = [f"{f2(100 * r['wall'] / m['summary']['kiln']['wall'])}% of the {med}"
                 f"{m['mode']} import ({f2(m['summary']['kiln']['wall'])} s)" for m in modes]
        if full and full["client"] == r["client"]:
            parts.append(f"{f2(100 * r['wall'] / full['wall'])}% of the full EBS upload with "
                         f"the same client ({f2(full['wall'])} s)")
        elif full:
            parts.append(f"no full EBS upload with {CLIENT_LABEL[r['client']]} in this run "
                         f"({f2(100 * r['wall'] / full['wall'])}% of the full EBS upload with "
                         f"{CLIENT_LABEL[full['client']]}, {f2(full['wall'])} s)")
        o.append(f"| Incremental time ({args.change_pct:g}% of blocks), "
                 f"{CLIENT_LABEL[r['client']]}{', second run' if r['run'] > 1 else ''} | "
                 f"{f2(r['wall'], 3)} s = " + "; ".join(parts)
                 + f" | ≤ 3% (of the {modes[0]['mode']} import) | {yesno(pct_t <= 3)} |")
    if inc:
        pct_b = 100 * inc["extra_bytes"] / inc["base_bytes"]
        ideal = 100 * inc["blocks"] * BLOCK / inc["base_bytes"]
        later = "".join(f"; the {CLIENT_LABEL[r['client']]} run {r['run']} wrote the same blocks "
                        f"again: +{mib(r['extra_bytes'])} in {r['extra_files']} new block files"
                        for r in incs[1:])
        o.append(f"| Incremental extra stored bytes "
                 f"({'first run, ' if len(incs) > 1 else ''}{CLIENT_LABEL[inc['client']]}) | "
                 f"+{mib(inc['extra_bytes'])} = {f2(pct_b)}% of v1's "
                 f"{mib(inc['base_bytes'])} ({f2(100 * inc['extra_bytes'] / size)}% of the logical "
                 f"size); the changed blocks themselves are {mib(inc['blocks'] * BLOCK)} = {f2(ideal)}%"
                 f"{later} | ≤ 2% | {yesno(pct_b <= 2)} |")
    if ver:
        o.append(f"| {ver['versions']} versions, {args.version_change_pct:g}% changed each | store "
                 f"{mib(ver['final_bytes'])} = {f2(ver['ratio'], 3)}× one version's "
                 f"{mib(ver['base_bytes'])} (block-level minimum {f2(ver['ideal_ratio'], 3)}×) "
                 f"| ≤ 1.25× | {yesno(ver['ratio'] <= 1.25)} |")
    o.append("")

    o.append("Where the import's time goes (task states seen by the poller; CPU from /proc):\n")
    o.append("| Cache | Wall s | inspect (qemu-img info) s | read+hash+store s | syncfs+seal s | "
             "Kiln CPU s: user + sys (cores) | busiest Kiln threads: user + sys CPU s | machine CPU: user / sys / iowait / idle % "
             "| other processes (incl. this script), cores | Kiln disk read / write |")
    o.append("|---|--:|--:|--:|--:|--:|---|---|--:|---|")
    for m, rnd in [(m, r) for m in modes for r in m["rounds"]]:
        k = rnd["kiln"]
        ph = import_phases(k)
        thr = ", ".join(f"{t['comm']} {t['user']:.1f}+{t['sys']:.1f}" for t in k["threads"][:5])
        pc = k["machine_cpu_pct"]
        others = k["machine_busy_cores"] - k["kiln_cpu"] / k["wall"]
        o.append(f"| {m['mode']}{' ' + str(rnd['round']) if rounds > 1 else ''} | {f2(k['wall'])} | "
                 f"{f2(ph['inspect'])} | {f2(ph['store'])} | "
                 f"{f2(ph['sync_seal'])} | {k['kiln_counters']['utime']:.1f} + "
                 f"{k['kiln_counters']['stime']:.1f} ({f2(k['kiln_cpu'] / k['wall'])}) | "
                 f"{thr} | {pc['user'] + pc['nice']:.0f} / {pc['system'] + pc['irq'] + pc['softirq']:.0f} / "
                 f"{pc['iowait']:.0f} / {pc['idle']:.0f} | {f2(max(others, 0))} | "
                 f"{mb(k['read_bytes'])} / {mb(k['write_bytes'])} |")
    o.append("")
    for m in modes:
        k = m["rounds"][0]["kiln"]
        c = k["kiln_counters"]
        o.append(f"- Kiln during the (first) {m['mode']} import: {c['minflt']:,} minor / "
                 f"{c['majflt']:,} major page faults; {mb(k['rchar'])} through read(2), "
                 f"{mb(k['read_bytes'])} of it from the disk.")
    for label, r in ([(f"incremental{' run ' + str(r_['run']) if len(incs) > 1 else ''}", r_)
                      for r_ in incs] + [("full upload", full)]):
        if r:
            ph, pm = r["phases"], r["put_ms"]
            n = max(r["blocks"], 1)
            o.append(f"- EBS {label} ({CLIENT_LABEL[r['client']]}): StartSnapshot "
                     f"{ph['start']:.3f} s, {r['blocks']} PutSnapshotBlock on {args.upload_threads} "
                     f"threads {ph['puts']:.3f} s ({1000 * ph['puts'] / n:.2f} ms/block; each call "
                     f"median {pm['median']:.2f} / p90 {pm['p90']:.2f} / max {pm['max']:.2f} ms), "
                     f"CompleteSnapshot + DescribeSnapshots until completed {ph['complete']:.3f} s; "
                     f"CPU: client (Python, {CLIENT_LABEL[r['client']]}) {r['client_cpu']:.2f} s "
                     f"({1000 * r['client_cpu_puts'] / n:.2f} ms per block during the puts, "
                     f"hashing included), Kiln {r['server_cpu']:.2f} s"
                     + (f"; {r['lean_reconnects']} keep-alive reconnects"
                        if r.get("lean_reconnects") else "") + ".")
    top = next((m["rounds"][0]["kiln"].get("top") for m in reversed(modes)
                if m["rounds"][0]["kiln"].get("top")), None)
    if top:
        lines = top.splitlines()
        head = [ln for ln in lines if ln.lstrip().startswith("PID")]
        body = [ln.rstrip() for ln in lines[lines.index(head[0]) + 1:]][:6] if head else []
        cpu_line = [ln for ln in lines if ln.startswith("%Cpu")]
        o.append("")
        o.append(f"`top -b -H -d 1 -n 2 -p KILN` (second frame) from about 40% of the first "
                 f"{modes[-1]['mode']} import:\n")
        o.append("```")
        o.extend(cpu_line + head + body)
        o.append("```")
    o.append("")
    o.append("| Cache | Command | Wall s | user s | sys s | other processes, cores |")
    o.append("|---|---|--:|--:|--:|--:|")
    for m, rnd in [(m, r) for m in modes for r in m["rounds"]]:
        for key in ("read", "sha256sum", "openssl", "cp", "cp_sync"):
            if key not in rnd:
                continue
            r = rnd[key]
            o.append(f"| {m['mode']}{' ' + str(rnd['round']) if rounds > 1 else ''} | `{' '.join(os.path.basename(a) if a.startswith('/') else a for a in r['argv'])}` "
                     f"| {f2(r['wall'])} | {f2(r['user'])} | {f2(r['sys'])} | {f2(r['others'])} |")
    o.append("")
    if ver:
        o.append(f"Store growth over the versions (block files under DATA/blocks; EBS direct API, "
                 f"{CLIENT_LABEL[ver['client']]}):\n")
        o.append("| Version | Blocks written | Snapshot s | Store | × v1 |")
        o.append("|--:|--:|--:|--:|--:|")
        for row in ver["rows"]:
            o.append(f"| {row['version']} | {row['blocks']} | {f2(row['wall'], 3)} | "
                     f"{mib(row['bytes'])} | {f2(row['bytes'] / ver['base_bytes'], 3)} |")
        o.append("")
    o.append("Stores after each step: " + "; ".join(
        f"{name}: {mib(s['bytes'])} in {s['files']} block files, {mib(s['allocated'])} allocated, "
        f"metadata {mib(s['metadata'])}, `kiln usage` referenced "
        f"{mib(s['usage_referenced']) if s.get('usage_referenced') is not None else '-'}"
        for name, s in [("import (" + m["mode"] + ")", m["rounds"][0]["store"]) for m in modes]
        + [(f"after incremental{' run ' + str(r['run']) if len(incs) > 1 else ''} "
            f"({CLIENT_LABEL[r['client']]})", r["store"]) for r in incs]
        + ([("after versions", ver["store"])] if ver else [])))
    o.append("")
    o.append("Checks: " + ("all passed (snapshot listings equal the file's non-zero blocks, sampled "
                           "blocks read back equal, one file per distinct block, ListChangedBlocks "
                           "exact)." if not problems else "FAILED: " + "; ".join(problems)))
    return "\n".join(o) + "\n"


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln-bin", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                       "..", "target", "release", "kiln"))
    ap.add_argument("--size-gib", type=float, default=4.0)
    ap.add_argument("--workdir", default=tempfile.gettempdir(),
                    help="where the temporary directory is made (default /tmp)")
    ap.add_argument("--cache", default="cold,warm", help="page-cache modes, in order: cold,warm")
    ap.add_argument("--mix", default="40,30,30", help="random,zero,copy percentages")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--change-pct", type=float, default=1.0)
    ap.add_argument("--versions", type=int, default=10)
    ap.add_argument("--version-change-pct", type=float, default=2.0)
    ap.add_argument("--upload-threads", type=int, default=4)
    ap.add_argument("--poll", type=float, default=0.1, help="import task poll interval, s")
    ap.add_argument("--no-ebs-full", action="store_true", help="skip the full EBS upload")
    ap.add_argument("--ebs-client", choices=("lean", "boto3", "both"), default="both",
                    help="EBS direct API client: lean (botocore's SigV4 signer + http.client "
                         "keep-alive), boto3, or both (default): the incremental step runs "
                         "with each client (lean first, boto3 second, same parent and blocks); "
                         "versions and the full upload use lean unless boto3 alone is chosen")
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure cat/sha256sum/cp/import this many times per cache mode "
                         "(each import into a fresh Kiln); the report gives median and range")
    ap.add_argument("--serve-arg", action="append", default=[],
                    help="extra argument for `kiln serve` (repeatable), e.g. --compress-blocks")
    ap.add_argument("--json", help="write all figures to this file")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    cmdline = "python3 bench/import_bench.py " + " ".join(sys.argv[1:])

    signal.signal(signal.SIGTERM, lambda s, f: (_ for _ in ()).throw(SystemExit(128 + s)))
    kiln_bin = os.path.abspath(args.kiln_bin)
    if not os.access(kiln_bin, os.X_OK):
        log(f"{kiln_bin} missing: cargo build --release")
        return 2
    modes = [m.strip() for m in args.cache.split(",") if m.strip()]
    if not modes or any(m not in ("cold", "warm") for m in modes):
        log("--cache takes cold, warm or cold,warm")
        return 2
    mix = tuple(float(x) / 100 for x in args.mix.split(","))
    size = int(args.size_gib * GIB) // BLOCK * BLOCK
    volume_gib = max(1, -(-size // GIB))
    # Disk: source + copy + up to three stores (each ~ the distinct data plus the changes).
    need = size * 2 + 4 * size * (mix[0] + 0.3) + GIB
    free = shutil.disk_usage(args.workdir).free
    if free < need:
        log(f"{args.workdir} has {free / GIB:.1f} GiB free; this run needs about {need / GIB:.1f} GiB")
        return 2

    facts = machine_facts()
    facts["kiln_commit"] = git_state(os.path.dirname(kiln_bin))
    work = tempfile.mkdtemp(prefix="kiln-import-bench-", dir=args.workdir)
    # Run a private copy: a concurrent `cargo build` may replace target/release/kiln.
    private_bin = os.path.join(work, "kiln")
    shutil.copy2(kiln_bin, private_bin)
    facts["kiln_bin"] = f"{kiln_bin} (built {dt.datetime.fromtimestamp(os.path.getmtime(kiln_bin), dt.timezone.utc):%Y-%m-%d %H:%M UTC})"
    kiln_bin = private_bin
    problems: list[str] = []
    results = {"args": vars(args), "facts": facts}
    modes_out, inc, ver, full = [], None, None, None
    incs: list[dict] = []   # incremental runs, in order; inc = the first (store growth)
    inc_clients = ["lean", "boto3"] if args.ebs_client == "both" else [args.ebs_client]
    main_client = "boto3" if args.ebs_client == "boto3" else "lean"
    try:
        image = os.path.join(work, "disk.raw")
        log(f"writing {mib(size)} image {image} (mix {args.mix})")
        layout = make_image(image, size, mix, args.seed)
        log(f"image written in {layout['generate_seconds']:.1f} s: {layout['random_blocks']} random, "
            f"{layout['zero_blocks']} zero, {layout['copy_blocks']} copy blocks")
        rng = random.Random(args.seed + 1)
        copy = os.path.join(work, "copy.raw")
        for n, mode in enumerate(modes):
            m = {"mode": mode, "rounds": []}
            k = None
            for rnd in range(args.rounds):
                r = measure_round(args, kiln_bin, work, image, copy, mode, rnd, layout, rng,
                                  problems)
                m["rounds"].append(r)
                if rnd == 0:
                    k = r.pop("server")   # kept for the incremental / version steps
                else:
                    srv = r.pop("server")
                    srv.stop()
                    shutil.rmtree(srv.data_dir, ignore_errors=True)
            summarize(m)
            modes_out.append(m)
            st = m["rounds"][0]["store"]
            sid = m["rounds"][0]["kiln"]["snapshot_id"]

            if n == 0 and args.change_pct > 0:
                changes = change_set(layout, args.change_pct, rng, Stream(args.seed, "inc"))
                # Same parent, same changed blocks, one child per client. The lean client goes
                # first: its blocks are new to the store, as in the real case; the boto3 run
                # then writes blocks the store already holds (store growth: first run only).
                prev = st
                for client in inc_clients:
                    r = ebs_snapshot(k, volume_gib, sid, changes, args.upload_threads,
                                     client=client)
                    st2 = store_bytes(k.data_dir)
                    st2["usage_referenced"] = usage_referenced(k.usage())
                    r.update(base_bytes=st["bytes"], extra_bytes=st2["bytes"] - prev["bytes"],
                             extra_files=st2["files"] - prev["files"], store=st2,
                             run=len(incs) + 1)
                    incs.append(r)
                    log(f"incremental ({client} client, run {r['run']}): {r['blocks']} blocks in "
                        f"{r['wall']:.3f} s (puts {1000 * r['phases']['puts'] / r['blocks']:.2f} "
                        f"ms/block, per put median {r['put_ms']['median']:.2f} ms), store "
                        f"+{mib(r['extra_bytes'])} in {r['extra_files']} block files")
                    if r["run"] > 1:
                        check(r["extra_files"] == 0,
                              f"incremental run {r['run']} ({client}) wrote the same blocks again "
                              f"but added {r['extra_files']} block files", problems)
                    prev = st2
                    with open(image, "rb") as f:
                        verify_child(k, sid, r["snapshot_id"], changes,
                                     lambda i: os.pread(f.fileno(), BLOCK, i * BLOCK), rng,
                                     problems)
                inc = incs[0]
            if n == len(modes) - 1 and args.versions > 1:
                if n == 0 and inc:
                    # One mode only: the incremental child would count in the store; use a
                    # fresh server for the versions.
                    k.stop()
                    k = Kiln(kiln_bin, work, f"{mode}-versions", args.upload_threads,
                             args.serve_arg)
                    prepare_cache(image, mode)
                    again = run_import(k, image, args.poll, work, f"{mode}-versions")
                    sid = again["snapshot_id"]
                    log(f"second import for the versions: {again['wall']:.2f} s")
                    v1_wall = again["wall"]
                else:
                    v1_wall = m["rounds"][0]["kiln"]["wall"]
                base = store_bytes(k.data_dir)["bytes"]
                current: dict[int, bytes] = {}
                rows = [{"version": 1, "blocks": len(layout["nonzero"]), "wall": v1_wall,
                         "bytes": base}]
                parent = sid
                stream = Stream(args.seed, "versions")
                ideal = base
                changes = {}
                prev_parent = parent
                for v in range(2, args.versions + 1):
                    changes = change_set(layout, args.version_change_pct, rng, stream)
                    r = ebs_snapshot(k, volume_gib, parent, changes, args.upload_threads,
                                     client=main_client)
                    current.update(changes)
                    ideal += len(changes) * BLOCK
                    prev_parent, parent = parent, r["snapshot_id"]
                    rows.append({"version": v, "blocks": r["blocks"], "wall": r["wall"],
                                 "bytes": store_bytes(k.data_dir)["bytes"]})
                    log(f"version {v}: {r['blocks']} blocks in {r['wall']:.3f} s, store "
                        f"{mib(rows[-1]['bytes'])}")
                st3 = store_bytes(k.data_dir)
                st3["usage_referenced"] = usage_referenced(k.usage())
                ver = {"versions": args.versions, "client": main_client, "rows": rows,
                       "base_bytes": base,
                       "final_bytes": st3["bytes"], "ratio": st3["bytes"] / base,
                       "ideal_ratio": ideal / base, "store": st3}
                with open(image, "rb") as f:
                    verify_child(k, prev_parent, parent, changes,
                                 lambda i: current.get(i) or os.pread(f.fileno(), BLOCK, i * BLOCK),
                                 rng, problems)
            k.stop()
            if not args.keep:
                shutil.rmtree(k.data_dir, ignore_errors=True)

        if not args.no_ebs_full:
            k = Kiln(kiln_bin, work, "ebs-full", args.upload_threads, args.serve_arg)
            prepare_cache(image, "warm")
            with open(image, "rb") as f:
                fd = f.fileno()
                full = ebs_snapshot(k, volume_gib, None, layout["nonzero"], args.upload_threads,
                                    reader=lambda i: os.pread(fd, BLOCK, i * BLOCK),
                                    client=main_client)
            full["store"] = store_bytes(k.data_dir)
            log(f"full EBS upload ({main_client} client): {full['blocks']} blocks in "
                f"{full['wall']:.2f} s (puts {1000 * full['phases']['puts'] / full['blocks']:.2f} "
                f"ms/block, per put median {full['put_ms']['median']:.2f} ms)")
            verify_import(k, full["snapshot_id"], layout, rng, problems)
            k.stop()

        layout_out = {k_: v for k_, v in layout.items() if k_ != "nonzero"}
        results.update(layout=layout_out, modes=modes_out, incremental=inc,
                       incremental_runs=incs, versions=ver, ebs_full=full, problems=problems)
        text = report(args, facts, layout, modes_out, incs, ver, full, problems, cmdline)
        print(text)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2, default=str)
        return 1 if problems else 0
    finally:
        stop_all()
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
