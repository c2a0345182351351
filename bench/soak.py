#!/usr/bin/env python3
"""soak.py - a bounded soak of the dataplane: does anything grow and stay grown?

For each engine: one layer4-lb (every feature on: metrics, control socket, health checks) in
front of two nginx backends and an iperf3 server, all on 127.0.0.1. For --minutes it runs at
once:
  - keep-alive load (wrk, 50 connections),
  - connection churn (wrk with "Connection: close", 20 connections),
  - bulk transfers (iperf3, 10 s bursts),
  - an apply every second over the control socket (a managed listener added, its backends and
    weights changed, removed again).
Every 5 s it samples the process's resident memory, open descriptors and open proxied
connections (and scrapes /metrics), and prints them at the start, at their peak, at the end of
the load (while it still runs) and 15 s after it stopped. It exits 1 unless descriptors and
connections are back to their start level, resident memory within RSS_SLACK_KIB of it (idle
receive buffers are given back within 10 s: dataplane/bufstack.h), and nothing failed: no
failed apply or bind, no wrk socket error or non-2xx answer, no failed iperf3 run.

    bench/soak.py [--minutes 3] [--engines io_uring,epoll] [--binary build/layer4-lb]

Talks to 127.0.0.1 only; every process it starts is stopped by pid.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"soak: {what} is not listening on 127.0.0.1:{port}")


def ctl(sock, req):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    try:
        s.connect(sock)
        s.sendall(json.dumps(req).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            d = s.recv(1 << 20)
            if not d:
                break
            buf += d
        return json.loads(buf)
    finally:
        s.close()


def scrape(port):
    """GET /metrics (the metrics server is soaked too): its status code."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            d = s.recv(1 << 16)
            if not d:
                break
            data += d
    finally:
        s.close()
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.") else 0


def sample(pid, sock, metrics_port):
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    st = ctl(sock, {"op": "status"})
    conns = sum(l.get("active", 0) for l in st.get("listeners", []))
    if scrape(metrics_port) != 200:
        raise RuntimeError("GET /metrics did not answer 200")
    return {"rss_kib": rss, "fds": fds, "connections": conns}


class Soak:
    def __init__(self, args, engine):
        self.args, self.engine = args, engine
        self.tmp = tempfile.mkdtemp(prefix="l4lb-soak-")
        self.procs = []
        self.stop_ev = threading.Event()
        self.applies = self.apply_failures = self.bulk_failures = 0
        self.wrk_out = []
        self.wrk_procs = []

    def start(self, argv, name, env=None):
        log = open(os.path.join(self.tmp, name + ".log"), "wb")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                             env=env, start_new_session=True, cwd=self.tmp)
        log.close()
        self.procs.append(p)
        return p

    def stop_all(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)   # by pid: ours
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def setup(self):
        self.backends = [free_port(), free_port()]
        for i, port in enumerate(self.backends):
            d = os.path.join(self.tmp, f"b{i}")
            os.makedirs(d)
            with open(os.path.join(d, "nginx.conf"), "w") as f:
                f.write(f"""daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{ listen 127.0.0.1:{port} backlog=4096; location / {{ return 200 "hello\\n"; }} }}
}}
""")
            p = self.start(["nginx", "-p", d, "-c", os.path.join(d, "nginx.conf"), "-e",
                            os.path.join(d, "error.log")], f"nginx{i}")
            wait_port(port, p, "nginx")
        self.iperf_port = free_port()
        p = self.start(["iperf3", "-s", "-B", "127.0.0.1", "-p", str(self.iperf_port)], "iperf3")
        wait_port(self.iperf_port, p, "iperf3")
        self.http, self.bulk, self.metrics = free_port(), free_port(), free_port()
        self.sock = os.path.join(self.tmp, "control.sock")
        backends = "\n".join(f"      - address: 127.0.0.1:{p}" for p in self.backends)
        conf = os.path.join(self.tmp, "lb.yaml")
        with open(conf, "w") as f:
            f.write(f"""io_engine: {self.engine}
log_level: warn
drain_timeout_ms: 2000
metrics: 127.0.0.1:{self.metrics}
control_socket: {self.sock}
listeners:
  - name: web
    listen: 127.0.0.1:{self.http}
    health_check: {{}}
    backends:
{backends}
  - name: bulk
    listen: 127.0.0.1:{self.bulk}
    backends:
      - address: 127.0.0.1:{self.iperf_port}
""")
        env = dict(os.environ, NUM_ACCEPTORS=str(self.args.acceptors))
        self.lb = self.start([self.args.binary, "--config", conf], "layer4-lb", env)
        wait_port(self.http, self.lb, "layer4-lb")

    def applier(self):
        n = 0
        while not self.stop_ev.wait(1.0):
            n += 1
            listeners = []
            if n % 3:   # present two turns of three, with changing backends and weights
                listeners.append({"name": "soak/managed/http",
                                  "listen": f"127.0.0.1:{self.managed}",
                                  "backends": [{"address": f"127.0.0.1:{p}",
                                                "weight": 1 + (n + i) % 4}
                                               for i, p in enumerate(self.backends[:1 + n % 2])]})
            try:
                r = ctl(self.sock, {"op": "apply", "version": n, "listeners": listeners})
                self.applies += 1
                self.apply_failures += not r.get("ok") or bool(r.get("bind_failures"))
            except (OSError, ValueError):   # no answer, or not JSON: a failure, not a stop
                self.apply_failures += 1

    def bulk_loop(self):
        while not self.stop_ev.is_set():
            r = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(self.bulk), "-t", "10"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
            self.bulk_failures += r.returncode != 0

    def wrk_start(self, conns, close, seconds):
        """wrk for longer than the soak: the end sample is taken while it still runs, then it
        is stopped with SIGINT (by pid), on which it prints its tally."""
        argv = ["wrk", "-t1", f"-c{conns}", f"-d{seconds + 60}s"]
        if close:
            argv += ["-H", "Connection: close"]
        argv.append(f"http://127.0.0.1:{self.http}/")
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.wrk_procs.append(("churn" if close else "keep-alive", p))

    def wrk_stop(self):
        for kind, p in self.wrk_procs:
            p.send_signal(signal.SIGINT)
            out, _ = p.communicate(timeout=60)
            self.wrk_out.append((kind, out))

    def wrk_failed(self):
        """Socket errors, non-2xx answers or no result at all, in any wrk."""
        return any("requests in" not in out or "Socket errors" in out or "Non-2xx" in out
                   for _, out in self.wrk_out)

    def run(self):
        self.setup()
        self.managed = free_port()
        time.sleep(2)
        start = sample(self.lb.pid, self.sock, self.metrics)
        seconds = int(self.args.minutes * 60)
        deadline = time.time() + seconds
        threads = [threading.Thread(target=self.applier), threading.Thread(target=self.bulk_loop)]
        for t in threads:
            t.start()
        self.wrk_start(50, False, seconds)
        self.wrk_start(20, True, seconds)
        peak = start
        while time.time() < deadline:
            time.sleep(min(5, max(0, deadline - time.time())))
            s = sample(self.lb.pid, self.sock, self.metrics)
            peak = {k: max(peak[k], s[k]) for k in s}
        end = sample(self.lb.pid, self.sock, self.metrics)   # the load still runs
        peak = {k: max(peak[k], end[k]) for k in peak}
        self.stop_ev.set()
        self.wrk_stop()
        for t in threads:
            t.join(120)
        ctl(self.sock, {"op": "apply", "version": 1 << 40, "listeners": []})
        time.sleep(15)
        after = sample(self.lb.pid, self.sock, self.metrics)
        return start, peak, end, after


# What may stay resident after the load, beyond the start: the heap's own growth (connection
# slots, the configuration, allocator caches), not the buffer pool (tens of MiB at the peak).
RSS_SLACK_KIB = 8192

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=3)
    ap.add_argument("--engines", default="io_uring,epoll")
    ap.add_argument("--acceptors", type=int, default=1)
    ap.add_argument("--binary", default=os.path.join(REPO, "build", "layer4-lb"))
    args = ap.parse_args()
    for tool in ("nginx", "wrk", "iperf3"):
        if not shutil.which(tool):
            sys.exit(f"soak: {tool} is not installed (apt-get install nginx wrk iperf3)")
    ok = True
    rows = []
    for engine in args.engines.split(","):
        s = Soak(args, engine)
        try:
            start, peak, end, after = s.run()
        finally:
            s.stop_all()
        back = after["fds"] <= start["fds"] and after["connections"] <= start["connections"] \
            and after["rss_kib"] <= start["rss_kib"] + RSS_SLACK_KIB
        clean = not (s.apply_failures or s.bulk_failures or s.wrk_failed()) and \
            s.applies >= 0.8 * args.minutes * 60
        ok &= back and clean
        rows.append((engine, start, peak, end, after, s.applies, s.apply_failures, back,
                     s.wrk_out, s.bulk_failures))
    print(f"\nsoak: {args.minutes:g} min per engine, {args.acceptors} worker(s)\n")
    print("| engine | | RSS (KiB) | descriptors | open connections |")
    print("|---|---|---:|---:|---:|")
    for engine, start, peak, end, after, applies, failures, back, _, _ in rows:
        for name, v in (("start", start), ("peak", peak), ("end of load", end),
                        ("15 s after", after)):
            print(f"| {engine} | {name} | {v['rss_kib']} | {v['fds']} | {v['connections']} |")
    print()
    for engine, start, peak, end, after, applies, failures, back, wrk, bulk_failures in rows:
        reqs = []
        for kind, out in wrk:
            line = next((l.strip() for l in out.splitlines() if "requests in" in l), "no result")
            errs = next((l.strip() for l in out.splitlines() if "Socket errors" in l or
                         "Non-2xx" in l), "no errors")
            reqs.append(f"{kind}: {line}; {errs}")
        print(f"{engine}: {applies} applies ({failures} failed or with bind failures); "
              f"{bulk_failures} failed iperf3 runs; " + "; ".join(reqs) +
              f"; descriptors, connections and memory back to the start: {'yes' if back else 'NO'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
