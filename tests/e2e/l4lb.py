"""l4lb - the project's own processes in the end-to-end tests: a node's dataplane and controller.

Both run as they will in the chart's pod: the dataplane with only a control socket (no listeners
of its own), the controller with a kubeconfig holding a ServiceAccount token bound to the RBAC
rules the chart ships (test_controller.py renders them from charts/layer4-lb with helm.py), so a
missing permission fails a test."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
import lbtest  # noqa: E402  (Backend, Client, sanitizer_report)

BUILD = os.environ.get("LB_BUILD_DIR") or os.path.join(REPO, "build")
LB_BIN = os.environ.get("LB_BIN") or os.path.join(BUILD, "layer4-lb")
CTRL_BIN = os.environ.get("LB_CONTROLLER_BIN") or os.path.join(BUILD, "layer4-lb-controller")
# The chart's ServiceAccount and RBAC as rendered into deploy/ by scripts/render-deploy.sh (kept
# current by test_chart.py); helm.chart_rbac() renders the chart itself.
RBAC = os.path.join(REPO, "deploy", "rbac.yaml")
CRD = os.path.join(REPO, "crds", "layer4lb.io_loadbalancers.yaml")
CONTROLLER_NS = "layer4-lb-system"
CONTROLLER_SA = "layer4-lb"
HANG = 60.0


def wait_for(what, pred, timeout=HANG, interval=0.05):
    """Polls pred until it returns a true value (returned); a hang guard, never a timing test."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - reported if it never succeeds
            last = e
        time.sleep(interval)
    raise AssertionError("timed out after %.0f s waiting for %s%s" %
                         (timeout, what, " (last error: %r)" % last if last else ""))


class Proc:
    """A process we started, stopped only by its pid."""

    def __init__(self, name, argv, logpath, env=None):
        self.name, self.argv, self.logpath, self.env = name, argv, logpath, env
        self.p = None

    def start(self):
        self.log = open(self.logpath, "ab")
        self.p = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                  stderr=subprocess.STDOUT, env=self.env)
        return self

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def send_signal(self, sig):
        if self.alive():
            os.kill(self.p.pid, sig)

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.p is None:
            return None
        if self.alive():
            os.kill(self.p.pid, sig)
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.p.pid, signal.SIGKILL)
            rc = self.p.wait()
        self.log.close()
        self.p = None
        return rc

    def text(self):
        try:
            with open(self.logpath, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def tail(self, n=40):
        return "\n".join(self.text().splitlines()[-n:])

    def sanitizer_report(self):
        return lbtest.sanitizer_report(self.text())


def env_for(log_level="debug"):
    env = dict(os.environ)
    for k in ("LOG_LEVEL", "RUST_LOG", "NUM_ACCEPTORS", "KUBECONFIG", "NODE_NAME", "POD_NAME",
              "POD_NAMESPACE", "LAYER4_LB_SOCKET"):
        env.pop(k, None)
    env["LOG_LEVEL"] = log_level
    env["NUM_ACCEPTORS"] = "1"
    return env


class Dataplane:
    """layer4-lb with a control socket and no listeners of its own, as in the chart's pod."""

    def __init__(self, workdir, name, extra_config=""):
        self.dir = workdir
        self.name = name
        self.socket = os.path.join(workdir, "%s.sock" % name)
        self.config = os.path.join(workdir, "%s.yaml" % name)
        with open(self.config, "w") as f:
            f.write("control_socket: %s\ndrain_timeout_ms: 5000\n%s" %
                    (self.socket, extra_config))
        self.proc = None

    def start(self):
        self.proc = Proc("dataplane-" + self.name, [LB_BIN, "--config", self.config],
                         os.path.join(self.dir, "%s-dataplane.log" % self.name),
                         env=env_for()).start()
        wait_for("the dataplane's control socket", lambda: self.ctl("ping") is not None,
                 timeout=HANG)
        return self

    def ctl(self, *args):
        r = subprocess.run([LB_BIN, "ctl", "-s", self.socket] + list(args), env=env_for(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=HANG)
        if r.returncode != 0:
            return None
        return r.stdout

    def status(self):
        out = self.ctl("status", "--json")
        if out is None:
            raise AssertionError("the dataplane did not answer a status request")
        return json.loads(out)

    def listeners(self):
        return {l["name"]: l for l in self.status()["listeners"] if l.get("managed")}

    def backends(self, name):
        l = self.listeners().get(name)
        return sorted(b["address"] for b in l["backends"]) if l else None

    def stop(self, sig=signal.SIGTERM):
        return self.proc.stop(sig) if self.proc else None


class Controller:
    """layer4-lb-controller for one node."""

    def __init__(self, workdir, name, kubeconfig, node, socket, listen, http_port,
                 identity=None, extra=()):
        self.name = name
        self.http = "127.0.0.1:%d" % http_port
        self.argv = [CTRL_BIN, "--kubeconfig", kubeconfig, "--node-name", node,
                     "--socket", socket, "--listen-address", listen,
                     "--http-address", self.http, "--lease-namespace", CONTROLLER_NS,
                     "--identity", identity or name, "--debounce-ms", "50"] + list(extra)
        self.logpath = os.path.join(workdir, "%s-controller.log" % name)
        self.proc = None

    def start(self):
        self.proc = Proc("controller-" + self.name, self.argv, self.logpath,
                         env=env_for()).start()
        return self

    def stop(self, sig=signal.SIGTERM):
        return self.proc.stop(sig) if self.proc else None

    def metrics(self):
        with urllib.request.urlopen("http://%s/metrics" % self.http, timeout=10) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            m = re.match(r"^([a-zA-Z0-9_:]+)(\{[^}]*\})? (\S+)$", line)
            if m:
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
        return out

    def metric(self, name, default=None):
        try:
            return self.metrics().get(name, default)
        except OSError:
            return default

    def ready(self):
        try:
            with urllib.request.urlopen("http://%s/readyz" % self.http, timeout=10) as r:
                return r.status == 200
        except OSError:
            return False


def teardown(procs, backends=(), closers=(), cluster=None):
    """The end of a test module: stop our processes (Proc objects), backends and relays, keep
    the cluster's folder for the __main__ block (main()) to remove if every test passed, and
    fail if a sanitizer reported anything in a process's log."""
    reports = []
    for p in procs:
        if p is None:
            continue
        if p.sanitizer_report():
            reports.append("sanitizer report from %s:\n%s\n" % (p.name, p.sanitizer_report()))
        p.stop()
    for b in backends:
        b.close()
    for c in closers:
        if c is not None:
            c.close()
    if cluster:
        cluster.keep = True
        cluster.stop()
    if reports:
        sys.stderr.write("".join(reports))
        raise AssertionError("a sanitizer reported errors")


def show_logs(work):
    """The last lines of every controller and dataplane log in work."""
    for name in sorted(os.listdir(work)):
        if name.endswith(".log") and ("controller" in name or "dataplane" in name):
            with open(os.path.join(work, name), errors="replace") as f:
                lines = f.read().splitlines()
            sys.stderr.write("--- %s (last 60 lines) ---\n%s\n" % (name, "\n".join(lines[-60:])))
    sys.stderr.write("logs, certificates and kubeconfigs kept in %s\n" % work)


def main(work):
    """Run the module's tests; on failure show the logs and keep the folder (work() names it:
    it is made in setUpModule), else remove it unless $L4LB_E2E_KEEP is set."""
    import shutil
    import unittest
    prog = unittest.main(verbosity=2, exit=False)
    ok = prog.result.wasSuccessful()
    if work() and not ok:
        show_logs(work())
    elif work() and not os.environ.get("L4LB_E2E_KEEP"):
        shutil.rmtree(work(), ignore_errors=True)
    sys.exit(0 if ok else 1)
