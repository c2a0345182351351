"""End-to-end: layer4-lb-controller against a real control plane, driving the real dataplane.

One cluster (etcd, kube-apiserver, kube-controller-manager) in a network namespace of our own;
node-a runs a dataplane and a controller as the chart's pod will, the controller under the
chart's RBAC with a ServiceAccount token, reaching the API server through a relay the test can
cut.  Pods are "run" by writing their status; the real EndpointSlice controller does the rest.
Traffic is real TCP (and, for the UDP listener of T6, real datagrams) to backends listening on
the pods' addresses.

Timeouts are hang guards only; figures (how fast a restarted dataplane was re-programmed) are
printed, never asserted.
"""

import os
import socket
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
from relay import Relay  # noqa: E402

NODE_A, ADDR_A = "node-a", "198.18.0.2"
NODE_B, ADDR_B = "node-b", "198.18.0.3"
NODE_C, ADDR_C = "node-c", "198.18.0.4"
TARGET_PORT = 8080
DNS_EXAMPLE = os.path.join(l4lb.REPO, "deploy", "examples", "dns.yaml")

C = None          # the cluster
RELAY = None      # controller -> API server
KUBECONFIG = None # the controller's (ServiceAccount token, through the relay)
WORK = None
NODES = {}        # name -> (dataplane, controller)
BACKENDS = []


def setUpModule():
    global C, RELAY, KUBECONFIG, WORK
    C = k8scluster.Cluster()
    WORK = C.dir
    for a in (ADDR_A, ADDR_B, ADDR_C):
        k8scluster.add_address(a)
    C.kubectl("apply", "-f", l4lb.CRD)
    C.kubectl("wait", "--for=condition=Established", "--timeout=60s",
              "crd/loadbalancers.layer4lb.io")
    # The chart's own ServiceAccount and RBAC (helm template of charts/layer4-lb).
    kc = C.service_account_kubeconfig(l4lb.CONTROLLER_NS, l4lb.CONTROLLER_SA,
                                      helm.chart_rbac(WORK))
    RELAY = Relay((k8scluster.APISERVER_ADDRESS, k8scluster.APISERVER_PORT))
    with open(kc) as f:
        text = f.read().replace(C.server, RELAY.url)
    KUBECONFIG = os.path.join(WORK, "controller.kubeconfig")
    with open(KUBECONFIG, "w") as f:
        f.write(text)
    C.create_node(NODE_A, ADDR_A)
    start_node(NODE_A, ADDR_A, 19102, extra=["--deny-ports=18120-18121"])


def tearDownModule():
    l4lb.teardown([p.proc for dp, ct in NODES.values() for p in (ct, dp)], BACKENDS, [RELAY], C)


def start_node(node, addr, http_port, identity=None, extra=()):
    dp = l4lb.Dataplane(WORK, node).start()
    ct = l4lb.Controller(WORK, node, KUBECONFIG, node, dp.socket, addr, http_port,
                         identity=identity or node, extra=extra).start()
    NODES[node] = (dp, ct)
    wait_for("controller %s ready" % node, ct.ready)
    return dp, ct


def backend(name, ip, port=TARGET_PORT):
    k8scluster.add_address(ip)
    b = lbtest.Backend(name, host=ip, port=port)
    BACKENDS.append(b)
    return b


def service(ns, name, selector, port=80, port_name="http", target=TARGET_PORT):
    C.ensure_namespace(ns)
    C.apply({"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": name, "namespace": ns},
             "spec": {"selector": selector,
                      "ports": [{"name": port_name, "port": port, "targetPort": target,
                                 "protocol": "TCP"}]}})


def loadbalancer(ns, name, port, svc="web", svc_port="http", **spec):
    lb = {"apiVersion": "layer4lb.io/v1alpha1", "kind": "LoadBalancer",
          "metadata": {"name": name, "namespace": ns},
          "spec": dict({"listeners": [{"name": "http", "port": port,
                                       "backend": {"serviceRef": {"name": svc,
                                                                  "port": svc_port}}}]},
                       **spec)}
    C.apply(lb)


def lb_status(ns, name):
    return C.kubectl_json("get", "loadbalancer.layer4lb.io", name, "-n", ns).get("status", {})


def condition(ns, name, ctype):
    for c in lb_status(ns, name).get("conditions", []):
        if c["type"] == ctype:
            return c
    return None


def cond_is(ns, name, ctype, status, reason=None):
    c = condition(ns, name, ctype)
    return c and c["status"] == status and (reason is None or c["reason"] == reason)


def who(addr, port):
    return lbtest.who((addr, port), timeout=10)


def seen(addr, port, n=12):
    return {who(addr, port) for _ in range(n)}


def refused(addr, port):
    try:
        socket.create_connection((addr, port), timeout=5).close()
        return False
    except ConnectionRefusedError:
        return True


class UdpResponder:
    """A UDP server on ip:port answering each datagram with "<name> <datagram>": one answer per
    query, as a DNS server gives."""

    def __init__(self, name, ip, port):
        self.name = name
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, port))
        self.sock.settimeout(0.1)
        self.stop_ev = threading.Event()
        self.thr = threading.Thread(target=self._run, daemon=True)
        self.thr.start()

    def _run(self):
        while not self.stop_ev.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            self.sock.sendto(self.name.encode() + b" " + data, peer)

    def close(self):
        self.stop_ev.set()
        self.thr.join(timeout=5)
        self.sock.close()


def udp_query(addr, port, payload):
    """One datagram from a new socket (a new flow), and the name of the responder that
    answered it; the answer must carry the query back whole."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    try:
        s.sendto(payload, (addr, port))
        data, _ = s.recvfrom(65535)
    finally:
        s.close()
    name, _, echo = data.partition(b" ")
    if echo != payload:
        raise AssertionError("answer %r to query %r" % (data, payload))
    return name.decode()


class Traffic:
    """New connections in a loop through the load balancer, counting failures."""

    def __init__(self, addr, port):
        self.addr, self.port = addr, port
        self.ok = 0
        self.failures = []
        self.names = {}
        self.stop_ev = threading.Event()
        self.thr = threading.Thread(target=self._run, daemon=True)
        self.thr.start()

    def _run(self):
        deadline = time.monotonic() + 300  # bounded in time as well as by stop()
        while not self.stop_ev.is_set() and time.monotonic() < deadline:
            try:
                n = who(self.addr, self.port)
                self.ok += 1
                self.names[n] = self.names.get(n, 0) + 1
            except Exception as e:  # noqa: BLE001
                self.failures.append(repr(e))
            time.sleep(0.01)

    def stop(self):
        self.stop_ev.set()
        self.thr.join(timeout=30)
        return self


class T1Serving(unittest.TestCase):
    """kubectl apply of a LoadBalancer serves the Service's pods; scaling; drain; delete."""

    NS, PORT = "t1", 18080

    @classmethod
    def setUpClass(cls):
        service(cls.NS, "web", {"app": "web"})
        for i in (1, 2):
            backend("web-%d" % i, "198.18.0.%d" % (10 + i))
            C.run_pod(cls.NS, "web-%d" % i, {"app": "web"}, "198.18.0.%d" % (10 + i), NODE_A)
        loadbalancer(cls.NS, "web", cls.PORT)

    def dp(self):
        return NODES[NODE_A][0]

    def test_1_apply_serves_the_pods(self):
        name = "t1/web/http"
        wait_for("the listener with both pods",
                 lambda: self.dp().backends(name) == ["198.18.0.11:8080", "198.18.0.12:8080"])
        self.assertEqual(wait_for("both backends answer", lambda: seen(ADDR_A, self.PORT) ==
                                  {"web-1", "web-2"} and {"web-1", "web-2"}), {"web-1", "web-2"})
        wait_for("Ready=True", lambda: cond_is(self.NS, "web", "Ready", "True"))
        st = lb_status(self.NS, "web")
        self.assertEqual(st["observedGeneration"], 1)
        for t in ("Accepted", "ResolvedRefs", "Programmed", "Ready"):
            self.assertEqual(condition(self.NS, "web", t)["status"], "True", t)
        self.assertEqual(st["listeners"][0]["readyEndpoints"], 2)
        self.assertEqual([a["value"] for a in st["addresses"]], [ADDR_A])
        self.assertEqual([n["name"] for n in st["nodes"]], [NODE_A])
        out = C.kubectl("get", "l4lb", "-n", self.NS)
        header = out.splitlines()[0].split()
        for col in ("NAME", "PORTS", "PROGRAMMED", "READY", "AGE"):
            self.assertIn(col, header)
        row = out.splitlines()[1]
        self.assertIn("%d/TCP" % self.PORT, row)
        self.assertIn(ADDR_A, row)

    def test_2_scaling_moves_traffic_without_failures(self):
        wait_for("serving", lambda: len(self.dp().backends("t1/web/http") or []) == 2)
        t = Traffic(ADDR_A, self.PORT)
        try:
            backend("web-3", "198.18.0.13")
            C.run_pod(self.NS, "web-3", {"app": "web"}, "198.18.0.13", NODE_A)
            wait_for("web-3 gets traffic", lambda: t.names.get("web-3", 0) > 0)
            # Scale down: the pod goes away first, its server stays up until the dataplane
            # stops sending to it (as a terminating pod's process would).
            C.delete_pod(self.NS, "web-3", force=True)
            wait_for("web-3 out of the listener",
                     lambda: "198.18.0.13:8080" not in self.dp().backends("t1/web/http"))
            before = t.names.get("web-3", 0)
            time.sleep(1)
            self.assertEqual(t.names.get("web-3", 0), before, "web-3 still got new connections")
        finally:
            t.stop()
        self.assertEqual(t.failures, [])
        self.assertGreater(t.ok, 0)

    def test_3_terminating_pod_drains(self):
        wait_for("serving", lambda: len(self.dp().backends("t1/web/http") or []) == 2)
        held = None
        for _ in range(50):
            c = lbtest.Client((ADDR_A, self.PORT), timeout=10)
            if c.who() == "web-2":
                held = c
                break
            c.close()
        self.assertIsNotNone(held, "no connection reached web-2")
        try:
            C.delete_pod(self.NS, "web-2")  # no kubelet: it stays Terminating
            wait_for("web-2 out of the listener",
                     lambda: self.dp().backends("t1/web/http") == ["198.18.0.11:8080"])
            self.assertEqual(held.who(), "web-2", "the open connection was not left to drain")
            self.assertEqual(seen(ADDR_A, self.PORT), {"web-1"})
            wait_for("servingTerminatingEndpoints 1", lambda: lb_status(self.NS, "web")
                     ["listeners"][0].get("servingTerminatingEndpoints") == 1)
        finally:
            held.close()
        C.delete_pod(self.NS, "web-2", force=True)

    def test_4_deleting_the_loadbalancer_closes_its_listener(self):
        service(self.NS, "gone", {"app": "web"})
        loadbalancer(self.NS, "gone", 18081, svc="gone")
        wait_for("listener gone/http", lambda: "t1/gone/http" in self.dp().listeners())
        self.assertEqual(who(ADDR_A, 18081), "web-1")
        C.kubectl("delete", "l4lb", "gone", "-n", self.NS)
        wait_for("listener removed", lambda: "t1/gone/http" not in self.dp().listeners())
        self.assertTrue(refused(ADDR_A, 18081))

    def test_5_metrics_text_format(self):
        """Every sample of the controller's /metrics belongs to a family with HELP and TYPE."""
        import urllib.request
        ct = NODES[NODE_A][1]
        with urllib.request.urlopen("http://%s/metrics" % ct.http, timeout=10) as r:
            text = r.read().decode()
        typed, helped, samples = set(), set(), []
        for line in text.splitlines():
            parts = line.split(" ", 3)
            if line.startswith("# TYPE "):
                self.assertIn(parts[3], ("counter", "gauge"), line)
                typed.add(parts[2])
            elif line.startswith("# HELP "):
                helped.add(parts[2])
            elif line:
                samples.append(line.split("{")[0].split(" ")[0])
        self.assertIn("layer4lb_controller_cache_synced", samples)
        self.assertEqual(set(samples) - typed, set())
        self.assertEqual(set(samples) - helped, set())


class T2Conflicts(unittest.TestCase):
    """Two LoadBalancers on one port; a port held by another process."""

    def test_1_older_keeps_the_port(self):
        for ns in ("t2a", "t2b"):
            service(ns, "web", {"app": "web"})
            C.run_pod(ns, "p", {"app": "web"}, "198.18.0.21" if ns == "t2a" else "198.18.0.22",
                      NODE_A)
        backend("t2a-p", "198.18.0.21")
        backend("t2b-p", "198.18.0.22")
        loadbalancer("t2a", "old", 18090)
        wait_for("old serves", lambda: cond_is("t2a", "old", "Programmed", "True"))
        loadbalancer("t2b", "new", 18090)
        wait_for("new: PortConflict",
                 lambda: cond_is("t2b", "new", "Accepted", "False", "PortConflict"))
        self.assertIn("t2a/old", condition("t2b", "new", "Accepted")["message"])
        self.assertEqual(seen(ADDR_A, 18090, 6), {"t2a-p"})
        self.assertTrue(cond_is("t2a", "old", "Accepted", "True"))
        ev = wait_for("a PortConflict event", lambda: [
            e for e in C.kubectl_json("get", "events.events.k8s.io", "-n", "t2b")["items"]
            if e.get("reason") == "PortConflict"])
        self.assertEqual(ev[0]["regarding"]["name"], "new")
        # The older one goes: the newer takes the port.
        C.kubectl("delete", "l4lb", "old", "-n", "t2a")
        wait_for("new serves", lambda: cond_is("t2b", "new", "Accepted", "True") and
                 seen(ADDR_A, 18090, 4) == {"t2b-p"})

    def test_2_port_held_by_another_process(self):
        service("t2c", "web", {"app": "web"})
        C.run_pod("t2c", "p", {"app": "web"}, "198.18.0.23", NODE_A)
        backend("t2c-p", "198.18.0.23")
        squatter = socket.socket()
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind((ADDR_A, 18100))
        squatter.listen(1)
        try:
            loadbalancer("t2c", "held", 18100)
            loadbalancer("t2c", "free", 18101)
            wait_for("held: Programmed=False BindFailed",
                     lambda: cond_is("t2c", "held", "Programmed", "False", "BindFailed"))
            self.assertIn("18100", condition("t2c", "held", "Programmed")["message"])
            wait_for("free serves", lambda: cond_is("t2c", "free", "Programmed", "True"))
            self.assertEqual(who(ADDR_A, 18101), "t2c-p")
        finally:
            squatter.close()
        wait_for("held serves once the port is free",
                 lambda: cond_is("t2c", "held", "Programmed", "True"))
        self.assertEqual(who(ADDR_A, 18100), "t2c-p")

    def test_3_denied_port(self):
        """A port on the controller's --deny-ports (the chart: ssh, the kubelet ...) is never
        bound, however free it is; the LoadBalancer says why."""
        service("t2d", "web", {"app": "web"})
        C.run_pod("t2d", "p", {"app": "web"}, "198.18.0.24", NODE_A)
        backend("t2d-p", "198.18.0.24")
        loadbalancer("t2d", "denied", 18121)
        wait_for("denied: Programmed=False PortDenied",
                 lambda: cond_is("t2d", "denied", "Programmed", "False", "PortDenied"))
        self.assertIn("port 18121/TCP is one no LoadBalancer may take",
                      condition("t2d", "denied", "Programmed")["message"])
        with self.assertRaises(OSError):
            who(ADDR_A, 18121)
        C.kubectl("delete", "l4lb", "denied", "-n", "t2d")   # node-b (T4) has no deny-list


class T3Faults(unittest.TestCase):
    """The API server away, expired watches, restarts of either process."""

    NS, PORT = "t3", 18110

    @classmethod
    def setUpClass(cls):
        service(cls.NS, "web", {"app": "web"})
        backend("t3-1", "198.18.0.31")
        C.run_pod(cls.NS, "p1", {"app": "web"}, "198.18.0.31", NODE_A)
        loadbalancer(cls.NS, "web", cls.PORT)
        wait_for("t3 serves", lambda: cond_is(cls.NS, "web", "Ready", "True"),
                 timeout=180)  # a hang guard, as after the restarts below

    def dp(self):
        return NODES[NODE_A][0]

    def ct(self):
        return NODES[NODE_A][1]

    def test_1_apiserver_down_30s_traffic_flows(self):
        before = self.dp().listeners()
        t = Traffic(ADDR_A, self.PORT)
        try:
            C.stop_apiserver()
            time.sleep(30)
            self.assertEqual(self.dp().listeners().keys(), before.keys())
            C.start_apiserver()
        finally:
            t.stop()
        self.assertEqual(t.failures, [])
        self.assertGreater(t.ok, 100)
        # It catches up: a pod added now reaches the dataplane.  The path goes through
        # kube-controller-manager's reconnect as well as ours, each backing off up to 30 s
        # (with jitter) after a 30 s outage: a longer hang guard, not a timing.
        backend("t3-2", "198.18.0.32")
        C.run_pod(self.NS, "p2", {"app": "web"}, "198.18.0.32", NODE_A)
        wait_for("p2 in the listener", lambda: "198.18.0.32:8080" in
                 self.dp().backends("t3/web/http"), timeout=180)

    def test_2_expired_watch_relists(self):
        m = self.ct().metrics()
        relists = sum(v for k, v in m.items()
                      if k.startswith("layer4lb_controller_relists_expired_total"))
        RELAY.pause()
        try:
            C.delete_pod(self.NS, "p2", force=True)
            backend("t3-3", "198.18.0.33")
            C.run_pod(self.NS, "p3", {"app": "web"}, "198.18.0.33", NODE_A)
            # A new watch cache starts at the current revision: every older one is too old.
            C.stop_apiserver()
            C.compact_etcd()
            C.start_apiserver()
        finally:
            RELAY.resume()
        # kube-controller-manager reconnects too, with client-go's backoff (up to 30 s and
        # jitter, still high from the outage before): a hang guard long enough for both.
        wait_for("the listener's backends after the relist",
                 lambda: self.dp().backends("t3/web/http") ==
                 ["198.18.0.31:8080", "198.18.0.33:8080"], timeout=180)
        m = self.ct().metrics()
        self.assertGreater(sum(v for k, v in m.items()
                               if k.startswith("layer4lb_controller_relists_expired_total")),
                           relists)

    def test_3_restarted_dataplane_is_reprogrammed(self):
        dp = self.dp()
        want = sorted(dp.listeners())
        dp.stop(sig=9)
        t0 = time.monotonic()
        dp.start()
        wait_for("listeners back", lambda: sorted(dp.listeners()) == want, timeout=20)
        print("\n  restarted dataplane re-programmed %.0f ms after its socket answered" %
              ((time.monotonic() - t0) * 1000), file=sys.stderr)
        self.assertTrue(who(ADDR_A, self.PORT).startswith("t3-"))

    def test_4_restarted_controller_never_sends_a_partial_apply(self):
        dp, ct = self.dp(), self.ct()
        want = dp.listeners()
        version = dp.status()["applied_version"]
        shrunk = []
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                got = dp.listeners()
                if set(got) != set(want) or any(
                        len(got[n]["backends"]) < len(want[n]["backends"]) for n in got):
                    shrunk.append(sorted(got))
                time.sleep(0.02)
        w = threading.Thread(target=watch, daemon=True)
        w.start()
        try:
            RELAY.pause()
            ct.stop()
            ct.start()
            time.sleep(3)  # it cannot list: it must send nothing
            self.assertEqual(dp.status()["applied_version"], version)
            RELAY.resume()
            wait_for("the restarted controller synced", ct.ready)
        finally:
            stop.set()
            w.join()
            RELAY.resume()
        self.assertEqual(shrunk, [])
        self.assertEqual(sorted(dp.listeners()), sorted(want))


class T4Leader(unittest.TestCase):
    """Two controllers (two nodes): only the Lease holder writes the summary; failover."""

    def test_1_only_the_holder_writes_and_the_other_takes_over(self):
        C.create_node(NODE_B, ADDR_B)
        dp_b, ct_b = start_node(NODE_B, ADDR_B, 19103)
        ct_a = NODES[NODE_A][1]
        lease = C.kubectl_json("get", "lease", "layer4-lb-controller", "-n", l4lb.CONTROLLER_NS)
        self.assertEqual(lease["spec"]["holderIdentity"], NODE_A)
        self.assertEqual(ct_b.metric("layer4lb_controller_leader"), 0)
        # Both nodes serve t1/web: each writes its own entry, the holder the addresses.
        wait_for("both nodes in t1/web's status", lambda: sorted(
            a["value"] for a in lb_status("t1", "web").get("addresses", [])) == [ADDR_A, ADDR_B])
        self.assertEqual(who(ADDR_B, T1Serving.PORT), "web-1")
        self.assertEqual(ct_b.metric('layer4lb_controller_status_writes_total{kind="summary"}'),
                         0)
        # The holder stops and releases the Lease (holder ""), so the other need not wait out
        # its 15 s: right after the exit it is released or already taken, never still node-a's.
        ct_a.stop()
        lease = C.kubectl_json("get", "lease", "layer4-lb-controller", "-n", l4lb.CONTROLLER_NS)
        self.assertIn(lease["spec"].get("holderIdentity", ""), ("", NODE_B), lease)
        wait_for("node-b leads", lambda: ct_b.metric("layer4lb_controller_leader") == 1)
        lease = C.kubectl_json("get", "lease", "layer4-lb-controller", "-n", l4lb.CONTROLLER_NS)
        self.assertEqual(lease["spec"]["holderIdentity"], NODE_B)
        service("t4", "web", {"app": "web"})
        C.run_pod("t4", "p", {"app": "web"}, "198.18.0.41", NODE_A)
        backend("t4-p", "198.18.0.41")
        loadbalancer("t4", "web", 18120)
        wait_for("status written by the new holder",
                 lambda: cond_is("t4", "web", "Programmed", "True"))
        self.assertGreater(ct_b.metric('layer4lb_controller_status_writes_total{kind="summary"}'),
                           0)
        ct_a.start()


class T5Endpoints(unittest.TestCase):
    """--endpoints: core/v1 Endpoints instead of EndpointSlices, for old clusters."""

    def test_1_same_backends_from_endpoints(self):
        C.create_node(NODE_C, ADDR_C)
        dp_c, ct_c = start_node(NODE_C, ADDR_C, 19104, extra=["--endpoints"])
        dp_a = NODES[NODE_A][0]
        self.assertEqual(ct_c.metric('layer4lb_controller_cache_synced{resource="endpoints"}'), 1)
        self.assertIsNone(ct_c.metric(
            'layer4lb_controller_cache_synced{resource="endpointslices"}'))
        wait_for("node-c serves t1/web as node-a does",
                 lambda: dp_c.backends("t1/web/http") == dp_a.backends("t1/web/http"))
        self.assertEqual(who(ADDR_C, T1Serving.PORT), "web-1")
        # A pod turning not-ready leaves node-c's listener too (notReadyAddresses).
        C.set_pod_ready("t1", "web-1", False)
        try:
            wait_for("web-1 out on node-c",
                     lambda: "198.18.0.11:8080" not in dp_c.backends("t1/web/http"))
        finally:
            C.set_pod_ready("t1", "web-1", True)
        wait_for("web-1 back on node-c",
                 lambda: "198.18.0.11:8080" in dp_c.backends("t1/web/http"))


class T6Udp(unittest.TestCase):
    """The DNS example (deploy/examples/dns.yaml): 53/UDP and 53/TCP of one LoadBalancer, a
    udp listener in the dataplane with the pods as backends, real datagrams, health checks on
    the pods' TCP port."""

    NS = "t6"
    PODS = {"dns-1": "198.18.0.61", "dns-2": "198.18.0.62"}
    WANT = ["198.18.0.61:53", "198.18.0.62:53"]
    UDP, TCP = "t6/dns/dns-udp", "t6/dns/dns-tcp"

    @classmethod
    def setUpClass(cls):
        cls.tcp = {}
        for name, ip in cls.PODS.items():
            k8scluster.add_address(ip)
            BACKENDS.append(UdpResponder(name, ip, 53))
            cls.tcp[name] = backend(name, ip, port=53)  # DNS over TCP, and the checks' port
            C.run_pod(cls.NS, name, {"app": "dns"}, ip, NODE_A, ports=[53])
        C.kubectl("apply", "-n", cls.NS, "-f", DNS_EXAMPLE)

    def dp(self):
        return NODES[NODE_A][0]

    def udp_backend(self, addr):
        return [b for b in self.dp().listeners()[self.UDP]["backends"] if b["address"] == addr][0]

    def test_1_udp_listener_serves_the_pods(self):
        wait_for("the udp listener with both pods", lambda: self.dp().backends(self.UDP) ==
                 self.WANT)
        ls = self.dp().listeners()
        self.assertEqual((ls[self.UDP]["protocol"], ls[self.UDP]["listen"],
                          ls[self.UDP]["bound"]), ("udp", ADDR_A + ":53", True))
        self.assertEqual(ls[self.TCP].get("protocol", "tcp"), "tcp")
        self.assertEqual(self.dp().backends(self.TCP), self.WANT)
        # Each query is a flow of its own (responses: 1 ends it with the answer): round robin
        # spreads them over both pods.
        got = wait_for("both pods answer queries", lambda: (
            lambda s: s if s == set(self.PODS) else None)(
            {udp_query(ADDR_A, 53, b"query-%d" % i) for i in range(12)}))
        self.assertEqual(got, set(self.PODS))
        self.assertIn(who(ADDR_A, 53), self.PODS)
        wait_for("Ready=True", lambda: cond_is(self.NS, "dns", "Ready", "True"))
        st = lb_status(self.NS, "dns")
        self.assertEqual(st["ports"], "53/UDP,53/TCP")
        self.assertEqual(sorted((x["name"], x["protocol"], x["port"], x["readyEndpoints"])
                                for x in st["listeners"]),
                         [("dns-tcp", "TCP", 53, 2), ("dns-udp", "UDP", 53, 2)])
        row = C.kubectl("get", "l4lb", "dns", "-n", self.NS).splitlines()[1]
        self.assertIn("53/UDP,53/TCP", row)

    def test_2_health_checked_on_the_tcp_port(self):
        """dns-2 stops serving TCP while its UDP responder still answers: only a check on
        healthCheck.port (TCP 53) can see it, and then its queries go to dns-1."""
        wait_for("dns-2 healthy", lambda: self.udp_backend("198.18.0.62:53")["healthy"])
        self.tcp["dns-2"].stop_listening()
        try:
            wait_for("dns-2 taken out of the udp listener",
                     lambda: not self.udp_backend("198.18.0.62:53")["healthy"])
            self.assertEqual({udp_query(ADDR_A, 53, b"down-%d" % i) for i in range(8)},
                             {"dns-1"})
        finally:
            self.tcp["dns-2"].start_listening()
        wait_for("dns-2 back", lambda: self.udp_backend("198.18.0.62:53")["healthy"])
        wait_for("dns-2 answers again", lambda: "dns-2" in
                 {udp_query(ADDR_A, 53, b"up-%d" % i) for i in range(8)})


if __name__ == "__main__":
    l4lb.main(lambda: WORK)
