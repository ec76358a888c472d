#!/usr/bin/env python3
"""coldsnap benchmark: `coldsnap upload` and `coldsnap download` throughput against Kiln, with
cat, sha256sum and cp of the same file measured side by side in the same run.

A raw disk image of --size-mib MiB (default 1024) is written once under --workdir (default
/tmp): by default 100% random data, so every 512 KiB block is stored and transferred;
--mix RANDOM,ZERO (percentages, e.g. 70,30) puts runs of 1..32 all-zero blocks in it. The
zeros are written (the file is not sparse).

Each of --rounds rounds (default 3):
  - references, each after `sync` and an untimed `cat FILE > /dev/null` (page cache warm):
    `cat FILE > /dev/null`, `sha256sum FILE`, `cp FILE COPY` (COPY is then deleted);
  - a fresh Kiln (new data dir, `kiln serve` on a free 127.0.0.1 port; credentials from
    DIR/credentials, profile `kiln`);
  - `coldsnap upload --no-progress --wait FILE` (page cache warm; wall time from start to exit,
    and separately until it printed the snapshot id, i.e. before its --wait polling);
  - `coldsnap download --no-progress SNAPSHOT OUT` into a new file (Kiln's just-written blocks
    are whatever the page cache kept);
  - `cmp` of OUT with FILE (coldsnap writes the whole volume, the file size rounded up to whole
    GiB: when that is longer than FILE, the rest of OUT must be zeros); any difference fails
    the run;
  - Kiln is stopped (SIGTERM, by pid) and its data dir removed.

Recorded per command: wall seconds (perf_counter), the command's user/sys CPU (wait4 rusage),
Kiln's user/sys CPU (/proc/PID/stat before/after) and disk read/write bytes (/proc/PID/io),
and CPU used by other processes on the machine in the meantime (/proc/stat). The report gives
per step the median wall time (min-max), MB/s (MB = 10^6 bytes of the source file) and the time
relative to cp. No command's writes are synced (cp and download exclude write-back).

Everything runs on 127.0.0.1; every server started is stopped; the temporary directory is
removed unless --keep; each command has a --timeout (default 600 s). The Markdown report goes
to stdout and, with the figures as JSON, to --out-dir (default bench/out) as
coldsnap-<size>MiB-<UTC timestamp>.md/.json. Exit status 0 only if every step succeeded.
Needs: Python 3.9+, coldsnap 0.12 (scripts/install-coldsnap), coreutils, util-linux (fincore,
optional).
"""

from __future__ import annotations

import argparse
import configparser
import datetime as dt
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LOOPBACK = "127.0.0.1"
REGION = "us-east-1"
BLOCK = 524_288
MIB = 1 << 20
GIB = 1 << 30
MB = 1e6
CLK_TCK = os.sysconf("SC_CLK_TCK")
SNAP_RE = re.compile(r"^snap-[0-9A-Za-z]+$")
ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


def log(msg: str) -> None:
    print(f"[coldsnap-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    pass


# --------------------------------------------------------------------------------------
# The image
# --------------------------------------------------------------------------------------

def make_image(path: str, size: int, random_pct: float, seed: int) -> dict:
    """Writes `size` bytes: runs of 1..32 blocks, random (os.urandom) or zero, in proportion."""
    n = size // BLOCK
    n_zero = round(n * (100 - random_pct) / 100)
    quota = {"R": n - n_zero, "Z": n_zero}
    rng = random.Random(seed)
    zero = bytes(BLOCK)
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        while quota["R"] + quota["Z"]:
            kinds = [k for k in ("R", "Z") if quota[k]]
            kind = rng.choices(kinds, weights=[quota[k] for k in kinds])[0]
            run = min(rng.randint(1, 32), quota[kind])
            for _ in range(run):
                f.write(os.urandom(BLOCK) if kind == "R" else zero)
            quota[kind] -= run
        f.flush()
        os.fsync(f.fileno())
    return {"path": path, "size": size, "blocks": n, "random_blocks": n - n_zero,
            "zero_blocks": n_zero, "generate_seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------------------
# /proc and timed commands
# --------------------------------------------------------------------------------------

def proc_stat_cpu() -> list[int]:
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:9]]


def busy_seconds(a: list[int], b: list[int]) -> float:
    """CPU seconds (all cores) spent not idle and not in iowait between two /proc/stat reads."""
    d = [y - x for x, y in zip(a, b)]
    return (sum(d) - d[3] - d[4]) / CLK_TCK


def pid_cpu(pid: int) -> dict:
    """user/sys CPU seconds of a whole process and its disk read/write bytes."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    out = {"user": int(fields[11]) / CLK_TCK, "sys": int(fields[12]) / CLK_TCK,
           "read_bytes": 0, "write_bytes": 0}
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("read_bytes", "write_bytes"):
                    out[k] = int(v)
    except OSError:
        pass
    return out


def resident_fraction(path: str) -> float | None:
    try:
        out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES,SIZE", path],
                             capture_output=True, text=True, timeout=60, check=True).stdout.split()
        return int(out[0]) / int(out[1]) if int(out[1]) else None
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def warm(path: str, timeout: float) -> float | None:
    """sync, then read the file once (untimed); returns the resident fraction after."""
    subprocess.run(["sync"], check=False, timeout=timeout)
    subprocess.run(["cat", path], stdout=subprocess.DEVNULL, check=True, timeout=timeout)
    return resident_fraction(path)


def timed(argv: list[str], *, timeout: float, env: dict | None = None, kiln_pid: int | None = None,
          stdout=subprocess.DEVNULL, watch_stdout: bool = False, label: str = "") -> dict:
    """Runs argv in its own session; wall time, its CPU (wait4), Kiln's CPU, others' CPU.
    With watch_stdout, stdout lines are captured with the time each arrived. A command that
    runs longer than `timeout` is killed (its process group) and the step fails."""
    err_file = tempfile.TemporaryFile()
    k0 = pid_cpu(kiln_pid) if kiln_pid else None
    sys0 = proc_stat_cpu()
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE if watch_stdout else stdout, stderr=err_file,
                         env=env, start_new_session=True)
    done = threading.Event()
    timed_out = threading.Event()

    def kill():
        if not done.is_set():
            timed_out.set()
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass

    timer = threading.Timer(timeout, kill)
    timer.start()
    lines: list[tuple[float, str]] = []
    reader = None
    if watch_stdout:
        def read():
            for raw in p.stdout:
                lines.append((time.perf_counter() - t0, raw.decode(errors="replace").rstrip("\n")))
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
    try:
        _, status, ru = os.wait4(p.pid, 0)
    except BaseException:   # interrupted (Ctrl-C, SIGTERM): do not leave the command running
        done.set()
        timer.cancel()
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        p.wait()
        raise
    done.set()
    timer.cancel()
    wall = time.perf_counter() - t0
    sys1 = proc_stat_cpu()
    k1 = pid_cpu(kiln_pid) if kiln_pid else None
    p.returncode = os.waitstatus_to_exitcode(status)
    if reader:
        reader.join(timeout=10)
        p.stdout.close()
    err_file.seek(0)
    err = err_file.read().decode(errors="replace")
    err_file.close()
    r = {"argv": argv, "wall": wall, "user": ru.ru_utime, "sys": ru.ru_stime,
         "exit": p.returncode, "stderr": err, "stdout_lines": lines}
    own = ru.ru_utime + ru.ru_stime
    if k1:
        r["kiln"] = {k: k1[k] - k0[k] for k in k0}
        own += r["kiln"]["user"] + r["kiln"]["sys"]
    r["others_cores"] = max(0.0, (busy_seconds(sys0, sys1) - own) / wall) if wall > 0 else 0.0
    if timed_out.is_set():
        raise BenchError(f"{label or argv[0]}: killed after the {timeout:g} s timeout\n"
                         f"stderr:\n{err.strip()}")
    if p.returncode != 0:
        raise BenchError(f"{label or ' '.join(argv)} exited {p.returncode}\nstderr:\n{err.strip()}")
    return r


# --------------------------------------------------------------------------------------
# Kiln
# --------------------------------------------------------------------------------------

STARTED: list["Kiln"] = []


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


class Kiln:
    def __init__(self, binary: str, workdir: str, name: str, serve_args: list[str]):
        self.name = name
        self.data_dir = os.path.join(workdir, f"kiln-{name}")
        os.makedirs(self.data_dir)
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.log_path = os.path.join(workdir, f"kiln-{name}.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [binary, "--data-dir", self.data_dir, "serve", "--listen", f"{LOOPBACK}:{self.port}",
             *serve_args],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True)
        STARTED.append(self)
        log(f"started kiln {name} pid {self.proc.pid} on {self.url}, data {self.data_dir}")
        self._wait_ready()

    def _wait_ready(self) -> None:
        cred = os.path.join(self.data_dir, "credentials")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"kiln exited with {self.proc.returncode}:\n{self.log_tail()}")
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
        raise BenchError(f"kiln did not become ready in 60 s:\n{self.log_tail()}")

    def log_text(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def stop(self) -> int | None:
        """SIGTERM (SIGKILL after 20 s) by pid; returns the exit code."""
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
        return self.proc.returncode


def stop_all() -> None:
    while STARTED:
        k = STARTED[-1]
        try:
            k.stop()
            log(f"stopped kiln {k.name} (pid {k.proc.pid})")
        except Exception as e:  # noqa: BLE001
            log(f"stopping kiln {k.name} failed: {e!r}")
            if k in STARTED:
                STARTED.remove(k)


# --------------------------------------------------------------------------------------
# coldsnap
# --------------------------------------------------------------------------------------

def coldsnap_version(path: str) -> str:
    """coldsnap has no --version; the binary embeds its SDK app name `coldsnap-<version>`."""
    with open(path, "rb") as f:
        found = re.search(rb"coldsnap-(\d+\.\d+\.\d+)", f.read())
    return found.group(1).decode() if found else "unknown"


def find_coldsnap(explicit: str | None) -> str | None:
    for c in (explicit, os.environ.get("COLDSNAP_BIN"), shutil.which("coldsnap"),
              os.path.expanduser("~/.cargo/bin/coldsnap")):
        if c and os.access(c, os.X_OK):
            return os.path.abspath(c)
    return None


def help_defaults(text: str) -> dict[str, str]:
    """{'--workers': '64', ...} from the '(default: X)' notes of a `coldsnap CMD --help`."""
    entries, cur = [], None
    for line in text.splitlines():
        if re.match(r"^\s{2}--?\w", line):
            cur = [line.strip()]
            entries.append(cur)
        elif cur is not None and line.strip():
            cur.append(line.strip())
        else:
            cur = None
    out = {}
    for e in entries:
        joined = " ".join(e)
        m = re.search(r"\(default: ([^)]+)\)", joined)
        if m:
            out[joined.split()[0]] = m.group(1)
    return out


def coldsnap_env(home: str, kiln: Kiln) -> dict:
    """Credentials of Kiln's `kiln` profile in the environment; no config files, no IMDS,
    no proxies; the endpoint is given with --endpoint."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") and k.lower() not in ("http_proxy", "https_proxy",
                                                              "all_proxy", "no_proxy")}
    env.update({
        "HOME": home,
        "AWS_ACCESS_KEY_ID": kiln.key,
        "AWS_SECRET_ACCESS_KEY": kiln.secret,
        "AWS_CONFIG_FILE": os.path.join(home, "config-does-not-exist"),
        "AWS_SHARED_CREDENTIALS_FILE": os.path.join(home, "credentials-does-not-exist"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "RUST_LOG": "error",   # other crates; coldsnap's own log stays at info (warns on retries)
    })
    return env


def coldsnap_notes(stderr: str) -> dict:
    """Retry warnings and the 'Upload complete: ... errors=N' line from coldsnap's log."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    retries = [ln for ln in lines if re.search(r"attempt \d+/\d+ failed", ln)]
    m = re.search(r"errors=(\d+)", stderr)
    return {"lines": lines, "retry_warnings": len(retries),
            "block_errors": int(m.group(1)) if m else None}


# --------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------

def verify_download(src: str, out: str, timeout: float) -> dict:
    """OUT must equal SRC on SRC's length and be zeros after it (coldsnap writes the whole
    volume). Raises BenchError otherwise."""
    size, out_size = os.path.getsize(src), os.path.getsize(out)
    if out_size < size:
        raise BenchError(f"downloaded file is {out_size} bytes, shorter than the source's {size}")
    t0 = time.perf_counter()
    r = subprocess.run(["cmp", "-n", str(size), src, out], capture_output=True, text=True,
                       timeout=timeout)
    if r.returncode != 0:
        raise BenchError(f"downloaded file differs from the source: {(r.stdout + r.stderr).strip()}")
    if out_size > size:
        r = subprocess.run(["cmp", f"--ignore-initial={size}:0", "-n", str(out_size - size),
                            out, "/dev/zero"], capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise BenchError("downloaded file is not all zeros after the source's length: "
                             f"{(r.stdout + r.stderr).strip()}")
    st = os.stat(out)
    return {"size": out_size, "allocated": st.st_blocks * 512, "seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------------------
# Machine facts
# --------------------------------------------------------------------------------------

def first_line(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "?"


def git_state(start: str) -> str:
    try:
        root = subprocess.run(["git", "-C", start, "rev-parse", "--show-toplevel"],
                              capture_output=True, text=True, check=True).stdout.strip()
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "src",
                                "Cargo.toml", "Cargo.lock"],
                               capture_output=True, text=True).stdout.strip()
        return head + (" + uncommitted changes in src/" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


def machine_facts(workdir: str) -> dict:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) * 1024
    df = subprocess.run(["df", "-hT", workdir], capture_output=True, text=True).stdout.splitlines()
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(), "cpu": cpu, "mem_gib": mem / GIB,
        "kernel": platform.platform(), "fs": " ".join(df[-1].split()) if df else "?",
        "loadavg": load, "python": platform.python_version(),
        "coreutils": first_line(["cp", "--version"]),
    }


# --------------------------------------------------------------------------------------
# Rounds
# --------------------------------------------------------------------------------------

STEPS = [  # key, label
    ("cat", "`cat FILE > /dev/null`"),
    ("sha256sum", "`sha256sum FILE`"),
    ("cp", "`cp FILE COPY`"),
    ("upload", "`coldsnap upload --wait FILE` (to exit)"),
    ("upload_id", "`coldsnap upload`, until it printed the snapshot id (before --wait polling)"),
    ("download", "`coldsnap download SNAPSHOT OUT` (to exit)"),
]


def run_round(n: int, args, work: str, image: str, kiln_bin: str, coldsnap: str,
              up_extra: list[str], down_extra: list[str]) -> dict:
    t = args.timeout
    rnd: dict = {"round": n + 1}
    copy = os.path.join(work, "copy.raw")
    rnd["resident"] = {}

    rnd["resident"]["cat"] = warm(image, t)
    rnd["cat"] = timed(["cat", image], timeout=t, label="cat")
    rnd["resident"]["sha256sum"] = warm(image, t)
    rnd["sha256sum"] = timed(["sha256sum", image], timeout=t, label="sha256sum")
    rnd["resident"]["cp"] = warm(image, t)
    rnd["cp"] = timed(["cp", image, copy], timeout=t, label="cp")
    os.unlink(copy)
    log(f"round {n + 1}: cat {rnd['cat']['wall']:.2f} s, sha256sum {rnd['sha256sum']['wall']:.2f} s, "
        f"cp {rnd['cp']['wall']:.2f} s")

    k = Kiln(kiln_bin, work, f"round{n + 1}", args.serve_arg)
    home = os.path.join(work, f"coldsnap-home-{n + 1}")
    os.makedirs(home)
    env = coldsnap_env(home, k)
    base = [coldsnap, "--endpoint", k.url, "--region", REGION]
    out = os.path.join(work, f"download-{n + 1}.raw")
    try:
        rnd["resident"]["upload"] = warm(image, t)
        up = timed([*base, "upload", "--no-progress", "--wait", *up_extra, image], timeout=t,
                   env=env, kiln_pid=k.proc.pid, watch_stdout=True, label="coldsnap upload")
        ids = [(ts, ln.strip()) for ts, ln in up["stdout_lines"] if SNAP_RE.match(ln.strip())]
        if not ids:
            raise BenchError("coldsnap upload printed no snapshot id; stdout: "
                             f"{[ln for _, ln in up['stdout_lines']]!r}\nstderr:\n{up['stderr']}")
        up["id_seconds"], snapshot_id = ids[-1]
        up["coldsnap_log"] = coldsnap_notes(up["stderr"])
        rnd["snapshot_id"] = snapshot_id
        rnd["upload"] = up
        log(f"round {n + 1}: upload {up['wall']:.2f} s ({snapshot_id} printed at "
            f"{up['id_seconds']:.2f} s)")

        subprocess.run(["sync"], check=False, timeout=t)
        down = timed([*base, "download", "--no-progress", *down_extra, snapshot_id, out],
                     timeout=t, env=env, kiln_pid=k.proc.pid, label="coldsnap download")
        down["coldsnap_log"] = coldsnap_notes(down["stderr"])
        rnd["download"] = down
        log(f"round {n + 1}: download {down['wall']:.2f} s")
        rnd["verify"] = verify_download(image, out, t)
        log(f"round {n + 1}: cmp ok ({rnd['verify']['size']} bytes downloaded)")
    except BenchError as e:
        raise BenchError(f"round {n + 1}: {e}\nkiln log (tail):\n{k.log_tail()}") from None
    finally:
        if os.path.exists(out):
            os.unlink(out)
        alive = k.proc.poll() is None
        code = k.stop()
        # Only warnings and errors (the log also shows the temporary server's keys).
        rnd["kiln_log"] = "\n".join(
            ln for ln in (ANSI_RE.sub("", x) for x in k.log_text().splitlines())
            if re.search(r"\b(WARN|ERROR|error|panic)", ln))
        if not args.keep:
            shutil.rmtree(k.data_dir, ignore_errors=True)
            shutil.rmtree(home, ignore_errors=True)
    if not alive:
        raise BenchError(f"round {n + 1}: kiln had exited ({code}) before it was stopped "
                         f"; log (tail):\n{k.log_tail()}")
    rnd["kiln_exit"] = code
    return rnd


def step_values(rounds: list[dict], key: str) -> dict:
    if key == "upload_id":
        walls = [r["upload"]["id_seconds"] for r in rounds]
        cpu = kcpu = []
    else:
        walls = [r[key]["wall"] for r in rounds]
        cpu = [r[key]["user"] + r[key]["sys"] for r in rounds]
        kcpu = [r[key]["kiln"]["user"] + r[key]["kiln"]["sys"] for r in rounds if "kiln" in r[key]]
    return {"walls": walls, "median": statistics.median(walls), "min": min(walls),
            "max": max(walls), "cpu": statistics.median(cpu) if cpu else None,
            "kiln_cpu": statistics.median(kcpu) if kcpu else None}


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------

def f2(x, d=2):
    return "-" if x is None else f"{x:,.{d}f}"


def report(args, facts, image, rounds, summary, cmdline, cs) -> str:
    size = image["size"]
    o = []
    mix = f"{image['random_blocks'] * 100 / image['blocks']:.0f}% random, " \
          f"{image['zero_blocks'] * 100 / image['blocks']:.0f}% zero blocks"
    o.append(f"## coldsnap upload/download against Kiln: {size / MIB:g} MiB file ({mix})\n")
    o.append(f"- Command: `{cmdline}`")
    o.append(f"- Date: {facts['date']}; load average at start {' '.join(facts['loadavg'])}")
    o.append(f"- Machine: {facts['cpu']}, {facts['cores']} cores, {facts['mem_gib']:.1f} GiB RAM; "
             f"{facts['kernel']}; workdir fs `{facts['fs']}`")
    o.append(f"- Kiln: {facts['kiln_bin']}, commit {facts['kiln_commit']}; "
             f"`{' '.join(['kiln serve', *args.serve_arg])}`")
    o.append(f"- coldsnap {cs['version']} ({cs['path']}): `{cs['upload_cmd']}`, `{cs['download_cmd']}`; "
             f"defaults from --help: upload {cs['upload_defaults'] or '-'}, download "
             f"{cs['download_defaults'] or '-'}; --endpoint http://127.0.0.1:PORT --region "
             f"{REGION}, keys of Kiln's `kiln` profile in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
    o.append(f"- File: {size:,} bytes = {image['blocks']:,} blocks of 512 KiB, written in "
             f"{image['generate_seconds']:.1f} s; coldsnap volume {cs['volume_gib']} GiB; "
             f"{len(rounds)} round(s), fresh Kiln each; {f2(size / MB, 1)} MB per step")
    o.append("")
    cp_median = summary["cp"]["median"]
    o.append("| Step | Wall s, median (min–max) | MB/s, median (min–max) | Time ÷ cp time | "
             "Command CPU s (user+sys) | Kiln CPU s (user+sys) |")
    o.append("|---|--:|--:|--:|--:|--:|")
    for key, label in STEPS:
        s = summary[key]
        rate = lambda w: size / MB / w if w > 0 else float("inf")  # noqa: E731
        o.append(f"| {label} | {f2(s['median'])} ({f2(s['min'])}–{f2(s['max'])}) | "
                 f"{f2(rate(s['median']), 0)} ({f2(rate(s['max']), 0)}–{f2(rate(s['min']), 0)}) | "
                 f"{f2(s['median'] / cp_median)}× | {f2(s['cpu'])} | {f2(s['kiln_cpu'])} |")
    o.append("")
    o.append("Per round (CPU s = user + sys; other processes = CPU used by everything else on "
             "the machine during the step, in cores):\n")
    o.append("| Round | Step | Wall s | Command CPU s | Kiln CPU s | Kiln disk read / write MB "
             "| other processes, cores | file in page cache before |")
    o.append("|--:|---|--:|--:|--:|--:|--:|--:|")
    for r in rounds:
        for key in ("cat", "sha256sum", "cp", "upload", "download"):
            x = r[key]
            k = x.get("kiln")
            res = r["resident"].get(key)
            o.append(f"| {r['round']} | {key} | {f2(x['wall'])} | {x['user']:.2f} + {x['sys']:.2f} | "
                     + (f"{k['user']:.2f} + {k['sys']:.2f} | {k['read_bytes'] / MB:,.0f} / "
                        f"{k['write_bytes'] / MB:,.0f} | " if k else "- | - | ")
                     + f"{f2(x['others_cores'])} | "
                     + ("-" if res is None else f"{res * 100:.0f}%") + " |")
    o.append("")
    o.append("- Snapshots: " + ", ".join(
        f"round {r['round']} {r['snapshot_id']} (id printed at {r['upload']['id_seconds']:.2f} s, "
        f"exit {r['upload']['wall']:.2f} s)" for r in rounds))
    v = rounds[0]["verify"]
    o.append("- Verified: every downloaded file equals the source (`cmp`)"
             + (f"; coldsnap wrote {v['size']:,} bytes (the whole volume; {v['allocated']:,} "
                "allocated), zeros after the source's length" if v["size"] != size else "")
             + ".")
    o.append("- coldsnap `--wait` polls DescribeSnapshots every 2 s until it has seen `completed` "
             "3 times in a row, so it adds at least 4 s after the snapshot id is printed; the "
             "'until it printed the snapshot id' row excludes that (it covers StartSnapshot, "
             "every PutSnapshotBlock and CompleteSnapshot).")
    o.append("- Page cache: the source file is read once (untimed) after `sync` before each "
             "command; download reads Kiln's just-written blocks, cached or not as the kernel "
             "left them. Nothing is synced after a command (cp and download exclude write-back).")
    retries = sum(r[k]["coldsnap_log"]["retry_warnings"] for r in rounds for k in ("upload", "download"))
    errs = [r["upload"]["coldsnap_log"]["block_errors"] for r in rounds]
    o.append(f"- coldsnap block retries logged: {retries}; upload stats errors= "
             f"{', '.join('-' if e is None else str(e) for e in errs)}.")
    logs = []
    for r in rounds:
        for k in ("upload", "download"):
            for ln in r[k]["coldsnap_log"]["lines"]:
                if "Upload complete:" not in ln:
                    logs.append(f"round {r['round']} {k}: {ln}")
    if logs:
        o.append("- coldsnap stderr (first 10 lines):\n\n```\n" + "\n".join(logs[:10]) + "\n```")
    kl = [f"round {r['round']}: {ln}" for r in rounds for ln in r["kiln_log"].splitlines()]
    o.append(f"- Kiln log: {len(kl)} warning/error line(s)" + (
        ":\n\n```\n" + "\n".join(kl[:10]) + "\n```" if kl else "."))
    return "\n".join(o) + "\n"


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--kiln-bin", default=os.path.join(HERE, "..", "target", "release", "kiln"))
    ap.add_argument("--coldsnap-bin", help="default: $COLDSNAP_BIN, PATH, ~/.cargo/bin/coldsnap")
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--mix", default="100,0", help="random,zero percentages (default 100,0)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", default=tempfile.gettempdir())
    ap.add_argument("--timeout", type=float, default=600, help="per command, s (default 600)")
    ap.add_argument("--upload-args", default="",
                    help="extra coldsnap upload arguments, e.g. '--workers 16'")
    ap.add_argument("--download-args", default="", help="extra coldsnap download arguments")
    ap.add_argument("--serve-arg", action="append", default=[],
                    help="extra argument for `kiln serve` (repeatable)")
    ap.add_argument("--seed", type=int, default=1, help="layout of zero runs (with --mix)")
    ap.add_argument("--out-dir", default=os.path.join(HERE, "out"))
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    cmdline = "python3 bench/coldsnap_bench.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    signal.signal(signal.SIGTERM, lambda s, f: (_ for _ in ()).throw(SystemExit(128 + s)))

    try:
        rnd_pct, zero_pct = (float(x) for x in args.mix.split(","))
    except ValueError:
        log("--mix takes two percentages RANDOM,ZERO, e.g. 70,30")
        return 2
    if abs(rnd_pct + zero_pct - 100) > 1e-6 or rnd_pct < 0 or zero_pct < 0:
        log("--mix percentages must add up to 100")
        return 2
    if args.size_mib < 1 or args.rounds < 1:
        log("--size-mib and --rounds must be at least 1")
        return 2
    kiln_bin = os.path.abspath(args.kiln_bin)
    if not os.access(kiln_bin, os.X_OK):
        log(f"{kiln_bin} missing: cargo build --release")
        return 2
    coldsnap = find_coldsnap(args.coldsnap_bin)
    if not coldsnap:
        log("coldsnap not found: scripts/install-coldsnap, or --coldsnap-bin / COLDSNAP_BIN")
        return 2
    cs = {"path": coldsnap, "version": coldsnap_version(coldsnap)}
    if not cs["version"].startswith("0.12."):
        log(f"warning: coldsnap {cs['version']} at {coldsnap}; this benchmark was written for 0.12")
    cs["help"] = {c: subprocess.run([coldsnap, c, "--help"], capture_output=True, text=True,
                                    timeout=30).stdout for c in ("upload", "download")}
    cs["upload_defaults"] = ", ".join(f"{k} {v}" for k, v in help_defaults(cs["help"]["upload"]).items())
    cs["download_defaults"] = ", ".join(f"{k} {v}" for k, v in help_defaults(cs["help"]["download"]).items())
    up_extra, down_extra = shlex.split(args.upload_args), shlex.split(args.download_args)
    cs["upload_cmd"] = " ".join(["coldsnap upload --no-progress --wait", *up_extra, "FILE"])
    cs["download_cmd"] = " ".join(["coldsnap download --no-progress", *down_extra, "SNAPSHOT OUT"])

    size = args.size_mib * MIB
    cs["volume_gib"] = max(1, -(-size // GIB))
    # source + cp copy + download + Kiln's store (random part) + margin
    need = 3 * size + size * rnd_pct / 100 + 512 * MIB
    free = shutil.disk_usage(args.workdir).free
    if free < need:
        log(f"{args.workdir} has {free / GIB:.1f} GiB free; this run needs about {need / GIB:.1f} GiB")
        return 2
    with open("/proc/meminfo") as f:
        avail = next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("MemAvailable"))
    if size > avail * 0.8:
        log(f"warning: the {size / GIB:.1f} GiB file may not stay in the page cache "
            f"({avail / GIB:.1f} GiB available)")

    facts = machine_facts(args.workdir)
    facts["kiln_commit"] = git_state(os.path.dirname(kiln_bin))
    mtime = dt.datetime.fromtimestamp(os.path.getmtime(kiln_bin), dt.timezone.utc)
    facts["kiln_bin"] = f"{kiln_bin} (built {mtime:%Y-%m-%d %H:%M UTC})"
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    work = tempfile.mkdtemp(prefix="kiln-coldsnap-bench-", dir=args.workdir)
    status = 1
    try:
        # A private copy: a concurrent `cargo build` may replace target/release/kiln.
        private_bin = os.path.join(work, "kiln")
        shutil.copy2(kiln_bin, private_bin)
        image_path = os.path.join(work, "disk.raw")
        log(f"writing {args.size_mib} MiB image {image_path} ({rnd_pct:g}% random)")
        image = make_image(image_path, size, rnd_pct, args.seed)
        log(f"image written in {image['generate_seconds']:.1f} s: {image['random_blocks']} random, "
            f"{image['zero_blocks']} zero blocks")
        rounds = []
        for n in range(args.rounds):
            rounds.append(run_round(n, args, work, image_path, private_bin, coldsnap,
                                    up_extra, down_extra))
        summary = {key: step_values(rounds, key) for key, _ in STEPS}
        text = report(args, facts, image, rounds, summary, cmdline, cs)
        print(text, flush=True)
        os.makedirs(args.out_dir, exist_ok=True)
        base = os.path.join(args.out_dir, f"coldsnap-{args.size_mib}MiB-{stamp}")
        with open(base + ".md", "w") as f:
            f.write(text)
        with open(base + ".json", "w") as f:
            json.dump({"args": vars(args), "cmdline": cmdline, "facts": facts, "coldsnap": cs,
                       "image": image, "summary": summary, "rounds": rounds}, f, indent=2,
                      default=str)
        log(f"wrote {base}.md and {base}.json")
        status = 0
    except BenchError as e:
        log(f"FAILED: {e}")
    except subprocess.SubprocessError as e:
        log(f"FAILED: {e!r}")
    except KeyboardInterrupt:
        log("interrupted")
        status = 130
    finally:
        stop_all()
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
