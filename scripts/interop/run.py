#!/usr/bin/env python3
"""Interop tests of an EGD server against its real peers: QEMU's rng-egd backend feeding a Linux guest's
virtio-rng, and ekeyd-egd-linux. Python 3 stdlib only; needs root (ekeyd's private mount namespace).

    scripts/interop/run.py [options] all | guest | two-guests | restart | ekeyd ...

The server under test is the Python stand-in (scripts/interop/egd_stub.py) unless VIRTRNGD=path or
--egd-server-cmd 'path [args]' names another (--egd-server-cmd stub forces the stand-in). Both get
virtrngd's command line (--socket PATH[,rate=R,ceil=C] ..., --tcp HOST:PORT, --source getrandom) and
must, on SIGTERM, log one line per class with `class=<id>` and `bytes=<n>` (see SERVED_RE), as
virtrngd does: "served unix:/x.sock class=2 bytes=65600 requests=1025 connections=1".

Tests (each prints one PASS or FAIL line with its figures, then its problems; exit status 1 if any
failed):
  guest       one guest reads --bytes from /dev/hwrng through rng-egd, --runs times, and the same guest
              through QEMU's rng-builtin: exact byte count, rng_current virtio_rng.*, FIPS 140-2
              (rngtest), throughput (medians), ratio egd/builtin (reported against --target-ratio;
              QEMU and the server share one CPU, see --pin)
  two-guests  two guests at once on two sockets (two classes, --rate 20000 and 60000, ceil = rate):
              byte counts, FIPS, and each guest's steady throughput within --share-tolerance of its
              class's rate (the stub's token bucket passes: this checks the measurement itself)
  restart     a guest reads a long stream in chunks; the server is stopped (SIGTERM) mid-read and
              restarted on the same socket; QEMU reconnects (reconnect=1). Reports whether and when the
              guest's read resumes; fails if it does not finish (or the bytes fail FIPS)
  ekeyd       ekeyd-egd-linux -b 4 against the server's TCP listener on loopback for --ekeyd-seconds,
              /dev/random being /dev/urandom bind-mounted in a private mount namespace; bytes/s served
              (from the server's shutdown log) must exceed --ekeyd-min-rate

What `restart` shows (QEMU 7.2, Linux 6.1 guest; measured 2026-11-23):
  rng-egd does not resubmit requests pending when the chardev drops, and the guest's virtio-rng driver
  waits for its one outstanding 64-byte buffer without a timeout, so the guest's /dev/hwrng read
  stalls. The only thing that makes QEMU ask again is virtio-rng's rate-limit timer: it fires once
  `period` ms (default 65536) after it was armed and calls virtio_rng_process, which sends a new
  request; a guest kick re-arms it. So:
  - QEMU's defaults: the guest resumes when that timer fires, up to 65.5 s later (measured: 64.7 s
    after the restart, the read of 1 MiB finished after 67 s);
  - period=10000 (this test's default, to keep it short): the timer, armed when the read began,
    fires 10 s later (measured: chunk 5 took 9.7 s, resumed 9.1 s after the restart);
  - period=1000: the timer fires while the chardev is still reconnecting (reconnect=1 waits a second),
    its request is lost as well, nothing re-arms it, and the guest never resumes (no progress in 90 s).
    The same happens with any period whenever the timer happens to expire during the outage;
  - virtrngd's `prefill=64` socket option sends 64 bytes to each new connection, and QEMU completes the
    stale request with them at once (it reads as many bytes as its pending requests still lack): the
    guest resumes 0.5 s after the restart, with QEMU's default period. No EGD client but QEMU wants
    such bytes, so it is per socket.
What `guest` shows (medians of 3-5 runs of 64 KiB; QEMU on the first CPU, the server on the second;
2026-11-23): builtin 1170-1870 kB/s (it varies between boots more than anything else here); virtrngd
with prefill=64 850-1020 kB/s; virtrngd on a plain socket 440-600 kB/s; the Python stub (plain)
635-730 kB/s in earlier runs; the ideal server (IdealEGDServer: the socket kept full, QEMU never
waits) 830-870 kB/s, 0.64 of builtin. So QEMU's own rng-egd path (a socket write and a chardev read
per 64-byte guest buffer) caps any EGD server near 0.65-0.7 of builtin: the 0.8 of the issue is out of
reach for every server. What is enforced is the daemon's share of that ceiling, egd / ideal >= 0.8
(measured 1.08). On a plain socket each buffer also waits for a round trip to the server.
"""
import argparse
import math
import os
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

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STUB = os.path.join(REPO, "scripts", "interop", "egd_stub.py")

# A class's served bytes in the server's shutdown log, `class=<id> ... bytes=<n>` (virtrngd and the
# stub); the `total` line has no class. virtrngd also logs "serving ..." lines with --stats-interval:
# only the last value per class is kept.
SERVED_RE = re.compile(r"\bclass=(?P<cls>[^\s,]+).*?\bbytes=(?P<n>\d+)")

# FIPS 140-2 as rngtest runs it fails about 0.06-0.08% of 20000-bit blocks of ideal random data
# (12 of 19999 blocks of /dev/urandom on this machine), so a handful of failures over a test is noise;
# a broken server fails nearly every block.
FIPS_BLOCK_FALSE_POSITIVE = 0.0008
FIPS_BLOCK_BITS = 20000


def log(message):
    print(message, flush=True)


# ----------------------------------------------------------------------------------------------------
# Processes


LIVE = set()  # every Proc not yet reaped, killed by main() on the way out whatever happens


class Proc:
    """A child process whose stdout+stderr lines are collected (with host arrival times) by a thread.
    `on_line(proc, line)` runs on that thread. Always stop() it; stop() kills after a grace period.
    Each child leads its own process group, so that a kill reaches what it started too."""

    def __init__(self, argv, name, on_line=None, verbose=False, **popen):
        self.name, self.argv, self.verbose, self.on_line = name, argv, verbose, on_line
        self.lines = []  # (monotonic time, text)
        self.started = time.monotonic()
        self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, start_new_session=True, **popen)
        LIVE.add(self)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in self.popen.stdout:
            line = raw.decode(errors="replace").rstrip("\r\n")
            self.lines.append((time.monotonic(), line))
            if self.verbose:
                log(f"    [{self.name}] {line}")
            if self.on_line:
                self.on_line(self, line)

    def wait(self, timeout):
        """Exit status, or None on timeout (the process keeps running)."""
        try:
            status = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        LIVE.discard(self)
        return status

    def send(self, signum):
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signum)
            except ProcessLookupError:
                pass

    def stop(self, signum=signal.SIGTERM, grace=5.0):
        """Signals the process group, waits `grace` seconds, then SIGKILLs it. Returns the exit status."""
        self.send(signum)
        status = self.wait(grace)
        if status is None:
            self.send(signal.SIGKILL)
            status = self.popen.wait()
            LIVE.discard(self)
        self.reader.join(timeout=2)
        return status

    def text(self):
        return "\n".join(line for _, line in self.lines)

    def tail(self, n=15):
        return "\n".join(f"      | {line}" for _, line in self.lines[-n:])


class EGDServer:
    """The server under test, started with virtrngd's command line in a temporary directory."""

    def __init__(self, ctx, sockets=(), tcp=None, name="server", cpus=None):
        """sockets: [(path, rate or None, ceil or None)]; tcp: "127.0.0.1:PORT" or None;
        cpus: a taskset CPU list to confine the server to, or None."""
        self.ctx, self.sockets, self.tcp, self.name, self.cpus = ctx, list(sockets), tcp, name, cpus
        self.proc = None

    def argv(self):
        argv = list(self.ctx.server_cmd)
        if "--source" not in argv:  # the command may name its own source
            argv += ["--source", "getrandom"]
        for path, rate, ceil, *extra in self.sockets:
            opts = (f",rate={rate},ceil={ceil or rate}" if rate else "") + (extra[0] if extra else "")
            argv += ["--socket", path + opts]
        if self.tcp:
            argv += ["--tcp", self.tcp]
        return argv

    def start(self, timeout=15.0):
        """Starts the server and waits until every listener accepts a connection."""
        for path, *_ in self.sockets:
            if os.path.exists(path):
                os.unlink(path)
        self.proc = Proc(pinned(self.cpus, self.argv()), self.name, verbose=self.ctx.verbose)
        deadline = time.monotonic() + timeout
        pending = [("unix", p) for p, *_ in self.sockets] + ([("tcp", self.tcp)] if self.tcp else [])
        while pending:
            if self.proc.popen.poll() is not None:
                raise TestError(f"{self.name} exited with status {self.proc.popen.returncode} while "
                                f"starting:\n{self.proc.tail()}")
            if time.monotonic() > deadline:
                self.proc.stop(signal.SIGKILL)
                raise TestError(f"{self.name} did not listen on {pending[0][1]} within {timeout:.0f} s")
            kind, where = pending[0]
            if probe(kind, where):
                pending.pop(0)
            else:
                time.sleep(0.05)
        return self

    def stop(self):
        """SIGTERM; returns {class id: bytes served} from the shutdown log."""
        status = self.proc.stop(signal.SIGTERM, grace=10.0)
        if status not in (0, -signal.SIGTERM):
            log(f"    note: {self.name} exited with status {status}")
        return served_by_class(self.proc.text())


def pinned(cpus, argv):
    """argv under `taskset -c cpus` (every thread it starts inherits the mask), or argv unchanged."""
    return ["taskset", "-c", cpus, *argv] if cpus else argv


def probe(kind, where):
    """True if a connection to the listener succeeds (it is closed at once, before any request)."""
    try:
        if kind == "unix":
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(1)
                s.connect(where)
        else:
            host, _, port = where.rpartition(":")
            socket.create_connection((host, int(port)), timeout=1).close()
        return True
    except OSError:
        return False


def served_by_class(text):
    served = {}
    for line in text.splitlines():
        m = SERVED_RE.search(line)
        if m:
            served[m.group("cls")] = int(m.group("n"))
    return served


def free_tcp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class IdealEGDServer:
    """QEMU's ceiling for rng-egd: a server the guest never waits for. Each connection's socket is kept
    full of random bytes from the moment it connects, and the requests are read and ignored; QEMU
    reads only as many bytes as it has requests pending, so every request finds its bytes already
    there. Whatever separates this from rng-builtin is QEMU's own rng-egd path (a socket write and a
    chardev read per guest buffer), which no server can remove."""

    def __init__(self, path):
        self.path, self.stopping = path, threading.Event()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(8)
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self):
        self.listener.settimeout(0.2)
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            conn.settimeout(0.2)
            for target in (self._fill, self._drain):
                t = threading.Thread(target=target, args=(conn,), daemon=True)
                t.start()
                self.threads.append(t)

    def _fill(self, conn):
        chunk = os.urandom(65536)
        while not self.stopping.is_set():
            try:
                conn.sendall(os.urandom(4096) if chunk is None else chunk)
                chunk = None
            except socket.timeout:
                continue
            except OSError:
                return

    def _drain(self, conn):
        while not self.stopping.is_set():
            try:
                if not conn.recv(65536):
                    return
            except socket.timeout:
                continue
            except OSError:
                return

    def stop(self):
        self.stopping.set()
        self.listener.close()
        for t in self.threads:
            t.join(timeout=2)


class TestError(Exception):
    pass


# ----------------------------------------------------------------------------------------------------
# Guests


class GuestResult:
    def __init__(self):
        self.info = {}  # rng_current, rng_available
        self.chunks = []  # (host time, n, cumulative bytes, guest usec)
        self.result = None  # dict of the VIRTRNG-RESULT line
        self.errors = []
        self.data = b""  # the bytes the guest wrote to its disk
        self.status = None  # QEMU's exit status; None = killed on timeout
        self.boot_seconds = None  # host wall time from QEMU start to exit

    @property
    def kbps(self):
        """Guest-measured throughput in kB/s (10^3 B)."""
        return self.result["bytes"] / self.result["usec"] * 1000 if self.result else None


def parse_fields(text):
    fields = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if sep:
            fields[key] = int(value) if value.isdigit() else value
    return fields


class Guest:
    """One TCG guest of scripts/interop/build-guest.sh, with a raw virtio-blk disk for its bytes."""

    def __init__(self, ctx, name, backend, nbytes, chunks=1, device_opts="", on_line=None, cpus=None):
        """backend: ("builtin",) | ("egd", socket path, reconnect seconds or 0); cpus: see pinned()."""
        self.ctx, self.name, self.backend, self.cpus = ctx, name, backend, cpus
        self.nbytes, self.chunks, self.device_opts, self.user_on_line = nbytes, chunks, device_opts, on_line
        self.disk = os.path.join(ctx.tmp, f"{name}.img")
        self.res = GuestResult()
        self.proc = None

    def argv(self):
        if self.backend[0] == "builtin":
            backend = ["-object", "rng-builtin,id=rng0"]
        else:
            _, path, reconnect = self.backend
            chardev = f"socket,id=egd0,path={path}" + (f",reconnect={reconnect}" if reconnect else "")
            backend = ["-chardev", chardev, "-object", "rng-egd,id=rng0,chardev=egd0"]
        append = (f"console=ttyS0 quiet panic=-1 virtrng.bytes={self.nbytes} "
                  f"virtrng.chunks={self.chunks}")
        return ["qemu-system-x86_64", "-accel", "tcg", "-m", "256", "-smp", "1",
                "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
                "-kernel", self.ctx.kernel, "-initrd", self.ctx.initrd, "-append", append,
                *backend, "-device", "virtio-rng-pci,rng=rng0" + self.device_opts,
                "-drive", f"file={self.disk},format=raw,if=virtio"]

    def start(self):
        # A disk of whole 512-byte sectors, zero-filled: the guest writes its bytes at offset 0.
        with open(self.disk, "wb") as f:
            f.truncate(max(1 << 20, -(-self.nbytes // 512) * 512))
        self.proc = Proc(pinned(self.cpus, self.argv()), self.name, on_line=self._on_line,
                         verbose=self.ctx.verbose)
        return self

    def _on_line(self, proc, line):
        now = time.monotonic()
        tag, _, rest = line.partition(" ")
        if tag == "VIRTRNG-INFO":
            self.res.info = parse_fields(rest)
        elif tag == "VIRTRNG-CHUNK":
            f = parse_fields(rest)
            self.res.chunks.append((now, f.get("n"), f.get("bytes"), f.get("usec")))
        elif tag == "VIRTRNG-RESULT":
            self.res.result = parse_fields(rest)
        elif tag == "VIRTRNG-ERROR":
            self.res.errors.append(rest)
        if self.user_on_line:
            self.user_on_line(self, line)

    def finish(self, timeout):
        """Waits for QEMU to power off (killing it after `timeout` s) and reads the disk."""
        status = self.proc.wait(timeout)
        if status is None:
            self.proc.stop(signal.SIGKILL)
        else:
            self.proc.reader.join(timeout=2)
        self.res.status = status
        self.res.boot_seconds = time.monotonic() - self.proc.started
        if self.res.result and self.res.result.get("disk") == "written":
            with open(self.disk, "rb") as f:
                self.res.data = f.read(self.res.result["bytes"])
        os.unlink(self.disk)
        return self.res

    def run(self, timeout):
        return self.start().finish(timeout)

    def problems(self):
        """What is wrong with a finished guest's result, as a list of strings."""
        r, out = self.res, []
        if r.status is None:
            out.append(f"QEMU killed after the timeout (console tail:\n{self.proc.tail()})")
        elif r.status != 0:
            out.append(f"QEMU exited with status {r.status}:\n{self.proc.tail()}")
        out += [f"guest error: {e}" for e in r.errors]
        current = str(r.info.get("rng_current", "missing"))
        if not current.startswith("virtio_rng."):
            out.append(f"rng_current={current}, want virtio_rng.*")
        if not r.result:
            if r.status is not None:
                out.append("no VIRTRNG-RESULT line")
        elif r.result.get("bytes") != self.nbytes or len(r.data) != self.nbytes:
            out.append(f"read {r.result.get('bytes')} bytes, disk holds {len(r.data)}, want {self.nbytes}")
        return out


# ----------------------------------------------------------------------------------------------------
# Checks on the bytes


def rngtest(data):
    """(successes, failures, per-test failure counts) of rngtest over `data`."""
    proc = subprocess.run(["rngtest"], input=data, capture_output=True, timeout=60)
    text = proc.stderr.decode(errors="replace")

    def count(label):
        m = re.search(re.escape(label) + r":\s*(\d+)", text)
        return int(m.group(1)) if m else None

    ok, bad = count("FIPS 140-2 successes"), count("FIPS 140-2 failures")
    if ok is None or bad is None:
        raise TestError(f"cannot parse rngtest output:\n{text}")
    kinds = {k: count(f"FIPS 140-2(2001-10-10) {k}") for k in ("Monobit", "Poker", "Runs", "Long run",
                                                                "Continuous run")}
    return ok, bad, {k: v for k, v in kinds.items() if v}


def fips_allowance(blocks, risk=1e-4):
    """The smallest k with P(more than k of `blocks` ideal blocks fail) < risk."""
    p, k = FIPS_BLOCK_FALSE_POSITIVE, 0
    while True:
        tail = 1 - sum(math.comb(blocks, i) * p**i * (1 - p) ** (blocks - i) for i in range(k + 1))
        if tail < risk:
            return k
        k += 1


class FipsTally:
    """FIPS 140-2 over several samples: counts printed per sample, judged over the whole test."""

    def __init__(self, ctx):
        self.ctx, self.blocks, self.failures, self.notes = ctx, 0, 0, []
        self.seen = set()
        self.repeats = 0

    def add(self, label, data):
        ok, bad, kinds = rngtest(data)
        self.blocks += ok + bad
        self.failures += bad
        self.notes.append(f"{label} {bad}/{ok + bad}" + (f" {kinds}" if kinds else ""))
        # Sanity beyond FIPS: no 64-byte block may appear twice across all samples of a test (a server
        # that hands every client the same stream passes FIPS).
        for i in range(0, len(data) - 63, 64):
            block = data[i:i + 64]
            if block in self.seen:
                self.repeats += 1
            self.seen.add(block)
        return bad

    def verdict(self):
        allowed = self.ctx.fips_max_failures
        if allowed is None:
            allowed = fips_allowance(self.blocks)
        text = (f"FIPS failures {self.failures}/{self.blocks} blocks (allowed {allowed}): "
                + ", ".join(self.notes))
        problems = []
        if self.failures > allowed:
            problems.append(f"too many FIPS 140-2 failures: {text}")
        if self.repeats:
            problems.append(f"{self.repeats} repeated 64-byte blocks across samples")
        return text, problems


# ----------------------------------------------------------------------------------------------------
# Tests: each returns (passed, summary line, [problems])


def test_guest(ctx):
    """Throughput and correctness of one guest through rng-egd vs QEMU's rng-builtin."""
    sock = os.path.join(ctx.tmp, "egd0.sock")
    plain = os.path.join(ctx.tmp, "egd-plain.sock")
    # With --qemu-socket-opts (virtrngd: ",prefill=64") the guest's socket sends bytes ahead; the same
    # server's plain socket is measured beside it, so both figures come from one run.
    sockets = [(sock, None, None, ctx.qemu_socket_opts)]
    if ctx.qemu_socket_opts:
        sockets.append((plain, None, None))
    server = EGDServer(ctx, sockets, cpus=ctx.server_pin).start()
    ideal_sock = os.path.join(ctx.tmp, "ideal.sock")
    ideal = IdealEGDServer(ideal_sock)
    times = {"builtin": [], "egd": [], "egd-plain": [], "ideal": []}
    problems, fips = [], FipsTally(ctx)
    try:
        # Alternate the order so that a slow spell of the shared machine hits both backends.
        kinds = ("builtin", "egd", "ideal") + (("egd-plain",) if ctx.qemu_socket_opts else ())
        plan = [(run, kind) for run in range(ctx.runs)
                for kind in (kinds if run % 2 == 0 else tuple(reversed(kinds)))]
        for run, kind in plan:
            backend = {"builtin": ("builtin",), "egd": ("egd", sock, 0), "egd-plain": ("egd", plain, 0),
                       "ideal": ("egd", ideal_sock, 0)}[kind]
            guest = Guest(ctx, f"{kind}{run}", backend, ctx.bytes, cpus=ctx.pin)
            res = guest.run(ctx.guest_timeout)
            errs = guest.problems()
            problems += [f"{kind} run {run + 1}: {e}" for e in errs]
            if not errs:
                times[kind].append(res.kbps)
                fips.add(f"{kind}{run + 1}", res.data)
            log(f"    {kind:9} run {run + 1}: {res.result.get('bytes') if res.result else '?'} B in "
                f"{res.result.get('usec') if res.result else '?'} µs = "
                f"{res.kbps or 0:.0f} kB/s (guest), boot-to-poweroff {res.boot_seconds:.1f} s, "
                f"rng_current={res.info.get('rng_current')}")
            if res.status is None:
                break  # a guest that hangs will hang again: do not wait out every run
    finally:
        served = server.stop()
        ideal.stop()
    fips_text, fips_problems = fips.verdict()
    problems += fips_problems
    want = ctx.bytes * (len(times["egd"]) + len(times["egd-plain"]))
    got = sum(served.values())
    if served and got < want:
        problems.append(f"server log says it served {got} bytes, the guests read {want}")
    if not times["builtin"] or not times["egd"]:
        return False, "guest: no successful run of " + " and ".join(k for k in times if not times[k]), problems
    builtin, egd = statistics.median(times["builtin"]), statistics.median(times["egd"])
    ratio = egd / builtin
    summary = (f"guest: egd {egd:.0f} kB/s, builtin {builtin:.0f} kB/s (medians of {len(times['egd'])}/"
               f"{len(times['builtin'])} runs of {ctx.bytes} B; egd socket{ctx.qemu_socket_opts or ' plain'}), ratio egd/builtin {ratio:.2f} "
               f"(target {ctx.target_ratio}); server served {got} B; {fips_text}")
    if times["ideal"]:
        ideal_kbps = statistics.median(times["ideal"])
        summary += (f"; a server QEMU never waits for (socket kept full): {ideal_kbps:.0f} kB/s, ratio "
                    f"{ideal_kbps / builtin:.2f}: egd reaches {egd / ideal_kbps:.2f} of it (target "
                    f"{ctx.target_ideal_ratio})")
        # The daemon is not what the guest waits for when it comes close to a server that is never waited for.
        if egd / ideal_kbps < ctx.target_ideal_ratio:
            problems.append(f"egd reaches {egd / ideal_kbps:.2f} of the ideal server, below {ctx.target_ideal_ratio}")
    if times["egd-plain"]:
        plain_kbps = statistics.median(times["egd-plain"])
        summary += (f"; without{ctx.qemu_socket_opts}: {plain_kbps:.0f} kB/s, ratio {plain_kbps / builtin:.2f} "
                    f"(reported only)")
    if ratio < ctx.target_ratio:
        if ctx.enforce_ratio:
            problems.append(f"ratio {ratio:.2f} below the target {ctx.target_ratio}")
        else:
            summary += " [below target; reported, not enforced: --enforce-ratio yes]"
    return not problems, summary, problems


def test_two_guests(ctx):
    """Two guests at once on two sockets: two classes with different rates."""
    rates = ctx.two_guest_rates
    socks = [os.path.join(ctx.tmp, f"class{i}.sock") for i in range(2)]
    # ceil = rate: no borrowing, so each class's share is its rate whatever the root allows.
    server = EGDServer(ctx, [(s, r, r) for s, r in zip(socks, rates)]).start()
    problems, fips = [], FipsTally(ctx)
    guests = []
    try:
        # Each guest reads what its class should deliver in --share-seconds, in chunks, so that the
        # console shows progress while both run.
        for i, (sock, rate) in enumerate(zip(socks, rates)):
            nbytes = rate * ctx.share_seconds
            nbytes -= nbytes % 4096
            guests.append(Guest(ctx, f"class{i}", ("egd", sock, 0), nbytes, chunks=8).start())
        for g in guests:
            g.finish(ctx.guest_timeout + ctx.share_seconds * 3)
    finally:
        served = server.stop()
    figures = []
    for i, (g, rate) in enumerate(zip(guests, rates)):
        errs = g.problems()
        problems += [f"guest {i}: {e}" for e in errs]
        if errs:
            continue
        fips.add(f"class{i}", g.res.data)
        # Steady state: from the first chunk's end to the last's, so a limiter's initial burst
        # (a full bucket) does not count.
        first, last = g.res.chunks[0], g.res.chunks[-1]
        kbps = (last[2] - first[2]) / (last[3] - first[3]) * 1000
        figures.append(f"class{i} {kbps:.1f} kB/s (rate {rate / 1000:.0f} kB/s; {g.res.kbps:.1f} kB/s "
                       f"with the first chunk; read {g.nbytes} B)")
        if ctx.enforce_shares:
            share = kbps * 1000 / rate
            if abs(share - 1) > ctx.share_tolerance:
                problems.append(f"class{i} got {kbps:.2f} kB/s, configured {rate / 1000:.2f} kB/s "
                                f"(off by {100 * (share - 1):+.1f}%, tolerance "
                                f"{100 * ctx.share_tolerance:.1f}%)")
    fips_text, fips_problems = fips.verdict()
    problems += fips_problems
    summary = f"two-guests: {'; '.join(figures)}; server served {served}; {fips_text}"
    if not ctx.enforce_shares:
        summary += " [share assertion skipped: --enforce-shares no]"
    return not problems, summary, problems


def test_restart(ctx):
    """Stop the server mid-read, restart it on the same path; does the guest's /dev/hwrng read recover?"""
    sock = os.path.join(ctx.tmp, "restart.sock")
    server = EGDServer(ctx, [(sock, None, None, ctx.qemu_socket_opts)], name="server#1").start()
    events = {}  # "stop", "restart" -> host monotonic time

    def on_line(guest, line):
        # Stop the server once the guest has read a few chunks (mid-stream), right here on the
        # console reader's thread so that the timing is tight; the main thread restarts it.
        if line.startswith("VIRTRNG-CHUNK") and len(guest.res.chunks) == ctx.restart_after_chunks:
            events["stop"] = time.monotonic()
            server.proc.send(signal.SIGTERM)

    nbytes, chunks = ctx.restart_bytes, ctx.restart_chunks
    guest = Guest(ctx, "restart", ("egd", sock, 1), nbytes, chunks=chunks,
                  device_opts=ctx.restart_device_opts, on_line=on_line).start()
    problems = []
    server2 = None
    served1 = served2 = {}
    try:
        # Wait for the stop, then for server #1 to exit, then restart after a gap.
        deadline = time.monotonic() + ctx.guest_timeout
        while "stop" not in events and guest.proc.popen.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if "stop" not in events:
            problems.append("the guest never reached the chunk at which the server is stopped")
        else:
            served1 = server.stop()
            time.sleep(ctx.restart_gap)
            server2 = EGDServer(ctx, [(sock, None, None, ctx.qemu_socket_opts)], name="server#2").start()
            events["restart"] = time.monotonic()
        res = guest.finish(ctx.restart_timeout)
    finally:
        if server.proc.popen.poll() is None:
            server.stop()
        if server2:
            served2 = server2.stop()
    # Chunk progress relative to the restart.
    done_before = [c for c in res.chunks if "stop" in events and c[0] <= events["stop"]]
    after = [c for c in res.chunks if "restart" in events and c[0] > events["restart"]]
    last_before = done_before[-1][2] if done_before else 0
    figures = [f"{nbytes} B in {chunks} chunks, server stopped after chunk {len(done_before)} "
               f"({last_before} B), restarted {ctx.restart_gap:.1f} s later"]
    if after:
        resume = after[0][0] - events["restart"]
        figures.append(f"first chunk after the restart {resume:.2f} s after it")
    if res.result:
        figures.append(f"guest finished: {res.result['bytes']} B in {res.result['usec'] / 1e6:.2f} s")
    else:
        figures.append(f"guest did NOT finish within {ctx.restart_timeout:.0f} s "
                       f"(last chunk {res.chunks[-1][1] if res.chunks else 0}/{chunks})")
    if len(res.chunks) > len(done_before) > 0:
        stall = (res.chunks[len(done_before)][3] - done_before[-1][3]) / 1e6
        figures.append(f"chunk {len(done_before) + 1} took {stall:.2f} s (guest clock)")
    figures.append(f"served {served1} before, {served2} after")
    problems += guest.problems()
    if not problems:
        fips = FipsTally(ctx)
        fips.add("stream", res.data)
        fips_text, fips_problems = fips.verdict()
        figures.append(fips_text)
        problems += fips_problems
    return not problems, "restart: " + "; ".join(figures), problems


def test_ekeyd(ctx):
    """ekeyd-egd-linux against the server's TCP listener: does the server keep up (TCP_NODELAY)?"""
    port = free_tcp_port()
    server = EGDServer(ctx, [], tcp=f"127.0.0.1:{port}").start()
    # A private mount namespace in which /dev/random is /dev/urandom: a random char device, so
    # ekeyd's RNDADDENTROPY ioctl works, and always writable, so ekeyd asks for entropy without end
    # (on a real /dev/random of Linux >= 5.18 it would ask nothing once the CRNG is ready).
    # ekeyd's credited entropy goes into this machine's real pool (the ioctl needs CAP_SYS_ADMIN).
    script = (f"mount --bind /dev/urandom /dev/random && "
              f"exec ekeyd-egd-linux -H 127.0.0.1 -p {port} -b 4 -t 10")
    started = time.monotonic()
    ekeyd = Proc(["unshare", "-m", "--propagation", "private", "sh", "-c", script], "ekeyd",
                 verbose=ctx.verbose)
    status = ekeyd.wait(ctx.ekeyd_seconds)
    elapsed = time.monotonic() - started
    if status is None:
        ekeyd.stop(signal.SIGTERM, grace=3)
    served = server.stop()
    problems = []
    if status is not None:
        problems.append(f"ekeyd-egd-linux exited early with status {status}:\n{ekeyd.tail()}")
    total = sum(served.values())
    rate = total / elapsed
    if not served:
        problems.append("no served-bytes line in the server's shutdown log:\n" + server.proc.tail())
    elif rate < ctx.ekeyd_min_rate:
        problems.append(f"{rate / 1e6:.2f} MB/s to ekeyd, want more than {ctx.ekeyd_min_rate / 1e6:.2f} MB/s")
    summary = (f"ekeyd: {total} B served to ekeyd-egd-linux in {elapsed:.1f} s = {rate / 1e6:.2f} MB/s "
               f"(minimum {ctx.ekeyd_min_rate / 1e6:.2f} MB/s)")
    return not problems, summary, problems


TESTS = {"guest": test_guest, "two-guests": test_two_guests, "restart": test_restart, "ekeyd": test_ekeyd}


# ----------------------------------------------------------------------------------------------------


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tests", nargs="*", default=["all"], choices=["all", *TESTS])
    p.add_argument("--egd-server-cmd", default=None,
                   help="the server under test (shell words), or 'stub' for the Python stand-in; "
                        "default: $VIRTRNGD if set, else the stub")
    p.add_argument("--cache", default=os.path.join(REPO, ".build-interop"),
                   help="build-guest.sh's output directory")
    p.add_argument("--runs", type=int, default=3, help="guest runs per backend in `guest` (medians)")
    p.add_argument("--bytes", type=int, default=65536, help="bytes each guest of `guest` reads")
    p.add_argument("--server-pin", default="auto",
                   help="`guest`: CPU list for the server ('auto': the second CPU when QEMU is pinned to the "
                        "first; 'same': QEMU's; 'none')")
    p.add_argument("--pin", default="auto",
                   help="`guest`: taskset CPU list for QEMU and the server ('auto': the first CPU this "
                        "process may use; 'none': no pinning)")
    p.add_argument("--qemu-socket-opts", default=None,
                   help="listener options of the sockets QEMU connects to (default: ',prefill=64' for virtrngd, "
                        "'' for the stub); `guest` also measures a plain socket beside them")
    p.add_argument("--target-ideal-ratio", type=float, default=0.8,
                   help="`guest`: egd throughput as a share of the ideal server's (enforced)")
    p.add_argument("--target-ratio", type=float, default=0.8, help="egd/builtin throughput target")
    p.add_argument("--enforce-ratio", choices=["yes", "no"], default="no",
                   help="fail `guest` below --target-ratio (default: report it only; see the docstring)")
    p.add_argument("--rates", default="20000,60000", help="two-guests: --rate of the two classes, B/s")
    p.add_argument("--share-seconds", type=int, default=4, help="two-guests: seconds of reading per guest")
    p.add_argument("--share-tolerance", type=float, default=0.15)
    p.add_argument("--enforce-shares", choices=["yes", "no"], default="yes",
                   help="assert two-guests' shares")
    p.add_argument("--restart-bytes", type=int, default=1 << 20)
    p.add_argument("--restart-chunks", type=int, default=32)
    p.add_argument("--restart-after-chunks", type=int, default=4)
    p.add_argument("--restart-gap", type=float, default=0.5, help="seconds the server stays down")
    p.add_argument("--restart-timeout", type=float, default=45.0)
    p.add_argument("--restart-device-opts", default=",period=10000",
                   help="extra virtio-rng-pci properties for `restart` ('' for QEMU's defaults, "
                        "which recover after up to 65.5 s)")
    p.add_argument("--ekeyd-seconds", type=float, default=3.0)
    p.add_argument("--ekeyd-min-rate", type=float, default=1e6, help="bytes/s")
    p.add_argument("--fips-max-failures", type=int, default=None,
                   help="FIPS 140-2 block failures allowed per test (default: from the block count, "
                        "so that ideal data fails a test with probability below 1e-4)")
    p.add_argument("--guest-timeout", type=float, default=30.0)
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("-v", "--verbose", action="store_true", help="echo guest consoles and server logs")
    ctx = p.parse_args()

    tests = list(TESTS) if "all" in ctx.tests else list(dict.fromkeys(ctx.tests))
    cmd = ctx.egd_server_cmd or os.environ.get("VIRTRNGD") or "stub"
    ctx.server_cmd = [sys.executable, STUB] if cmd == "stub" else shlex.split(cmd)
    is_stub = any(os.path.basename(arg) == "egd_stub.py" for arg in ctx.server_cmd)
    if not is_stub and not shutil.which(ctx.server_cmd[0]):
        sys.exit(f"run.py: server {ctx.server_cmd[0]} not found")
    ctx.server_label = "the Python stub" if is_stub else os.path.basename(ctx.server_cmd[0])
    if ctx.qemu_socket_opts is None:
        ctx.qemu_socket_opts = "" if is_stub else ",prefill=64"
    ctx.enforce_ratio = ctx.enforce_ratio == "yes"
    ctx.enforce_shares = ctx.enforce_shares == "yes"
    ctx.two_guest_rates = [int(r) for r in ctx.rates.split(",")]
    ctx.pin = {"auto": str(min(os.sched_getaffinity(0))), "none": None}.get(ctx.pin, ctx.pin)
    # The server gets its own CPU when there is one: a daemon shares a host with its guests, not a
    # CPU with one guest's emulator (on one CPU each request costs QEMU two context switches).
    cpus = sorted(os.sched_getaffinity(0))
    if ctx.server_pin == "auto":
        ctx.server_pin = str(cpus[1]) if ctx.pin is not None and len(cpus) > 1 else ctx.pin
    elif ctx.server_pin == "same":
        ctx.server_pin = ctx.pin
    elif ctx.server_pin == "none":
        ctx.server_pin = None
    ctx.kernel = os.path.join(ctx.cache, "guest", "vmlinuz")
    ctx.initrd = os.path.join(ctx.cache, "guest", "initrd.img")

    missing = [t for t in ("qemu-system-x86_64", "rngtest", "ekeyd-egd-linux", "unshare")
               if not shutil.which(t)]
    if missing or not os.path.exists(ctx.initrd):
        sys.exit(f"run.py: missing {' '.join(missing) or ctx.initrd}: run scripts/setup.sh interop and "
                 f"scripts/interop/build-guest.sh")
    if os.geteuid() != 0 and "ekeyd" in tests:
        sys.exit("run.py: the ekeyd test needs root (unshare -m, RNDADDENTROPY)")

    log(f"interop: server under test: {shlex.join(ctx.server_cmd)} ({ctx.server_label})")
    # SIGTERM (e.g. a CI timeout) unwinds like an exception, so children and temp files are cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ctx.tmp = tempfile.mkdtemp(prefix="virtrng-interop-")
    results = []
    started = time.monotonic()
    try:
        for name in tests:
            log(f"--- {name}")
            t0 = time.monotonic()
            try:
                ok, summary, problems = TESTS[name](ctx)
            except TestError as e:
                ok, summary, problems = False, f"{name}: error", [str(e)]
            verdict = "PASS" if ok else "FAIL"
            log(f"{verdict} {summary} ({time.monotonic() - t0:.1f} s)")
            for problem in problems:
                log(f"    - {problem}")
            results.append((name, ok))
    finally:
        for proc in list(LIVE):
            proc.stop(signal.SIGKILL, grace=2)
        if ctx.keep:
            log(f"interop: kept {ctx.tmp}")
        else:
            shutil.rmtree(ctx.tmp, ignore_errors=True)
    failed = [name for name, ok in results if not ok]
    log(f"interop: {len(results) - len(failed)}/{len(results)} passed in {time.monotonic() - started:.1f} s"
        + (f"; failed: {' '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
