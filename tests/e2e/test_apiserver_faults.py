"""End-to-end: layer4-lb-controller against an API server that misbehaves.

The real control plane (etcd, kube-apiserver, kube-controller-manager) runs as in
test_controller.py; the controller reaches it through tests/e2e/faultrelay.py, which forwards
to the real API server and, while a test says so, answers with 500s, 429s with Retry-After,
slow responses, bodies cut short or not JSON, garbage in the middle of a watch, bodies and watch
events larger than any real one, or a TLS certificate that does not match.

In each episode a pod is added behind the LoadBalancer through the API server directly (kubectl
and kube-controller-manager do not pass the relay), so the controller cannot see it while the
fault lasts.  Each test checks that:
  - the dataplane keeps serving its last good state, unchanged, and traffic flows;
  - the controller retries with backoff (bounded requests; Retry-After honoured);
  - it logs the episode once per informer, and its recovery;
  - once the fault ends it catches up: the pod reaches the dataplane.
Timeouts are hang guards.  Under ASan+UBSan (scripts/test.sh) a report fails the run.
"""

import os
import re
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import helm  # noqa: E402
import k8scluster  # noqa: E402

helm.ensure()  # before entering the network namespace: it may fetch helm
k8scluster.reexec_in_netns()

import l4lb  # noqa: E402
from l4lb import lbtest, wait_for  # noqa: E402
from faultrelay import FaultRelay, status_body  # noqa: E402

NODE, ADDR = "node-a", "198.18.0.2"
NS, PORT, TARGET_PORT = "faults", 18200, 8080
INFORMERS = {  # the controller's informers, by the collection path each lists and watches
    "services": "/api/v1/services?",
    "endpointslices": "/apis/discovery.k8s.io/v1/endpointslices?",
    "loadbalancers": "/apis/layer4lb.io/v1alpha1/loadbalancers?",
    "nodes": "/api/v1/nodes?",
}

C = RELAY = WORK = DP = CT = None
BACKENDS = []
PODS = []  # (name, ip) behind the LoadBalancer, in order


def setUpModule():
    global C, RELAY, WORK, DP, CT
    C = k8scluster.Cluster()
    WORK = C.dir
    k8scluster.add_address(ADDR)
    C.kubectl("apply", "-f", l4lb.CRD)
    C.kubectl("wait", "--for=condition=Established", "--timeout=60s",
              "crd/loadbalancers.layer4lb.io")
    kc = C.service_account_kubeconfig(l4lb.CONTROLLER_NS, l4lb.CONTROLLER_SA,
                                      helm.chart_rbac(WORK))
    pki = C.pki
    RELAY = FaultRelay((k8scluster.APISERVER_ADDRESS, k8scluster.APISERVER_PORT),
                       os.path.join(pki, "ca.crt"), os.path.join(pki, "apiserver.crt"),
                       os.path.join(pki, "apiserver.key"))
    with open(kc) as f:
        text = f.read().replace(C.server, RELAY.url)
    path = os.path.join(WORK, "controller.kubeconfig")
    with open(path, "w") as f:
        f.write(text)
    C.create_node(NODE, ADDR)
    C.ensure_namespace(NS)
    C.apply({"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": "web", "namespace": NS},
             "spec": {"selector": {"app": "web"},
                      "ports": [{"name": "http", "port": 80, "targetPort": TARGET_PORT,
                                 "protocol": "TCP"}]}})
    add_pod()
    C.apply({"apiVersion": "layer4lb.io/v1alpha1", "kind": "LoadBalancer",
             "metadata": {"name": "web", "namespace": NS},
             "spec": {"listeners": [{"name": "http", "port": PORT,
                                     "backend": {"serviceRef": {"name": "web",
                                                                "port": "http"}}}]}})
    DP = l4lb.Dataplane(WORK, NODE).start()
    CT = l4lb.Controller(WORK, NODE, path, NODE, DP.socket, ADDR, 19110).start()
    wait_for("controller ready", CT.ready)
    wait_for("the LoadBalancer served", lambda: backends() == expected(), timeout=120)


def tearDownModule():
    l4lb.teardown([p.proc for p in (CT, DP) if p], BACKENDS, [RELAY], C)


def add_pod():
    """A new pod (and a backend on its address) behind the LoadBalancer: the change each
    episode hides from the controller."""
    n = len(PODS) + 1
    name, ip = "p%d" % n, "198.18.0.%d" % (60 + n)
    k8scluster.add_address(ip)
    BACKENDS.append(lbtest.Backend(name, host=ip, port=TARGET_PORT))
    C.run_pod(NS, name, {"app": "web"}, ip, NODE)
    PODS.append((name, ip))
    # The EndpointSlice controller (not through the relay) has taken it in.
    wait_for("the EndpointSlice of %s" % name, lambda: ip in str(C.kubectl_json(
        "get", "endpointslices", "-n", NS, "-l", "kubernetes.io/service-name=web")))


def expected():
    return sorted("%s:%d" % (ip, TARGET_PORT) for _, ip in PODS)


def backends():
    return DP.backends("%s/web/http" % NS)


def metric(name, resource):
    return CT.metric('layer4lb_controller_%s{resource="%s"}' % (name, resource), 0)


def lines(text, level):
    return [l for l in text.splitlines() if re.match(r"\S+ %s " % level, l)]


def only(*names):
    """Fault only requests of these informers (their lists and watches)."""
    paths = [INFORMERS[n] for n in names]
    return lambda path: any(p in path for p in paths)


def restart_controller():
    """A fresh controller, so each episode starts with no backoff left from the one before."""
    CT.stop()
    CT.start()
    wait_for("controller ready", CT.ready)
    wait_for("the controller programming the dataplane", lambda: backends() == expected(),
             timeout=120)
    # The relay ends the watches open when a fault starts, as the API server ends one; a
    # watch ended within 1 s with no event is a failure to the controller (and client-go).
    time.sleep(1.5)


def served():
    """What the dataplane serves: listeners and their backends (not their counters)."""
    return {n: sorted(b["address"] for b in l["backends"]) for n, l in DP.listeners().items()}


def healthy():
    return all(metric("api_failures", n) == 0 for n in INFORMERS)


class Episode:
    """A fault from start() to end(): the dataplane is checked to stay as it was throughout,
    with traffic through it, and the controller's log and the relay's requests are kept."""

    def __init__(self, test, fault, frozen=True, cut_at_end=True):
        restart_controller()
        self.test, self.fault, self.frozen = test, fault, frozen
        self.cut_at_end = cut_at_end
        self.t1 = None
        self.before = served()
        self.version = DP.status()["applied_version"]
        self.mark = len(CT.proc.text())
        self.changes = []   # what the dataplane showed that differs from before
        self.answers = 0
        self.failures = []
        self.stop_ev = threading.Event()

    def start(self):
        self.t0 = time.monotonic()
        RELAY.set_fault(self.fault)
        self.thr = threading.Thread(target=self._watch, daemon=True)
        self.thr.start()
        return self

    def _watch(self):
        deadline = time.monotonic() + 300  # bounded by stop() and in time
        # Served before the fault; with frozen=False, also what was added during it.
        names = {n for n, _ in PODS}
        while not self.stop_ev.is_set() and time.monotonic() < deadline:
            if not self.frozen:
                names = {n for n, _ in PODS}
            try:
                got = served()
                if self.frozen and got != self.before:
                    self.changes.append(got)
                n = lbtest.who((ADDR, PORT), timeout=10)
                if n in names:
                    self.answers += 1
                else:
                    self.failures.append("answered by %r" % n)
            except Exception as e:  # noqa: BLE001
                self.failures.append(repr(e))
            time.sleep(0.1)

    def hold(self, seconds):
        """Let the fault last (a duration of the fault, not a timing of the controller)."""
        time.sleep(seconds)
        self.test.assertTrue(CT.proc.alive(), "the controller died:\n" + CT.proc.tail())
        return self

    def end(self):
        if self.t1 is None:
            self.t1 = time.monotonic()
        self.stop_ev.set()
        self.thr.join(timeout=30)
        RELAY.clear(self.cut_at_end)
        t = self.test
        t.assertEqual(self.failures, [], "traffic failed during the fault")
        t.assertGreater(self.answers, 0)
        if self.frozen:
            t.assertEqual(self.changes, [], "the dataplane changed during the fault")
            t.assertEqual(DP.status()["applied_version"], self.version)
        # Recovery: the pod added during the fault reaches the dataplane, and every informer
        # says it is healthy.  The backoff after a fault of a few seconds is a few seconds
        # more: hang guards.
        wait_for("the dataplane catching up", lambda: backends() == expected(), timeout=120)
        wait_for("every informer healthy", healthy, timeout=120)
        t.assertTrue(CT.proc.alive())
        return self

    def log(self):
        return CT.proc.text()[self.mark:]

    def requests(self, name):
        return [r for r in RELAY.requests(self.t0, INFORMERS[name]) if r[0] <= self.t1]

    def report(self, what):
        """A figure for the closing note, not a test: each informer's requests during the
        fault and what its episode ended with."""
        text = self.log()
        rows = []
        for n in INFORMERS:
            m = re.search(r" %s: the API server answers again, after (\d+) failed attempts in "
                          r"([0-9.]+) s" % n, text)
            rows.append("%s %d req%s" % (n, len(self.requests(n)),
                                          ", %s failures in %s s" % m.groups() if m else ""))
        print("\n  %s: %s" % (what, "; ".join(rows)), file=sys.stderr)

    def assert_logged_once(self, names, words):
        """Each informer of names warned once in the episode, said words in some line (the
        first failure may be the reset that let the fault in), and logged its recovery."""
        text = self.log()
        for n in names:
            mine = [l for l in text.splitlines() if " %s: " % n in l]
            warns = [l for l in mine if re.match(r"\S+ warn ", l)]
            self.test.assertEqual(len(warns), 1, "%s warned %d times in one episode:\n%s" %
                                  (n, len(warns), "\n".join(warns)))
            self.test.assertTrue(any(re.search(words, l) for l in mine),
                                 "%s: no line says %r:\n%s" % (n, words, "\n".join(mine)))
            self.test.assertTrue(any(" %s: the API server answers again" % n in l
                                     for l in mine), "%s: no recovery logged" % n)


class T1Faults(unittest.TestCase):

    def test_1_500s_back_off_and_are_logged_once(self):
        err = status_body(500, "InternalError", "an injected internal error")
        e = Episode(self, lambda m, p: ("status", 500, [("Content-Type", "application/json")],
                                        err)).start()
        add_pod()
        e.hold(6).end()
        e.assert_logged_once(INFORMERS, r"HTTP 500 an injected internal error")
        e.report("500s for 6 s")
        # Backoff: 800 ms doubling with jitter is at most 4 tries in 6 s; a loop that did
        # not back off would make hundreds.
        for n in INFORMERS:
            got = len(e.requests(n))
            self.assertGreaterEqual(got, 1, n)
            self.assertLessEqual(got, 6, "%s: %d requests in 6 s of 500s" % (n, got))

    def test_2_429_retry_after_is_honoured(self):
        too_many = status_body(429, "TooManyRequests", "slow down")
        hit = only("endpointslices")
        e = Episode(self, lambda m, p: ("status", 429, [("Retry-After", "4"),
                                                        ("Content-Type", "application/json")],
                                        too_many) if hit(p) else None).start()
        add_pod()
        e.hold(7).end()
        e.assert_logged_once(["endpointslices"], r"HTTP 429 slow down")
        times = [r[0] for r in e.requests("endpointslices")]
        self.assertGreaterEqual(len(times), 2, times)
        # Without Retry-After the first retry comes after 0.8-1.6 s.  (A lower bound: a slow
        # machine only makes the gaps longer.)
        gaps = [b - a for a, b in zip(times, times[1:])]
        print("\n  429 with Retry-After: 4: retries after %s s" %
              ", ".join("%.2f" % g for g in gaps), file=sys.stderr)
        self.assertGreaterEqual(min(gaps), 3.9, "retried %s s after a 429 with Retry-After: 4"
                                % ["%.2f" % g for g in gaps])

    def test_3_slow_responses_still_serve(self):
        # Every answer 3 s late: slower than the debounce, far inside the request timeouts.
        # Requests under way finish when it ends: a cut would be a failure of its own.
        e = Episode(self, lambda m, p: ("delay", 3), frozen=False, cut_at_end=False).start()
        add_pod()
        wait_for("the pod, through a slow API server", lambda: backends() == expected(),
                 timeout=120)
        e.end()
        warns = [l for l in lines(e.log(), "warn") if any(" %s: " % n in l for n in INFORMERS)]
        self.assertEqual(warns, [], "a slow API server is not a failure")
        e.report("every answer 3 s late")

    def test_4_cut_and_malformed_bodies(self):
        # Watches are told 410 Gone, so every informer lists again, and each list's body is
        # broken a different way.
        gone = status_body(410, "Expired", "too old resource version: 1 (2)")
        broken = {"services": ("short_json",), "endpointslices": ("cut_body",),
                  "loadbalancers": ("not_json",), "nodes": ("short_json",)}

        def fault(m, p):
            for n, path in INFORMERS.items():
                if path in p:
                    if "watch=1" in p:
                        return ("status", 410, [("Content-Type", "application/json")], gone)
                    return broken[n]
            return None
        e = Episode(self, fault)
        lists = {n: metric("lists_total", n) for n in INFORMERS}
        e.start()
        add_pod()
        e.hold(6).end()
        e.assert_logged_once(INFORMERS, r"unusable list response|list failed")
        e.report("410 on watches, lists cut short / not JSON")
        for n in INFORMERS:
            self.assertGreater(metric("lists_total", n), lists[n], n)

    def test_5_garbage_in_a_watch(self):
        # The watch of EndpointSlices passes its first event on, then garbage: the event is
        # taken (the dataplane moves), the watch starts again from where it was, no relist.
        hit = only("endpointslices")
        e = Episode(self, lambda m, p: ("watch_garbage",) if hit(p) and "watch=1" in p
                    else None, frozen=False)
        lists = metric("lists_total", "endpointslices")
        errors = metric("watch_errors_total", "endpointslices")
        e.start()
        add_pod()
        wait_for("the event before the garbage", lambda: backends() == expected(), timeout=120)
        wait_for("the watch ending on the garbage",
                 lambda: metric("watch_errors_total", "endpointslices") > errors)
        e.end()
        self.assertEqual(metric("lists_total", "endpointslices"), lists,
                         "a watch that saw garbage lists again instead of resuming")
        warns = [l for l in lines(e.log(), "warn") if "endpointslices" in l]
        self.assertEqual(len(warns), 1, warns)
        self.assertIn("watch stopped", warns[0])
        print("\n  garbage after a watch's first event: %d watch errors, %d lists (before: %d)"
              % (metric("watch_errors_total", "endpointslices") - errors,
                 metric("lists_total", "endpointslices"), lists), file=sys.stderr)

    def test_6_huge_bodies_and_events(self):
        # Lists of 65 MiB (the controller's cap is 64 MiB) and watch events of 17 MiB (its
        # line cap is 16 MiB): the API server stores objects of at most 1.5 MiB.
        gone = status_body(410, "Expired", "too old resource version: 1 (2)")

        def fault(m, p):
            if only("services", "endpointslices")(p) and "watch=1" in p:
                return ("huge_event", 17 << 20)
            if only("loadbalancers", "nodes")(p):
                if "watch=1" in p:
                    return ("status", 410, [("Content-Type", "application/json")], gone)
                return ("huge_body", 65 << 20)
            return None
        e = Episode(self, fault).start()
        add_pod()
        e.hold(6).end()
        e.assert_logged_once(["services", "endpointslices"], r"watch stopped: .*longer than")
        e.assert_logged_once(["loadbalancers", "nodes"], r"response body too large")
        e.report("17 MiB watch events, 65 MiB lists")
        with open("/proc/%d/status" % CT.proc.p.pid) as f:
            status = f.read()
        kib = {k: int(re.search(r"%s:\s+(\d+) kB" % k, status).group(1))
               for k in ("VmHWM", "VmRSS")}
        print("\n  controller RSS after the huge bodies: %.1f MiB, peak %.1f MiB (a figure, "
              "not a test)" % (kib["VmRSS"] / 1024, kib["VmHWM"] / 1024), file=sys.stderr)

    def test_7_certificates_that_do_not_match(self):
        d = os.path.join(WORK, "badpki")
        os.makedirs(d, exist_ok=True)
        make_certs(d, C.pki)
        for crt, key, why in (("other.crt", "other.key", r"SSL certificate problem"),
                              ("wrongname.crt", "wrongname.key",
                               r"SSL: no alternative certificate subject name matches")):
            tries = RELAY.handshake_failures + RELAY.handshakes
            e = Episode(self, lambda m, p: None)
            RELAY.serve_certificate(os.path.join(d, crt), os.path.join(d, key))
            e.start()
            add_pod()
            e.hold(6)
            e.t1 = time.monotonic()  # the requests counted are those made until now
            RELAY.serve_certificate()
            e.end()
            # The controller connected, and refused the certificate: no request was sent.
            self.assertGreater(RELAY.handshake_failures + RELAY.handshakes, tries, crt)
            for n in INFORMERS:
                self.assertEqual(e.requests(n), [], "a request passed a bad certificate")
            e.assert_logged_once(INFORMERS, why)
            e.report("certificate " + crt)


def make_certs(d, pki):
    """other.crt: a certificate for the relay's address from a CA the controller does not
    trust; wrongname.crt: one from the cluster's CA, for another name."""
    def ossl(*args):
        subprocess.run(["openssl"] + list(args), cwd=d, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "otherca.key", "-out",
         "otherca.crt", "-days", "2", "-subj", "/CN=not-the-cluster-ca")
    for name, ca, cakey, san in (
            ("other", "otherca.crt", "otherca.key", "IP:127.0.0.1"),
            ("wrongname", os.path.join(pki, "ca.crt"), os.path.join(pki, "ca.key"),
             "DNS:not-the-api-server.example")):
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write("subjectAltName=%s\nextendedKeyUsage=serverAuth\n" % san)
        ossl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out",
             name + ".csr", "-subj", "/CN=" + name)
        ossl("x509", "-req", "-in", name + ".csr", "-CA", ca, "-CAkey", cakey,
             "-CAcreateserial", "-out", name + ".crt", "-days", "2", "-extfile", name + ".ext")


if __name__ == "__main__":
    l4lb.main(lambda: WORK)
