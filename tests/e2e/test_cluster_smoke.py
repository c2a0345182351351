#!/usr/bin/env python3
"""Smoke test of the real control plane the end-to-end tests run on (k8scluster.py): pods made
Ready by writing their status reach an EndpointSlice; a pod turned not ready shows ready=false;
an etcd compaction makes a watch from an older resourceVersion fail with 410 Expired; the API
server comes back after a stop.

    python3 tests/e2e/test_cluster_smoke.py -v

Needs root (it creates a network namespace); exits 77 when it cannot. The first run builds the
control plane (tests/k8s/build.sh), which takes many minutes on 2 cores.
"""
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import k8scluster  # noqa: E402
from k8scluster import wait_for  # noqa: E402

k8scluster.reexec_in_netns()

NODE = "node-a"
NODE_IP = "198.18.0.2"
POD_IPS = {"web-1": "198.18.0.11", "web-2": "198.18.0.12"}


def endpoints_by_ip(cluster, ns, svc):
    out = {}
    for s in cluster.endpoint_slices(ns, svc):
        for ep in s.get("endpoints") or []:
            for a in ep["addresses"]:
                out[a] = ep
    return out


class ClusterSmoke(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for ip in [NODE_IP] + list(POD_IPS.values()):
            k8scluster.add_address(ip)
        # Pods without the watch cache (their watches go to etcd, so a compaction expires old
        # resourceVersions); EndpointSlices with it, as in a cluster.
        cls.c = k8scluster.Cluster(uncached_resources=["pods"])
        try:
            c = cls.c
            c.create_node(NODE, NODE_IP)
            c.apply({"apiVersion": "v1", "kind": "Service",
                     "metadata": {"name": "web", "namespace": "default"},
                     "spec": {"selector": {"app": "web"},
                              "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})
            for name, ip in POD_IPS.items():
                c.run_pod("default", name, {"app": "web"}, ip, NODE, ports=[{"name": "http", "containerPort": 8080}])
        except BaseException:
            cls.c.failed = True
            cls.c.dump_logs()
            cls.c.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.c.stop()

    def run(self, result=None):
        # Keep the cluster's files and show its logs when a test fails.
        before = len(result.failures) + len(result.errors) if result else 0
        r = super().run(result)
        if result and len(result.failures) + len(result.errors) > before:
            self.c.failed = True
            self.c.dump_logs()
        return r

    def test_1_endpointslice_has_both_pods_ready(self):
        def both_ready():
            eps = endpoints_by_ip(self.c, "default", "web")
            return all(ip in eps and eps[ip]["conditions"].get("ready") for ip in POD_IPS.values()) and eps
        eps = wait_for("an EndpointSlice for default/web with both pods ready", both_ready)
        for name, ip in POD_IPS.items():
            self.assertEqual(eps[ip]["targetRef"]["name"], name)
            self.assertEqual(eps[ip].get("nodeName"), NODE)
        slices = self.c.endpoint_slices("default", "web")
        self.assertTrue(all(s["addressType"] == "IPv4" for s in slices))
        ports = [p for s in slices for p in (s.get("ports") or [])]
        self.assertIn({"name": "http", "port": 8080, "protocol": "TCP"}, ports)

    def test_2_pod_not_ready_shows_in_slice(self):
        wait_for("web-1 ready in the slice",
                 lambda: endpoints_by_ip(self.c, "default", "web").get(POD_IPS["web-1"], {})
                 .get("conditions", {}).get("ready"))
        self.c.set_pod_ready("default", "web-1", False)
        ep = wait_for("web-1 ready=false in the slice",
                      lambda: (lambda e: e if e and e["conditions"].get("ready") is False else None)(
                          endpoints_by_ip(self.c, "default", "web").get(POD_IPS["web-1"])))
        self.assertFalse(ep["conditions"]["ready"])
        other = endpoints_by_ip(self.c, "default", "web")[POD_IPS["web-2"]]
        self.assertTrue(other["conditions"]["ready"])
        self.c.set_pod_ready("default", "web-1", True)
        wait_for("web-1 ready again",
                 lambda: endpoints_by_ip(self.c, "default", "web")[POD_IPS["web-1"]]["conditions"].get("ready"))

    def test_3_compaction_makes_old_watch_expire(self):
        old_rv = self.c.get_json("/api/v1/namespaces/default/pods")["metadata"]["resourceVersion"]
        # Changes after old_rv, so that it is really behind.
        for i in range(3):
            self.c.kubectl("annotate", "pod", "web-2", "-n", "default", "--overwrite", "e2e/bump=%d" % i)
        # Before the compaction the old resourceVersion can be watched from.
        status, events = self.c.watch_raw(
            "/api/v1/namespaces/default/pods?watch=1&resourceVersion=%s&timeoutSeconds=1" % old_rv)
        self.assertEqual(status, 200)
        self.assertTrue(events and all(e["type"] != "ERROR" for e in events), events)
        rev = self.c.compact_etcd()
        self.assertGreater(rev, int(old_rv))
        status, events = self.c.watch_raw(
            "/api/v1/namespaces/default/pods?watch=1&resourceVersion=%s&timeoutSeconds=5" % old_rv)
        if status == 200:
            errors = [e["object"] for e in events if e["type"] == "ERROR"]
            self.assertTrue(errors, "no ERROR event in %s" % json.dumps(events)[:2000])
            st = errors[0]
        else:
            st = events
            self.assertEqual(status, 410)
        self.assertEqual(st.get("code"), 410, st)
        self.assertEqual(st.get("reason"), "Expired", st)
        # kubectl sees the same (the stream's ERROR event; it prints it and exits 0).
        out = self.c.kubectl("get", "--raw", "/api/v1/namespaces/default/pods?watch=1&resourceVersion=%s&timeoutSeconds=5" % old_rv)
        self.assertIn('"reason":"Expired"', out.replace(" ", ""))

    def test_4_apiserver_stop_start(self):
        # EndpointSlices are served from the watch cache, whose window a compaction does not
        # shorten; a restarted API server starts a new cache, too new for this resourceVersion.
        old_rv = self.c.get_json("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices")["metadata"]["resourceVersion"]
        self.c.set_pod_ready("default", "web-2", False)
        self.c.set_pod_ready("default", "web-2", True)
        self.c.stop_apiserver()
        with self.assertRaises(k8scluster.KubectlError):
            self.c.kubectl("get", "--raw", "/readyz", "--request-timeout=3s")
        self.c.start_apiserver()
        self.assertEqual(self.c.kubectl("get", "--raw", "/readyz").strip(), "ok")
        pods = self.c.kubectl_json("get", "pods", "-n", "default")["items"]
        self.assertEqual(sorted(p["metadata"]["name"] for p in pods), sorted(POD_IPS))
        status, events = self.c.watch_raw(
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?watch=1&resourceVersion=%s&timeoutSeconds=5" % old_rv)
        st = events if status != 200 else next((e["object"] for e in events if e["type"] == "ERROR"), {})
        self.assertEqual((st.get("code"), st.get("reason")), (410, "Expired"), (status, events))
        # The EndpointSlice controller carries on against the restarted server.
        self.c.set_pod_ready("default", "web-2", False)
        wait_for("web-2 ready=false after the restart",
                 lambda: endpoints_by_ip(self.c, "default", "web")[POD_IPS["web-2"]]["conditions"].get("ready") is False)
        self.c.set_pod_ready("default", "web-2", True)

    def test_5_service_account_kubeconfig(self):
        rbac = os.path.join(self.c.dir, "rbac.yaml")
        with open(rbac, "w") as f:
            f.write("""apiVersion: v1
kind: Namespace
metadata:
  name: lb-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: e2e-slice-reader
rules:
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: e2e-slice-reader
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: e2e-slice-reader
subjects:
- kind: ServiceAccount
  name: e2e-reader
  namespace: lb-system
""")
        kc = self.c.service_account_kubeconfig("lb-system", "e2e-reader", rbac)
        out = self.c.kubectl("get", "endpointslices", "-n", "default", "-o", "name", kubeconfig=kc)
        self.assertIn("endpointslice.discovery.k8s.io/web-", out)
        self.assertEqual(self.c.kubectl("auth", "can-i", "list", "pods", kubeconfig=kc, check=False).strip(), "no")


if __name__ == "__main__":
    unittest.main()
