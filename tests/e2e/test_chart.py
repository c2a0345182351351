#!/usr/bin/env python3
"""End-to-end: the Helm chart (charts/layer4-lb) with the real helm against a real control plane.

    python3 tests/e2e/test_chart.py -v

- T1Render: `helm lint --strict` and `helm template` over the default values and variants
  (monitoring, the sysctl init container, a custom image, placement, low ports, acceptors, the
  kubeVersion floor), and the refusals the templates make themselves.
- T2Schema: values.schema.json refuses bad values, each with the message it prints.
- T3Variants: every variant's objects pass the API server's validation (server-side dry run) and
  say what their values asked for.
- T4Install: `helm install` creates every object; the containers meet the "restricted" Pod
  Security profile except for the host network; each deploy/examples/*.yaml is accepted and
  broken LoadBalancers are refused with the CRD schema's messages.
- T5Serving: the controller and dataplane started as the chart's DaemonSet starts them (its args,
  environment and the dataplane's ConfigMap; only the paths and the node's address filled in),
  the controller with a token of the chart's own ServiceAccount, so a permission the chart lacks
  (or a Lease name its Role does not grant) fails here: the example LoadBalancer serves real
  traffic, the probes answer, and `helm test` passes, its pod's script run for real as a kubelet
  would.
- T6Upgrade: `helm upgrade` with a chart whose CRD gained a field updates the CRD.
- T7Uninstall: `helm uninstall` removes what it installed and keeps the CRD (and so the
  LoadBalancers); installing again adopts the kept CRD.
- T8PlainKubectl: deploy/ matches a fresh render (scripts/render-deploy.sh --check), and
  `kubectl apply -f deploy/layer4-lb.yaml` creates the same objects; removing it with and
  without the CRD.
- T9CrdFromKubectl: a CRD applied earlier with `kubectl apply -f crds/` is taken over by
  `helm install --take-ownership`, or left alone with crds.install=false.

There is no kubelet, no scheduler and no DaemonSet controller: the DaemonSet's pods never exist,
and nothing waits for them. Needs root (exits 77 otherwise); the first run builds the control plane
(tests/k8s/build.sh) and fetches helm (tests/k8s/helm.sh).
"""

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import helm  # noqa: E402
import k8scluster  # noqa: E402

helm.ensure()                 # outside the network namespace: it may fetch helm
k8scluster.reexec_in_netns()

import l4lb  # noqa: E402
from l4lb import lbtest, wait_for  # noqa: E402

REPO = helm.REPO
CHART = helm.CHART
NS = helm.NAMESPACE           # the release's namespace
RELEASE = helm.RELEASE
VARIANTS_NS = "variants"
EXAMPLES_NS = "examples"
NODE, NODE_ADDR = "node-a", "198.18.0.2"
CRD_NAME = "loadbalancers.layer4lb.io"
SOCKET = "/run/layer4-lb/control.sock"
HANDOVER = "/run/layer4-lb-handover/handover.sock"

C = None
WORK = None
PROCS = []
BACKENDS = []

# Variants rendered, linted and validated: name -> --set arguments.
VARIANTS = {
    "default": [],
    "monitoring": ["--set", "monitoring.serviceMonitor.enabled=true",
                   "--set", "monitoring.podMonitor.enabled=true",
                   "--set", "monitoring.serviceMonitor.labels.release=prom",
                   "--set", "dataplane.metrics.address=0.0.0.0:9101"],
    "sysctls": ["--set", "sysctls.enabled=true",
                "--set", "sysctls.settings.net\\.ipv4\\.ip_unprivileged_port_start=80"],
    "image": ["--set", "image.repository=registry.example.com/net/layer4-lb",
              "--set", "image.tag=0.1.0-rc1", "--set", "image.pullPolicy=Always",
              "--set", "imagePullSecrets[0].name=regcred"],
    "placement": ["--set", "nodeSelector.node-role\\.kubernetes\\.io/edge=",
                  "--set", "tolerations[0].key=dedicated",
                  "--set", "tolerations[0].operator=Equal",
                  "--set", "tolerations[0].value=lb",
                  "--set", "tolerations[0].effect=NoSchedule",
                  "--set", "priorityClassName=system-node-critical",
                  "--set", "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
                           ".nodeSelectorTerms[0].matchExpressions[0].key=kubernetes.io/arch",
                  "--set", "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
                           ".nodeSelectorTerms[0].matchExpressions[0].operator=In",
                  "--set", "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
                           ".nodeSelectorTerms[0].matchExpressions[0].values={amd64}"],
    "lowports-off": ["--set", "dataplane.lowPorts=false"],
    "runtime-default": ["--set", "dataplane.seccompProfile.type=RuntimeDefault"],
    "acceptors-limit": ["--set", "dataplane.acceptors=cpuLimit",
                        "--set", "dataplane.resources.limits.cpu=1500m"],
    "acceptors-4": ["--set", "dataplane.acceptors=4", "--set", "dataplane.ioEngine=epoll",
                    "--set", "dataplane.bufferSize=65536", "--set", "dataplane.bufferCount=1024",
                    "--set", "dataplane.logLevel=warn", "--set", "controller.logLevel=debug"],
    "loopback-http": ["--set", "controller.http.host=127.0.0.1", "--set", "tests.tcpPorts={8080}"],
    "drain": ["--set", "dataplane.drainTimeoutMs=120500", "--set", "dataplane.preStopSleepSeconds=0",
              "--set", "updateStrategy.type=OnDelete", "--set", "crds.keep=false",
              "--set", "serviceAccount.name=lb-sa", "--set", "controller.leaseName=lb-lease"],
    "reuseport": ["--set", "dataplane.handover.method=reuseport", "--set", "sysctls.enabled=true"],
    "no-handover": ["--set", "dataplane.handover.enabled=false",
                    "--set", "dataplane.metrics.address=0.0.0.0:9101",
                    "--set", "monitoring.serviceMonitor.enabled=true",
                    "--set", "monitoring.podMonitor.enabled=true"],
}


def setUpModule():
    global C, WORK
    C = k8scluster.Cluster()
    WORK = C.dir
    k8scluster.add_address(NODE_ADDR)
    C.create_node(NODE, NODE_ADDR)
    for ns in (VARIANTS_NS, EXAMPLES_NS):
        C.ensure_namespace(ns)
    C.kubectl("label", "namespace", VARIANTS_NS, "pod-security.kubernetes.io/enforce=privileged")
    # Stand-ins for prometheus-operator's CRDs (not available here): the API server then checks
    # the ServiceMonitor's and PodMonitor's kind, group, version and metadata, not their spec.
    for kind in ("ServiceMonitor", "PodMonitor"):
        plural = kind.lower() + "s"
        C.apply({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                 "metadata": {"name": "%s.monitoring.coreos.com" % plural},
                 "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
                          "names": {"kind": kind, "plural": plural, "listKind": kind + "List",
                                    "singular": kind.lower()},
                          "versions": [{"name": "v1", "served": True, "storage": True,
                                        "schema": {"openAPIV3Schema": {
                                            "type": "object",
                                            "x-kubernetes-preserve-unknown-fields": True}}}]}})
    for plural in ("servicemonitors", "podmonitors"):
        C.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                  "crd/%s.monitoring.coreos.com" % plural)


def tearDownModule():
    l4lb.teardown(list(reversed(PROCS)), BACKENDS, (), C)


# -- helpers -----------------------------------------------------------------------------------

def template(*args, release=RELEASE, namespace=NS, chart=CHART, check=True):
    return helm.run("template", release, chart, "--namespace", namespace, *args, check=check)


def helm_c(*args, check=True, timeout=120):
    """helm against the cluster, as its admin."""
    return helm.run(*args, kubeconfig=C.admin_kubeconfig, check=check, timeout=timeout)


def documents(yaml_text):
    """(kind, name) of each top-level object in rendered YAML (helm's output: `kind:` and the
    object's `metadata.name` at fixed indentation)."""
    out = []
    for doc in re.split(r"(?m)^---\s*$", yaml_text):
        kind = re.search(r"(?m)^kind: (\S+)\s*$", doc)
        name = re.search(r"(?m)^metadata:\s*\n(?:  .*\n)*?  name: (\S+)\s*$", doc)
        if kind and name:
            out.append((kind.group(1), name.group(1).strip('"')))
    return out


def server_objects(yaml_text, namespace):
    """The objects of yaml_text as the API server would store them (kubectl apply
    --dry-run=server): {(kind, name): object}. Validation errors raise KubectlError."""
    C.kubectl("get", "namespace", namespace)
    out = C.kubectl("apply", "--dry-run=server", "-o", "json", "-f", "-", input=yaml_text)
    data = json.loads(out)
    items = data["items"] if data.get("kind") == "List" else [data]
    return {(o["kind"], o["metadata"]["name"]): o for o in items}


def container(obj, name, init=False):
    spec = obj["spec"]["template"]["spec"] if obj["kind"] == "DaemonSet" else obj["spec"]
    for c in spec.get("initContainers" if init else "containers", []):
        if c["name"] == name:
            return c
    raise AssertionError("no container %s in %s" % (name, obj["metadata"]["name"]))


def env_of(c):
    return {e["name"]: e for e in c.get("env", [])}


def lb_yaml(objs, fullname=RELEASE):
    return objs[("ConfigMap", fullname + "-dataplane")]["data"]["lb.yaml"]


def condition(ns, name, ctype):
    st = C.kubectl_json("get", "loadbalancer.layer4lb.io", name, "-n", ns).get("status", {})
    for c in st.get("conditions", []):
        if c["type"] == ctype:
            return c
    return None


def cond_is(ns, name, ctype, status, reason=None):
    c = condition(ns, name, ctype)
    return bool(c and c["status"] == status and (reason is None or c["reason"] == reason))


def http_get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def expand(s, env):
    """$(VAR) as the kubelet expands it in a container's command and args."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), s)


# -- T1: lint and template ---------------------------------------------------------------------

class T1Render(unittest.TestCase):

    def test_1_lint_every_variant(self):
        for name, args in VARIANTS.items():
            with self.subTest(variant=name):
                r = helm.run("lint", "--strict", CHART, "--namespace", NS, *args)
                self.assertIn("1 chart(s) linted, 0 chart(s) failed", r.stdout)

    def test_2_template_every_variant(self):
        for name, args in VARIANTS.items():
            with self.subTest(variant=name):
                out = template(*args).stdout
                kinds = [k for k, _ in documents(out)]
                for k in ("DaemonSet", "ServiceAccount", "ConfigMap", "ClusterRole",
                          "ClusterRoleBinding", "Role", "RoleBinding", "Pod"):
                    self.assertIn(k, kinds, name)
                self.assertEqual(kinds.count("CustomResourceDefinition"), 1, name)
                monitors = {"ServiceMonitor", "PodMonitor"} & set(kinds)
                self.assertEqual(monitors, {"ServiceMonitor", "PodMonitor"}
                                 if name in ("monitoring", "no-handover") else set(), name)

    def test_3_the_crd_is_the_repository_crd(self):
        with open(os.path.join(REPO, "crds", "layer4lb.io_loadbalancers.yaml")) as f:
            want = f.read()
        with open(os.path.join(CHART, "files", "crds", "layer4lb.io_loadbalancers.yaml")) as f:
            self.assertEqual(f.read(), want, "run scripts/render-deploy.sh")
        # The file without its opening comments (they are about `kubectl apply -f crds/`).
        want = re.sub(r"\A(#.*\n)+", "", want)
        self.assertTrue(want.startswith("apiVersion: apiextensions.k8s.io/v1\n"))

        def body(out):  # after "---", "# Source: ..." and the template's two comment lines
            return out.split("\n", 4)[4]
        out = template("--show-only", "templates/crd.yaml").stdout
        keep = ("  annotations:\n    # helm uninstall leaves the CRD and so every LoadBalancer "
                "(values: crds.keep)\n    helm.sh/resource-policy: keep\n")
        self.assertIn(keep, out)
        self.assertEqual(body(out).replace(keep, "", 1).strip(), want.strip())
        out = template("--show-only", "templates/crd.yaml", "--set", "crds.keep=false").stdout
        self.assertEqual(body(out).strip(), want.strip())
        r = template("--show-only", "templates/crd.yaml", "--set", "crds.install=false",
                     check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("could not find template templates/crd.yaml in chart", r.stderr)

    def test_4_kube_version_floor_and_prestop(self):
        r = template("--kube-version", "1.28.9", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("chart requires kubeVersion: >=1.29.0-0 which is incompatible with "
                      "Kubernetes v1.28.9", r.stderr)
        ds = template("--kube-version", "1.29.0", "--show-only", "templates/daemonset.yaml").stdout
        self.assertIn("preStop:\n            exec:\n              command: [sleep, \"5\"]", ds)
        ds = template("--kube-version", "1.30.0", "--show-only", "templates/daemonset.yaml").stdout
        self.assertIn("preStop:\n            sleep:\n              seconds: 5", ds)

    def test_5_refusals_of_the_templates(self):
        cases = [
            (["--set", "terminationGracePeriodSeconds=20"],
             "terminationGracePeriodSeconds 20 is shorter than dataplane.preStopSleepSeconds + "
             "dataplane.drainTimeoutMs + 5 s = 40 s"),
            (["--set", "monitoring.podMonitor.enabled=true", "--set", "controller.http.host=::1"],
             "monitoring: the controller's metrics are on loopback (controller.http.host)"),
            (["--set", "serviceAccount.create=false"],
             "serviceAccount.name is required when serviceAccount.create is false"),
        ]
        for args, msg in cases:
            with self.subTest(args=args):
                r = template(*args, check=False)
                self.assertNotEqual(r.returncode, 0)
                self.assertIn(msg, r.stderr)
        ok = template("--set", "terminationGracePeriodSeconds=90",
                      "--show-only", "templates/daemonset.yaml").stdout
        self.assertIn("terminationGracePeriodSeconds: 90", ok)


# -- T2: the values schema ---------------------------------------------------------------------

SCHEMA_HEAD = ("values don't meet the specifications of the schema(s) in the following "
               "chart(s):\nlayer4-lb:\n")

# (--set arguments, what helm prints after SCHEMA_HEAD)
SCHEMA_CASES = [
    (["--set", "replicas=2"], "- at '': additional properties 'replicas' not allowed"),
    (["--set", "dataplane.lowport=true"],
     "- at '/dataplane': additional properties 'lowport' not allowed"),
    (["--set", "dataplane.logLevel=loud"],
     "- at '/dataplane/logLevel': value must be one of 'error', 'warn', 'info', 'debug'"),
    (["--set", "controller.logLevel=trace"],
     "- at '/controller/logLevel': value must be one of 'error', 'warn', 'info', 'debug'"),
    (["--set", "image.pullPolicy=Sometimes"],
     "- at '/image/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'"),
    (["--set", "image.repository="], "- at '/image/repository': minLength: got 0, want 1"),
    (["--set", "dataplane.resources.limits.cpu=-1"],
     "- at '/dataplane/resources/limits/cpu': 'oneOf' failed, none matched\n"
     "  - at '/dataplane/resources/limits/cpu': got number, want string\n"
     "  - at '/dataplane/resources/limits/cpu': minimum: got -1, want 0"),
    (["--set-string", "controller.resources.requests.memory=-64Mi"],
     "- at '/controller/resources/requests/memory': 'oneOf' failed, none matched\n"
     "  - at '/controller/resources/requests/memory': '-64Mi' does not match pattern"),
    (["--set", "dataplane.resources.limit.cpu=1"],
     "- at '/dataplane/resources': additional properties 'limit' not allowed"),
    (["--set", "dataplane.acceptors=0"],
     "- at '/dataplane/acceptors': 'oneOf' failed, none matched\n"
     "  - at '/dataplane/acceptors': value must be one of 'auto', 'cpuLimit'\n"
     "  - at '/dataplane/acceptors': minimum: got 0, want 1"),
    (["--set", "dataplane.acceptors=all"],
     "  - at '/dataplane/acceptors': value must be one of 'auto', 'cpuLimit'\n"
     "  - at '/dataplane/acceptors': got string, want integer"),
    (["--set", "dataplane.ioEngine=uring"],
     "- at '/dataplane/ioEngine': value must be one of 'auto', 'io_uring', 'epoll'"),
    (["--set", "dataplane.drainTimeoutMs=-5"],
     "- at '/dataplane/drainTimeoutMs': minimum: got -5, want 0"),
    (["--set", "dataplane.drainTimeoutMs=30s"],
     "- at '/dataplane/drainTimeoutMs': got string, want integer"),
    (["--set", "dataplane.metrics.address=localhost:9100"],
     "- at '/dataplane/metrics/address': 'localhost:9100' does not match pattern"),
    (["--set", "dataplane.bufferSize=5000"], "- at '/dataplane/bufferSize': 'oneOf' failed"),
    (["--set", "dataplane.seccompProfile.localhostProfile="],
     "- at '/dataplane/seccompProfile/localhostProfile': minLength: got 0, want 1"),
    (["--set", "dataplane.installSeccompProfile.kubeletSeccompDir=var/lib"],
     "- at '/dataplane/installSeccompProfile/kubeletSeccompDir': 'var/lib' does not match "
     "pattern '^/'"),
    (["--set", "dataplane.lowPorts=yes"], "- at '/dataplane/lowPorts': got string, want boolean"),
    (["--set", "controller.http.port=70000"],
     "- at '/controller/http/port': maximum: got 70,000, want 65,535"),
    (["--set", "controller.http.host=10.0.0.1"],
     "- at '/controller/http/host': value must be one of 'hostIP', '0.0.0.0', '::', "
     "'127.0.0.1', '::1'"),
    (["--set", "controller.extraArgs={-v}"],
     "- at '/controller/extraArgs/0': '-v' does not match pattern '^--[a-z]'"),
    (["--set", "controller.readinessProbe.periodSeconds=0"],
     "- at '/controller/readinessProbe/periodSeconds': minimum: got 0, want 1"),
    (["--set", "runAsUser=0"], "- at '/runAsUser': minimum: got 0, want 1"),
    (["--set", "updateStrategy.rollingUpdate.maxSurge=1"],
     "- at '/updateStrategy/rollingUpdate/maxSurge': value must be one of 0, '0', '0%'"),
    (["--set", "updateStrategy.type=Recreate"],
     "- at '/updateStrategy/type': value must be one of 'RollingUpdate', 'OnDelete'"),
    (["--set", "tolerations[0].operator=Maybe"],
     "- at '/tolerations/0/operator': value must be one of 'Exists', 'Equal'"),
    (["--set", "nodeSelector=linux"], "- at '/nodeSelector': got string, want object"),
    (["--set", "serviceAccount.tokenExpirationSeconds=60"],
     "- at '/serviceAccount/tokenExpirationSeconds': minimum: got 60, want 600"),
    (["--set", "sysctls.settings.somaxconn=1024"],
     "- at '/sysctls/settings': additional properties 'somaxconn' not allowed"),
    (["--set", "tests.tcpPorts={0}"], "- at '/tests/tcpPorts/0': minimum: got 0, want 1"),
    (["--set", "monitoring.serviceMonitor.interval=30"],
     "- at '/monitoring/serviceMonitor/interval': got number, want string"),
    (["--set", "crds.install=maybe"], "- at '/crds/install': got string, want boolean"),
]


class T2Schema(unittest.TestCase):

    def test_1_bad_values_are_refused_with_the_schemas_message(self):
        for args, msg in SCHEMA_CASES:
            with self.subTest(args=args):
                r = template(*args, check=False)
                self.assertNotEqual(r.returncode, 0)
                self.assertIn(SCHEMA_HEAD, r.stderr)
                self.assertIn(msg, r.stderr)
                print("  %-55s -> %s" % (" ".join(args[1::2]),
                                         r.stderr.split(SCHEMA_HEAD, 1)[1].strip().splitlines()[0]),
                      file=sys.stderr)

    def test_2_install_refuses_them_too(self):
        r = helm_c("install", "bad", CHART, "--namespace", VARIANTS_NS,
                   "--set", "dataplane.logLevel=loud", "--dry-run=server", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("- at '/dataplane/logLevel': value must be one of", r.stderr)


# -- T3: every variant through the API server's validation --------------------------------------

class T3Variants(unittest.TestCase):
    objs = {}

    @classmethod
    def setUpClass(cls):
        for name, args in VARIANTS.items():
            # The CRD is installed for real in T4; here the rest of each variant.
            out = template(*args, "--set", "crds.install=false", release="v",
                           namespace=VARIANTS_NS).stdout
            cls.objs[name] = server_objects(out, VARIANTS_NS)

    def ds(self, variant):
        return self.objs[variant][("DaemonSet", "v-layer4-lb")]

    def test_1_default(self):
        o = self.objs["default"]
        ds = self.ds("default")
        pod = ds["spec"]["template"]["spec"]
        self.assertTrue(pod["hostNetwork"])
        self.assertEqual(pod["dnsPolicy"], "ClusterFirstWithHostNet")
        self.assertIs(pod["automountServiceAccountToken"], False)
        self.assertEqual(pod["serviceAccountName"], "v-layer4-lb")
        self.assertIs(o[("ServiceAccount", "v-layer4-lb")]["automountServiceAccountToken"], False)
        self.assertEqual(pod["terminationGracePeriodSeconds"], 40)
        # The handover: a surge pod per node takes the old one's sockets over.
        self.assertEqual(ds["spec"]["updateStrategy"],
                         {"type": "RollingUpdate",
                          "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}})
        self.assertEqual([c["name"] for c in pod["containers"]], ["dataplane", "controller"])
        dp, ct = container(ds, "dataplane"), container(ds, "controller")
        for c, profile in ((dp, {"type": "Localhost",
                                 "localhostProfile": "layer4-lb/layer4-lb.json"}),
                           (ct, {"type": "RuntimeDefault"})):
            self.assertEqual(c["image"], "layer4-lb:0.1.0")
            self.assertEqual(c["securityContext"], {
                "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                "runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                "capabilities": {"drop": ["ALL"]}, "seccompProfile": profile})
            self.assertIn({"name": "run", "mountPath": "/run/layer4-lb"}, c["volumeMounts"])
        vols = {v["name"]: v for v in pod["volumes"]}
        # The seccomp profile: the repository's, from a ConfigMap into the kubelet's folder on
        # the node by an init container (root for that folder, nothing else), at the path the
        # dataplane names.
        self.assertEqual([c["name"] for c in pod["initContainers"]],
                         ["binder", "handover-dir", "seccomp-profile"])
        # The handover directory: on the node, per release, the dataplane's (0700), made so
        # by a root init container with CAP_CHOWN alone.
        self.assertEqual(vols["handover"]["hostPath"],
                         {"path": "/run/layer4-lb-handover/%s.v-layer4-lb" % VARIANTS_NS,
                          "type": "DirectoryOrCreate"})
        hd = container(ds, "handover-dir", init=True)
        self.assertEqual(hd["command"],
                         ["/bin/sh", "-ec", "chown 65532:65532 /handover && chmod 0700 /handover"])
        self.assertEqual(hd["securityContext"]["capabilities"], {"drop": ["ALL"],
                                                                 "add": ["CHOWN"]})
        self.assertEqual(hd["securityContext"]["runAsUser"], 0)
        self.assertIs(hd["securityContext"]["allowPrivilegeEscalation"], False)
        self.assertEqual(hd["volumeMounts"], [{"name": "handover", "mountPath": "/handover"}])
        init = container(ds, "seccomp-profile", init=True)
        self.assertEqual(init["image"], "layer4-lb:0.1.0")
        self.assertEqual(init["securityContext"], {
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "runAsNonRoot": False, "runAsUser": 0, "runAsGroup": 0,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}})
        self.assertIn("/host-seccomp/layer4-lb/layer4-lb.json", init["command"][2])
        self.assertEqual(vols["host-seccomp"]["hostPath"],
                         {"path": "/var/lib/kubelet/seccomp", "type": "DirectoryOrCreate"})
        self.assertEqual(vols["seccomp-profile"]["configMap"]["name"], "v-layer4-lb-seccomp")
        with open(os.path.join(REPO, "deploy", "seccomp", "layer4-lb.json")) as f:
            shipped = json.load(f)
        self.assertEqual(json.loads(o[("ConfigMap", "v-layer4-lb-seccomp")]["data"]
                                    ["layer4-lb.json"]), shipped)
        self.assertEqual(vols["run"]["emptyDir"], {"medium": "Memory", "sizeLimit": "1Mi"})
        # The token: projected into the controller only.
        sources = vols["serviceaccount-token"]["projected"]["sources"]
        self.assertEqual(sources[0]["serviceAccountToken"],
                         {"path": "token", "expirationSeconds": 3600})
        self.assertEqual(sources[1]["configMap"]["name"], "kube-root-ca.crt")
        self.assertEqual(sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
                         "metadata.namespace")
        self.assertIn({"name": "serviceaccount-token", "readOnly": True,
                       "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"},
                      ct["volumeMounts"])
        self.assertNotIn("serviceaccount-token", [m["name"] for m in dp["volumeMounts"]])
        # The dataplane.
        self.assertEqual(dp["command"] + dp["args"],
                         ["layer4-lb", "--config", "/etc/layer4-lb/lb.yaml",
                          "--takeover-if-running", HANDOVER, "--wait-after-handover"])
        self.assertIn({"name": "handover", "mountPath": "/run/layer4-lb-handover"},
                      dp["volumeMounts"])
        self.assertNotIn("handover", [m["name"] for m in ct["volumeMounts"]])
        self.assertEqual(env_of(dp), {"LOG_LEVEL": {"name": "LOG_LEVEL", "value": "info"}})
        ping = ["layer4-lb", "ctl", "-s", SOCKET, "ping"]
        self.assertEqual(dp["livenessProbe"]["exec"]["command"], ping)
        self.assertEqual(dp["readinessProbe"]["exec"]["command"], ping)
        self.assertEqual(dp["lifecycle"]["preStop"], {"sleep": {"seconds": 5}})
        self.assertNotIn("ports", dp)
        self.assertEqual(dp["resources"]["limits"], {"cpu": "2", "memory": "1Gi"})
        self.assertEqual(lb_yaml(o, "v-layer4-lb"),
                         "control_socket: /run/layer4-lb/control.sock\n"
                         "handover_socket: " + HANDOVER + "\n"
                         "binder_socket: /run/layer4-lb/binder.sock\nio_engine: auto\n"
                         "drain_timeout_ms: 30000\nmetrics: \"127.0.0.1:9101\"\n")
        # The controller.
        self.assertEqual(ct["command"], ["layer4-lb-controller"])
        self.assertEqual(ct["args"][:4], ["--socket=" + SOCKET, "--http-address=$(HOST_IP):9102",
                                          "--lease-name=v-layer4-lb-controller",
                                          "--lease-namespace=" + VARIANTS_NS])
        # The node's own ports and the chart's: no LoadBalancer may take them.
        self.assertIn("--deny-ports=22,179,2379-2380,6443,10248-10260,9102,9101", ct["args"])
        env = env_of(ct)
        for var, path in (("NODE_NAME", "spec.nodeName"), ("POD_NAME", "metadata.name"),
                          ("POD_NAMESPACE", "metadata.namespace"), ("HOST_IP", "status.hostIP")):
            self.assertEqual(env[var]["valueFrom"]["fieldRef"]["fieldPath"], path)
        # No declared port: a hostPort would keep the surge pod off its node.
        self.assertNotIn("ports", ct)
        self.assertEqual(ct["readinessProbe"]["httpGet"],
                         {"path": "/readyz", "port": 9102, "scheme": "HTTP"})
        self.assertEqual(ct["livenessProbe"]["httpGet"],
                         {"path": "/healthz", "port": 9102, "scheme": "HTTP"})
        # The Role grants the Lease the controller is told to use.
        role = o[("Role", "v-layer4-lb-controller")]
        self.assertEqual(role["rules"][1]["resourceNames"], ["v-layer4-lb-controller"])
        self.assertEqual(o[("RoleBinding", "v-layer4-lb-controller")]["subjects"],
                         [{"kind": "ServiceAccount", "name": "v-layer4-lb",
                           "namespace": VARIANTS_NS}])
        # The helm test pod (rendered by `helm template`, created by `helm test`).
        test = o[("Pod", "v-layer4-lb-test")]
        self.assertEqual(test["metadata"]["annotations"]["helm.sh/hook"], "test")
        self.assertTrue(test["spec"]["hostNetwork"])
        self.assertIn("http://$HOST_IP:9102/readyz", test["spec"]["containers"][0]["command"][2])

    def test_2_monitoring(self):
        o = self.objs["monitoring"]
        sm = o[("ServiceMonitor", "v-layer4-lb")]
        self.assertEqual(sm["metadata"]["labels"]["release"], "prom")
        self.assertEqual([e["port"] for e in sm["spec"]["endpoints"]],
                         ["http-metrics", "dp-metrics"])
        svc = o[("Service", "v-layer4-lb-metrics")]
        self.assertEqual(svc["spec"]["clusterIP"], "None")
        self.assertEqual({p["name"]: p["port"] for p in svc["spec"]["ports"]},
                         {"http-metrics": 9102, "dp-metrics": 9101})
        # By number: the containers declare no port (the handover's surge pod).
        self.assertEqual({p["name"]: p["targetPort"] for p in svc["spec"]["ports"]},
                         {"http-metrics": 9102, "dp-metrics": 9101})
        pm = o[("PodMonitor", "v-layer4-lb")]
        eps = pm["spec"]["podMetricsEndpoints"]
        self.assertEqual([(e["relabelings"][0]["regex"], e["relabelings"][1]["replacement"],
                           e["relabelings"][2]["replacement"]) for e in eps],
                         [("controller", "$1:9102", "http-metrics"),
                          ("dataplane", "$1:9101", "dp-metrics")])
        self.assertEqual(eps[0]["relabelings"][1]["targetLabel"], "__address__")
        self.assertEqual(eps[0]["relabelings"][1]["sourceLabels"], ["__meta_kubernetes_pod_ip"])
        ds = self.ds("monitoring")
        self.assertNotIn("ports", container(ds, "dataplane"))
        self.assertIn('metrics: "0.0.0.0:9101"', lb_yaml(o, "v-layer4-lb"))
        # Without the handover: named host ports, a PodMonitor by port name, no surge.
        o = self.objs["no-handover"]
        ds = self.ds("no-handover")
        self.assertEqual(ds["spec"]["updateStrategy"]["rollingUpdate"],
                         {"maxUnavailable": 1, "maxSurge": 0})
        self.assertEqual(container(ds, "dataplane")["ports"],
                         [{"name": "dp-metrics", "containerPort": 9101, "protocol": "TCP"}])
        self.assertEqual(container(ds, "controller")["ports"],
                         [{"name": "http-metrics", "containerPort": 9102, "protocol": "TCP"}])
        self.assertEqual([e["port"] for e in o[("PodMonitor", "v-layer4-lb")]["spec"]
                          ["podMetricsEndpoints"]], ["http-metrics", "dp-metrics"])
        self.assertEqual(container(ds, "dataplane")["args"],
                         ["--config", "/etc/layer4-lb/lb.yaml"])
        self.assertNotIn("handover", lb_yaml(o, "v-layer4-lb"))
        self.assertEqual([c["name"] for c in ds["spec"]["template"]["spec"]["initContainers"]],
                         ["binder", "seccomp-profile"])

    def test_3_reuseport_overlap(self):
        """handover.method reuseport: the surge rollout with no node folder; the dataplane and
        the binder join the old pod's listeners; the sysctl it needs is in the defaults."""
        o = self.objs["reuseport"]
        ds = self.ds("reuseport")
        self.assertEqual(ds["spec"]["updateStrategy"]["rollingUpdate"],
                         {"maxUnavailable": 0, "maxSurge": 1})
        self.assertEqual(container(ds, "dataplane")["args"],
                         ["--config", "/etc/layer4-lb/lb.yaml", "--reuseport-overlap"])
        self.assertEqual(container(ds, "binder", init=True)["command"][-1], "--reuseport-overlap")
        for c in ("dataplane", "controller"):
            self.assertNotIn("ports", container(ds, c))
        spec = ds["spec"]["template"]["spec"]
        self.assertEqual([v["name"] for v in spec["volumes"] if "hostPath" in v],
                         ["host-seccomp"])   # no handover folder
        self.assertEqual([c["name"] for c in spec["initContainers"]],
                         ["binder", "seccomp-profile", "sysctls"])
        self.assertEqual(container(ds, "sysctls", init=True)["command"][-1],
                         "net.ipv4.tcp_migrate_req=1")
        # Ready once its controller has applied (it starts empty).
        self.assertEqual(container(ds, "dataplane")["readinessProbe"]["exec"]["command"][-1],
                         "applied")
        self.assertEqual(container(self.ds("default"), "dataplane")["readinessProbe"]["exec"]
                         ["command"][-1], "ping")
        self.assertNotIn("handover", lb_yaml(o, "v-layer4-lb"))
        # Without the sysctls container, NOTES tells the operator what the nodes need.
        for extra, told in (([], True), (["--set", "sysctls.enabled=true"], False)):
            out = helm.run("install", "--dry-run=client", "r", CHART, "--namespace", NS,
                           "--set", "dataplane.handover.method=reuseport", *extra).stdout
            self.assertEqual("set net.ipv4.tcp_migrate_req=1 on every node" in out, told, extra)

    def test_3_sysctls(self):
        init = container(self.ds("sysctls"), "sysctls", init=True)
        self.assertEqual(init["image"], "busybox:1.36")
        self.assertTrue(init["securityContext"]["privileged"])
        self.assertEqual(init["command"], [
            "sysctl", "-w", "fs.nr_open=1048576", "net.core.netdev_max_backlog=65536",
            "net.core.somaxconn=65535", "net.ipv4.ip_local_port_range=32768 65535",
            "net.ipv4.ip_unprivileged_port_start=80", "net.ipv4.tcp_max_syn_backlog=65535",
            "net.ipv4.tcp_tw_reuse=1"])
        # Limits equal requests: the pod can stay in the Guaranteed QoS class.
        self.assertEqual(init["resources"]["requests"], init["resources"]["limits"])
        # The containers are not changed by it.
        self.assertTrue(container(self.ds("sysctls"), "dataplane")["securityContext"]
                        ["runAsNonRoot"])

    def test_4_image(self):
        ds = self.ds("image")
        for n in ("dataplane", "controller"):
            c = container(ds, n)
            self.assertEqual(c["image"], "registry.example.com/net/layer4-lb:0.1.0-rc1")
            self.assertEqual(c["imagePullPolicy"], "Always")
        self.assertEqual(ds["spec"]["template"]["spec"]["imagePullSecrets"], [{"name": "regcred"}])

    def test_5_placement(self):
        for obj in (self.ds("placement")["spec"]["template"]["spec"],
                    self.objs["placement"][("Pod", "v-layer4-lb-test")]["spec"]):
            self.assertEqual(obj["nodeSelector"], {"kubernetes.io/os": "linux",
                                                   "node-role.kubernetes.io/edge": ""})
            # (the API server adds not-ready/unreachable tolerations to the Pod: [0] is ours)
            self.assertEqual(obj["tolerations"][0], {"key": "dedicated", "operator": "Equal",
                                                     "value": "lb", "effect": "NoSchedule"})
            self.assertEqual(obj["priorityClassName"], "system-node-critical")
            term = obj["affinity"]["nodeAffinity"][
                "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
            self.assertEqual(term["matchExpressions"][0],
                             {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]})

    def test_6_low_ports(self):
        """Ports below 1024 by the binder sidecar: root with NET_BIND_SERVICE alone; the
        dataplane and the controller stay non-root with no capability."""
        ds = self.ds("default")
        pod = ds["spec"]["template"]["spec"]
        binder = container(ds, "binder", init=True)
        self.assertEqual(pod["initContainers"][0]["name"], "binder")   # started first
        self.assertEqual(binder["restartPolicy"], "Always")             # a sidecar
        self.assertEqual(binder["command"], ["layer4-lb", "binder", "--socket",
                                             "/run/layer4-lb/binder.sock", "--uid", "65532",
                                             "--gid", "65532"])
        self.assertEqual(binder["securityContext"], {
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "runAsNonRoot": False, "runAsUser": 0, "runAsGroup": 0,
            "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
            "seccompProfile": {"type": "RuntimeDefault"}})
        self.assertEqual(binder["volumeMounts"], [{"name": "run",
                                                   "mountPath": "/run/layer4-lb"}])
        self.assertIn("binder_socket: /run/layer4-lb/binder.sock\n",
                      lb_yaml(self.objs["default"], "v-layer4-lb"))
        for c in (container(ds, "dataplane"), container(ds, "controller")):
            self.assertEqual(c["securityContext"]["capabilities"], {"drop": ["ALL"]})
            self.assertEqual(c["securityContext"]["runAsUser"], 65532)
            self.assertIs(c["securityContext"]["runAsNonRoot"], True)
        # Off: no binder, nothing about it in the configuration.
        off = self.ds("lowports-off")
        self.assertNotIn("binder", [c["name"] for c in
                                    off["spec"]["template"]["spec"]["initContainers"]])
        self.assertNotIn("binder_socket", lb_yaml(self.objs["lowports-off"], "v-layer4-lb"))

    def test_7_acceptors(self):
        env = env_of(container(self.ds("acceptors-limit"), "dataplane"))
        self.assertEqual(env["NUM_ACCEPTORS"]["valueFrom"]["resourceFieldRef"],
                         {"containerName": "dataplane", "resource": "limits.cpu", "divisor": "1"})
        dp = container(self.ds("acceptors-4"), "dataplane")
        self.assertEqual(env_of(dp)["NUM_ACCEPTORS"]["value"], "4")
        self.assertEqual(env_of(dp)["LOG_LEVEL"]["value"], "warn")
        self.assertEqual(env_of(container(self.ds("acceptors-4"), "controller"))
                         ["LOG_LEVEL"]["value"], "debug")
        self.assertEqual(lb_yaml(self.objs["acceptors-4"], "v-layer4-lb"),
                         "control_socket: /run/layer4-lb/control.sock\n"
                         "handover_socket: " + HANDOVER + "\n"
                         "binder_socket: /run/layer4-lb/binder.sock\nio_engine: epoll\n"
                         "drain_timeout_ms: 30000\nmetrics: \"127.0.0.1:9101\"\n"
                         "buffer_size: 65536\nbuffer_count: 1024\n")

    def test_8_loopback_http(self):
        ct = container(self.ds("loopback-http"), "controller")
        self.assertIn("--http-address=127.0.0.1:9102", ct["args"])
        self.assertNotIn("ports", ct)
        self.assertEqual(ct["readinessProbe"]["httpGet"]["host"], "127.0.0.1")
        script = self.objs["loopback-http"][("Pod", "v-layer4-lb-test")]["spec"][
            "containers"][0]
        self.assertIn("http://127.0.0.1:9102/readyz", script["command"][2])
        self.assertEqual(env_of(script)["PORTS"]["value"], "8080")

    def test_10_runtime_default_seccomp(self):
        """RuntimeDefault (epoll where the runtime refuses io_uring): no profile installed."""
        ds = self.ds("runtime-default")
        pod = ds["spec"]["template"]["spec"]
        self.assertEqual([c["name"] for c in pod["initContainers"]], ["binder", "handover-dir"])
        self.assertNotIn("host-seccomp", [v["name"] for v in pod["volumes"]])
        self.assertEqual(container(ds, "dataplane")["securityContext"]["seccompProfile"],
                         {"type": "RuntimeDefault"})
        self.assertNotIn(("ConfigMap", "v-layer4-lb-seccomp"), self.objs["runtime-default"])

    def test_9_drain_and_names(self):
        o = self.objs["drain"]
        ds = self.ds("drain")
        pod = ds["spec"]["template"]["spec"]
        self.assertEqual(pod["terminationGracePeriodSeconds"], 0 + 121 + 5)
        self.assertNotIn("lifecycle", container(ds, "dataplane"))
        self.assertEqual(ds["spec"]["updateStrategy"], {"type": "OnDelete"})
        self.assertEqual(pod["serviceAccountName"], "lb-sa")
        self.assertIn("--lease-name=lb-lease", container(ds, "controller")["args"])
        self.assertEqual(o[("Role", "v-layer4-lb-controller")]["rules"][1]["resourceNames"],
                         ["lb-lease"])
        self.assertEqual(o[("ClusterRoleBinding", "v-layer4-lb-controller")]["subjects"][0]
                         ["name"], "lb-sa")


# -- T4: helm install ------------------------------------------------------------------------------

BROKEN = [
    # (what is wrong, spec, what the API server says)
    ("port 0", {"listeners": [{"name": "a", "port": 0,
                               "backend": {"serviceRef": {"name": "web", "port": "http"}}}]},
     "spec.listeners[0].port: Invalid value: 0: spec.listeners[0].port in body should be "
     "greater than or equal to 1"),
    ("SCTP", {"listeners": [{"name": "a", "port": 53, "protocol": "SCTP",
                             "backend": {"serviceRef": {"name": "dns", "port": 53}}}]},
     'spec.listeners[0].protocol: Unsupported value: "SCTP": supported values: "TCP", "UDP"'),
    ("udp settings on a TCP listener", {"listeners": [
        {"name": "a", "port": 53, "udp": {"responses": 1},
         "backend": {"serviceRef": {"name": "dns", "port": 53}}}]},
     "spec.listeners[0].udp: Forbidden: udp settings are only for a UDP listener: set protocol "
     "UDP, or remove udp"),
    ("UDP health checks without a TCP port", {"healthCheck": {}, "listeners": [
        {"name": "a", "port": 53, "protocol": "UDP",
         "backend": {"serviceRef": {"name": "dns", "port": 53}}}]},
     "spec.healthCheck.port: Required value: healthCheck.port is required when a listener is "
     "UDP: a health check is a TCP connect"),
    ("UDP maxFlows 0", {"listeners": [
        {"name": "a", "port": 53, "protocol": "UDP", "udp": {"maxFlows": 0},
         "backend": {"serviceRef": {"name": "dns", "port": 53}}}]},
     "spec.listeners[0].udp.maxFlows: Invalid value: 0: spec.listeners[0].udp.maxFlows in body "
     "should be greater than or equal to 1"),
    ("one port twice", {"listeners": [
        {"name": "a", "port": 80, "backend": {"serviceRef": {"name": "web", "port": 80}}},
        {"name": "b", "port": 80, "backend": {"serviceRef": {"name": "web", "port": 81}}}]},
     "spec.listeners: Invalid value: listeners must differ in port or protocol: two listeners "
     "of one LoadBalancer cannot both take the same port with the same protocol"),
    ("unknown algorithm", {"algorithm": "Random", "listeners": [
        {"name": "a", "port": 80, "backend": {"serviceRef": {"name": "web", "port": 80}}}]},
     'spec.algorithm: Unsupported value: "Random": supported values: "RoundRobin", '
     '"LeastConnections", "RandomTwo", "Maglev"'),
    ("misspelt field", {"algoritm": "Maglev", "listeners": [
        {"name": "a", "port": 80, "backend": {"serviceRef": {"name": "web", "port": 80}}}]},
     'strict decoding error: unknown field "spec.algoritm"'),
    ("no listeners", {"listeners": []},
     "spec.listeners: Invalid value: 0: spec.listeners in body should have at least 1 items"),
    ("port as a quoted number", {"listeners": [
        {"name": "a", "port": 80, "backend": {"serviceRef": {"name": "web", "port": "8080"}}}]},
     "serviceRef.port must be a Service port number (1..65535) or a Service port name"),
]


class T4Install(unittest.TestCase):
    install = None

    @classmethod
    def setUpClass(cls):
        # The namespace the docs create: privileged (host network); warn=restricted on top, so
        # the API server says what in the pods the restricted profile would refuse.
        C.kubectl("create", "namespace", NS)
        C.kubectl("label", "namespace", NS, "pod-security.kubernetes.io/enforce=privileged",
                  "pod-security.kubernetes.io/warn=restricted")
        cls.install = helm_c("install", RELEASE, CHART, "--namespace", NS)

    def test_1_every_object_is_created(self):
        self.assertIn("STATUS: deployed", self.install.stdout)
        self.assertIn("kubectl apply -n default -f deploy/examples/basic.yaml",
                      self.install.stdout)  # NOTES.txt
        manifest = helm_c("get", "manifest", RELEASE, "--namespace", NS).stdout
        want = sorted(documents(manifest))
        self.assertEqual(sorted(k for k, _ in want), sorted([
            "ClusterRole", "ClusterRoleBinding", "ConfigMap", "ConfigMap",
            "CustomResourceDefinition", "DaemonSet", "Role", "RoleBinding", "ServiceAccount"]))
        got = json.loads(C.kubectl("get", "-f", "-", "-o", "json", input=manifest))["items"]
        self.assertEqual(sorted((o["kind"], o["metadata"]["name"]) for o in got), want)
        for o in got:
            self.assertEqual(o["metadata"]["annotations"].get("meta.helm.sh/release-name"),
                             RELEASE, o["kind"])
        C.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/" + CRD_NAME)

    def test_2_containers_meet_the_restricted_profile_but_for_host_network(self):
        # The dataplane and the controller do; the pod needs the host's network, the init
        # container that installs the seccomp profile needs root and the kubelet's folder (a
        # hostPath), the one that makes the handover folder (a hostPath) the dataplane's needs
        # root and CAP_CHOWN, and the binder sidecar root (with NET_BIND_SERVICE, which the
        # restricted profile allows).
        warnings = [line for line in self.install.stderr.splitlines() if "PodSecurity" in line]
        self.assertEqual(len(warnings), 1, self.install.stderr)
        self.assertIn('would violate PodSecurity \\"restricted:latest\\": host namespaces '
                      '(hostNetwork=true), unrestricted capabilities (container '
                      '\\"handover-dir\\" must not include \\"CHOWN\\" in '
                      'securityContext.capabilities.add), restricted volume types (volumes '
                      '\\"handover\\", \\"host-seccomp\\" use restricted volume type '
                      '\\"hostPath\\"), runAsNonRoot != true (containers \\"binder\\", '
                      '\\"handover-dir\\", \\"seccomp-profile\\" must not set '
                      'securityContext.runAsNonRoot=false), runAsUser=0 (containers '
                      '\\"binder\\", \\"handover-dir\\", \\"seccomp-profile\\" must not '
                      'set runAsUser=0)"', warnings[0])

    def test_3_the_examples_are_accepted(self):
        files = sorted(glob.glob(os.path.join(REPO, "deploy", "examples", "*.yaml")))
        self.assertGreaterEqual(len(files), 3)
        names = []
        for f in files:
            out = C.kubectl("apply", "-n", EXAMPLES_NS, "-f", f)
            names += re.findall(r"loadbalancer\.layer4lb\.io/(\S+) created", out)
        self.assertEqual(len(names), len(files))
        got = C.kubectl_json("get", "l4lb", "-n", EXAMPLES_NS)["items"]
        self.assertEqual(sorted(o["metadata"]["name"] for o in got), sorted(names))

    def test_4_broken_loadbalancers_are_refused_with_the_schemas_message(self):
        for what, spec, msg in BROKEN:
            with self.subTest(what=what):
                lb = {"apiVersion": "layer4lb.io/v1alpha1", "kind": "LoadBalancer",
                      "metadata": {"name": "broken", "namespace": EXAMPLES_NS}, "spec": spec}
                with self.assertRaises(k8scluster.KubectlError) as e:
                    C.apply(lb)
                self.assertIn(msg, e.exception.stderr)
        self.assertEqual(C.kubectl("get", "l4lb", "broken", "-n", EXAMPLES_NS, check=False), "")


# -- T5: the controller under the chart's ServiceAccount, as the DaemonSet runs it ---------------

class T5Serving(unittest.TestCase):
    ds = None
    dp = None
    ct = None
    http = None

    @classmethod
    def setUpClass(cls):
        cls.ds = C.kubectl_json("get", "daemonset", RELEASE, "-n", NS)
        pod = cls.ds["spec"]["template"]["spec"]
        # What the downward API would give the pod on node-a.
        fields = {"spec.nodeName": NODE, "metadata.name": "layer4-lb-abcde",
                  "metadata.namespace": NS, "status.hostIP": NODE_ADDR}

        def env_for(c):
            env = dict(os.environ)
            for k in ("LOG_LEVEL", "RUST_LOG", "NUM_ACCEPTORS", "KUBECONFIG", "NODE_NAME",
                      "POD_NAME", "POD_NAMESPACE", "LAYER4_LB_SOCKET", "HOST_IP"):
                env.pop(k, None)
            for e in c.get("env", []):
                if "value" in e:
                    env[e["name"]] = e["value"]
                elif "fieldRef" in e.get("valueFrom", {}):
                    env[e["name"]] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
            return env

        cls.dpc, cls.ctc = container(cls.ds, "dataplane"), container(cls.ds, "controller")
        cls.dp_env, cls.ct_env = env_for(cls.dpc), env_for(cls.ctc)
        cls.dp_env["NUM_ACCEPTORS"] = "1"  # 2 cores, shared with the test and the control plane
        cm_name = [v for v in pod["volumes"] if v["name"] == "config"][0]["configMap"]["name"]
        cls.conf = C.kubectl_json("get", "configmap", cm_name, "-n", NS)["data"]["lb.yaml"]
        assert SOCKET in cls.conf and HANDOVER in cls.conf
        # The node directory the pods share (the hostPath), here a folder of ours.
        cls.handover = os.path.join(WORK, "handover", "handover.sock")
        os.makedirs(os.path.dirname(cls.handover), mode=0o700)
        cls.sock, cls.dp = cls.start_dataplane("pod-1")
        cls.ping = [l4lb.LB_BIN if a == "layer4-lb" else cls.sock if a == SOCKET else a
                    for a in cls.dpc["readinessProbe"]["exec"]["command"]]
        wait_for("the dataplane's socket", lambda: subprocess.run(
            cls.ping, env=cls.dp_env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL).returncode == 0)
        cls.ct, cls.http = cls.start_controller("pod-1", cls.sock)
        # The example's pods: two backends on the pods' addresses.
        for i in (1, 2):
            ip = "198.18.0.%d" % (10 + i)
            k8scluster.add_address(ip)
            BACKENDS.append(lbtest.Backend("web-%d" % i, host=ip, port=8080))
            C.run_pod(EXAMPLES_NS, "web-%d" % i, {"app": "web"}, ip, NODE)

    @classmethod
    def start_dataplane(cls, tag):
        """The dataplane of one pod: the ConfigMap's lb.yaml and the container's args, with
        the pod's own folder for its socket (its emptyDir) and the shared handover folder."""
        own = os.path.join(WORK, tag)
        os.makedirs(own)
        sock = os.path.join(own, "control.sock")
        conf_path = os.path.join(own, "lb.yaml")
        with open(conf_path, "w") as f:
            f.write(cls.conf.replace(SOCKET, sock).replace(HANDOVER, cls.handover))
        argv = [l4lb.LB_BIN] + [expand(a, cls.dp_env) for a in cls.dpc["args"]]
        argv[argv.index("/etc/layer4-lb/lb.yaml")] = conf_path
        argv = [cls.handover if a == HANDOVER else a for a in argv]
        dp = l4lb.Proc("dataplane-" + tag, argv, os.path.join(WORK, "dataplane-%s.log" % tag),
                       env=cls.dp_env).start()
        PROCS.append(dp)
        return sock, dp

    @classmethod
    def start_controller(cls, tag, sock, pod_name=None):
        """The controller of one pod: the DaemonSet's args ($(VAR) expanded), its socket
        moved, and a token's kubeconfig of the chart's ServiceAccount (no other RBAC is
        applied) for the projected one."""
        kc = C.service_account_kubeconfig(NS, cls.ds["spec"]["template"]["spec"]
                                          ["serviceAccountName"])
        env = dict(cls.ct_env, POD_NAME=pod_name or cls.ct_env["POD_NAME"])
        args = [expand(a, env) for a in cls.ctc["args"]]
        args = ["--socket=" + sock if a.startswith("--socket=") else a for a in args]
        # One network namespace is node-a and its pods alike here: a listener on 0.0.0.0:8080
        # would collide with the pods' servers on 198.18.0.1x:8080, so it binds node-a's address.
        assert "--listen-address=0.0.0.0" in args
        args[args.index("--listen-address=0.0.0.0")] = "--listen-address=" + NODE_ADDR
        http = [a for a in args if a.startswith("--http-address=")][0].split("=", 1)[1]
        ct = l4lb.Proc("controller-" + tag, [l4lb.CTRL_BIN, "--kubeconfig", kc] + args,
                       os.path.join(WORK, "controller-%s.log" % tag), env=env).start()
        PROCS.append(ct)
        return ct, http

    def probe(self, name):
        h = container(self.ds, "controller")[name]["httpGet"]
        port = h["port"]
        return http_get("http://%s:%d%s" % (self.http.rsplit(":", 1)[0], port, h["path"]))

    def test_1_the_example_serves_its_pods(self):
        self.assertEqual(self.http, NODE_ADDR + ":9102")
        wait_for("web Ready=True", lambda: cond_is(EXAMPLES_NS, "web", "Ready", "True"))
        for t in ("Accepted", "ResolvedRefs", "Programmed"):
            self.assertTrue(cond_is(EXAMPLES_NS, "web", t, "True"), t)
        seen = wait_for("both pods answer on node-a:8080", lambda: (
            lambda s: s if s == {"web-1", "web-2"} else None)(
            {lbtest.who((NODE_ADDR, 8080), timeout=10) for _ in range(12)}))
        self.assertEqual(seen, {"web-1", "web-2"})
        row = C.kubectl("get", "l4lb", "web", "-n", EXAMPLES_NS).splitlines()[1]
        self.assertIn("8080/TCP", row)
        self.assertIn(NODE_ADDR, row)
        # The status summary is the Lease holder's: the Role granted the Lease it was told to use.
        lease = C.kubectl_json("get", "lease", "layer4-lb-controller", "-n", NS)
        self.assertEqual(lease["spec"]["holderIdentity"], "layer4-lb-abcde")

    def test_2_events_and_other_examples(self):
        # multi-listener: served with no endpoints yet; node-selector: no node selected.
        wait_for("postgres Programmed",
                 lambda: cond_is(EXAMPLES_NS, "postgres", "Programmed", "True"))
        self.assertTrue(cond_is(EXAMPLES_NS, "postgres", "Ready", "False", "NoReadyEndpoints"))
        wait_for("mqtt NoNodes", lambda: cond_is(EXAMPLES_NS, "mqtt", "Programmed", "False",
                                                 "NoNodes"))
        # A Service that does not exist: an Event (events.k8s.io create, granted by the chart).
        C.apply({"apiVersion": "layer4lb.io/v1alpha1", "kind": "LoadBalancer",
                 "metadata": {"name": "orphan", "namespace": EXAMPLES_NS},
                 "spec": {"listeners": [{"name": "a", "port": 18000, "backend": {
                     "serviceRef": {"name": "nothing", "port": 80}}}]}})
        ev = wait_for("a ServiceNotFound Event", lambda: [
            e for e in C.kubectl_json("get", "events.events.k8s.io", "-n", EXAMPLES_NS)["items"]
            if e.get("reason") == "ServiceNotFound"])
        self.assertEqual(ev[0]["regarding"]["name"], "orphan")
        errors = self.ct_metric("layer4lb_controller_status_write_errors_total")
        self.assertEqual(errors, 0, "status writes failed: a permission missing?")

    def ct_metric(self, name):
        return self.ct_metric_of(self.http, name)

    def test_3_the_probes_answer(self):
        # The controller's probes, as the kubelet sends them (to the pod IP, the node's).
        self.assertEqual(self.probe("readinessProbe")[0], 200)
        self.assertEqual(self.probe("livenessProbe")[0], 200)
        # The dataplane's: the exec command of each, run as the kubelet would in the container.
        dpc = container(self.ds, "dataplane")
        for p in ("readinessProbe", "livenessProbe"):
            argv = [l4lb.LB_BIN if a == "layer4-lb" else self.sock if a == SOCKET else a
                    for a in dpc[p]["exec"]["command"]]
            r = subprocess.run(argv, env=self.dp_env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
            self.assertEqual(r.returncode, 0, "dataplane %s: %s" % (p, r.stderr))
        self.assertEqual(self.ct_metric("layer4lb_controller_dataplane_connected"), 1)

    def test_4_helm_test(self):
        """`helm test` creates its pod; the test then does what a kubelet would: runs the pod's
        script on the node (here: with the pod's environment, on node-a's network) and writes
        the pod's phase from its exit status, which helm waits for."""
        name = RELEASE + "-test"
        p = subprocess.Popen([helm.path(), "test", RELEASE, "--namespace", NS, "--timeout",
                              "60s", "--kubeconfig", C.admin_kubeconfig],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            pod = wait_for("the helm test pod", lambda: C.kubectl_json(
                "get", "pod", name, "-n", NS))
            c = pod["spec"]["containers"][0]
            self.assertEqual(c["command"][:2], ["sh", "-c"])
            env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOST_IP": NODE_ADDR}
            for e in c["env"]:
                if "value" in e:
                    env[e["name"]] = e["value"]
            r = subprocess.run(["sh", "-c", c["command"][2]], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=60)
            sys.stderr.write("  helm test pod's script: exit %d\n%s" % (r.returncode, r.stdout))
            self.assertEqual(r.returncode, 0, r.stdout)
            self.assertIn("layer4-lb on this node is ready", r.stdout)
            now = k8scluster.now_rfc3339()
            C.kubectl("patch", "pod", name, "-n", NS, "--subresource=status", "--type=merge",
                      "-p", json.dumps({"status": {
                          "phase": "Succeeded" if r.returncode == 0 else "Failed",
                          "containerStatuses": [{
                              "name": c["name"], "ready": False, "restartCount": 0,
                              "image": c["image"], "imageID": "",
                              "state": {"terminated": {"exitCode": r.returncode,
                                                       "reason": "Completed", "startedAt": now,
                                                       "finishedAt": now}}}]}}))
            out, err = p.communicate(timeout=90)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.assertEqual(p.returncode, 0, err)
        self.assertRegex(out, r"TEST SUITE:\s+%s\n" % name)
        self.assertRegex(out, r"Phase:\s+Succeeded")


    def test_5_an_upgrade_hands_the_node_over(self):
        """The DaemonSet's rollout, as maxSurge 1 runs it on node-a: the new pod's containers
        start beside the old pod's (their args and config as rendered; each pod its own socket
        folder, the handover folder shared), its dataplane takes the sockets over and the old
        one stays until its pod is deleted; clients of the example see no failure."""
        stop = threading.Event()
        seen, failures = set(), []

        def clients():
            while not stop.is_set():
                try:
                    seen.add(lbtest.who((NODE_ADDR, 8080), timeout=5))
                except (OSError, AssertionError) as e:
                    failures.append(repr(e))
                time.sleep(0.01)
        t = threading.Thread(target=clients, daemon=True)
        t.start()
        try:
            wait_for("clients served", lambda: len(seen) == 2)
            sock2, dp2 = self.start_dataplane("pod-2")
            wait_for("the new pod's dataplane took over", lambda: re.search(
                r"takeover: pid \d+ stops accepting and drains; we serve", dp2.text()))
            wait_for("the old pod's dataplane waits", lambda: "handed over and drained: "
                     "waiting for SIGTERM" in self.dp.text())
            self.assertTrue(self.dp.alive(), "the old dataplane exited: the kubelet would "
                            "restart it in the old pod")
            ct2, _ = self.start_controller("pod-2", sock2, pod_name="layer4-lb-fghij")
            # The new pod's controller programs the new dataplane (both controllers share
            # the HTTP port now); its readiness probe answers through its own socket.
            self.assertRegex(dp2.text(), r"takeover: received \d+ sockets \(\d+ listener "
                             r"addresses\) and its last apply from pid")
            wait_for("an apply from the new controller", lambda: "apply version" in
                     dp2.text().split("stops accepting and drains; we serve", 1)[1])
            ping2 = [sock2 if a == self.sock else a for a in self.ping]
            self.assertEqual(subprocess.run(ping2, env=self.dp_env).returncode, 0)
            # The old pod is deleted: its dataplane ends at once, its controller too.
            self.assertEqual(self.dp.stop(timeout=10), 0)
            self.ct.stop()
            time.sleep(0.5)
            wait_for("clients served by the new pod", lambda: len(seen) == 2)
        finally:
            stop.set()
            t.join(10)
        self.assertEqual(failures, [], "clients failed during the upgrade")
        wait_for("web still Ready", lambda: cond_is(EXAMPLES_NS, "web", "Ready", "True"))
        self.assertEqual(self.ct_metric_of(self.http, "layer4lb_controller_dataplane_connected"),
                         1)

    @staticmethod
    def ct_metric_of(http, name):
        _, text = http_get("http://%s/metrics" % http)
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None


# -- T6: helm upgrade with a changed CRD -------------------------------------------------------

class T6Upgrade(unittest.TestCase):

    def test_1_upgrade_adds_a_crd_field(self):
        chart = os.path.join(WORK, "chart-v2")
        shutil.copytree(CHART, chart)
        crd = os.path.join(chart, "files", "crds", "layer4lb.io_loadbalancers.yaml")
        with open(crd) as f:
            text = f.read()
        # A new optional field, spec.e2eNote, first under spec's properties.
        anchor = "            required: [listeners]\n"
        i = text.index("            properties:\n", text.index(anchor)) + \
            len("            properties:\n")
        text = text[:i] + ("              e2eNote:\n                type: string\n"
                           "                description: A note added by the upgrade test.\n") + \
            text[i:]
        with open(crd, "w") as f:
            f.write(text)
        lb = {"apiVersion": "layer4lb.io/v1alpha1", "kind": "LoadBalancer",
              "metadata": {"name": "noted", "namespace": EXAMPLES_NS},
              "spec": {"e2eNote": "hello", "listeners": [{"name": "a", "port": 18001, "backend": {
                  "serviceRef": {"name": "web", "port": "http"}}}]}}
        with self.assertRaises(k8scluster.KubectlError) as e:
            C.apply(lb)
        self.assertIn('unknown field "spec.e2eNote"', e.exception.stderr)
        r = helm_c("upgrade", RELEASE, chart, "--namespace", NS)
        self.assertIn("STATUS: deployed", r.stdout)
        self.assertIn("REVISION: 2", r.stdout)
        got = C.kubectl("get", "crd", CRD_NAME, "-o", "jsonpath={.spec.versions[0].schema."
                        "openAPIV3Schema.properties.spec.properties.e2eNote.type}")
        self.assertEqual(got, "string")
        wait_for("kubectl explain shows the field", lambda: "A note added by the upgrade test" in
                 C.kubectl("explain", "loadbalancer.spec.e2eNote", check=False))
        C.apply(lb)
        self.assertEqual(C.kubectl("get", "l4lb", "noted", "-n", EXAMPLES_NS, "-o",
                                   "jsonpath={.spec.e2eNote}"), "hello")
        # The controller serves it too (one more listener, same Service).
        wait_for("noted serves", lambda: cond_is(EXAMPLES_NS, "noted", "Ready", "True"))
        self.assertIn(lbtest.who((NODE_ADDR, 18001), timeout=10), {"web-1", "web-2"})
        C.kubectl("delete", "l4lb", "noted", "-n", EXAMPLES_NS)
        # And back: the chart's own CRD again.
        r = helm_c("upgrade", RELEASE, CHART, "--namespace", NS)
        self.assertIn("REVISION: 3", r.stdout)
        self.assertEqual(C.kubectl("get", "crd", CRD_NAME, "-o", "jsonpath={.spec.versions[0]."
                                   "schema.openAPIV3Schema.properties.spec.properties.e2eNote}"),
                         "")


# -- T7: helm uninstall ----------------------------------------------------------------------------

class T7Uninstall(unittest.TestCase):

    def test_1_uninstall_removes_what_it_installed_and_keeps_the_crd(self):
        manifest = helm_c("get", "manifest", RELEASE, "--namespace", NS).stdout
        # The controller's token dies with its ServiceAccount: stop it first, as the pod would go.
        for p in PROCS:
            if p.name == "controller":
                p.stop()
        r = helm_c("uninstall", RELEASE, "--namespace", NS)
        out = r.stdout + r.stderr
        self.assertIn('release "%s" uninstalled' % RELEASE, out)
        self.assertIn("These resources were kept due to the resource policy:", out)
        self.assertIn("[CustomResourceDefinition] %s" % CRD_NAME, out)
        for kind, name in documents(manifest):
            if kind == "CustomResourceDefinition":
                continue
            with self.subTest(kind=kind):
                r = C.kubectl("get", "-f", "-", "--ignore-not-found", "-o", "name",
                              input=self._only(manifest, kind, name), check=False)
                self.assertEqual(r.strip(), "", "%s/%s still there" % (kind, name))
        # Kept: the CRD, so every LoadBalancer; and the Lease the controller made at run time.
        C.kubectl("get", "crd", CRD_NAME)
        self.assertEqual(sorted(o["metadata"]["name"] for o in C.kubectl_json(
            "get", "l4lb", "-n", EXAMPLES_NS)["items"]),
            ["dns", "mqtt", "orphan", "postgres", "web"])
        C.kubectl("get", "lease", "layer4-lb-controller", "-n", NS)
        self.assertEqual(helm_c("list", "--namespace", NS, "-q").stdout.strip(), "")

    @staticmethod
    def _only(manifest, kind, name):
        for doc in re.split(r"(?m)^---\s*$", manifest):
            if documents(doc) == [(kind, name)]:
                return doc
        raise AssertionError("%s/%s not in the manifest" % (kind, name))

    def test_2_install_again_adopts_the_kept_crd(self):
        r = helm_c("install", RELEASE, CHART, "--namespace", NS)
        self.assertIn("STATUS: deployed", r.stdout)
        crd = C.kubectl_json("get", "crd", CRD_NAME)
        self.assertEqual(crd["metadata"]["annotations"]["meta.helm.sh/release-name"], RELEASE)
        r = helm_c("uninstall", RELEASE, "--namespace", NS)
        self.assertIn("[CustomResourceDefinition] %s" % CRD_NAME, r.stdout + r.stderr)

    def test_3_deleting_the_crd_deletes_every_loadbalancer(self):
        # What docs/install.md says to run to remove the rest.
        C.kubectl("delete", "crd", CRD_NAME, timeout=120)
        self.assertEqual(C.kubectl("get", "crd", CRD_NAME, "--ignore-not-found"), "")
        status, _, _ = C.request("GET", "/apis/layer4lb.io/v1alpha1/namespaces/%s/loadbalancers"
                                 % EXAMPLES_NS)
        self.assertEqual(status, 404)


# -- T8: deploy/ for kubectl -------------------------------------------------------------------

class T8PlainKubectl(unittest.TestCase):

    def test_1_deploy_matches_a_fresh_render(self):
        env = dict(os.environ, HELM=helm.path())
        r = subprocess.run(["bash", os.path.join(REPO, "scripts", "render-deploy.sh"), "--check"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_2_kubectl_apply_of_deploy(self):
        path = os.path.join(REPO, "deploy", "layer4-lb.yaml")
        with open(path) as f:
            text = f.read()
        want = documents(text)
        self.assertEqual(want[0], ("Namespace", NS))
        out = C.kubectl("apply", "-f", path)
        for kind, name in want:
            # (the namespace is there already: T4 created it, helm uninstall leaves it)
            self.assertRegex(out, r"(?m)^%s[./]\S*%s (created|configured)$" %
                             (re.escape(kind.lower()), re.escape(name)))
        got = json.loads(C.kubectl("get", "-f", path, "-o", "json"))["items"]
        self.assertEqual(sorted((o["kind"], o["metadata"]["name"]) for o in got), sorted(want))
        ns = C.kubectl_json("get", "namespace", NS)
        self.assertEqual(ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
                         "privileged")
        C.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/" + CRD_NAME)
        # The DaemonSet exists; no DaemonSet controller runs here, so the rollout never starts.
        r = C.kubectl("rollout", "status", "daemonset/layer4-lb", "-n", NS, "--timeout=2s",
                      check=False)
        self.assertIn("Waiting for daemon set spec update to be observed", r)
        # Removing it but the CRD (docs/install.md): the namespace and the cluster-wide RBAC.
        C.kubectl("apply", "-n", EXAMPLES_NS, "-f",
                  os.path.join(REPO, "deploy", "examples", "basic.yaml"))
        C.kubectl("delete", "namespace", NS, timeout=120)
        C.kubectl("delete", "clusterrole,clusterrolebinding", "layer4-lb-controller")
        C.kubectl("get", "crd", CRD_NAME)
        self.assertEqual([o["metadata"]["name"] for o in C.kubectl_json(
            "get", "l4lb", "-n", EXAMPLES_NS)["items"]], ["web"])
        # Removing all of it, the CRD and so every LoadBalancer too.
        C.kubectl("apply", "-f", path)
        out = C.kubectl("delete", "-f", path, timeout=120)
        self.assertIn('customresourcedefinition.apiextensions.k8s.io "%s" deleted' % CRD_NAME, out)
        self.assertEqual(C.kubectl("get", "crd", CRD_NAME, "--ignore-not-found"), "")


class T9CrdFromKubectl(unittest.TestCase):

    def test_1_a_crd_applied_with_kubectl_is_taken_over(self):
        # The CRD as docs/crd.md and the README install it, before any chart.
        C.kubectl("apply", "-f", os.path.join(REPO, "crds"))
        C.kubectl("create", "namespace", NS)
        C.kubectl("label", "namespace", NS, "pod-security.kubernetes.io/enforce=privileged")
        r = helm_c("install", RELEASE, CHART, "--namespace", NS, check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('CustomResourceDefinition "%s" in namespace "" exists and cannot be '
                      'imported into the current release: invalid ownership metadata' % CRD_NAME,
                      r.stderr)
        r = helm_c("install", RELEASE, CHART, "--namespace", NS, "--take-ownership")
        self.assertIn("STATUS: deployed", r.stdout)
        crd = C.kubectl_json("get", "crd", CRD_NAME)
        self.assertEqual(crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep")
        # Or leave it to kubectl: crds.install=false, and the release does not touch it.
        helm_c("uninstall", RELEASE, "--namespace", NS)
        r = helm_c("install", RELEASE, CHART, "--namespace", NS, "--set", "crds.install=false")
        self.assertNotIn("CustomResourceDefinition",
                         helm_c("get", "manifest", RELEASE, "--namespace", NS).stdout)
        C.kubectl("apply", "-f", os.path.join(REPO, "crds"))
        helm_c("upgrade", RELEASE, CHART, "--namespace", NS, "--set", "crds.install=false")
        helm_c("uninstall", RELEASE, "--namespace", NS)
        C.kubectl("get", "crd", CRD_NAME)


if __name__ == "__main__":
    l4lb.main(lambda: WORK)
