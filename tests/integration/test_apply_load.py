"""Applies at 100 per second, each swapping 1,000 backends, under a steady wrk load.

One nginx serves 1,500 loopback ports (set A = the first 1,000, set B = the last 1,000, so
every backend is real and alive).  wrk keeps 20 keep-alive connections busy through the proxy
while one persistent control connection swaps the listener between A and B: 2,000 applies
(20 s at 100 a second), paced at 100 a second, each waiting for its reply.  wrk is stopped with
SIGINT once the last apply is answered, so its load covers every apply however long they take.
drain_timeout_ms is 60 s, so no keep-alive connection may be cut: wrk must see no socket error
and no non-2xx answer.  Alongside, a client opens a new connection per request, so new
connections are balanced across the swaps too.

The rate reached is printed, not asserted: a pass/fail test holds no timing (the machines are
shared); the benchmark is where speed is measured.
"""

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

import lbtest
from lbtest import LBTestCase, CtlClient, connect, free_port, http_get, listener, wait_for

LOCAL = "127.0.0.1"
N_PORTS = 1500
SET_SIZE = 1000
RATE = 100            # applies per second
APPLIES = 2000        # 20 s at RATE
WRK_HANG = 300        # wrk's own -d: only a hang guard, it is stopped with SIGINT


def find_ports(n, low=10000, high=32000):
    """n ports that are free now, as contiguous as the machine allows (below the ephemeral
    range so that outgoing connections do not take them meanwhile), from a random start so
    that two runs at once are unlikely to collide."""
    ports = []
    start = random.randrange(low, high - 2 * n)
    p = start
    while len(ports) < n and p < high:
        s = socket.socket()
        try:
            s.bind((LOCAL, p))
            ports.append(p)
        except OSError:
            pass
        finally:
            s.close()
        p += 1
    if len(ports) < n:
        raise unittest.SkipTest(f"only {len(ports)} free ports in {start}..{high}")
    return ports


def nginx_conf(d, ports):
    listens = "\n".join(f"        listen {LOCAL}:{p};" for p in ports)
    return f"""
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 16384;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections 8192;
}}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    server {{
{listens}
        location / {{
            default_type text/plain;
            return 200 "ok\\n";
        }}
    }}
}}
"""


def parse_wrk(out):
    """The numbers of wrk's report that matter here."""
    r = {"requests": None, "socket_errors": None, "non2xx": None}
    m = re.search(r"^\s*(\d+) requests in ", out, re.M)
    if m:
        r["requests"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        r["socket_errors"] = tuple(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        r["non2xx"] = int(m.group(1))
    return r


class ApplyUnderLoadTest(LBTestCase):
    def setUp(self):
        super().setUp()
        missing = [t for t in ("wrk", "nginx") if not shutil.which(t)]
        if missing:
            # scripts/test.sh installs both, and says so with LBTEST_REQUIRE_TOOLS: there a
            # missing tool is a failure, never a silent skip.
            if os.environ.get("LBTEST_REQUIRE_TOOLS"):
                self.fail(f"{' and '.join(missing)} not installed")
            self.skipTest(f"needs {' and '.join(missing)}")

    def start_nginx(self, ports):
        d = self.tmpdir()
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(nginx_conf(d, ports))
        err = open(os.path.join(d, "stderr.log"), "wb")
        self.addCleanup(err.close)
        p = subprocess.Popen(["nginx", "-p", d, "-c", conf, "-e", os.path.join(d, "error.log")],
                             stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                             preexec_fn=lbtest._die_with_parent if lbtest._prctl else None)
        lbtest._live.add(p)

        def stop():
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
                try:
                    p.wait(lbtest.HANG)
                except subprocess.TimeoutExpired:
                    os.kill(p.pid, signal.SIGKILL)
                    p.wait(lbtest.HANG)
            lbtest._live.discard(p)
        self.addCleanup(stop)

        def up(port):
            if p.poll() is not None:
                with open(os.path.join(d, "error.log"), errors="replace") as f:
                    raise AssertionError(f"nginx exited with {p.returncode}:\n{f.read()[-2000:]}")
            try:
                connect((LOCAL, port), timeout=1).close()
                return True
            except OSError:
                return False
        for port in (ports[0], ports[len(ports) // 2], ports[-1]):
            wait_for(lambda: up(port), what=f"nginx on port {port}", interval=0.05)
        return p

    def test_applies_under_wrk_load(self):
        soft = lbtest.raise_nofile()
        if soft < 4 * N_PORTS:
            self.skipTest(f"file descriptor limit {soft} is too low for {N_PORTS} ports")
        for attempt in range(3):   # another process may take one of the ports meanwhile
            ports = find_ports(N_PORTS)
            try:
                self.start_nginx(ports)
                break
            except AssertionError:
                if attempt == 2:
                    raise
        set_a = [f"{LOCAL}:{p}" for p in ports[:SET_SIZE]]
        set_b = [f"{LOCAL}:{p}" for p in ports[-SET_SIZE:]]
        self.assertEqual(len(set(set_a) & set(set_b)), 2 * SET_SIZE - N_PORTS)

        fport, lport = free_port(), free_port()
        laddr = (LOCAL, lport)
        sock = os.path.join(self.tmpdir(), "ctl.sock")
        lb = self.start_lb([listener(fport, [set_a[0]], name="file")], num_acceptors=2,
                           control_socket=sock, drain_timeout_ms=60000, log_level="info")

        def apply_line(version, backends):
            ls = [listener(lport, backends, name="load", health_check={})]
            return (json.dumps({"op": "apply", "version": version, "listeners": ls},
                               separators=(",", ":")) + "\n").encode()

        cc = CtlClient(sock, timeout=lbtest.HANG)
        self.addCleanup(cc.close)
        cc.send_raw(apply_line(1, set_a))
        r = cc.reply()
        self.assertIs(r.get("ok"), True, r)
        code, _, body = http_get(laddr, "/")
        self.assertEqual((code, body), (200, b"ok\n"))

        wrk = subprocess.Popen(["wrk", "-t1", "-c20", f"-d{WRK_HANG}s",
                                f"http://{LOCAL}:{lport}/"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT,
                               preexec_fn=lbtest._die_with_parent if lbtest._prctl else None)
        lbtest._live.add(wrk)
        self.addCleanup(lambda: (wrk.poll() is None and wrk.kill(), lbtest._live.discard(wrk)))

        # New connections during the swaps: each one is balanced by the set in force.
        stop = threading.Event()
        fresh = {"ok": 0, "bad": []}

        def fresh_client():
            while not stop.is_set():
                try:
                    code, _, body = http_get(laddr, "/", timeout=5)
                    if (code, body) == (200, b"ok\n"):
                        fresh["ok"] += 1
                    else:
                        fresh["bad"].append((code, body[:100]))
                except (OSError, AssertionError) as e:
                    fresh["bad"].append(repr(e))
                stop.wait(0.02)
        ft = threading.Thread(target=fresh_client, daemon=True)

        time.sleep(1.0)   # wrk is connected and running
        ft.start()
        versions = range(2, 2 + APPLIES)
        pre = {v: apply_line(v, set_b if v % 2 == 0 else set_a) for v in versions}
        n_ok, failed = 0, []
        version = 1
        t0 = time.monotonic()
        for i, v in enumerate(versions):
            delay = t0 + i / RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            cc.send_raw(pre[v])
            r = cc.reply()
            if r.get("ok") is True and r.get("version") == v:
                n_ok += 1
                version = v
            else:
                failed.append(r)
        elapsed = time.monotonic() - t0
        stop.set()
        ft.join(lbtest.HANG)
        self.assertIsNone(wrk.poll(), "wrk ended before the last apply")
        os.kill(wrk.pid, signal.SIGINT)   # wrk prints its report on SIGINT
        sys.stderr.write(f"\n  applies: {n_ok} ok, {len(failed)} failed in {elapsed:.1f} s "
                         f"= {APPLIES / elapsed:.1f}/s (paced at {RATE}/s); new-connection "
                         f"requests: {fresh['ok']} ok, {len(fresh['bad'])} bad\n")
        try:
            out, _ = wrk.communicate(timeout=lbtest.HANG)
        except subprocess.TimeoutExpired:
            wrk.kill()
            out, _ = wrk.communicate()
            self.fail(f"wrk did not stop on SIGINT (hang guard):\n{out.decode(errors='replace')}")
        out = out.decode(errors="replace")
        sys.stderr.write("  wrk: " + "\n  wrk: ".join(out.strip().splitlines()) + "\n")
        w = parse_wrk(out)

        self.assertEqual(failed[:5], [], f"{len(failed)} applies refused")
        self.assertEqual(n_ok, APPLIES)
        self.assertEqual(wrk.returncode, 0, out)
        self.assertIsNotNone(w["requests"], out)
        self.assertGreater(w["requests"], 0, out)
        self.assertIn(w["socket_errors"], (None, (0, 0, 0, 0)), out)
        self.assertIsNone(w["non2xx"], out)
        self.assertEqual(fresh["bad"][:5], [])
        self.assertGreater(fresh["ok"], 0)

        self.assertTrue(lb.alive(), lb.tail())
        st = lbtest.ctl_call(sock, {"op": "status"})
        self.assertEqual(st["applied_version"], version)
        self.assertEqual(st["applies_ok"], n_ok + 1)
        self.assertEqual(st["applies_failed"], 0)
        load = lbtest.status_listener(st, "load")
        want = set_b if version % 2 == 0 else set_a
        self.assertEqual([b["address"] for b in load["backends"]], want)
        # wrk's connections all went through the proxy and are closed now.
        self.assertGreaterEqual(load["accepted"], 20)
        code, _, body = http_get(laddr, "/")
        self.assertEqual((code, body), (200, b"ok\n"))


if __name__ == "__main__":
    lbtest.main()
