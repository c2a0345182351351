#!/usr/bin/env python3
"""bench.py - the proxy benchmark that bench/run.sh runs (start it through run.sh).

Starts, on 127.0.0.1 only and in a temporary directory: two nginx HTTP backends, an iperf3
server, and every proxy in PROXIES, each proxying round robin to the two backends (plus a
listener for iperf3).  Then, in rounds that alternate the proxies, it measures through each
proxy:

  keep-alive   wrk --latency: requests/s, p50/p99, proxy CPU time per request
  close        the same with "Connection: close": new connections/s, CPU per connection
  bulk         iperf3 -t: Gbit/s
  idle         (once, after the rounds) RSS growth per idle proxied connection

Then the UDP part (bench/udp.py; --only udp runs it alone, --only tcp skips it): unbound and
an iperf3 server behind nginx stream and layer4-lb (HAProxy has no UDP): dnsperf queries/s,
proxy CPU per query and lost queries, iperf3 -u throughput within a loss ceiling, syscalls per
query under strace.

Proxy CPU time is utime+stime of the proxy's processes and all their threads
(/proc/PID/stat fields 14 and 15, in clock ticks), sampled before and after each run.  Every
process started here is stopped by its PID at the end.  Standard library only.
"""

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import proxyconf
import udp
from report import chart, fmt, markdown, summarize, text_table

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CLK_TCK = os.sysconf("SC_CLK_TCK")
NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"

# The proxies, one column each, in table order.  `kind` selects the start function in
# STARTERS below; the other keys are passed to it.  Adding a column is one entry here (and,
# for a new kind of proxy, one start function).  The first entry of kind haproxy and of kind
# nginx are the references the ratios are computed against.
PROXIES = [
    dict(key="haproxy", name="HAProxy", kind="haproxy"),
    dict(key="nginx", name="nginx stream", kind="nginx"),
    dict(key="l4lb", name="layer4-lb (io_uring)", kind="layer4-lb", io_engine="io_uring"),
    dict(key="l4lb-epoll", name="layer4-lb (epoll)", kind="layer4-lb", io_engine="epoll"),
]


def log(msg):
    print(msg, flush=True)


# ----------------------------------------------------------------------------------------
# /proc


def _stat_fields(path):
    with open(path) as f:
        s = f.read()
    return s[s.rindex(")") + 2:].split()          # fields from 3 (state) on


def children_of(pid):
    """Direct children of pid, by scanning /proc (no /proc/PID/task/TID/children here)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if int(_stat_fields(f"/proc/{d}/stat")[1]) == pid:
                    out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


def tree(pid):
    pids, i = [pid], 0
    while i < len(pids):
        pids += children_of(pids[i])
        i += 1
    return pids


def cpu_ticks(pids):
    """utime+stime of each process (all its threads): fields 14 and 15 of /proc/PID/stat."""
    total = 0
    for p in pids:
        try:
            f = _stat_fields(f"/proc/{p}/stat")
            total += int(f[11]) + int(f[12])
        except OSError:
            pass
    return total


def unit_ticks(pids):
    """{(pid, tid): utime+stime} per thread of each process: the per-worker split."""
    out = {}
    for p in pids:
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                f = _stat_fields(f"/proc/{p}/task/{t}/stat")
                out[(p, int(t))] = int(f[11]) + int(f[12])
        except OSError:
            pass
    return out


def rss_kib(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def foreign_ticks():
    """CPU ticks used so far by every process outside this benchmark's own process tree.

    utime+stime+cutime+cstime of each process (fields 14-17), so a short-lived process (a
    compiler run by someone's build) is still counted once its parent has reaped it.  Kernel
    threads are left out: their work here (softirq, ksoftirqd) is mostly our own traffic.
    Steal time (/proc/stat) is added: on a virtual machine it is CPU the hypervisor gave to
    other guests, and it slows a run just as a local build does.
    The delta over a run, per second, is how many CPUs other work took from the benchmark.
    """
    mine, procs = os.getpid(), {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                f = _stat_fields(f"/proc/{d}/stat")
            except OSError:
                continue
            procs[int(d)] = f
    kids = {}
    for pid, f in procs.items():
        kids.setdefault(int(f[1]), []).append(pid)
    ours, pending = set(), [mine]
    while pending:
        p = pending.pop()
        ours.add(p)
        pending += kids.get(p, [])
    total = 0
    for pid, f in procs.items():
        if pid in ours or int(f[6]) & 0x00200000:       # PF_KTHREAD
            continue
        total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    with open("/proc/stat") as f:
        cpu = f.readline().split()      # "cpu user nice system idle iowait irq softirq steal"
    return total + (int(cpu[8]) if len(cpu) > 8 else 0)


def established(dports=(), sports=()):
    """Established TCP sockets with one of these destination or source ports (ss)."""
    conds = [f"dport = :{p}" for p in dports] + [f"sport = :{p}" for p in sports]
    out = subprocess.run(["ss", "-Htn", "state", "established", "( " + " or ".join(conds) + " )"],
                         capture_output=True, text=True).stdout
    return sum(1 for line in out.splitlines() if line.strip())


# ----------------------------------------------------------------------------------------
# Processes: everything started is recorded and stopped by PID


class Procs:
    def __init__(self):
        self.procs = []          # (name, Popen)

    def start(self, name, argv, logpath, env=None, cpus=None):
        if cpus:
            argv = ["taskset", "-c", cpus] + argv
        lf = open(logpath, "ab")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=lf, stderr=subprocess.STDOUT,
                             env=env, start_new_session=True, cwd=os.path.dirname(logpath))
        lf.close()
        self.procs.append((name, p))
        return p

    def stop(self, p, timeout=5.0):
        if p.poll() is not None:
            return
        try:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def stop_all(self):
        for _, p in reversed(self.procs):
            try:
                self.stop(p)
            except Exception:                           # noqa: BLE001 - keep stopping the rest
                pass


def wait_port(port, proc, name, logpath, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            break
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    tail = open(logpath, errors="replace").read()[-2000:] if os.path.exists(logpath) else ""
    state = f"exited with status {proc.returncode}" if proc.poll() is not None else "not listening"
    sys.exit(f"bench: {name} {state} on 127.0.0.1:{port} after {timeout:.0f} s; its log:\n{tail}")


def port_free(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # TIME_WAIT is no obstacle
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


# ----------------------------------------------------------------------------------------
# Configurations and start functions


def start_backends(ctx):
    a = ctx.args
    for i, port in enumerate(ctx.backend_ports):
        d = os.path.join(ctx.tmp, f"backend{i + 1}")
        os.makedirs(d)
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""daemon off;
master_process on;
worker_processes {a.backend_workers};
worker_rlimit_nofile {ctx.nofile};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections {a.idle_conns + 1024}; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    client_header_timeout 600s;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ return 200 "hello\\n"; }}
    }}
}}
""")
        logpath = os.path.join(d, "stderr.log")
        p = ctx.procs.start(f"backend{i + 1}", ["nginx", "-p", d, "-c", conf, "-e", f"{d}/error.log"],
                            logpath, cpus=a.cpus_backends)
        wait_port(port, p, f"nginx backend {i + 1}", f"{d}/error.log")
    d = os.path.join(ctx.tmp, "iperf3")
    os.makedirs(d)
    p = ctx.procs.start("iperf3 server", ["iperf3", "-s", "-B", "127.0.0.1", "-p", str(ctx.iperf_port)],
                        os.path.join(d, "stderr.log"), cpus=a.cpus_backends)
    wait_port(ctx.iperf_port, p, "iperf3 server", os.path.join(d, "stderr.log"))


def start_haproxy(ctx, px, d, http_port, iperf_port):
    a = ctx.args
    maxconn = max(1000, min(100000, (ctx.nofile - 500) // 2))
    conf = os.path.join(d, "haproxy.cfg")
    servers = "\n".join(f"    server b{i + 1} 127.0.0.1:{p}" for i, p in enumerate(ctx.backend_ports))
    with open(conf, "w") as f:
        f.write(f"""global
    nbthread {a.acceptors}
    maxconn {maxconn}
    stats socket {d}/haproxy.sock mode 600 level admin
defaults
    mode tcp
    maxconn {maxconn}
    timeout connect 3s
    timeout client 600s
    timeout server 600s
frontend web
    bind 127.0.0.1:{http_port}
    default_backend web
backend web
    balance roundrobin
{servers}
frontend iperf
    bind 127.0.0.1:{iperf_port}
    default_backend iperf
backend iperf
    server iperf 127.0.0.1:{ctx.iperf_port}
""")
    return ["haproxy", "-f", conf, "-db"], None


def start_nginx(ctx, px, d, http_port, iperf_port):
    a = ctx.args
    conf = os.path.join(d, "nginx.conf")
    servers = "\n".join(f"        server 127.0.0.1:{p};" for p in ctx.backend_ports)
    with open(conf, "w") as f:
        head = proxyconf.nginx_head(a, ctx.nofile, d, NGINX_STREAM_MODULE,
                                    2 * a.idle_conns + 1024)
        f.write(head + f"""    upstream web {{
{servers}
    }}
    upstream iperf {{
        server 127.0.0.1:{ctx.iperf_port};
    }}
    server {{
        listen 127.0.0.1:{http_port} reuseport backlog=4096;
        proxy_pass web;
    }}
    server {{
        listen 127.0.0.1:{iperf_port} reuseport;
        proxy_pass iperf;
    }}
}}
""")
    return ["nginx", "-p", d, "-c", conf, "-e", f"{d}/error.log"], None


def start_layer4lb(ctx, px, d, http_port, iperf_port):
    a = ctx.args
    conf = os.path.join(d, "lb.yaml")
    backends = "\n".join(f"      - address: 127.0.0.1:{p}" for p in ctx.backend_ports)
    with open(conf, "w") as f:
        f.write(proxyconf.l4lb_head(a, px, d) + f"""  - name: web
    listen: 127.0.0.1:{http_port}
    algorithm: round_robin
    health_check: {{}}
    backends:
{backends}
  - name: iperf
    listen: 127.0.0.1:{iperf_port}
    health_check: {{}}
    backends:
      - address: 127.0.0.1:{ctx.iperf_port}
""")
    env = dict(os.environ, NUM_ACCEPTORS=str(a.acceptors))
    return [px.get("binary", a.l4lb_binary), "--config", conf], env


STARTERS = {"haproxy": start_haproxy, "nginx": start_nginx, "layer4-lb": start_layer4lb}


def version_of(kind, binary=None):
    try:
        if kind == "haproxy":
            out = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout
            return out.split()[2]
        if kind == "nginx":
            out = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr
            return out.strip().split("/")[-1]
        if kind == "layer4-lb":
            out = subprocess.run([binary, "--version"], capture_output=True, text=True)
            v = (out.stdout or out.stderr).strip().splitlines()
            rev = subprocess.run(["git", "-C", ROOT, "describe", "--always"],
                                 capture_output=True, text=True).stdout.strip()
            # Dirty means changed sources: the results this run is rewriting do not count.
            changed = subprocess.run(["git", "-C", ROOT, "status", "--porcelain",
                                      "--untracked-files=no", "--", ".", ":!bench/results"],
                                     capture_output=True, text=True).stdout.strip()
            rev += "-dirty" if rev and changed else ""
            return (v[0].split()[-1] if v and out.returncode == 0 else "?") + (f" (git {rev})" if rev else "")
    except (OSError, IndexError):
        pass
    return "?"


def start_proxy(ctx, px, index):
    d = os.path.join(ctx.tmp, px["key"])
    os.makedirs(d)
    px["http_port"] = ctx.args.port_base + 100 + 10 * index
    px["iperf_port"] = px["http_port"] + 1
    argv, env = STARTERS[px["kind"]](ctx, px, d, px["http_port"], px["iperf_port"])
    logpath = os.path.join(d, "stderr.log")
    p = ctx.procs.start(px["name"], argv, logpath, env=env, cpus=ctx.args.cpus_proxy)
    px["proc"], px["dir"], px["log"] = p, d, logpath
    wait_port(px["http_port"], p, px["name"], logpath)
    wait_port(px["iperf_port"], p, px["name"], logpath)
    time.sleep(0.3)                                     # let nginx's workers come up
    px["pids"] = tree(p.pid)


# ----------------------------------------------------------------------------------------
# Measurements

UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def parse_wrk(out):
    r = {}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    r["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    r["rps"] = float(m.group(1)) if m else 0.0
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        r[f"p{pct}_ms"] = float(m.group(1)) * UNIT_MS[m.group(2)] if m else None
    m = re.search(r"^\s+Latency\s+([\d.]+)(us|ms|s|m)\s+([\d.]+)(us|ms|s|m)\s+([\d.]+)(us|ms|s|m)", out, re.M)
    r["max_ms"] = float(m.group(5)) * UNIT_MS[m.group(6)] if m else None
    errs = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errs += sum(int(x) for x in m.groups())
    r["socket_errors"] = m.group(0) if m else ""
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non2xx"] = int(m.group(1)) if m else 0
    r["errors"] = errs + r["non2xx"]
    return r


class Sampler:
    """Proxy CPU (total and per thread), machine CPU and our own CPU around one run."""

    def __init__(self, ctx, px):
        self.ctx, self.px = ctx, px

    def __enter__(self):
        self.t0 = time.time()
        self.cpu0 = cpu_ticks(self.px["pids"])
        self.units0 = unit_ticks(self.px["pids"])
        self.foreign0 = foreign_ticks()
        return self

    def __exit__(self, *exc):
        self.elapsed = time.time() - self.t0
        self.cpu = cpu_ticks(self.px["pids"]) - self.cpu0
        units = unit_ticks(self.px["pids"])
        self.units = sorted((units[k] - self.units0.get(k, 0) for k in units), reverse=True)
        self.others = max(0, foreign_ticks() - self.foreign0) / CLK_TCK / self.elapsed
        return False

    def record(self, r):
        r["proxy_cpu_s"] = self.cpu / CLK_TCK
        r["proxy_cpus"] = self.cpu / CLK_TCK / self.elapsed
        busy = [u for u in self.units if u > 0]
        r["worker_cpu_share"] = [round(u / self.cpu, 3) for u in busy] if self.cpu else []
        r["others_cpus"] = round(self.others, 2)


def run_client(argv, timeout, cpus):
    if cpus:
        argv = ["taskset", "-c", cpus] + argv
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
        return out, p.returncode, False
    except subprocess.TimeoutExpired:
        p.kill()                                        # by its pid
        out, _ = p.communicate()
        return out, None, True
    except BaseException:                               # interrupted: do not leave it running
        p.kill()
        p.wait()
        raise


def run_wrk(ctx, px, close):
    a = ctx.args
    argv = ["wrk", f"-t{a.wrk_threads}", f"-c{a.wrk_conns}", f"-d{a.duration}s", "--latency"]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append(f"http://127.0.0.1:{px['http_port']}/")
    with Sampler(ctx, px) as s:
        out, rc, timed_out = run_client(argv, a.duration + 30, a.cpus_client)
    r = parse_wrk(out)
    s.record(r)
    r["cpu_us"] = (s.cpu / CLK_TCK) / r["requests"] * 1e6 if r["requests"] else None
    r["rc"], r["timed_out"] = rc, timed_out
    if rc != 0 or timed_out or r["requests"] == 0:
        r["raw"] = out[-1500:]
    return r


def run_iperf(ctx, px):
    a = ctx.args
    argv = ["iperf3", "-c", "127.0.0.1", "-p", str(px["iperf_port"]), "-t", str(a.iperf_time), "-J"]
    with Sampler(ctx, px) as s:
        out, rc, timed_out = run_client(argv, a.iperf_time + 30, a.cpus_client)
    r = {"rc": rc, "timed_out": timed_out}
    s.record(r)
    try:
        j = json.loads(out)
        r["gbps"] = j["end"]["sum_received"]["bits_per_second"] / 1e9
        r["bytes"] = j["end"]["sum_received"]["bytes"]
        r["cpu_s_per_gb"] = s.cpu / CLK_TCK / (r["bytes"] / 1e9) if r["bytes"] else None
        if "error" in j:
            r["error"] = j["error"]
    except (ValueError, KeyError, TypeError):
        r["gbps"] = None
        r["error"] = "no iperf3 result" + (" (timed out)" if timed_out else "")
        r["raw"] = out[-1500:]
    return r


def quiet(ctx, run):
    """run() once; while other work on the machine disturbed it, and the retry budget lasts,
    run it again (at most twice more) and keep the attempt with the least foreign CPU.  The
    choice looks only at the machine's load, never at the result."""
    best, tries = run(), 1
    while best["others_cpus"] > ctx.args.max_others and tries < 3 and ctx.retry_left > 0:
        t0 = time.time()
        r = run()
        ctx.retry_left -= time.time() - t0
        ctx.retries += 1
        tries += 1
        if r["others_cpus"] < best["others_cpus"]:
            best = r
    best["tries"] = tries
    return best


def worker_conn_spread(ctx, px):
    """Client connections per worker while the idle connections are held, if obtainable."""
    try:
        if px["kind"] == "nginx":
            out = subprocess.run(["ss", "-Htnp", "state", "established",
                                  f"( sport = :{px['http_port']} )"],
                                 capture_output=True, text=True).stdout
            counts = {}
            for pid in re.findall(r"pid=(\d+)", out):
                counts[pid] = counts.get(pid, 0) + 1
            return sorted(counts.values(), reverse=True)
        if px["kind"] == "haproxy":
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(10)
            s.connect(os.path.join(px["dir"], "haproxy.sock"))
            s.sendall(b"show fd\n")
            buf = b""
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                buf += chunk
            s.close()
            counts = {}
            for line in buf.decode(errors="replace").splitlines():
                if " fe=web" in line and "mux=" in line:
                    m = re.search(r"tmask=(0x[0-9a-f]+)", line)
                    if m:
                        counts[m.group(1)] = counts.get(m.group(1), 0) + 1
            return sorted(counts.values(), reverse=True)
        if px["kind"] == "layer4-lb":
            # Its drain log names each worker's open connections: stop it (its last test)
            # while the idle connections are still open.
            px["proc"].send_signal(signal.SIGTERM)
            px["stopped_early"] = True
            time.sleep(0.5)
            text = open(px["log"], errors="replace").read()
            counts = [int(n) for n in re.findall(r"worker \d+: draining (\d+) connections", text)]
            return sorted(counts, reverse=True)
    except OSError:
        pass
    return None


def run_idle(ctx, px):
    a = ctx.args
    n = a.idle_conns
    bports = ctx.backend_ports
    r = {"conns": n}
    base_backend = established(dports=bports)
    rss0 = rss_kib(tree(px["proc"].pid))
    socks, t0, err = [], time.time(), None
    try:
        for _ in range(n):
            s = socket.socket()
            s.settimeout(10)
            s.connect(("127.0.0.1", px["http_port"]))
            socks.append(s)
    except OSError as e:
        err = f"connect #{len(socks) + 1} failed: {e}"
    r["client_connected"] = len(socks)
    # Wait until the proxy has opened a backend connection for each of them.
    deadline = time.time() + 30
    while True:
        got = established(dports=bports) - base_backend
        if got >= len(socks) or time.time() > deadline:
            break
        time.sleep(0.2)
    r["backend_connections"] = got
    r["connect_s"] = round(time.time() - t0, 2)
    time.sleep(1.0)
    rss1 = rss_kib(tree(px["proc"].pid))
    r["rss_before_kib"], r["rss_after_kib"] = rss0, rss1
    r["kib_per_conn"] = (rss1 - rss0) / len(socks) if socks else None
    # Were any of them closed by the proxy meanwhile?
    closed = 0
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    r["closed_by_proxy"] = closed
    if err:
        r["error"] = err
    if a.acceptors > 1:
        r["worker_conns"] = worker_conn_spread(ctx, px)
    for s in socks:
        s.close()
    deadline = time.time() + 20
    while established(dports=bports) > base_backend and time.time() < deadline:
        time.sleep(0.2)
    return r


# ----------------------------------------------------------------------------------------


class Ctx:
    def problems(self):
        out = []
        for p in self.proxies:
            res = self.results[p["key"]]
            for i, r in enumerate(res["rounds"]):
                for test in ("keepalive", "close"):
                    x = r[test]
                    if x["errors"] or x["requests"] == 0 or x["rc"] != 0 or x["timed_out"]:
                        out.append(f"{p['name']} round {i + 1} {test}: {x['requests']} requests, "
                                   f"{x['socket_errors'] or 'no socket errors'}, "
                                   f"{x['non2xx']} non-2xx, wrk exit {x['rc']}"
                                   + (" (timed out)" if x["timed_out"] else ""))
                b = r["bulk"]
                if b.get("gbps") is None or b.get("error"):
                    out.append(f"{p['name']} round {i + 1} bulk: {b.get('error')}")
            idle = res.get("idle", {})
            if idle:
                if idle.get("error") or idle.get("closed_by_proxy") or \
                        idle.get("backend_connections", 0) < idle.get("client_connected", 0):
                    out.append(f"{p['name']} idle: {idle.get('client_connected')} client / "
                               f"{idle.get('backend_connections')} backend connections, "
                               f"{idle.get('closed_by_proxy')} closed by the proxy"
                               + (f"; {idle['error']}" if idle.get("error") else ""))
            if p.get("exit_note"):
                out.append(f"{p['name']}: {p['exit_note']}")
        if self.udp:
            out += udp.problems(self)
        return out


def run_tcp(ctx):
    """The TCP part: HTTP backends, every proxy, the rounds and the idle test."""
    a = ctx.args
    start_backends(ctx)
    for i, px in enumerate(ctx.proxies):
        start_proxy(ctx, px, i)
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{px['http_port']}/",
                                          timeout=5).read()
        except OSError as e:
            tail = open(px["log"], errors="replace").read()[-2000:]
            sys.exit(f"bench: a request through {px['name']} failed: {e}; its log:\n{tail}")
        if body != b"hello\n":
            sys.exit(f"bench: {px['name']} answered {body!r}, not the backend's hello")
        log(f"bench: {px['name']} {px['version']} on 127.0.0.1:{px['http_port']} "
            f"(iperf3 on :{px['iperf_port']}), pids {px['pids']}")
    # Warm-up, not recorded: each proxy gets the same shape of load as a round (keep-alive,
    # new connections, bulk) so that caches, allocator pools and, for layer4-lb, the
    # buffer hot set are in their steady state before round 1 rather than during it.
    url = "http://127.0.0.1:{}/"
    for px in ctx.proxies:
        for extra in ([], ["-H", "Connection: close"]):
            run_client(["wrk", "-t1", f"-c{a.wrk_conns}", "-d2s"] + extra +
                       [url.format(px["http_port"])], 20, a.cpus_client)
        run_client(["iperf3", "-c", "127.0.0.1", "-p", str(px["iperf_port"]), "-t", "1"], 20,
                   a.cpus_client)
    n = len(ctx.proxies)
    for rnd in range(a.rounds):
        order = ctx.proxies[rnd % n:] + ctx.proxies[:rnd % n]
        for px in order:
            ka = quiet(ctx, lambda: run_wrk(ctx, px, close=False))
            cl = quiet(ctx, lambda: run_wrk(ctx, px, close=True))
            bk = quiet(ctx, lambda: run_iperf(ctx, px))
            ctx.results[px["key"]]["rounds"].append({"keepalive": ka, "close": cl, "bulk": bk})
            log(f"round {rnd + 1}/{a.rounds} {px['name']:<22} keep-alive {ka['rps'] / 1e3:6.1f}k req/s "
                f"{fmt(ka['cpu_us'], '2')} us/req p99 {fmt(ka['p99_ms'], '2')} ms | close "
                f"{cl['rps'] / 1e3:5.1f}k conn/s {fmt(cl['cpu_us'], '1')} us/conn | "
                f"{fmt(bk.get('gbps'), '2')} Gbit/s | others {ka['others_cpus']:.2f}/"
                f"{cl['others_cpus']:.2f}/{bk['others_cpus']:.2f} CPUs"
                + (f" | tries {ka['tries']}/{cl['tries']}/{bk['tries']}"
                   if ka["tries"] + cl["tries"] + bk["tries"] > 3 else "")
                + (f" | errors {ka['errors']}+{cl['errors']}" if ka["errors"] or cl["errors"] else "")
                + (f" | iperf3: {bk['error']}" if bk.get("error") else ""))
    for px in ctx.proxies:
        r = run_idle(ctx, px)
        ctx.results[px["key"]]["idle"] = r
        log(f"idle {px['name']:<22} {r['client_connected']} client / {r['backend_connections']} "
            f"backend connections, RSS {r['rss_before_kib']} -> {r['rss_after_kib']} KiB = "
            f"{fmt(r['kib_per_conn'], '2')} KiB/conn"
            + (f", {r['closed_by_proxy']} closed by the proxy" if r["closed_by_proxy"] else "")
            + (f", workers {r['worker_conns']}" if r.get("worker_conns") else "")
            + (f", {r['error']}" if r.get("error") else ""))
    for px in ctx.proxies:
        if px.get("stopped_early"):                 # layer4-lb, for its drain log
            try:
                rc = px["proc"].wait(10)
                if rc != 0:
                    px["exit_note"] = f"exited with status {rc} after SIGTERM"
            except subprocess.TimeoutExpired:
                px["exit_note"] = "still running 10 s after SIGTERM with no connections open"
        elif px["proc"].poll() is not None:
            px["exit_note"] = f"exited during the run with status {px['proc'].returncode}"
    # Done with them: the UDP part starts its own, on a machine left to it.
    for name, p in reversed(ctx.procs.procs):
        ctx.procs.stop(p)


def machine_desc():
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}"


def main():
    ap = argparse.ArgumentParser(prog="bench/run.sh", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="rounds alternating the proxies (5)")
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run (5)")
    ap.add_argument("--iperf-time", type=int, default=5, help="seconds per iperf3 run (5)")
    ap.add_argument("--idle-conns", type=int, default=5000, help="idle connections (5000)")
    ap.add_argument("--acceptors", type=int, default=1,
                    help="workers per proxy: layer4-lb NUM_ACCEPTORS, HAProxy nbthread, nginx "
                         "worker_processes (1)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 2 rounds of 2 s, 1000 idle connections")
    ap.add_argument("--wrk-threads", type=int, default=1, help="wrk -t (1)")
    ap.add_argument("--wrk-conns", type=int, default=50, help="wrk -c (50)")
    ap.add_argument("--backend-workers", type=int, default=1, help="nginx workers per backend (1)")
    ap.add_argument("--cpus-proxy", help="taskset -c list for the proxies (default: not pinned)")
    ap.add_argument("--cpus-backends", help="taskset -c list for the backends and iperf3 server")
    ap.add_argument("--cpus-client", help="taskset -c list for wrk and the iperf3 client")
    ap.add_argument("--proxies", help="comma-separated keys to run (default all: " +
                    ",".join(p["key"] for p in PROXIES) + ")")
    ap.add_argument("--port-base", type=int, default=18000, help="ports used: base+1.. (18000)")
    ap.add_argument("--l4lb-binary", default=os.path.join(ROOT, "build", "layer4-lb"))
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="results folder")
    ap.add_argument("--max-others", type=float, default=0.25,
                    help="repeat a run (at most twice) when other processes used more than this "
                         "many CPUs during it, keeping the quietest attempt (0.25)")
    ap.add_argument("--retry-budget", type=int, default=150,
                    help="seconds the repeats may add to the whole run in total (150)")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temporary folder (logs)")
    udp.add_args(ap)
    argv = sys.argv[1:]
    a = ap.parse_args(argv)
    if a.quick:
        a.rounds, a.duration, a.iperf_time = min(a.rounds, 2), 2, 2
        a.idle_conns = min(a.idle_conns, 1000)
        a.retry_budget = min(a.retry_budget, 20)
        a.udp_rounds, a.udp_duration = min(a.udp_rounds, 2), 2
        a.udp_steps, a.udp_step_time = min(a.udp_steps, 5), 1
        a.udp_strace = min(a.udp_strace, 2)
    if a.rounds < 1 or a.acceptors < 1 or a.idle_conns < 1:
        sys.exit("bench: --rounds, --acceptors and --idle-conns must be at least 1")

    ctx = Ctx()
    ctx.args, ctx.argv = a, argv
    ctx.started = datetime.datetime.now(datetime.timezone.utc)
    ctx.procs = Procs()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ctx.nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if udp.want(a, "tcp") and 2 * a.idle_conns + 1000 > ctx.nofile:
        sys.exit(f"bench: the file descriptor limit ({ctx.nofile}) is too low for "
                 f"{a.idle_conns} idle connections (a proxy needs two per connection); "
                 f"use --idle-conns {max(1, (ctx.nofile - 1000) // 2)} or raise the hard limit")
    keys = a.proxies.split(",") if a.proxies else [p["key"] for p in PROXIES]
    unknown = [k for k in keys if k not in {p["key"] for p in PROXIES}]
    if unknown:
        sys.exit(f"bench: unknown proxy {unknown}; known: {[p['key'] for p in PROXIES]}")
    ctx.proxies = [dict(p) for p in PROXIES if p["key"] in keys]
    if any(p["kind"] == "nginx" for p in ctx.proxies) and not os.path.exists(NGINX_STREAM_MODULE):
        sys.exit(f"bench: {NGINX_STREAM_MODULE} missing (Debian package libnginx-mod-stream)")
    ctx.backend_ports = [a.port_base + 1, a.port_base + 2]
    ctx.iperf_port = a.port_base + 3
    ports = ctx.backend_ports + [ctx.iperf_port] + \
        [a.port_base + 100 + 10 * i + j for i in range(len(ctx.proxies)) for j in (0, 1)]
    busy = [p for p in ports if not port_free(p)] if udp.want(a, "tcp") else []
    if busy:
        sys.exit(f"bench: ports in use on 127.0.0.1: {busy}; pick others with --port-base")
    ctx.tmp = tempfile.mkdtemp(prefix="l4lb-bench.")
    os.chmod(ctx.tmp, 0o755)                            # nginx workers run as nobody
    os.makedirs(a.out, exist_ok=True)
    # A part run alone (--only) writes latest-tcp.* or latest-udp.*: latest.* stays a full run's.
    ctx.stem = f"latest-{a.only}" if a.only else "latest"
    ctx.png = os.path.join(a.out, ctx.stem + ".png")
    if os.path.exists(ctx.png):
        os.remove(ctx.png)                              # never show last run's chart
    ctx.machine = machine_desc()
    ctx.tool_versions = {
        "wrk": (re.search(r"wrk (\S+)", subprocess.run(["wrk", "-v"], capture_output=True,
                                                            text=True).stdout) or [None, "?"])[1],
        "iperf3": subprocess.run(["iperf3", "--version"], capture_output=True,
                                 text=True).stdout.split()[1],
    }
    if udp.want(a, "udp"):
        ctx.tool_versions.update(udp.tool_versions())
    for px in ctx.proxies:
        px["version"] = version_of(px["kind"], px.get("binary", a.l4lb_binary))
    ctx.udp = None
    ctx.results = {p["key"]: {"rounds": []} for p in ctx.proxies}
    ctx.retry_left, ctx.retries = a.retry_budget, 0

    def on_signal(signum, frame):
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)          # one stop is enough; let it finish
        raise SystemExit(f"bench: {signal.Signals(signum).name}, stopping")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    t_start = time.time()
    try:
        log(f"bench: {ctx.machine}; temp folder {ctx.tmp}")
        if udp.want(a, "tcp"):
            run_tcp(ctx)
        if udp.want(a, "udp"):
            udp.run(ctx, sys.modules[__name__])
        ctx.elapsed = time.time() - t_start
        summary = summarize(ctx)
        if udp.want(a, "tcp"):
            chart(ctx, summary)
        md = markdown(ctx, summary)
        with open(os.path.join(a.out, ctx.stem + ".md"), "w") as f:
            f.write(md + "\n")
        with open(os.path.join(a.out, ctx.stem + ".json"), "w") as f:
            json.dump({"started": ctx.started.isoformat(), "machine": ctx.machine,
                       "args": vars(a), "summary": summary,
                       "proxies": [{k: v for k, v in p.items() if k not in ("proc", "pids")}
                                   for p in ctx.proxies],
                       "results": ctx.results, "udp": ctx.udp}, f, indent=1)
        log("")
        log(text_table(ctx, summary))
        for x in ctx.problems():
            log(f"problem: {x}")
        log(f"\nbench: {ctx.elapsed / 60:.1f} min; wrote {a.out}/{ctx.stem}.md, {ctx.stem}.json"
            + (f", {ctx.stem}.png" if os.path.exists(ctx.png) else ""))
    finally:
        ctx.procs.stop_all()
        if a.keep_tmp:
            log(f"bench: logs and configs kept in {ctx.tmp}")
        else:
            shutil.rmtree(ctx.tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
