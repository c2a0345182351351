#!/usr/bin/env python3
"""bench.py - the controller benchmark that bench/controller/run.sh runs (see docs/benchmarks.md).

layer4-lb-controller and the dataplane of one node (node-a) against a real control plane
(etcd, kube-apiserver, kube-controller-manager from tests/k8s, in a network namespace of our
own, tests/e2e/k8scluster.py), the controller under the chart's RBAC (deploy/rbac.yaml) with a
ServiceAccount token, as tests/e2e/test_controller.py runs it. Three parts:

  scale     1,000 LoadBalancers, one TCP listener each (ports 20000..20999), each fronting its
            own selector-less Service with a hand-written EndpointSlice of 10 ready endpoints
            (10,000 endpoints), created in bulk with kubectl; time until the dataplane serves
            all of them, applies, reconcile time, RSS of both processes.
  latency   with those in place: a pod of a selector-based Service (real Pods, real listening
            backends, the real EndpointSlice controller) flipped Ready / NotReady by a status
            write; time until the dataplane's status shows the backend added / removed.
  rollout   a Deployment-like rolling replacement of 500 ready pods of one Service (batches of
            125 created and deleted at once, maxSurge = maxUnavailable = 25%); applies the
            controller made meanwhile. Repeated with --debounce-ms 500 and 1000 when the
            default (100) needs more than 10 applies.

A benchmark, not a test: it prints figures and writes bench/controller/results/latest.md and
latest.json; it exits non-zero only when something broke (a hang guard ran out, a process
died), never because of a figure. Every process it starts is stopped by its pid; the network
namespace's cleanup (k8scluster) takes whatever is left. Standard library only.
"""

import argparse
import datetime
import http.client
import json
import os
import platform
import queue
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))
import k8scluster  # noqa: E402


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lbs", type=int, default=1000, help="LoadBalancers in the scale part (1000)")
    ap.add_argument("--endpoints", type=int, default=10, help="ready endpoints per Service (10)")
    ap.add_argument("--create-procs", type=int, default=2,
                    help="kubectl processes creating the scale objects in parallel (2)")
    ap.add_argument("--samples", type=int, default=50,
                    help="latency samples per direction with the default debounce (50)")
    ap.add_argument("--variant-samples", type=int, default=10,
                    help="latency samples per direction with each other --debounce-ms (10)")
    ap.add_argument("--pods", type=int, default=500, help="pods in the rolling update (500)")
    ap.add_argument("--batch", type=int, default=125,
                    help="pods created and deleted per rollout step (125: 25%% of 500)")
    ap.add_argument("--debounce-variants", default="500,1000",
                    help="other --debounce-ms values, run when the default makes more than "
                         "10 applies in the rollout (500,1000)")
    ap.add_argument("--always-variants", action="store_true",
                    help="run the --debounce-variants even if the default makes <= 10 applies")
    ap.add_argument("--controller-args", default="",
                    help="extra arguments for layer4-lb-controller, one string "
                         "(e.g. \"--debounce-max-ms 500\")")
    ap.add_argument("--results", default=os.path.join(HERE, "results"),
                    help="folder for latest.md and latest.json")
    ap.add_argument("--rebuild", action="store_true",
                    help="(run.sh) rebuild the Release binaries first, even if present")
    ap.add_argument("--keep", action="store_true",
                    help="keep the cluster's folder (logs, kubeconfigs) after the run")
    return ap.parse_args()


ARGS = parse_args()
k8scluster.reexec_in_netns()      # builds the control plane outside, re-runs us in a netns

import l4lb  # noqa: E402
from l4lb import lbtest  # noqa: E402

NODE, NODE_ADDR = "node-a", "198.18.0.2"
DEFAULT_DEBOUNCE_MS = 100
SCALE_NS, LAT_NS, ROLL_NS = "scale", "lat", "roll"
SCALE_PORT0, LAT_PORT, ROLL_PORT = 20000, 21000, 21001
LAT_STEADY_IP, LAT_FLIP_IP = "198.18.1.10", "198.18.1.11"
TARGET = 8080
HANG = 120.0                      # hang guard of a single wait; never a timing assertion
T_START = time.monotonic()


def log(msg):
    print("[%6.1fs] %s" % (time.monotonic() - T_START, msg), flush=True)


class BenchError(Exception):
    pass


def wait_for(what, pred, timeout=HANG, interval=0.05):
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - reported if it never succeeds
            last = e
        if time.monotonic() > deadline:
            raise BenchError("timed out after %.0f s waiting for %s%s" %
                             (timeout, what, " (last error: %r)" % last if last else ""))
        time.sleep(interval)


def pct(values, p):
    """Nearest-rank percentile (with 50 samples p99 is the largest)."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, -(-p * len(s) // 100) - 1))
    return s[int(k)]


def proc_status(pid):
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1])  # KiB
    except OSError:
        pass
    return out


def proc_cpu_s(pid):
    """utime + stime of the process (all its threads), in seconds."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
        fields = s[s.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class MachineLoad:
    """CPU used on the machine outside this run (other people's work) and stolen by the
    hypervisor, over a phase: busy time from /proc/stat minus the CPU time of the processes in
    our network namespace (utime+stime+cutime+cstime: the kubectl processes we reaped count
    through our own cutime), and the steal column."""
    TCK = os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        busy = v[0] + v[1] + v[2] + v[5] + v[6]   # user nice system irq softirq
        steal = v[7] if len(v) > 7 else 0
        ours = 0
        r = subprocess.run(["ip", "netns", "pids", os.environ.get(k8scluster.NETNS_ENV, "")],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for pid in r.stdout.split():
            try:
                with open("/proc/%s/stat" % pid) as f:
                    st = f.read()
                fl = st[st.rindex(")") + 2:].split()
                ours += int(fl[11]) + int(fl[12]) + int(fl[13]) + int(fl[14])
            except (OSError, ValueError, IndexError):
                pass
        return time.monotonic(), busy, steal, ours

    def __init__(self):
        self.t0 = self._snap()

    def done(self):
        t1 = self._snap()
        wall = t1[0] - self.t0[0]
        d = [(t1[i] - self.t0[i]) / self.TCK for i in (1, 2, 3)]
        return {"wall_s": round(wall, 1), "ours_cpus": round(d[2] / wall, 2),
                "others_cpus": round(max(0.0, d[0] - d[2]) / wall, 2),
                "steal_cpus": round(d[1] / wall, 2)}


def mib(kib):
    return None if kib is None else kib / 1024.0


# ---------------------------------------------------------------------------------------------
# The API server as the admin (client certificate), one persistent connection per thread

class Api:
    def __init__(self, cluster):
        self.c = cluster
        self.ctx = cluster.ssl_context()
        self.local = threading.local()

    def _conn(self):
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = http.client.HTTPSConnection(k8scluster.APISERVER_ADDRESS,
                                               k8scluster.APISERVER_PORT, context=self.ctx,
                                               timeout=60)
            self.local.conn = conn
        return conn

    def call(self, method, path, body=None, ctype="application/json", ok=(200, 201)):
        for attempt in (1, 2):
            conn = self._conn()
            try:
                h = {"Accept": "application/json"}
                if body is not None:
                    if not isinstance(body, (bytes, str)):
                        body = json.dumps(body)
                    h["Content-Type"] = ctype
                conn.request(method, path, body, h)
                r = conn.getresponse()
                data = r.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self.local.conn = None
                if attempt == 2:
                    raise
                continue
            if ok and r.status not in ok:
                raise BenchError("%s %s: HTTP %d: %s" % (method, path, r.status, data[:300]))
            return r.status, data

    def get(self, path):
        return json.loads(self.call("GET", path)[1])


class Bg:
    """fn(*args) on a thread; join() re-raises what it raised."""

    def __init__(self, fn, *args):
        self.exc = None

        def run():
            try:
                fn(*args)
            except BaseException as e:  # noqa: BLE001 - re-raised by join()
                self.exc = e
        self.thr = threading.Thread(target=run, daemon=True)
        self.thr.start()

    def join(self, timeout=600):
        self.thr.join(timeout)
        if self.thr.is_alive():
            raise BenchError("a background step hung")
        if self.exc:
            raise self.exc


# ---------------------------------------------------------------------------------------------
# The dataplane's control socket: one persistent connection, replies read without copies

class Ctl:
    def __init__(self, path):
        self.path = path
        self.sock = None

    def _connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        s.connect(self.path)
        self.sock = s

    def call_raw(self, req):
        for attempt in (1, 2):   # the dataplane closes a connection idle for 60 s: reconnect
            try:
                if self.sock is None:
                    self._connect()
                self.sock.sendall(json.dumps(req, separators=(",", ":")).encode() + b"\n")
                chunks = []
                while True:
                    d = self.sock.recv(1 << 20)
                    if not d:
                        raise ConnectionError("control socket closed")
                    i = d.find(b"\n")
                    if i >= 0:
                        chunks.append(d[:i])
                        return b"".join(chunks)
                    chunks.append(d)
            except OSError:
                if self.sock:
                    self.sock.close()
                self.sock = None
                if attempt == 2:
                    raise

    def status(self):
        return json.loads(self.call_raw({"op": "status"}))

    def listener(self, name):
        """(applied_version, the listener's object or None) without parsing the whole reply."""
        raw = self.call_raw({"op": "status"})
        m = re.search(rb'"applied_version":(\d+|null)', raw)
        version = int(m.group(1)) if m and m.group(1) != b"null" else None
        i = raw.find(b'{"name":"%s"' % name.encode())
        if i < 0:
            return version, None
        obj, _ = json.JSONDecoder().raw_decode(raw.decode("utf-8", "replace"), i)
        return version, obj

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None


def backend_set(listener):
    return set(b["address"] for b in listener["backends"]) if listener else None


# ---------------------------------------------------------------------------------------------
# Our processes: the dataplane and the controller of node-a

class Node:
    def __init__(self, workdir, kubeconfig):
        self.dir = workdir
        self.kubeconfig = kubeconfig
        self.dp = l4lb.Dataplane(workdir, NODE)
        self.dp_proc = None
        self.ct_proc = None
        self.ct_runs = 0
        self.debounce_ms = None
        self.http_port = 19102
        self.ctl = Ctl(self.dp.socket)

    def start_dataplane(self):
        self.dp_proc = l4lb.Proc("dataplane", [l4lb.LB_BIN, "--config", self.dp.config],
                                 os.path.join(self.dir, "dataplane.log"),
                                 env=l4lb.env_for("info")).start()
        wait_for("the dataplane's control socket",
                 lambda: self.ctl.call_raw({"op": "ping"}) is not None)

    def start_controller(self, debounce_ms):
        self.ct_runs += 1
        self.debounce_ms = debounce_ms
        argv = [l4lb.CTRL_BIN, "--kubeconfig", self.kubeconfig, "--node-name", NODE,
                "--socket", self.dp.socket, "--listen-address", NODE_ADDR,
                "--http-address", "127.0.0.1:%d" % self.http_port,
                "--lease-namespace", l4lb.CONTROLLER_NS, "--identity", NODE]
        if debounce_ms != DEFAULT_DEBOUNCE_MS:
            argv += ["--debounce-ms", str(debounce_ms)]
        argv += shlex.split(ARGS.controller_args)
        self.ct_proc = l4lb.Proc("controller", argv,
                                 os.path.join(self.dir, "controller-%d.log" % self.ct_runs),
                                 env=l4lb.env_for("info")).start()
        return time.time()

    def stop_controller(self):
        if self.ct_proc:
            rc = self.ct_proc.stop()
            self.ct_proc = None
            return rc
        return None

    def stop(self):
        self.stop_controller()
        if self.dp_proc:
            self.dp_proc.stop()
            self.dp_proc = None
        self.ctl.close()

    def check_alive(self):
        for p in (self.dp_proc, self.ct_proc):
            if p is not None and not p.alive():
                raise BenchError("%s exited (status %s); log: %s" %
                                 (p.name, p.p.returncode if p.p else "?", p.logpath))

    # -- the controller's /metrics --------------------------------------------------------

    def metrics_raw(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10)
        try:
            conn.request("GET", "/metrics")
            return conn.getresponse().read()
        finally:
            conn.close()

    def metrics(self):
        out = {}
        for line in self.metrics_raw().decode().splitlines():
            m = re.match(r"^([a-zA-Z0-9_:]+)(\{[^}]*\})? (\S+)$", line)
            if m:
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
        return out

    def applies_ok(self):
        m = re.search(rb'layer4lb_controller_applies_total\{result="ok"\} (\d+)', self.metrics_raw())
        return int(m.group(1))

    def ready(self):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=5)
            try:
                conn.request("GET", "/readyz")
                return conn.getresponse().status == 200
            finally:
                conn.close()
        except OSError:
            return False

    def rss(self):
        return {"controller": proc_status(self.ct_proc.p.pid) if self.ct_proc else {},
                "dataplane": proc_status(self.dp_proc.p.pid) if self.dp_proc else {}}

    def cpu(self):
        return {"controller": proc_cpu_s(self.ct_proc.p.pid) if self.ct_proc else None,
                "dataplane": proc_cpu_s(self.dp_proc.p.pid) if self.dp_proc else None}

    def wait_quiet(self, quiet_s, timeout=HANG):
        """Until the controller made no apply and no reconcile for quiet_s seconds."""
        def key():
            m = self.metrics()
            return (m.get('layer4lb_controller_applies_total{result="ok"}'),
                    m.get("layer4lb_controller_reconciles_total"))
        deadline = time.monotonic() + timeout
        last, since = key(), time.monotonic()
        while time.monotonic() - since < quiet_s:
            if time.monotonic() > deadline:
                raise BenchError("the controller did not go quiet for %.1f s" % quiet_s)
            time.sleep(0.1)
            k = key()
            if k != last:
                last, since = k, time.monotonic()
        return last


APPLY_RE = re.compile(r"^(\S+?)Z\s+\w+\s+apply version (\d+): listeners \+(\d+) -(\d+) ~(\d+) "
                      r"=(\d+), backends \+(\d+) -(\d+)")


def log_time(stamp):
    """The dataplane's log timestamp (UTC, milliseconds, without the Z) as epoch seconds."""
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def dataplane_applies(logpath):
    """The dataplane's log: {version: (epoch seconds, changes)} for every successful apply."""
    out = {}
    with open(logpath, errors="replace") as f:
        for line in f:
            m = APPLY_RE.match(line)
            if m:
                ts = log_time(m.group(1))
                la, lr, lc, lu, ba, br = (int(m.group(i)) for i in range(3, 9))
                out[int(m.group(2))] = (ts, dict(listeners_added=la, listeners_removed=lr,
                                                 listeners_changed=lc, listeners_unchanged=lu,
                                                 backends_added=ba, backends_removed=br))
    return out


def wait_applied(node, listener, pred, what, timeout=300):
    """Epoch seconds of the dataplane's first apply after which pred(listener's status object)
    holds: the bench follows the dataplane's log and, after each apply it logs, asks status
    (so status is not polled in a loop: at 1,000 listeners one reply takes the dataplane's main
    thread 15-30 ms, and applies would queue behind it)."""
    logf = open(node.dp_proc.logpath, "rb")
    logf.seek(0, os.SEEK_END)
    try:
        version, lst = node.ctl.listener(listener)
        if pred(lst):
            a = dataplane_applies(node.dp_proc.logpath).get(version)
            return a[0] if a else time.time()
        buf = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            node.check_alive()
            time.sleep(0.01)
            buf += logf.read()
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                m = APPLY_RE.match(line.decode(errors="replace"))
                if m and pred(node.ctl.listener(listener)[1]):
                    return log_time(m.group(1))
        raise BenchError("timed out after %.0f s waiting for %s" % (timeout, what))
    finally:
        logf.close()


class Sampler:
    """VmRSS of both processes once a second; the peaks seen."""

    def __init__(self, node):
        self.node = node
        self.peak = {"controller": 0, "dataplane": 0}
        self.series = []
        self.stop_ev = threading.Event()
        self.thr = threading.Thread(target=self._run, daemon=True)
        self.thr.start()

    def _run(self):
        while not self.stop_ev.wait(1.0):
            r = self.node.rss()
            row = {"t": round(time.monotonic() - T_START, 1)}
            for k in ("controller", "dataplane"):
                v = r[k].get("VmRSS")
                if v:
                    self.peak[k] = max(self.peak[k], v)
                    row[k] = v
            self.series.append(row)

    def stop(self):
        self.stop_ev.set()
        self.thr.join(5)


# ---------------------------------------------------------------------------------------------
# EndpointSlice watch: when the EndpointSlice controller wrote what

class SliceWatch:
    def __init__(self, api, ns, service):
        self.api, self.ns, self.service = api, ns, service
        self.events = []          # (epoch seconds, type, slice object)
        self.lock = threading.Lock()
        self.conn = None
        self.stop_ev = threading.Event()
        self.thr = threading.Thread(target=self._run, daemon=True)
        self.thr.start()

    def _run(self):
        rv = None
        while not self.stop_ev.is_set():
            path = ("/apis/discovery.k8s.io/v1/namespaces/%s/endpointslices?watch=1"
                    "&labelSelector=kubernetes.io%%2Fservice-name%%3D%s&timeoutSeconds=3600"
                    "&allowWatchBookmarks=false" % (self.ns, self.service))
            if rv:
                path += "&resourceVersion=" + rv
            try:
                self.conn = http.client.HTTPSConnection(
                    k8scluster.APISERVER_ADDRESS, k8scluster.APISERVER_PORT,
                    context=self.api.ctx, timeout=3700)
                self.conn.request("GET", path, headers={"Accept": "application/json"})
                r = self.conn.getresponse()
                while not self.stop_ev.is_set():
                    line = r.readline()
                    if not line:
                        break
                    t = time.time()
                    ev = json.loads(line)
                    if ev.get("type") == "ERROR":
                        rv = None
                        break
                    rv = ev["object"]["metadata"].get("resourceVersion", rv)
                    with self.lock:
                        self.events.append((t, ev["type"], ev["object"]))
            except (OSError, http.client.HTTPException, ValueError):
                if self.stop_ev.is_set():
                    return
                time.sleep(0.2)

    def since(self, t0):
        with self.lock:
            return [e for e in self.events if e[0] >= t0]

    def first_with(self, t0, ip, ready):
        """Time of the first event after t0 whose slice shows ip with conditions.ready == ready
        (ready False also matches the endpoint's absence from a slice that had it)."""
        for t, _typ, obj in self.since(t0):
            for ep in obj.get("endpoints") or []:
                if ip in ep.get("addresses", []):
                    if bool(ep.get("conditions", {}).get("ready")) == ready:
                        return t
        return None

    def stop(self):
        self.stop_ev.set()
        try:
            if self.conn and self.conn.sock:
                self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------
# Objects

def svc_obj(ns, name, selector=None):
    spec = {"ports": [{"name": "http", "port": 80, "targetPort": TARGET, "protocol": "TCP"}]}
    if selector:
        spec["selector"] = selector
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": spec}


def lb_obj(ns, name, port, svc):
    return {"apiVersion": "layer4lb.io/v1alpha1", "kind": "LoadBalancer",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"listeners": [{"name": "http", "port": port,
                                    "backend": {"serviceRef": {"name": svc, "port": "http"}}}]}}


def scale_ip(n):
    return "198.18.%d.%d" % (16 + n // 250, n % 250 + 1)


def slice_obj(ns, svc, addrs):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": svc + "-bench", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": svc,
                                    "endpointslice.kubernetes.io/managed-by": "bench.layer4lb.io"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": TARGET, "protocol": "TCP"}],
            "endpoints": [{"addresses": [a], "nodeName": NODE,
                           "conditions": {"ready": True, "serving": True, "terminating": False}}
                          for a in addrs]}


def pod_obj(ns, name, labels):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 30,
                     "containers": [{"name": "app", "image": "layer4-lb.invalid/e2e:none",
                                     "ports": [{"name": "http", "containerPort": TARGET,
                                                "protocol": "TCP"}]}]}}


def pod_status_patch(ip, ready):
    """What a kubelet writes for a running pod (as k8scluster.Cluster.run_pod does)."""
    now = k8scluster.now_rfc3339()
    rs = "True" if ready else "False"
    return {"status": {
        "phase": "Running", "hostIP": NODE_ADDR, "hostIPs": [{"ip": NODE_ADDR}],
        "podIP": ip, "podIPs": [{"ip": ip}], "startTime": now,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": rs, "lastTransitionTime": now},
            {"type": "Ready", "status": rs, "lastTransitionTime": now}],
        "containerStatuses": [{"name": "app", "ready": ready, "started": True,
                               "restartCount": 0, "image": "layer4-lb.invalid/e2e:none",
                               "imageID": "", "state": {"running": {"startedAt": now}}}]}}


def ready_patch(ready):
    """Exactly k8scluster.Cluster.set_pod_ready's patch (strategic merge on type)."""
    now = k8scluster.now_rfc3339()
    rs = "True" if ready else "False"
    return {"status": {
        "conditions": [{"type": "ContainersReady", "status": rs, "lastTransitionTime": now},
                       {"type": "Ready", "status": rs, "lastTransitionTime": now}],
        "containerStatuses": [{"name": "app", "ready": bool(ready)}]}}


def kubectl_argv(c, *args):
    return [os.path.join(c.bin, "kubectl"), "--kubeconfig", c.admin_kubeconfig] + list(args)


def write_list(c, name, items):
    path = os.path.join(c.dir, name)
    with open(path, "w") as f:
        json.dump({"apiVersion": "v1", "kind": "List", "items": items}, f)
    return path


def run_procs(argvs, what):
    procs = [subprocess.Popen(a, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for a in argvs]
    for p in procs:
        try:
            _, err = p.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise BenchError("%s: kubectl hung" % what)
        if p.returncode != 0:
            raise BenchError("%s: kubectl exit %d: %s" % (what, p.returncode, err.strip()[:500]))


# ---------------------------------------------------------------------------------------------
# Part 1: scale

def scale_served(node, n_lbs, n_eps):
    st = node.ctl.status()
    n = 0
    for l in st["listeners"]:
        if l["name"].startswith(SCALE_NS + "/") and l.get("bound") and \
                len(l["backends"]) == n_eps:
            n += 1
    return n, st.get("applied_version")


def lbs_ready(api, ns):
    items = api.get("/apis/layer4lb.io/v1alpha1/namespaces/%s/loadbalancers" % ns)["items"]
    n = 0
    for lb in items:
        for cnd in lb.get("status", {}).get("conditions", []):
            if cnd["type"] == "Ready" and cnd["status"] == "True":
                n += 1
    return n


def part_scale(c, api, node, res):
    n_lbs, n_eps = ARGS.lbs, ARGS.endpoints
    log("scale: writing %d Services, %d EndpointSlices (%d endpoints), %d LoadBalancers" %
        (n_lbs, n_lbs, n_lbs * n_eps, n_lbs))
    c.ensure_namespace(SCALE_NS)
    groups = []
    for i in range(n_lbs):
        svc = "svc-%04d" % i
        groups.append([svc_obj(SCALE_NS, svc),
                       slice_obj(SCALE_NS, svc, [scale_ip(i * n_eps + j) for j in range(n_eps)]),
                       lb_obj(SCALE_NS, "lb-%04d" % i, SCALE_PORT0 + i, svc)])
    k = max(1, ARGS.create_procs)
    files = []
    for p in range(k):
        items = [o for g in groups[p::k] for o in g]
        files.append(write_list(c, "scale-%d.json" % p, items))
    m0 = node.metrics()
    cpu0 = node.cpu()
    applies0 = m0['layer4lb_controller_applies_total{result="ok"}']
    t0 = time.time()
    m0t = time.monotonic()
    done = {}

    def creator():
        run_procs([kubectl_argv(c, "create", "-f", f) for f in files], "scale create")
        done["t"] = time.time()
    thr = threading.Thread(target=creator, daemon=True)
    thr.start()
    served_at = served_version = None
    while served_at is None:
        time.sleep(0.5)
        node.check_alive()
        if "t" not in done and not thr.is_alive():
            raise BenchError("creating the scale objects failed")
        n, served_version = scale_served(node, n_lbs, n_eps)
        if n == n_lbs:
            served_at = time.time()
            # Exactly: when the dataplane applied that version (its log, ms resolution).
            a = dataplane_applies(node.dp_proc.logpath).get(served_version)
            if a:
                served_at = a[0]
        if time.monotonic() - m0t > 600:
            raise BenchError("the dataplane serves %d of %d listeners after 600 s" % (n, n_lbs))
    thr.join(HANG)
    if "t" not in done:
        raise BenchError("creating the scale objects failed")
    create_s = done["t"] - t0
    served_s = served_at - t0
    log("scale: %d objects created in %.1f s (%d kubectl create processes); dataplane served "
        "all %d listeners %.1f s after the first create" % (3 * n_lbs, create_s, k, n_lbs, served_s))
    rss_sync = node.rss()
    cpu_sync = node.cpu()
    m_sync = node.metrics()
    log("scale: controller VmRSS %.1f MiB (VmHWM %.1f), dataplane VmRSS %.1f MiB at sync" %
        (mib(rss_sync["controller"].get("VmRSS")), mib(rss_sync["controller"].get("VmHWM")),
         mib(rss_sync["dataplane"].get("VmRSS"))))
    # The status: the leader writes every LoadBalancer's status (node entry and summary).
    ready_at = None
    while ready_at is None:
        node.check_alive()
        n = lbs_ready(api, SCALE_NS)
        if n == n_lbs:
            ready_at = time.time()
            break
        if time.time() - t0 > 900:
            raise BenchError("only %d of %d LoadBalancers Ready after 900 s" % (n, n_lbs))
        time.sleep(1)
    log("scale: every LoadBalancer's status says Ready=True %.1f s after the first create" %
        (ready_at - t0))
    quiet = node.wait_quiet(3.0, timeout=300)
    time.sleep(5)
    m_steady = node.metrics()
    rss_steady = node.rss()
    cpu_steady = node.cpu()
    st = node.ctl.status()
    res["scale"] = {
        "lbs": n_lbs, "endpoints_per_service": n_eps, "objects": 3 * n_lbs,
        "kubectl_processes": k, "create_s": create_s,
        "objects_per_s": 3 * n_lbs / create_s if create_s else None,
        "first_create_to_all_served_s": served_s,
        "served_version": served_version,
        "first_create_to_all_status_ready_s": ready_at - t0,
        "applies_ok_during_sync": m_sync['layer4lb_controller_applies_total{result="ok"}'] - applies0,
        "applies_ok_until_steady": m_steady['layer4lb_controller_applies_total{result="ok"}'] - applies0,
        "applies_failed": m_steady['layer4lb_controller_applies_total{result="failed"}'],
        "reconciles_until_steady": m_steady["layer4lb_controller_reconciles_total"] -
        m0["layer4lb_controller_reconciles_total"],
        "reconcile_last_s": m_steady["layer4lb_controller_reconcile_last_seconds"],
        "reconcile_mean_s": (m_steady["layer4lb_controller_reconcile_seconds_total"] -
                             m0["layer4lb_controller_reconcile_seconds_total"]) /
        max(1.0, m_steady["layer4lb_controller_reconciles_total"] -
            m0["layer4lb_controller_reconciles_total"]),
        "status_writes": {k2: m_steady['layer4lb_controller_status_writes_total{kind="%s"}' % k2]
                          for k2 in ("node", "summary")},
        "status_write_errors": m_steady["layer4lb_controller_status_write_errors_total"],
        "dataplane_applied_version": st.get("applied_version"),
        "dataplane_applies_ok": st.get("applies_ok"),
        "dataplane_listeners": len(st["listeners"]),
        "rss_at_sync_kib": rss_sync, "rss_steady_kib": rss_steady,
        "cpu_s_to_sync": {k2: cpu_sync[k2] - cpu0[k2] for k2 in cpu0},
        "cpu_s_to_steady": {k2: cpu_steady[k2] - cpu0[k2] for k2 in cpu0},
        "cache_objects": {k2.split('"')[1]: v for k2, v in m_steady.items()
                          if k2.startswith("layer4lb_controller_cache_objects")},
        "quiet": quiet,
    }


def apply_cost(c, node, rounds=8):
    """What one full-state apply costs a dataplane at this scale: the listeners and backends the
    node's dataplane now serves, applied to a second dataplane (own socket, on 127.0.0.1 ports
    so nothing clashes), first whole and then with one backend toggled each time."""
    st = node.ctl.status()
    ls = []
    for i, l in enumerate(l2 for l2 in st["listeners"] if l2.get("managed")):
        ls.append({"name": l["name"], "listen": "127.0.0.1:%d" % (30000 + i),
                   "algorithm": l["algorithm"],
                   "backends": [{"address": b["address"]} for b in l["backends"]]})
    dp = l4lb.Dataplane(c.dir, "apply-cost")
    proc = l4lb.Proc("dataplane-apply-cost", [l4lb.LB_BIN, "--config", dp.config],
                     os.path.join(c.dir, "apply-cost-dataplane.log"),
                     env=l4lb.env_for("info")).start()
    ctl = Ctl(dp.socket)
    try:
        wait_for("the second dataplane's control socket",
                 lambda: ctl.call_raw({"op": "ping"}) is not None)
        times, size = [], 0
        for v in range(1, rounds + 2):
            extra = [{"address": "198.18.250.%d:%d" % (v, TARGET)}] if v % 2 == 0 else []
            body = dict(ls[0], backends=ls[0]["backends"] + extra)
            req = {"op": "apply", "version": v, "listeners": [body] + ls[1:]}
            size = len(json.dumps(req, separators=(",", ":")))
            t = time.monotonic()
            r = json.loads(ctl.call_raw(req))
            times.append((time.monotonic() - t) * 1000)
            if not r.get("ok"):
                raise BenchError("the second dataplane refused an apply: %s" % r.get("error"))
    finally:
        ctl.close()
        proc.stop()
    inc = times[1:]
    return {"listeners": len(ls), "backends": sum(len(x["backends"]) for x in ls),
            "bytes": size, "first_ms": times[0], "incremental_ms": inc,
            "p50_ms": pct(inc, 50), "max_ms": max(inc)}


# ---------------------------------------------------------------------------------------------
# Part 2: latency from a pod turning Ready to the dataplane serving it

class Latency:
    LISTENER = "%s/web/http" % LAT_NS
    FLIP = "%s:%d" % (LAT_FLIP_IP, TARGET)

    def __init__(self, c, api, node):
        self.c, self.api, self.node = c, api, node
        self.backends = []
        self.watch = None

    def setup(self):
        c = self.c
        c.ensure_namespace(LAT_NS)
        for name, ip in (("lat-0", LAT_STEADY_IP), ("lat-1", LAT_FLIP_IP)):
            self.backends.append(lbtest.Backend(name, host=ip, port=TARGET))
        c.apply(svc_obj(LAT_NS, "web", {"app": "lat"}))
        c.run_pod(LAT_NS, "lat-0", {"app": "lat"}, LAT_STEADY_IP, NODE, ready=True)
        c.run_pod(LAT_NS, "lat-1", {"app": "lat"}, LAT_FLIP_IP, NODE, ready=False)
        c.apply(lb_obj(LAT_NS, "web", LAT_PORT, "web"))
        self.watch = SliceWatch(self.api, LAT_NS, "web")
        wait_for("the latency listener with lat-0 only", lambda: backend_set(
            self.node.ctl.listener(self.LISTENER)[1]) == {"%s:%d" % (LAT_STEADY_IP, TARGET)})
        # Real traffic through the listener reaches the ready pod.
        who = lbtest.who((NODE_ADDR, LAT_PORT), timeout=10)
        if who != "lat-0":
            raise BenchError("the latency listener answered %r, not lat-0" % who)

    def sample(self, ready):
        """One flip of lat-1 (Ready when ready, else NotReady) by a status write, as its
        kubelet would make it, and the time until the dataplane applied the change.

        The bench follows the dataplane's log as it is written (every 2 ms): each apply logs
        "apply version N: listeners ..., backends +a -r" with a millisecond timestamp right
        after the new configuration is published to the workers. The first apply after the
        write that adds (removes) a backend is the one, once a status request on the control
        socket confirms that the listener now has (lacks) lat-1's address. Polling status
        itself every few ms is not an option at this scale: one status reply is 1.8 MB and
        takes the dataplane's main thread 15-30 ms to build (the apply would queue behind it);
        polling the controller's /metrics would wake the measured process 300 times a second
        and answer only once its loop has finished the status writes that follow an apply."""
        node = self.node
        path = "/api/v1/namespaces/%s/pods/lat-1/status" % LAT_NS
        body = json.dumps(ready_patch(ready))
        logf = open(node.dp_proc.logpath, "rb")
        logf.seek(0, os.SEEK_END)
        try:
            t0 = time.time()
            self.api.call("PATCH", path, body, "application/strategic-merge-patch+json")
            t_ack = time.time()
            buf, found = b"", None
            deadline = time.monotonic() + 60
            while found is None:
                if time.monotonic() > deadline:
                    raise BenchError("pod lat-1 ready=%s did not reach the dataplane in 60 s" %
                                     ready)
                time.sleep(0.002)
                buf += logf.read()
                while b"\n" in buf and found is None:
                    line, buf = buf.split(b"\n", 1)
                    m = APPLY_RE.match(line.decode(errors="replace"))
                    if not m:
                        continue
                    t_seen = time.time()
                    added, removed = int(m.group(7)), int(m.group(8))
                    if not (added if ready else removed):
                        continue
                    version, lst = node.ctl.listener(self.LISTENER)
                    if lst is not None and (self.FLIP in backend_set(lst)) == ready:
                        found = (log_time(m.group(1)), int(m.group(2)), t_seen, version)
        finally:
            logf.close()
        t_dp, version, t_seen, status_version = found
        # The reconcile that made this apply has finished by the time the controller answers
        # (its loop serves /metrics between iterations): its duration, apply included.
        sync_ms = node.metrics()["layer4lb_controller_reconcile_last_seconds"] * 1000
        t_slice = self.watch.first_with(t0, LAT_FLIP_IP, ready)
        return {"ready": ready, "t0": t0, "api_ack_ms": (t_ack - t0) * 1000,
                "dataplane_ms": (t_dp - t0) * 1000, "seen_ms": (t_seen - t0) * 1000,
                "version": version, "status_version": status_version,
                "controller_sync_ms": sync_ms,
                "slice_ms": (t_slice - t0) * 1000 if t_slice else None}

    def run(self, n, debounce_ms, label):
        samples = []
        for i in range(n):
            for ready in (True, False):
                s = self.sample(ready)
                s["debounce_ms"] = debounce_ms
                samples.append(s)
                # Let the status writes that follow an apply (and the reconcile they cause,
                # one debounce later) pass, so that each sample starts with the controller
                # idle and its debounce window closed; then a random pause.
                self.node.wait_quiet(debounce_ms / 1000.0 + 0.3, timeout=60)
                time.sleep(random.uniform(0.05, 0.3))
            if (i + 1) % 10 == 0:
                log("latency (%s): %d/%d samples each way" % (label, i + 1, n))
        return samples

    def served_check(self):
        got = {lbtest.who((NODE_ADDR, LAT_PORT), timeout=10) for _ in range(4)}
        return sorted(got)

    def close(self):
        if self.watch:
            self.watch.stop()
        for b in self.backends:
            b.close()


def summarize_latency(samples, debounce_ms):
    out = {}
    for key, ready in (("add", True), ("remove", False)):
        ss = [s for s in samples if s["ready"] == ready]
        dp = [s["dataplane_ms"] for s in ss]
        seen = [s["seen_ms"] for s in ss]
        sl = [s["slice_ms"] for s in ss if s["slice_ms"] is not None]
        ctl = [s["dataplane_ms"] - s["slice_ms"] for s in ss if s["slice_ms"] is not None]
        out[key] = {
            "n": len(ss), "debounce_ms": debounce_ms,
            "p50_ms": pct(dp, 50), "p99_ms": pct(dp, 99), "max_ms": max(dp) if dp else None,
            "min_ms": min(dp) if dp else None,
            "p50_beyond_debounce_ms": pct(dp, 50) - debounce_ms if dp else None,
            "p99_beyond_debounce_ms": pct(dp, 99) - debounce_ms if dp else None,
            "seen_p50_ms": pct(seen, 50), "seen_p99_ms": pct(seen, 99),
            "api_ack_p50_ms": pct([s["api_ack_ms"] for s in ss], 50),
            "slice_p50_ms": pct(sl, 50), "slice_p99_ms": pct(sl, 99),
            "slice_to_dataplane_p50_ms": pct(ctl, 50), "slice_to_dataplane_p99_ms": pct(ctl, 99),
            "controller_sync_p50_ms": pct([s["controller_sync_ms"] for s in ss], 50),
        }
    return out


# ---------------------------------------------------------------------------------------------
# Part 3: a rolling update of 500 pods

class Rollout:
    LISTENER = "%s/web/http" % ROLL_NS

    def __init__(self, c, api, node):
        self.c, self.api, self.node = c, api, node
        self.gen = 0
        self.watch = None

    @staticmethod
    def ip(gen, k):
        return "198.18.%d.%d" % (64 + 4 * (gen % 8) + k // 250, k % 250 + 1)

    @staticmethod
    def name(gen, k):
        return "web-g%d-%03d" % (gen, k)

    def addrs(self, gen):
        return set("%s:%d" % (self.ip(gen, k), TARGET) for k in range(ARGS.pods))

    def create(self, gen, ks, fname):
        """kubectl create -f of a List of pods; each pod is made Running and Ready (its status
        written, as its kubelet would) as soon as kubectl reports it created."""
        items = [pod_obj(ROLL_NS, self.name(gen, k), {"app": "roll", "gen": str(gen),
                                                       "batch": str(k // ARGS.batch)})
                 for k in ks]
        path = write_list(self.c, fname, items)
        p = subprocess.Popen(kubectl_argv(self.c, "create", "-f", path), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        q = queue.Queue()
        errors = []
        index = {self.name(gen, k): k for k in ks}

        def patcher():
            while True:
                k = q.get()
                if k is None:
                    return
                try:
                    self.api.call("PATCH", "/api/v1/namespaces/%s/pods/%s/status" %
                                  (ROLL_NS, self.name(gen, k)),
                                  json.dumps(pod_status_patch(self.ip(gen, k), True)),
                                  "application/merge-patch+json")
                except Exception as e:  # noqa: BLE001 - re-raised below
                    errors.append(e)
        ths = [threading.Thread(target=patcher, daemon=True) for _ in range(3)]
        for t in ths:
            t.start()
        for line in p.stdout:
            m = re.match(r"^pod/(\S+) created", line.strip())
            if m and m.group(1) in index:
                q.put(index[m.group(1)])
        err = p.stderr.read()
        rc = p.wait()
        for _ in ths:
            q.put(None)
        for t in ths:
            t.join()
        if rc != 0:
            raise BenchError("kubectl create pods: exit %d: %s" % (rc, err.strip()[:500]))
        if errors:
            raise errors[0]

    def delete(self, gen, batch):
        """Deletes one batch of a generation at once (kubectl delete by label: one list, then
        a DELETE per pod, as a ReplicaSet scaling down does; kubectl delete with many pod
        names is far slower here, about 0.2 s a pod). Forced: there is no kubelet to confirm
        a graceful deletion, so the pods go at once instead of staying Terminating."""
        run_procs([kubectl_argv(self.c, "delete", "pods", "-n", ROLL_NS, "--grace-period=0",
                                "--force", "--wait=false", "-l",
                                "gen=%d,batch=%d" % (gen, batch))], "kubectl delete pods")

    def setup(self):
        c = self.c
        c.ensure_namespace(ROLL_NS)
        c.apply(svc_obj(ROLL_NS, "web", {"app": "roll"}))
        c.apply(lb_obj(ROLL_NS, "web", ROLL_PORT, "web"))
        self.watch = SliceWatch(self.api, ROLL_NS, "web")
        t0 = time.time()
        self.create(0, range(ARGS.pods), "roll-g0.json")
        t1 = time.time()
        want = self.addrs(0)
        t2 = wait_applied(self.node, self.LISTENER, lambda l: backend_set(l) == want,
                          "the rollout listener with %d backends" % ARGS.pods)
        log("rollout: %d ready pods created in %.1f s (kubectl create of a List, statuses "
            "written as each was created); the dataplane served all %.1f s after the first "
            "create" % (ARGS.pods, t1 - t0, t2 - t0))
        return {"pods": ARGS.pods, "create_s": t1 - t0, "served_s": t2 - t0}

    def roll(self, label):
        """From generation g to g+1, in steps of --batch: create batch new (ready), delete
        batch old, at once, as a Deployment with maxSurge = maxUnavailable = batch does."""
        node = self.node
        old, new = self.gen, self.gen + 1
        node.wait_quiet(max(2.0, 3 * node.debounce_ms / 1000.0), timeout=300)
        m0 = node.metrics()
        v0 = node.ctl.status()["applied_version"]
        c0 = node.cpu()
        t0 = time.time()
        steps = []
        ks = list(range(ARGS.pods))
        for s in range(0, ARGS.pods, ARGS.batch):
            batch = ks[s:s + ARGS.batch]
            ts = time.time()
            deleter = Bg(self.delete, old, s // ARGS.batch)
            self.create(new, batch, "roll-g%d-%d.json" % (new, s))
            deleter.join()
            steps.append(time.time() - ts)
        t_writes = time.time()
        want = self.addrs(new)
        t_final = wait_applied(node, self.LISTENER, lambda l: backend_set(l) == want,
                               "the listener with generation %d only" % new)
        quiet = max(3.0, 3 * node.debounce_ms / 1000.0)
        node.wait_quiet(quiet, timeout=300)
        m1 = node.metrics()
        c1 = node.cpu()
        st = node.ctl.status()
        v1 = st["applied_version"]
        self.gen = new
        applies = dataplane_applies(node.dp_proc.logpath)
        window = [(v, applies[v]) for v in sorted(applies) if v0 < v <= v1]
        noop = sum(1 for _v, (_t, ch) in window
                   if not any(ch[k] for k in ("listeners_added", "listeners_removed",
                                              "listeners_changed", "backends_added",
                                              "backends_removed")))
        slice_writes = [e for e in self.watch.since(t0) if e[0] <= t_final]
        a = m1['layer4lb_controller_applies_total{result="ok"}'] - \
            m0['layer4lb_controller_applies_total{result="ok"}']
        r = {
            "label": label, "debounce_ms": node.debounce_ms, "pods": ARGS.pods,
            "batch": ARGS.batch, "from_gen": old, "to_gen": new,
            "writes_s": t_writes - t0, "step_s": steps,
            "first_write_to_dataplane_final_s": t_final - t0,
            "last_write_to_dataplane_final_s": t_final - t_writes,
            "applies_ok": a,
            "applies_failed": m1['layer4lb_controller_applies_total{result="failed"}'] -
            m0['layer4lb_controller_applies_total{result="failed"}'],
            "dataplane_versions": v1 - v0 if v0 is not None and v1 is not None else None,
            "dataplane_noop_applies": noop,
            "reconciles": m1["layer4lb_controller_reconciles_total"] -
            m0["layer4lb_controller_reconciles_total"],
            "endpointslice_writes": len(slice_writes),
            "cpu_s": {k: c1[k] - c0[k] for k in c0},
            "apply_times_s": [round(t - t0, 3) for _v, (t, _ch) in window],
            "apply_changes": [ch for _v, (_t, ch) in window],
        }
        log("rollout (%s): %d pods replaced in %.1f s of writes; dataplane final %.2f s after "
            "the last write; %d applies (%d EndpointSlice writes, %d reconciles)" %
            (label, ARGS.pods, r["writes_s"], r["last_write_to_dataplane_final_s"], a,
             r["endpointslice_writes"], r["reconciles"]))
        return r

    def close(self):
        if self.watch:
            self.watch.stop()


# ---------------------------------------------------------------------------------------------
# Controller restarts (for --debounce-ms variants)

def restart_controller(node, debounce_ms):
    node.wait_quiet(1.0, timeout=300)
    before = node.rss()["controller"]
    rc = node.stop_controller()
    v0 = node.ctl.status()["applied_version"]
    t0 = node.start_controller(debounce_ms)
    wait_for("the restarted controller ready", node.ready, timeout=300, interval=0.05)
    t_ready = time.time()
    rss = node.rss()
    log("controller restarted with --debounce-ms %d: ready (caches synced, dataplane "
        "re-applied) %.2f s after start; VmRSS %.1f MiB, VmHWM %.1f MiB" %
        (debounce_ms, t_ready - t0, mib(rss["controller"].get("VmRSS")),
         mib(rss["controller"].get("VmHWM"))))
    return {"debounce_ms": debounce_ms, "stop_status": rc, "start_to_ready_s": t_ready - t0,
            "previous_controller_rss_kib": before,
            "rss_kib": rss, "dataplane_version_before": v0}


# ---------------------------------------------------------------------------------------------
# Report

def f1(v, unit="", nd=1):
    return "n/a" if v is None else ("%.*f%s" % (nd, v, unit))


def summary_rows(res):
    sc, lat, ro = res.get("scale", {}), res.get("latency", {}), res.get("rollouts", [])
    rows = []
    if sc:
        rss = sc["rss_steady_kib"]["controller"]
        rows += [
            ("scale: %d LBs / %d endpoints created (kubectl create, %d processes)" %
             (sc["lbs"], sc["lbs"] * sc["endpoints_per_service"], sc["kubectl_processes"]), "",
             "%s (%s objects/s)" % (f1(sc["create_s"], " s"), f1(sc["objects_per_s"], "", 0))),
            ("scale: first create -> dataplane serves all %d listeners" % sc["lbs"], "",
             f1(sc["first_create_to_all_served_s"], " s")),
            ("scale: first create -> every LoadBalancer status Ready", "",
             f1(sc["first_create_to_all_status_ready_s"], " s")),
            ("scale: controller VmRSS at sync / steady", "< 64 MiB",
             "%s / %s" % (f1(mib(sc["rss_at_sync_kib"]["controller"].get("VmRSS")), " MiB"),
                          f1(mib(rss.get("VmRSS")), " MiB"))),
            ("scale: controller VmHWM (peak) after sync", "< 64 MiB",
             f1(mib(rss.get("VmHWM")), " MiB")),
            ("scale: dataplane VmRSS / VmHWM", "",
             "%s / %s" % (f1(mib(sc["rss_steady_kib"]["dataplane"].get("VmRSS")), " MiB"),
                          f1(mib(sc["rss_steady_kib"]["dataplane"].get("VmHWM")), " MiB"))),
            ("scale: applies until synced / until steady (dataplane applied_version)", "",
             "%d / %d (%s)" % (sc["applies_ok_during_sync"], sc["applies_ok_until_steady"],
                               sc["dataplane_applied_version"])),
            ("scale: CPU time until all served: controller / dataplane", "",
             "%s / %s" % (f1(sc["cpu_s_to_sync"]["controller"], " s"),
                          f1(sc["cpu_s_to_sync"]["dataplane"], " s"))),
            ("scale: controller sync (reconcile_last_seconds) at rest, %d LBs / mean while "
             "syncing, applies included" % sc["lbs"], "",
             "%s / %s" % (f1(sc["reconcile_last_s"] * 1000, " ms"),
                          f1(sc["reconcile_mean_s"] * 1000, " ms"))),
        ]
    for r in res.get("restarts", [])[:1]:
        c = r["rss_kib"]["controller"]
        p = r["previous_controller_rss_kib"]
        rows.append(("controller VmRSS / VmHWM after the first rollout (before its restart)",
                     "< 64 MiB", "%s / %s" % (f1(mib(p.get("VmRSS")), " MiB"),
                                             f1(mib(p.get("VmHWM")), " MiB"))))
        rows.append(("controller restarted with everything in place: start -> ready; "
                     "VmRSS / VmHWM", "< 64 MiB",
                     "%s; %s / %s" % (f1(r["start_to_ready_s"], " s", 2),
                                      f1(mib(c.get("VmRSS")), " MiB"),
                                      f1(mib(c.get("VmHWM")), " MiB"))))
    ab = res.get("apply_cost")
    if ab:
        rows.append(("dataplane: one full-state apply (%d listeners, %d backends), one backend "
                     "changed, idle second dataplane, p50" % (ab["listeners"], ab["backends"]),
                     "", f1(ab["p50_ms"], " ms")))
    d = lat.get("default")
    if d:
        for key, what in (("add", "pod Ready -> in the dataplane"),
                          ("remove", "pod NotReady -> out of the dataplane")):
            s = d[key]
            rows.append(("latency: %s, p50 / p99 (n=%d)" % (what, s["n"]), "",
                         "%s / %s" % (f1(s["p50_ms"], " ms"), f1(s["p99_ms"], " ms"))))
            rows.append(("latency: %s, beyond the %d ms debounce, p50 / p99" %
                         (what, s["debounce_ms"]), "< 100 ms / < 100 ms",
                         "%s / %s" % (f1(s["p50_beyond_debounce_ms"], " ms"),
                                      f1(s["p99_beyond_debounce_ms"], " ms"))))
    for r in ro:
        rows.append(("rollout of %d pods (batches of %d), --debounce-ms %d: controller applies" %
                     (r["pods"], r["batch"], r["debounce_ms"]),
                     "<= 10", "%d (over %s of writes)" % (r["applies_ok"],
                                                          f1(r["writes_s"], " s"))))
    for v in lat.get("variants", []):
        s = v["summary"]
        rows.append(("latency with --debounce-ms %d: Ready / NotReady, p50 / p99 (n=%d each)" %
                     (v["debounce_ms"], s["add"]["n"]), "",
                     "%s / %s ; %s / %s" % (f1(s["add"]["p50_ms"], " ms"),
                                            f1(s["add"]["p99_ms"], " ms"),
                                            f1(s["remove"]["p50_ms"], " ms"),
                                            f1(s["remove"]["p99_ms"], " ms"))))
    return rows


def md_table(rows, header=("figure", "target", "measured")):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * (len(header) - 1) + "---:|"]
    for r in rows:
        out.append("| " + " | ".join(str(x) for x in r) + " |")
    return "\n".join(out)


def text_table(rows):
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows + [("", "target", "")])
    lines = ["%-*s  %-*s  %s" % (w0, "figure", w1, "target", "measured")]
    for r in rows:
        lines.append("%-*s  %-*s  %s" % (w0, r[0], w1, r[1], r[2]))
    return "\n".join(lines)


def write_results(res):
    os.makedirs(ARGS.results, exist_ok=True)
    with open(os.path.join(ARGS.results, "latest.json"), "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
    rows = summary_rows(res)
    env = res["env"]
    md = ["# Controller benchmark (layer4-lb-controller against a real control plane)", "",
          "`%s` on %s, commit %s%s, %s build (%s), %d CPUs, kernel %s; kube-apiserver / "
          "kube-controller-manager %s, etcd %s; total run time %.0f s." %
          (env["command"], env["date"], env["commit"], " (with uncommitted changes)"
           if env["dirty"] else "", env["build_type"],
           ", ".join("%s %s, built %s" % (k, v["path"], v["mtime"])
                     for k, v in sorted(env["binaries"].items())),
           env["cpus"], env["kernel"], env["kubernetes"], env["etcd"], res.get("run_s", 0)), "",
          "kube-controller-manager's `--endpointslice-updates-batch-period`: %s. Load average "
          "(1 min) at the start / end: %.2f / %.2f (other people's work on this machine "
          "included)." % (res.get("kcm_endpointslice_batch_period", "?"),
                          env["loadavg_start"][0], env.get("loadavg_end", (0,))[0]), "",
          md_table(rows), ""]
    lat = res.get("latency", {})
    if lat.get("default"):
        md += ["## Latency breakdown", "",
               "Milliseconds from the pod's status write (the PATCH a kubelet makes): `API ack` "
               "its reply; `EndpointSlice` when the bench's own watch saw "
               "kube-controller-manager's EndpointSlice write; `dataplane` the dataplane's log "
               "time of the apply that carried the change (written right after the new "
               "configuration is published to its workers), confirmed by a status request; "
               "`bench saw it` when the bench, following that log every 2 ms, read the line; "
               "`controller sync` the controller's reconcile_last_seconds after that apply "
               "(reconcile + apply round trip + status computation).", "",
               "| flip, debounce (samples) | API ack p50 | EndpointSlice p50 / p99 | "
               "EndpointSlice -> dataplane p50 / p99 | dataplane p50 / p99 / max | "
               "bench saw it p50 / p99 | controller sync p50 |",
               "|---|---:|---:|---:|---:|---:|---:|"]
        for v in [{"debounce_ms": DEFAULT_DEBOUNCE_MS, "summary": lat["default"]}] + \
                lat.get("variants", []):
            for key in ("add", "remove"):
                s = v["summary"][key]
                md.append("| %s, %d ms (%d) | %s | %s / %s | %s / %s | %s / %s / %s | %s / %s "
                          "| %s |" %
                          ("Ready" if key == "add" else "NotReady", v["debounce_ms"], s["n"],
                           f1(s["api_ack_p50_ms"]),
                           f1(s["slice_p50_ms"]), f1(s["slice_p99_ms"]),
                           f1(s["slice_to_dataplane_p50_ms"]), f1(s["slice_to_dataplane_p99_ms"]),
                           f1(s["p50_ms"]), f1(s["p99_ms"]), f1(s["max_ms"]),
                           f1(s["seen_p50_ms"]), f1(s["seen_p99_ms"]),
                           f1(s["controller_sync_p50_ms"])))
        md.append("")
    ab = res.get("apply_cost")
    if ab:
        md += ["One apply of the same %d listeners / %d backends (%d KB of JSON) to a second, idle "
               "dataplane on 127.0.0.1, round trip on the control socket: first %.1f ms, then "
               "one backend added or removed: p50 %.1f ms, max %.1f ms (%d applies)." %
               (ab["listeners"], ab["backends"], ab["bytes"] // 1000, ab["first_ms"],
                ab["p50_ms"], ab["max_ms"], len(ab["incremental_ms"])), ""]
    if res.get("rollouts"):
        md += ["## Rolling updates", "",
               "| debounce | writes (s) | applies | no-op applies | dataplane versions | "
               "reconciles | EndpointSlice writes | last write -> dataplane final (s) |",
               "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in res["rollouts"]:
            md.append("| %d ms | %.1f | %d | %d | %s | %d | %d | %.2f |" %
                      (r["debounce_ms"], r["writes_s"], r["applies_ok"],
                       r["dataplane_noop_applies"], r["dataplane_versions"], r["reconciles"],
                       r["endpointslice_writes"], r["last_write_to_dataplane_final_s"]))
        md.append("")
    if res.get("restarts"):
        md += ["## Controller restarts with %d LoadBalancers in place" %
               res.get("scale", {}).get("lbs", 0), "",
               "| --debounce-ms | start -> /readyz (s) | VmRSS (MiB) | VmHWM (MiB) |",
               "|---:|---:|---:|---:|"]
        for r in res["restarts"]:
            c = r["rss_kib"]["controller"]
            md.append("| %d | %.2f | %s | %s |" % (r["debounce_ms"], r["start_to_ready_s"],
                                                   f1(mib(c.get("VmRSS"))), f1(mib(c.get("VmHWM")))))
        md.append("")
    if res.get("final_rss_kib"):
        fr = res["final_rss_kib"]
        md += ["At the end of the run: controller VmRSS %s MiB, VmHWM %s MiB; dataplane VmRSS %s "
               "MiB, VmHWM %s MiB; peaks of the 1 s VmRSS samples: controller %s MiB, dataplane "
               "%s MiB." % (f1(mib(fr["controller"].get("VmRSS"))),
                            f1(mib(fr["controller"].get("VmHWM"))),
                            f1(mib(fr["dataplane"].get("VmRSS"))),
                            f1(mib(fr["dataplane"].get("VmHWM"))),
                            f1(mib(res["rss_peaks_kib"]["controller"])),
                            f1(mib(res["rss_peaks_kib"]["dataplane"]))), ""]
    if res.get("load"):
        md += ["## CPU around the run", "",
               "CPUs (of %d) used by this run's processes, by everything else on the machine "
               "(other people's builds and tests) and stolen by the hypervisor, per part: "
               "the figures above move with the last two." % res["env"]["cpus"], "",
               "| part | wall (s) | this run | others | steal |", "|---|---:|---:|---:|---:|"]
        for k, v in res["load"].items():
            md.append("| %s | %.0f | %.2f | %.2f | %.2f |" % (k, v["wall_s"], v["ours_cpus"],
                                                           v["others_cpus"], v["steal_cpus"]))
        md.append("")
    with open(os.path.join(ARGS.results, "latest.md"), "w") as f:
        f.write("\n".join(md))
    print("\n" + text_table(rows), flush=True)


def git(*args):
    r = subprocess.run(["git", "-C", REPO] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True)
    return r.stdout.strip()


def sha256_of(path):
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_type():
    try:
        with open(os.path.join(os.path.dirname(l4lb.LB_BIN), "CMakeCache.txt")) as f:
            for line in f:
                if line.startswith("CMAKE_BUILD_TYPE:"):
                    return line.split("=", 1)[1].strip()
    except OSError:
        pass
    return "?"


def kcm_flag(c, flag):
    try:
        with open(os.path.join(c.dir, "kube-controller-manager.log"), errors="replace") as f:
            for line in f:
                m = re.search(r'FLAG: --%s="([^"]*)"' % re.escape(flag), line)
                if m:
                    return m.group(1)
    except OSError:
        pass
    return None


# ---------------------------------------------------------------------------------------------

def main():
    for b in (l4lb.LB_BIN, l4lb.CTRL_BIN):
        if not os.access(b, os.X_OK):
            raise BenchError("%s is missing: build first (bench/controller/run.sh does)" % b)
    binroot = os.path.basename(os.path.dirname(os.environ.get(k8scluster.BIN_ENV, "")))
    mk = re.match(r"k8s-(v[\d.]+)-etcd-(v[\d.]+)", binroot or "")
    res = {"env": {
        "command": "bench/controller/run.sh" + "".join(" " + a for a in sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "cpus": os.cpu_count(), "kernel": platform.release(),
        "kubernetes": mk.group(1) if mk else binroot, "etcd": mk.group(2) if mk else "?",
        "build_type": build_type(), "args": vars(ARGS), "loadavg_start": os.getloadavg(),
        "binaries": {os.path.basename(b): {"path": b, "sha256": sha256_of(b)[:16],
                                           "mtime": datetime.datetime.fromtimestamp(
                                               os.path.getmtime(b), datetime.timezone.utc)
                                           .strftime("%Y-%m-%d %H:%M:%S UTC")}
                     for b in (l4lb.LB_BIN, l4lb.CTRL_BIN)}}}
    # Every 198.18.0.0/16 address is local in this namespace: backends may bind any of them.
    r = subprocess.run(["ip", "route", "add", "local", "198.18.0.0/16", "dev", "lo"],
                       stderr=subprocess.PIPE, text=True)
    if r.returncode != 0 and "File exists" not in r.stderr:
        raise BenchError("ip route add local 198.18.0.0/16 dev lo: %s" % r.stderr.strip())
    k8scluster.add_address(NODE_ADDR)
    lbtest.raise_nofile()
    node = sampler = lat = roll = None
    c = k8scluster.Cluster(keep=ARGS.keep or None)
    ok = False
    try:
        log("cluster up in %s" % c.dir)
        res["kcm_endpointslice_batch_period"] = kcm_flag(c, "endpointslice-updates-batch-period")
        api = Api(c)
        c.kubectl("apply", "-f", l4lb.CRD)
        c.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                  "crd/loadbalancers.layer4lb.io")
        kc = c.service_account_kubeconfig(l4lb.CONTROLLER_NS, l4lb.CONTROLLER_SA, l4lb.RBAC)
        c.create_node(NODE, NODE_ADDR)
        node = Node(c.dir, kc)
        node.start_dataplane()
        node.start_controller(DEFAULT_DEBOUNCE_MS)
        wait_for("the controller ready", node.ready)
        sampler = Sampler(node)
        res["rss_idle_kib"] = node.rss()

        res["load"] = {}
        ml = MachineLoad()
        part_scale(c, api, node, res)
        res["load"]["scale"] = ml.done()

        res["apply_cost"] = apply_cost(c, node)
        log("one apply of the %d listeners to an idle second dataplane: %.1f ms whole, "
            "p50 %.1f ms with one backend changed" % (res["apply_cost"]["listeners"],
                                                      res["apply_cost"]["first_ms"],
                                                      res["apply_cost"]["p50_ms"]))
        lat = Latency(c, api, node)
        lat.setup()
        log("latency: %d samples each way, --debounce-ms %d (EndpointSlice batch period %s)" %
            (ARGS.samples, DEFAULT_DEBOUNCE_MS, res["kcm_endpointslice_batch_period"]))
        ml = MachineLoad()
        samples = lat.run(ARGS.samples, DEFAULT_DEBOUNCE_MS, "default")
        res["load"]["latency"] = ml.done()
        res["latency"] = {"default": summarize_latency(samples, DEFAULT_DEBOUNCE_MS),
                          "samples": samples, "variants": []}
        for key in ("add", "remove"):
            s = res["latency"]["default"][key]
            log("latency %s: p50 %.1f ms, p99 %.1f ms (beyond the debounce: %.1f / %.1f); "
                "EndpointSlice written at p50 %s ms" %
                (key, s["p50_ms"], s["p99_ms"], s["p50_beyond_debounce_ms"],
                 s["p99_beyond_debounce_ms"], f1(s["slice_p50_ms"])))
        lat_serv = lat.served_check()

        roll = Rollout(c, api, node)
        res["rollout_setup"] = roll.setup()
        ml = MachineLoad()
        res["rollouts"] = [roll.roll("default")]
        res["load"]["rollout"] = ml.done()
        res["restarts"] = []
        variants = [int(x) for x in ARGS.debounce_variants.split(",") if x.strip()]
        if variants and (ARGS.always_variants or res["rollouts"][0]["applies_ok"] > 10):
            for d in variants:
                ml = MachineLoad()
                res["restarts"].append(restart_controller(node, d))
                res["rollouts"].append(roll.roll("debounce %d" % d))
                if ARGS.variant_samples > 0:
                    vs = lat.run(ARGS.variant_samples, d, "debounce %d" % d)
                    res["latency"]["variants"].append(
                        {"debounce_ms": d, "summary": summarize_latency(vs, d), "samples": vs})
                res["load"]["debounce %d" % d] = ml.done()
        res["latency_traffic_check"] = lat_serv
        node.check_alive()
        res["final_rss_kib"] = node.rss()
        sampler.stop()
        res["rss_peaks_kib"] = sampler.peak
        res["rss_series"] = sampler.series[::5]
        res["run_s"] = time.monotonic() - T_START
        res["env"]["loadavg_end"] = os.getloadavg()
        write_results(res)
        log("results: %s/latest.md and latest.json" % os.path.relpath(ARGS.results, os.getcwd()))
        ok = True
    finally:
        if sampler:
            sampler.stop()
        if lat:
            lat.close()
        if roll:
            roll.close()
        if node:
            for p in (node.ct_proc, node.dp_proc):
                if p is not None and not p.alive():
                    sys.stderr.write("---- tail of %s ----\n%s\n" % (p.logpath, p.tail()))
            node.stop()
        if not ok:
            c.failed = True
            c.dump_logs()
        c.stop()
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        sys.exit(main())
    except (BenchError, k8scluster.ClusterError, AssertionError) as e:
        print("bench: FAILED: %s" % e, file=sys.stderr, flush=True)
        sys.exit(1)
