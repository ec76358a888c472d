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
   LINEAR checksum). Its time is compared with the import's time, and the extra bytes in
   the block store with what the imported snapshot stored.

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


def ebs_snapshot(k: Kiln, volume_gib: int, parent: str | None, blocks, threads: int,
                 reader=None) -> dict:
    """Writes a snapshot through the EBS direct API: `blocks` is a dict index -> bytes, or
    (with `reader`) a list of indexes whose bytes reader(index) returns inside the timed
    section. Checksums are computed inside the timed section, as a client would."""
    indexes = sorted(blocks)
    digests: dict[int, bytes] = {}

    def put(i: int, sid: str) -> None:
        data = reader(i) if reader else blocks[i]
        h = hashlib.sha256(data).digest()
        digests[i] = h
        k.ebs.put_snapshot_block(SnapshotId=sid, BlockIndex=i, BlockData=data,
                                 DataLength=len(data), Checksum=b64(h),
                                 ChecksumAlgorithm="SHA256")

    me0, srv0 = resource.getrusage(resource.RUSAGE_SELF), proc_counters(k.proc.pid)
    t0 = time.perf_counter()
    kwargs = {"ParentSnapshotId": parent} if parent else {}
    sid = k.ebs.start_snapshot(VolumeSize=volume_gib, Timeout=120, Description="kiln bench",
                               **kwargs)["SnapshotId"]
    t_started = time.perf_counter() - t0
    with cf.ThreadPoolExecutor(threads) as pool:
        for f in cf.as_completed([pool.submit(put, i, sid) for i in indexes]):
            f.result()
    t_put = time.perf_counter() - t0
    linear = hashlib.sha256(b"".join(digests[i] for i in indexes)).digest()
    done = k.ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=len(indexes),
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
    return {"snapshot_id": sid, "wall": wall, "blocks": len(indexes),
            "bytes": len(indexes) * BLOCK,
            "phases": {"start": t_started, "puts": t_put - t_started, "complete": wall - t_put},
            "client_cpu": (me1.ru_utime - me0.ru_utime) + (me1.ru_stime - me0.ru_stime),
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


def report(args, facts, layout, modes, inc, ver, full, problems, cmdline) -> str:
    size = layout["size"]
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
             "sha256sum, cp + sync, Kiln import into a fresh data dir and server.\n")

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
                 f"{args.upload_threads} threads (fresh store) | warm | {f2(w)} | "
                 f"{f2(size / MB / w, 0)} | - |")
    if inc:
        o.append(f"| Kiln incremental, {inc['blocks']} changed blocks ({args.change_pct:g}%), "
                 f"EBS direct API, {args.upload_threads} threads | - | {f2(inc['wall'], 3)} | - | - |")
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
    if inc:
        first = modes[0]["summary"]["kiln"]["wall"]
        pct_t = 100 * inc["wall"] / first
        pct_b = 100 * inc["extra_bytes"] / inc["base_bytes"]
        ideal = 100 * inc["blocks"] * BLOCK / inc["base_bytes"]
        o.append(f"| Incremental time ({args.change_pct:g}% of blocks) | {f2(inc['wall'], 3)} s = "
                 f"{f2(pct_t)}% of the {modes[0]['mode']} import's {f2(first)} s"
                 + (f" ({f2(100 * inc['wall'] / modes[-1]['summary']['kiln']['wall'])}% of the "
                    f"{modes[-1]['mode']} import's)" if len(modes) > 1 else "")
                 + (f" ({f2(100 * inc['wall'] / full['wall'])}% of the full EBS upload)" if full else "")
                 + f" | ≤ 3% | {yesno(pct_t <= 3)} |")
        o.append(f"| Incremental extra stored bytes | +{mib(inc['extra_bytes'])} = {f2(pct_b)}% of v1's "
                 f"{mib(inc['base_bytes'])} ({f2(100 * inc['extra_bytes'] / size)}% of the logical "
                 f"size); the changed blocks themselves are {mib(inc['blocks'] * BLOCK)} = {f2(ideal)}% "
                 f"| ≤ 2% | {yesno(pct_b <= 2)} |")
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
    for label, r in (("incremental", inc), ("full upload", full)):
        if r:
            ph = r["phases"]
            o.append(f"- EBS {label}: StartSnapshot {ph['start']:.3f} s, {r['blocks']} "
                     f"PutSnapshotBlock on {args.upload_threads} threads {ph['puts']:.3f} s "
                     f"({1000 * ph['puts'] / max(r['blocks'], 1):.2f} ms/block), CompleteSnapshot "
                     f"{ph['complete']:.3f} s; CPU: client (Python/boto3) {r['client_cpu']:.2f} s, "
                     f"Kiln {r['server_cpu']:.2f} s.")
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
        o.append("Store growth over the versions (block files under DATA/blocks):\n")
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
        + ([("after incremental", inc["store"])] if inc else [])
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
                r = ebs_snapshot(k, volume_gib, sid, changes, args.upload_threads)
                st2 = store_bytes(k.data_dir)
                st2["usage_referenced"] = usage_referenced(k.usage())
                inc = dict(r, base_bytes=st["bytes"], extra_bytes=st2["bytes"] - st["bytes"],
                           store=st2)
                log(f"incremental: {r['blocks']} blocks in {r['wall']:.3f} s, +{mib(inc['extra_bytes'])}")
                with open(image, "rb") as f:
                    verify_child(k, sid, r["snapshot_id"], changes,
                                 lambda i: os.pread(f.fileno(), BLOCK, i * BLOCK), rng, problems)
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
                    r = ebs_snapshot(k, volume_gib, parent, changes, args.upload_threads)
                    current.update(changes)
                    ideal += len(changes) * BLOCK
                    prev_parent, parent = parent, r["snapshot_id"]
                    rows.append({"version": v, "blocks": r["blocks"], "wall": r["wall"],
                                 "bytes": store_bytes(k.data_dir)["bytes"]})
                    log(f"version {v}: {r['blocks']} blocks in {r['wall']:.3f} s, store "
                        f"{mib(rows[-1]['bytes'])}")
                st3 = store_bytes(k.data_dir)
                st3["usage_referenced"] = usage_referenced(k.usage())
                ver = {"versions": args.versions, "rows": rows, "base_bytes": base,
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
                                    reader=lambda i: os.pread(fd, BLOCK, i * BLOCK))
            full["store"] = store_bytes(k.data_dir)
            log(f"full EBS upload: {full['blocks']} blocks in {full['wall']:.2f} s")
            verify_import(k, full["snapshot_id"], layout, rng, problems)
            k.stop()

        layout_out = {k_: v for k_, v in layout.items() if k_ != "nonzero"}
        results.update(layout=layout_out, modes=modes_out, incremental=inc, versions=ver,
                       ebs_full=full, problems=problems)
        text = report(args, facts, layout, modes_out, inc, ver, full, problems, cmdline)
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
