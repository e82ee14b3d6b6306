#!/usr/bin/env python3
"""End-to-end benchmark: lumberd under Filebeat-shaped Lumberjack v2 load.

Starts `lumberd serve` once per scenario (fresh port, fresh data dir), drives it
with benches/load (`lumberload`, Elastic's go-lumber client), and measures the
server's CPU from /proc/PID/stat and its memory from /proc/PID/status.
Writes target/bench/e2e.json and prints a table. Python 3 standard library only.

Exit status: 0 when every scenario ran and every acknowledged event is in the
output; 1 otherwise. A missed performance target is reported, not fatal.
"""

import argparse
import glob
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOAD_DIR = os.path.join(REPO, "benches", "load")
BENCH_DIR = os.path.join(REPO, "target", "bench")

TARGET_EVENTS_PER_CPU_SECOND = 150_000
TARGET_PEAK_RSS_MIB = 64
# TLS may add at most this fraction to lumberd's CPU per event of the plain run.
TARGET_TLS_CPU_OVERHEAD = 0.20
SCENARIOS = ("file-4conns", "empty-4conns", "floor-4conns", "hold-1000conns", "tls-4conns",
             "tls-connect-1000conns")
# The same load as file-4conns; they differ in what the receiver does with each event.
FOUR_CONN_SCENARIOS = ("file-4conns", "empty-4conns", "floor-4conns", "tls-4conns")
# lumberd with no filters, no ids and no log metrics: what lumberd costs around the pipeline.
EMPTY_PIPELINE = "[pipeline]\nfilter = []\nfingerprint = []\nmetric = []\n"
TLS_SCENARIOS = ("tls-4conns", "tls-connect-1000conns")

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def raise_nofile():
    """Lift the soft open-files limit to the hard one; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        return want
    except (ValueError, OSError):
        return soft


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_seconds(pid):
    """utime + stime of a process, in seconds (fields 14 and 15 of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()  # fields[0] is field 3 (state)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status_kib(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class RssSampler(threading.Thread):
    """Samples VmRSS every `interval` seconds until stopped (bounded by max_samples)."""

    def __init__(self, pid, interval=0.1, max_samples=100_000):
        super().__init__(daemon=True)
        self.pid, self.interval, self.max_samples = pid, interval, max_samples
        self.samples = []
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set() and len(self.samples) < self.max_samples:
            kib = proc_status_kib(self.pid, "VmRSS")
            if kib is None:
                break
            self.samples.append(kib)
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()
        self.join(timeout=5)


def count_lines(paths):
    n = 0
    for p in paths:
        with open(p, "rb") as f:
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                n += chunk.count(b"\n")
    return n


def make_tls_files(workdir, key_type):
    """A CA and a server certificate for 127.0.0.1 (openssl CLI), as Filebeat would verify."""
    d = os.path.join(workdir, "tls")
    os.makedirs(d)
    if key_type == "rsa":
        newkey = ["-newkey", "rsa:2048"]
    else:
        newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]

    def ssl(*args):
        r = subprocess.run(["openssl", *args], cwd=d, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"openssl {' '.join(args)}: {r.stderr.strip()}")

    ssl("req", "-x509", *newkey, "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=lumberd bench CA")
    ssl("req", *newkey, "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=lumberd bench")
    with open(os.path.join(d, "ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "ext")
    env = {
        "LUMBERD_TLS_ENABLED": "true",
        "LUMBERD_TLS_CERTIFICATE": os.path.join(d, "server.crt"),
        "LUMBERD_TLS_KEY": os.path.join(d, "server.key"),
    }
    return env, os.path.join(d, "ca.crt")


def build_lumberload(path):
    if not shutil.which("go"):
        raise RuntimeError("go toolchain not found; pass --lumberload PATH")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    log(f"building lumberload -> {path}")
    r = subprocess.run(["go", "build", "-o", path, "."], cwd=LOAD_DIR,
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError("go build failed:\n" + r.stderr)


class Lumberd:
    def __init__(self, binary, extra_env, workdir):
        self.binary = binary
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.data_dir = os.path.join(workdir, "data")
        os.makedirs(self.data_dir)
        self.stderr_path = os.path.join(workdir, "lumberd.stderr")
        env = dict(os.environ)
        env.update(extra_env)
        env.update({
            "LUMBERD_SERVER_LISTEN": self.addr,
            "LUMBERD_OUTPUT_DATA_DIR": self.data_dir,
            "LUMBERD_LOG_FORMAT": "text",
            # Scraped by nobody here; a free port so runs never collide on 9600.
            "LUMBERD_ADMIN_LISTEN": "127.0.0.1:0",
        })
        self.env = env
        self.proc = None
        self._errf = None

    def start(self, ready_timeout):
        # stderr and stdout go to a file, so a chatty server can never block on a full pipe
        self._errf = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([self.binary, "serve"], env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=self._errf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lumberd exited with status {self.proc.returncode} before listening\n"
                                   + self.stderr_tail())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"lumberd did not accept connections on {self.addr} within {ready_timeout}s\n"
                           + self.stderr_tail())

    def stderr_tail(self, n=40):
        try:
            with open(self.stderr_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return "(no stderr)"
        return "--- lumberd stderr (last lines) ---\n" + "\n".join(lines[-n:])

    def stop(self, grace=20):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log("lumberd did not stop on SIGTERM; killing it")
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._errf:
            self._errf.close()
        return self.proc.returncode


def run_scenario(name, args, lumberload, extra_env, binary=None, label=None):
    env = {}
    workdir = tempfile.mkdtemp(prefix=f"lumberd-e2e-{name}-", dir=args.tmpdir)
    if name == "floor-4conns":
        binary = binary or args.floor
    binary = binary or args.lumberd
    if name == "empty-4conns":
        path = os.path.join(workdir, "empty-pipeline.toml")
        with open(path, "w") as f:
            f.write(EMPTY_PIPELINE)
        env["LUMBERD_CONFIG"] = path
    if name in FOUR_CONN_SCENARIOS:
        load_args = ["-conns", "4", "-events", str(args.events), "-window", "2048",
                     "-compress", "3", "-pipelining", "2"]
    elif name == "hold-1000conns":
        env["LUMBERD_SERVER_MAX_CONNECTIONS"] = str(max(2000, args.hold_conns * 2))
        load_args = ["-conns", str(args.hold_conns), "-hold", "-window", "2048", "-compress", "3"]
    elif name == "tls-connect-1000conns":
        # A fleet reconnecting at once (e.g. after a lumberd restart): every connection
        # dials and does a full TLS handshake at the same moment, then closes.
        env["LUMBERD_SERVER_MAX_CONNECTIONS"] = str(max(4096, args.hold_conns * 2))
        load_args = ["-conns", str(args.hold_conns), "-connect-only",
                     "-dial-concurrency", str(args.hold_conns)]
    else:
        raise ValueError(name)
    if name in TLS_SCENARIOS:
        tls_env, ca = make_tls_files(workdir, args.tls_key)
        env.update(tls_env)
        load_args += ["-tls-ca", ca]
    env.update(extra_env)  # the caller's --env wins over scenario defaults
    load_args += ["-timeout", f"{args.timeout}s"]

    res = {"name": name, "binary": label or "lumberd", "ok": False, "error": None, "lumberd_env": env,
           "inflight_budget": env.get("LUMBERD_SERVER_MAX_INFLIGHT_BYTES", "default")}
    if name in TLS_SCENARIOS:
        res["tls_server_key"] = "RSA 2048" if args.tls_key == "rsa" else "ECDSA P-256"
    server = Lumberd(binary, env, workdir)
    sampler = None
    try:
        server.start(args.ready_timeout)
        pid = server.proc.pid
        res["rss_at_start_mib"] = round((proc_status_kib(pid, "VmRSS") or 0) / 1024, 1)
        sampler = RssSampler(pid)
        sampler.start()
        cpu0 = proc_cpu_seconds(pid)
        t0 = time.monotonic()
        try:
            r = subprocess.run([lumberload, "-addr", server.addr] + load_args, capture_output=True,
                               text=True, timeout=args.timeout + 120)
        except subprocess.TimeoutExpired:
            raise RuntimeError("lumberload did not finish (killed)")
        wall = time.monotonic() - t0
        alive = server.proc.poll() is None
        cpu1 = proc_cpu_seconds(pid) if alive else None
        hwm = proc_status_kib(pid, "VmHWM") if alive else None
        sampler.stop()

        load = None
        for line in r.stdout.splitlines():
            line = line.strip()
            if line.startswith("{"):
                load = json.loads(line)
        res["lumberload"] = load
        res["lumberload_wall_seconds"] = round(wall, 3)
        if not alive:
            raise RuntimeError(f"lumberd died during the run (status {server.proc.returncode})\n"
                               + server.stderr_tail())
        if load is None:
            raise RuntimeError(f"lumberload printed no result (status {r.returncode}): {r.stderr.strip()}")

        acked = load["events_acked"]
        cpu = cpu1 - cpu0
        res["tls_version"] = load.get("tls_version")
        if name == "tls-connect-1000conns":
            n = load["conns"]
            res.update({
                "connections": n,
                "dial_concurrency": load.get("dial_concurrency"),
                "seconds": round(load["dial_seconds"], 3),
                "handshakes_per_sec": round(load["connects_per_sec"]),
                "lumberd_cpu_seconds": round(cpu, 3),
                "lumberd_cpu_us_per_handshake": round(cpu * 1e6 / n, 1) if n else None,
                "handshakes_per_cpu_second": round(n / cpu) if cpu > 0 else None,
                "peak_rss_mib": round(hwm / 1024, 1) if hwm is not None else None,
            })
            server.stop()
            with open(server.stderr_path, "rb") as f:
                failures = f.read().count(b"TLS handshake failed")
            res["handshake_failures_logged"] = failures
            if r.returncode != 0:
                raise RuntimeError(f"lumberload exited {r.returncode}: {r.stderr.strip()[-2000:]}")
            if failures:
                raise RuntimeError(f"lumberd logged {failures} handshake failures\n" + server.stderr_tail())
            res["ok"] = True
            return res
        res.update({
            "events_sent": load["events_sent"],
            "events_acked": acked,
            "seconds": round(load["seconds"], 3),
            "events_per_sec": round(load["events_per_sec"]),
            "lumberd_cpu_seconds": round(cpu, 3),
            "events_per_cpu_second": round(acked / cpu) if cpu > 0 else None,
            "cpu_us_per_event": round(cpu * 1e6 / acked, 3) if acked else None,
            "peak_rss_mib": round(hwm / 1024, 1) if hwm is not None else None,
            "max_sampled_rss_mib": round(max(sampler.samples) / 1024, 1) if sampler.samples else None,
            "rss_samples": len(sampler.samples),
            "lumberload_cpu_seconds": load.get("client_cpu_seconds"),
            "avg_event_bytes": load.get("avg_event_bytes"),
        })
        load_err = None
        if r.returncode != 0:
            load_err = f"lumberload exited {r.returncode}: {r.stderr.strip()[-2000:]}"

        # Stop the server (gracefully) before counting, then check durability:
        # every acknowledged event must be a document (two lines) in the data dir.
        rc = server.stop()
        res["lumberd_exit_status"] = rc
        if name == "floor-4conns":
            # The floor stores nothing: only the acknowledgements are checked.
            if load_err:
                raise RuntimeError(load_err)
            if acked != load["events_sent"]:
                raise RuntimeError(f"only {acked} of {load['events_sent']} events acknowledged")
            res["ok"] = True
            return res
        files = sorted(glob.glob(os.path.join(server.data_dir, "*.ndjson")))
        # The file output is in bulk form: an action line, then the document.
        lines = count_lines(files)
        res["output_files"] = [os.path.basename(f) for f in files]
        res["output_lines"] = lines
        res["output_documents"] = lines // 2
        res["lines_match"] = lines == 2 * acked
        if load_err:
            raise RuntimeError(load_err)
        if acked != load["events_sent"]:
            raise RuntimeError(f"only {acked} of {load['events_sent']} events acknowledged")
        if lines != 2 * acked:
            raise RuntimeError(f"output has {lines} lines (action + document each) "
                               f"for {acked} acknowledged events")
        res["ok"] = True
    except Exception as e:  # noqa: BLE001 - reported in the result
        res["error"] = str(e)
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        server.stop()
        if args.keep:
            res["workdir"] = workdir
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    targets = []
    if name in ("file-4conns", "tls-4conns") and res["ok"] and res["binary"] == "lumberd":
        epc = res.get("events_per_cpu_second")
        rss = res.get("peak_rss_mib")
        targets.append({"target": f">= {TARGET_EVENTS_PER_CPU_SECOND:,} events per lumberd CPU-second",
                        "value": epc, "pass": epc is not None and epc >= TARGET_EVENTS_PER_CPU_SECOND})
        targets.append({"target": f"peak RSS < {TARGET_PEAK_RSS_MIB} MiB",
                        "value": rss, "pass": rss is not None and rss < TARGET_PEAK_RSS_MIB})
    res["targets"] = targets
    return res


def compare_tls(results):
    """TLS's share of lumberd's CPU per event: tls-4conns against file-4conns."""
    by = {r["name"]: r for r in results if r["binary"] == "lumberd"}
    plain, tls = by.get("file-4conns"), by.get("tls-4conns")
    if not (plain and tls and plain["ok"] and tls["ok"]):
        return
    p, t = plain.get("cpu_us_per_event"), tls.get("cpu_us_per_event")
    if not p or not t:
        return
    overhead = (t - p) / p
    tls["plain_cpu_us_per_event"] = p
    tls["tls_cpu_overhead_vs_plain"] = round(overhead, 3)
    tls["targets"].append({"target": f"TLS adds < {TARGET_TLS_CPU_OVERHEAD:.0%} to lumberd CPU per event",
                           "value": f"{overhead:+.1%} ({p:.3f} -> {t:.3f} us/event)",
                           "pass": overhead < TARGET_TLS_CPU_OVERHEAD})


def fmt(v, spec=""):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return format(v, spec)


def print_table(results):
    hdr = f"{'scenario':<16} {'binary':<8} {'round':>5} {'status':<6} {'events':>10} {'ev/s':>10} {'ev/CPU-s':>10} {'us/ev':>7} {'peakRSS MiB':>11} {'lines ok':>8}"
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        print(f"{r['name']:<16} {r['binary']:<8} {r.get('round', 1):>5} {'ok' if r['ok'] else 'FAIL':<6} {fmt(r.get('events_acked'), ','):>10} "
              f"{fmt(r.get('events_per_sec'), ','):>10} {fmt(r.get('events_per_cpu_second'), ','):>10} "
              f"{fmt(r.get('cpu_us_per_event'), '.2f'):>7} {fmt(r.get('peak_rss_mib'), '.1f'):>11} "
              f"{fmt(r.get('lines_match')):>8}")
    for r in results:
        if r["name"] == "tls-connect-1000conns" and r["ok"]:
            print(f"{r['name']}: {r['connections']} connections dialled at once ({r['tls_server_key']} server key, "
                  f"{r.get('tls_version')}): {fmt(r.get('handshakes_per_sec'), ',')} handshakes/s wall, "
                  f"{fmt(r.get('lumberd_cpu_us_per_handshake'))} us lumberd CPU per handshake "
                  f"({fmt(r.get('handshakes_per_cpu_second'), ',')} per lumberd CPU-second), "
                  f"peak RSS {fmt(r.get('peak_rss_mib'), '.1f')} MiB")
        if r["name"] == "hold-1000conns":
            print(f"{r['name']}: inflight budget LUMBERD_SERVER_MAX_INFLIGHT_BYTES={r['inflight_budget']}, "
                  f"peak RSS {fmt(r.get('peak_rss_mib'), '.1f')} MiB")
        for t in r.get("targets", []):
            print(f"{'PASS' if t['pass'] else 'MISS'}  {r['name']}: {t['target']} (measured {fmt(t['value'], ',')})")
        if r["error"]:
            print(f"ERROR {r['name']}: {r['error']}")


def median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def summarise(results):
    """Per scenario and binary, the median over rounds; and ratios taken inside each round
    (runs next to each other share the machine's load), then their median."""
    rows = {}
    for r in results:
        if r["ok"] and r.get("events_per_cpu_second"):
            rows.setdefault((r["name"], r["binary"]), []).append(r)
    summary = {"medians": [], "ratios": []}
    for (name, binary), rs in rows.items():
        summary["medians"].append({
            "scenario": name, "binary": binary, "rounds": len(rs),
            "events_per_cpu_second": median(r["events_per_cpu_second"] for r in rs),
            "cpu_us_per_event": median(r["cpu_us_per_event"] for r in rs),
            "peak_rss_mib": median(r["peak_rss_mib"] for r in rs),
        })
    by_round = {}
    for r in results:
        if r["ok"] and r.get("events_per_cpu_second"):
            by_round.setdefault(r.get("round", 1), {})[(r["name"], r["binary"])] = r

    def ratio(a, b, key):
        per_round = [rr[a][key] / rr[b][key] for rr in by_round.values()
                     if a in rr and b in rr and rr[a].get(key) and rr[b].get(key)]
        return {"of": f"{a[0]}/{a[1]} : {b[0]}/{b[1]}", "figure": key, "rounds": len(per_round),
                "median": round(median(per_round), 3) if per_round else None,
                "each": [round(x, 3) for x in per_round]}

    pairs = [(("file-4conns", "lumberd"), ("floor-4conns", "floor")),
             (("empty-4conns", "lumberd"), ("floor-4conns", "floor")),
             (("file-4conns", "lumberd"), ("empty-4conns", "lumberd"))]
    for name in ("file-4conns", "empty-4conns"):
        pairs.append(((name, "lumberd"), (name, "before")))
    # With --before-floor: the floor's own change, and the before binary's distance to
    # the floor of its own tree.
    pairs += [(("floor-4conns", "floor"), ("floor-4conns", "floor-before")),
              (("file-4conns", "before"), ("floor-4conns", "floor-before")),
              (("empty-4conns", "before"), ("floor-4conns", "floor-before"))]
    for a, b in pairs:
        for key in ("cpu_us_per_event", "peak_rss_mib"):
            x = ratio(a, b, key)
            if x["rounds"]:
                summary["ratios"].append(x)
    return summary


def print_summary(summary):
    if not summary["medians"]:
        return
    print()
    print(f"{'median over rounds':<30} {'ev/CPU-s':>10} {'us/ev':>7} {'peakRSS MiB':>11}")
    for m in sorted(summary["medians"], key=lambda m: (m["scenario"], m["binary"])):
        print(f"{m['scenario'] + ' ' + m['binary'] + ' x' + str(m['rounds']):<30} "
              f"{fmt(m['events_per_cpu_second'], ',.0f'):>10} {fmt(m['cpu_us_per_event'], '.2f'):>7} "
              f"{fmt(m['peak_rss_mib'], '.1f'):>11}")
    for x in summary["ratios"]:
        print(f"ratio {x['figure']:<17} {x['of']:<45} median {fmt(x['median'])} "
              f"(per round: {', '.join(str(e) for e in x['each'])})")


def parse_env(items):
    env = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--env expects K=V, got {item!r}")
        k, v = item.split("=", 1)
        env[k] = v
    return env


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lumberd", default=os.path.join(REPO, "target", "release", "lumberd"))
    ap.add_argument("--before", default=None, metavar="PATH",
                    help="another lumberd binary (e.g. main's): its file-4conns and empty-4conns "
                         "runs interleave with --lumberd's, and the summary gives after/before ratios")
    ap.add_argument("--floor", default=os.path.join(REPO, "target", "release", "examples", "floor"),
                    help="the decode-only floor (cargo build --release --example floor)")
    ap.add_argument("--before-floor", default=None, metavar="PATH",
                    help="the floor built from --before's tree: its floor-4conns runs interleave "
                         "with --floor's (a change to the decoder moves the floor too)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run the scenario list this many times, interleaved (ratios are per round)")
    ap.add_argument("--lumberload", default=None,
                    help="prebuilt lumberload binary (default: go build benches/load into target/bench/)")
    ap.add_argument("--events", type=int, default=2_000_000, help="events for file-4conns (default 2,000,000)")
    ap.add_argument("--hold-conns", type=int, default=1000,
                    help="connections for hold-1000conns and tls-connect-1000conns")
    ap.add_argument("--tls-key", choices=("rsa", "ec"), default="rsa",
                    help="server key type for the TLS scenarios (default rsa: RSA 2048, the common case)")
    ap.add_argument("--env", action="append", default=[], metavar="K=V", help="extra env for lumberd (repeatable)")
    ap.add_argument("--scenario", action="append", choices=SCENARIOS, help="run only these (repeatable)")
    ap.add_argument("--timeout", type=int, default=300, help="lumberload deadline per scenario, seconds")
    ap.add_argument("--ready-timeout", type=float, default=30.0, help="seconds to wait for lumberd to listen")
    ap.add_argument("--out", default=os.path.join(BENCH_DIR, "e2e.json"))
    ap.add_argument("--tmpdir", default=None, help="parent for the temporary data dirs")
    ap.add_argument("--keep", action="store_true", help="keep the data dirs (path in the JSON)")
    args = ap.parse_args()

    extra_env = parse_env(args.env)
    args.lumberd = os.path.abspath(args.lumberd)
    if not os.access(args.lumberd, os.X_OK):
        raise SystemExit(f"lumberd binary not found: {args.lumberd} (cargo build --release)")
    nofile = raise_nofile()
    if args.hold_conns + 64 > nofile:
        log(f"warning: RLIMIT_NOFILE is {nofile}, lower than {args.hold_conns} connections need")

    lumberload = args.lumberload or os.path.join(BENCH_DIR, "lumberload")
    if args.lumberload is None:
        build_lumberload(lumberload)

    names = args.scenario or SCENARIOS
    if "floor-4conns" in names and not os.access(args.floor, os.X_OK):
        raise SystemExit(f"floor binary not found: {args.floor} (cargo build --release --example floor)")
    binaries = [(args.lumberd, "lumberd")]
    if args.before:
        binaries.append((os.path.abspath(args.before), "before"))
    results = []
    for rnd in range(1, args.rounds + 1):
        for name in names:
            # Only lumberd's own scenarios are worth comparing across binaries.
            runs = binaries if name in ("file-4conns", "empty-4conns") else binaries[:1]
            if name == "floor-4conns":
                runs = [(args.floor, "floor")]
                if args.before_floor:
                    runs.append((os.path.abspath(args.before_floor), "floor-before"))
            # Alternate which binary goes first, so neither always meets a warmer cache.
            if rnd % 2 == 0:
                runs = list(reversed(runs))
            for binary, label in runs:
                log(f"round {rnd}: running {name} ({label}) ...")
                r = run_scenario(name, args, lumberload, extra_env, binary, label)
                r["round"] = rnd
                results.append(r)
    compare_tls(results)
    summary = summarise(results)

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"runs": results, "summary": summary}, f, indent=2)
        f.write("\n")
    print_table(results)
    print_summary(summary)
    print(f"results: {args.out}")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
