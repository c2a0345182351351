"""k8scluster - a real Kubernetes control plane for the end-to-end tests (stdlib only).

etcd (tests/k8s/etcd, embedded single member), kube-apiserver and kube-controller-manager, built
from the Go module proxy by tests/k8s/build.sh, run as plain processes inside a network namespace
that the test creates, on loopback. There is no kubelet: a pod "runs" when the test creates it
bound to a node (spec.nodeName) and writes its status (phase, conditions, podIP) through the
status subresource; the EndpointSlice controller then writes EndpointSlices as in a cluster.

Usage, at the top of a test script:

    import k8scluster
    k8scluster.reexec_in_netns()          # builds the binaries, then re-runs us in a new netns
    ...
    with k8scluster.Cluster() as c:
        c.create_node("node-a", "198.18.0.2")
        c.run_pod("default", "web-1", {"app": "web"}, "198.18.0.11", "node-a")
        print(c.kubectl("get", "endpointslices", "-o", "yaml"))

EndpointSlice validation refuses 127.0.0.0/8, so every address the tests give pods, nodes and
the API server is in 198.18.0.0/24 and is added to the namespace's lo (add_address()).
"""

import base64
import datetime
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "integration"))
import lbtest  # noqa: E402  (run_in_netns)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BUILD_SH = os.path.join(REPO, "tests", "k8s", "build.sh")

NETNS_ENV = "L4LB_E2E_NETNS"      # set (to the namespace's name) inside the namespace
BIN_ENV = "LB_K8S_BIN"            # folder with kube-apiserver, kube-controller-manager, kubectl, etcd
SKIP_EXIT = 77                    # the exit status for "skipped" (automake, CTest SKIP_RETURN_CODE)

HANG_GUARD = 60.0                 # seconds any single wait may take before it is a failure

# Addresses inside the namespace.
APISERVER_ADDRESS = "198.18.0.1"
APISERVER_PORT = 6443
ETCD_CLIENT_URL = "http://127.0.0.1:2379"
ETCD_PEER_URL = "http://127.0.0.1:2380"
SERVICE_CIDR = "10.96.0.0/16"     # cluster IPs are allocated from here, never contacted
SERVICE_IP = "10.96.0.1"          # the kubernetes.default Service

# What kube-controller-manager runs: enough for namespaces with their `default` ServiceAccount,
# EndpointSlices (and core/v1 Endpoints) from Services and Pods, and garbage collection. Not
# node-lifecycle: with no kubelet posting heartbeats it would mark the nodes NotReady and evict.
CONTROLLERS = [
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "endpoints-controller",
    "serviceaccount-controller",
    "namespace-controller",
    "garbage-collector-controller",
    "root-ca-certificate-publisher-controller",
]


class ClusterError(Exception):
    pass


class KubectlError(ClusterError):
    def __init__(self, args, returncode, stdout, stderr):
        self.args_ = args
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__("kubectl %s: exit %d: %s" % (" ".join(args), returncode, stderr.strip()))


def log(msg):
    sys.stderr.write("[k8scluster] %s\n" % msg)
    sys.stderr.flush()


def skip(reason):
    """Exits with SKIP_EXIT after saying why, for a machine that cannot run these tests."""
    print("SKIP: %s" % reason, flush=True)
    sys.stderr.flush()
    os._exit(SKIP_EXIT)


def wait_for(what, pred, timeout=HANG_GUARD, interval=0.1):
    """Calls pred() until it returns something true and returns that; a hang guard, not a timing
    assertion: past timeout it raises ClusterError naming what it waited for."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - reported if the wait runs out
            last_exc = e
        if time.monotonic() > deadline:
            extra = " (last error: %s)" % last_exc if last_exc else ""
            raise ClusterError("timed out after %.0fs waiting for %s%s" % (timeout, what, extra))
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# Binaries and the network namespace

def build_binaries():
    """Returns the folder with the four binaries: $LB_K8S_BIN if set, else tests/k8s/build.sh's
    (a no-op when its cache is warm; a cold build takes many minutes)."""
    b = os.environ.get(BIN_ENV)
    if b:
        return b
    if shutil.which("go") is None:
        raise ClusterError("go is not installed: tests/k8s/build.sh needs it to build the control plane")
    r = subprocess.run(["bash", BUILD_SH], stdout=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise ClusterError("tests/k8s/build.sh failed (exit %d)" % r.returncode)
    lines = r.stdout.strip().splitlines()
    if not lines:
        raise ClusterError("tests/k8s/build.sh printed no bin folder")
    os.environ[BIN_ENV] = lines[-1]
    return lines[-1]


def in_netns():
    return bool(os.environ.get(NETNS_ENV))


def _run_quiet(argv):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def reexec_in_netns(build=True):
    """Re-runs this Python command (sys.orig_argv) inside a fresh network namespace and exits
    with its status. Inside the namespace (second call) it returns at once.

    Before creating the namespace it builds the control plane (the namespace has no route out,
    so a cold build could not download modules there) and passes the bin folder on in
    $LB_K8S_BIN. Not root, or no `ip netns`: prints a skip and exits SKIP_EXIT."""
    if in_netns():
        return
    why = lbtest.netns_unavailable()
    if why:
        skip("the end-to-end tests " + why)
    if build:
        try:
            build_binaries()
        except ClusterError as e:
            sys.stderr.write("FAIL: %s\n" % e)
            sys.exit(1)
    try:
        lbtest.run_in_netns("l4lb-e2e", NETNS_ENV)
    except lbtest.NetnsUnavailable as e:
        skip("cannot create a network namespace (%s)" % e)
    except RuntimeError as e:
        raise ClusterError(str(e))


def add_address(addr, prefix=32, dev="lo"):
    """Adds addr/prefix to dev (lo) of the test's namespace; an address already there is fine."""
    if not in_netns():
        raise ClusterError("add_address(%s) outside the test's network namespace" % addr)
    r = _run_quiet(["ip", "addr", "add", "%s/%d" % (addr, prefix), "dev", dev])
    if r.returncode != 0 and "File exists" not in r.stderr and "already assigned" not in r.stderr:
        raise ClusterError("ip addr add %s/%d dev %s: %s" % (addr, prefix, dev, r.stderr.strip()))


def del_address(addr, prefix=32, dev="lo"):
    if not in_netns():
        raise ClusterError("del_address(%s) outside the test's network namespace" % addr)
    _run_quiet(["ip", "addr", "del", "%s/%d" % (addr, prefix), "dev", dev])


# ---------------------------------------------------------------------------------------------
# Certificates (openssl)

def _openssl(*args, cwd):
    r = subprocess.run(["openssl"] + list(args), cwd=cwd, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise ClusterError("openssl %s: %s" % (" ".join(args), r.stderr.strip()))


def make_pki(d):
    """Writes into d: ca.crt/key, apiserver.crt/key (serving, with the SANs clients use),
    admin.crt/key (client, group system:masters), sa.key/sa.pub (service-account tokens)."""
    if shutil.which("openssl") is None:
        raise ClusterError("openssl is not installed")
    os.makedirs(d, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "3650", "-subj", "/CN=layer4-lb-e2e-ca",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature", cwd=d)

    def leaf(name, subj, ext):
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write(ext)
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out",
                 name + ".csr", "-subj", subj, cwd=d)
        _openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", name + ".crt", "-days", "3650", "-sha256",
                 "-extfile", name + ".ext", cwd=d)

    sans = ["IP:127.0.0.1", "IP:" + APISERVER_ADDRESS, "IP:" + SERVICE_IP, "DNS:localhost",
            "DNS:kubernetes", "DNS:kubernetes.default", "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local"]
    leaf("apiserver", "/CN=kube-apiserver",
         "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
         "extendedKeyUsage=serverAuth\nsubjectAltName=%s\n" % ",".join(sans))
    leaf("admin", "/O=system:masters/CN=kubernetes-admin",
         "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
         "extendedKeyUsage=clientAuth\n")
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.key", cwd=d)
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)


def write_kubeconfig(path, server, ca_file=None, ca_data=None, cert_file=None, key_file=None,
                     token=None, user="user", context="e2e", namespace=None):
    """Writes a kubeconfig (JSON is YAML) with one cluster, user and context."""
    cluster = {"server": server}
    if ca_data is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_data).decode()
    elif ca_file:
        cluster["certificate-authority"] = ca_file
    u = {}
    if cert_file:
        u["client-certificate"] = cert_file
        u["client-key"] = key_file
    if token:
        u["token"] = token
    ctx = {"cluster": "e2e", "user": user}
    if namespace:
        ctx["namespace"] = namespace
    cfg = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": cluster}],
        "users": [{"name": user, "user": u}],
        "contexts": [{"name": context, "context": ctx}],
        "current-context": context,
        "preferences": {},
    }
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)
    os.chmod(path, 0o600)
    return path


def now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------
# The cluster

class _Proc:
    def __init__(self, name, argv, logpath):
        self.name = name
        self.argv = argv
        self.logpath = logpath
        self.popen = None

    def start(self):
        with open(self.logpath, "ab") as logf:
            logf.write(("\n==== %s: %s\n" % (now_rfc3339(), " ".join(self.argv))).encode())
            logf.flush()
            self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=logf,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def check_alive(self):
        if self.popen is not None and self.popen.poll() is not None:
            raise ClusterError("%s exited with status %s (log: %s)" %
                               (self.name, self.popen.returncode, self.logpath))

    def stop(self, timeout=20):
        p = self.popen
        if p is None:
            return
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)   # by pid: only the process we started
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
            except ProcessLookupError:
                pass
        self.popen = None


def tail(path, lines=40):
    try:
        with open(path, "rb") as f:
            data = f.read()[-64 * 1024:]
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


class Cluster:
    """etcd + kube-apiserver + kube-controller-manager in the test's network namespace.

    The watch cache: kube-apiserver serves watches from it, and it keeps its own window of
    events, which an etcd compaction does not shorten. So compact_etcd() makes a watch from an
    older resourceVersion fail with 410 Expired only for resources without a watch cache
    (uncached_resources=["pods", "endpointslices.discovery.k8s.io"], or watch_cache=False, which
    also means no bookmarks). For cached resources, a stop_apiserver()/start_apiserver() does it:
    the new cache starts at the current revision and calls every older one too old.

    Everything is written under self.dir (a temp folder unless workdir is given): certificates in
    pki/, etcd's data, the logs (etcd.log, kube-apiserver.log, kube-controller-manager.log) and
    the admin kubeconfig (self.admin_kubeconfig). The folder is removed by stop() unless the
    cluster failed or keep is true (or $L4LB_E2E_KEEP is set)."""

    def __init__(self, workdir=None, bin_dir=None, keep=None, apiserver_extra_args=(),
                 controller_manager_extra_args=(), watch_cache=True, uncached_resources=(),
                 start=True):
        if not in_netns():
            raise ClusterError("Cluster() outside the test's network namespace: call "
                               "k8scluster.reexec_in_netns() first")
        self.bin = bin_dir or build_binaries()
        for b in ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl"):
            if not os.access(os.path.join(self.bin, b), os.X_OK):
                raise ClusterError("%s missing from %s" % (b, self.bin))
        self.dir = workdir or tempfile.mkdtemp(prefix="l4lb-k8s-")
        os.makedirs(self.dir, exist_ok=True)
        self.keep = keep if keep is not None else bool(os.environ.get("L4LB_E2E_KEEP"))
        self.failed = False
        self.pki = os.path.join(self.dir, "pki")
        self.server = "https://%s:%d" % (APISERVER_ADDRESS, APISERVER_PORT)
        self.admin_kubeconfig = os.path.join(self.dir, "admin.kubeconfig")
        self.apiserver_extra_args = list(apiserver_extra_args)
        self.controller_manager_extra_args = list(controller_manager_extra_args)
        self.watch_cache = watch_cache
        self.uncached_resources = list(uncached_resources)
        self.etcd = self.apiserver = self.controller_manager = None
        if start:
            self.start()

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.failed = True
            self.dump_logs()
        self.stop()
        return False

    def start(self):
        try:
            add_address(APISERVER_ADDRESS)
            make_pki(self.pki)
            write_kubeconfig(self.admin_kubeconfig, self.server,
                             ca_file=os.path.join(self.pki, "ca.crt"),
                             cert_file=os.path.join(self.pki, "admin.crt"),
                             key_file=os.path.join(self.pki, "admin.key"), user="admin")
            self.start_etcd()
            self.start_apiserver()
            self.start_controller_manager()
        except BaseException:
            self.failed = True
            self.dump_logs()
            self.stop()
            raise

    def stop(self):
        """Stops the processes this Cluster started (by pid), newest first."""
        for p in (self.controller_manager, self.apiserver, self.etcd):
            if p is not None:
                p.stop()
        if not self.keep and not self.failed:
            shutil.rmtree(self.dir, ignore_errors=True)
        elif os.path.isdir(self.dir):
            log("cluster files kept in %s" % self.dir)

    def _log(self, name):
        return os.path.join(self.dir, name + ".log")

    def dump_logs(self, lines=40):
        for p in (self.etcd, self.apiserver, self.controller_manager):
            if p is not None:
                sys.stderr.write("---- tail of %s ----\n%s\n" % (p.logpath, tail(p.logpath, lines)))
        sys.stderr.flush()

    # -- etcd -------------------------------------------------------------------------------

    def start_etcd(self):
        if self.etcd is None:
            self.etcd = _Proc("etcd", [
                os.path.join(self.bin, "etcd"),
                "--name", "l4lb-e2e",
                "--data-dir", os.path.join(self.dir, "etcd-data"),
                "--listen-client-urls", ETCD_CLIENT_URL,
                "--listen-peer-urls", ETCD_PEER_URL,
                "--unsafe-no-fsync",
            ], self._log("etcd"))
        self.etcd.start()
        wait_for("etcd to serve", lambda: self.etcd.check_alive() or self._etcd_revision() > 0)

    def _etcd_call(self, path, body):
        host, port = ETCD_CLIENT_URL.split("//")[1].split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            if r.status != 200:
                raise ClusterError("etcd %s: HTTP %d: %s" % (path, r.status, data[:500]))
            return json.loads(data)
        finally:
            conn.close()

    def _etcd_revision(self):
        # A range over every key, limit 1: the answer's header carries the current revision.
        r = self._etcd_call("/v3/kv/range", {"key": base64.b64encode(b"\0").decode(),
                                            "range_end": base64.b64encode(b"\0").decode(),
                                            "limit": 1, "keys_only": True})
        return int(r["header"]["revision"])

    def etcd_revision(self):
        return self._etcd_revision()

    def compact_etcd(self):
        """Compacts etcd to its current revision (physically) and returns that revision: from
        now on a watch at an older resourceVersion of a resource served without the watch cache
        (see the class's doc) gets 410 Gone, reason Expired."""
        rev = self._etcd_revision()
        self._etcd_call("/v3/kv/compaction", {"revision": rev, "physical": True})
        return rev

    # -- kube-apiserver ---------------------------------------------------------------------

    def _apiserver_argv(self):
        p = lambda f: os.path.join(self.pki, f)  # noqa: E731
        argv = [
            os.path.join(self.bin, "kube-apiserver"),
            "--etcd-servers=" + ETCD_CLIENT_URL,
            "--bind-address=" + APISERVER_ADDRESS,
            "--advertise-address=" + APISERVER_ADDRESS,
            "--secure-port=%d" % APISERVER_PORT,
            "--cert-dir=" + os.path.join(self.dir, "apiserver-certs"),
            "--tls-cert-file=" + p("apiserver.crt"),
            "--tls-private-key-file=" + p("apiserver.key"),
            "--client-ca-file=" + p("ca.crt"),
            "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file=" + p("sa.pub"),
            "--service-account-signing-key-file=" + p("sa.key"),
            "--service-cluster-ip-range=" + SERVICE_CIDR,
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ]
        if not self.watch_cache:
            argv.append("--watch-cache=false")
        elif self.uncached_resources:
            # resource[.group]#0: no watch cache for these; their watches go to etcd.
            argv.append("--watch-cache-sizes=" + ",".join(r + "#0" for r in self.uncached_resources))
        return argv + self.apiserver_extra_args

    def start_apiserver(self):
        """Starts kube-apiserver (again, after stop_apiserver(): same certificates, address and
        port) and waits until /readyz answers ok."""
        if self.apiserver is None:
            self.apiserver = _Proc("kube-apiserver", self._apiserver_argv(), self._log("kube-apiserver"))
        self.apiserver.start()
        wait_for("kube-apiserver /readyz", self._apiserver_ready, interval=0.25)

    def stop_apiserver(self):
        """Stops kube-apiserver (SIGTERM, by pid) and waits until its port is closed."""
        if self.apiserver is not None:
            self.apiserver.stop()
        wait_for("kube-apiserver's port to close", lambda: not self._port_open(APISERVER_ADDRESS, APISERVER_PORT))

    @staticmethod
    def _port_open(host, port):
        try:
            socket.create_connection((host, port), timeout=1).close()
            return True
        except OSError:
            return False

    def _apiserver_ready(self):
        self.apiserver.check_alive()
        try:
            status, _, body = self.request("GET", "/readyz", timeout=5)
        except (OSError, http.client.HTTPException):
            return False
        return status == 200 and body.strip() == b"ok"

    def ssl_context(self):
        ctx = ssl.create_default_context(cafile=os.path.join(self.pki, "ca.crt"))
        ctx.load_cert_chain(os.path.join(self.pki, "admin.crt"), os.path.join(self.pki, "admin.key"))
        return ctx

    def connect(self, timeout=10):
        return http.client.HTTPSConnection(APISERVER_ADDRESS, APISERVER_PORT,
                                           context=self.ssl_context(), timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=10):
        """One request to kube-apiserver as the admin (client certificate): (status, headers,
        body bytes)."""
        conn = self.connect(timeout)
        try:
            h = {"Accept": "application/json"}
            h.update(headers or {})
            if body is not None and not isinstance(body, (bytes, str)):
                body = json.dumps(body)
                h.setdefault("Content-Type", "application/json")
            conn.request(method, path, body, h)
            r = conn.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            conn.close()

    def get_json(self, path):
        status, _, body = self.request("GET", path)
        if status != 200:
            raise ClusterError("GET %s: HTTP %d: %s" % (path, status, body[:500]))
        return json.loads(body)

    def watch_raw(self, path, timeout=HANG_GUARD):
        """Opens a watch (path must carry watch=1 and should carry timeoutSeconds) and returns
        (HTTP status, list of events, or the Status object when the server refused at once)."""
        conn = self.connect(timeout)
        try:
            conn.request("GET", path, headers={"Accept": "application/json"})
            r = conn.getresponse()
            data = r.read()
        finally:
            conn.close()
        if r.status != 200:
            return r.status, json.loads(data) if data.strip() else None
        dec = json.JSONDecoder()
        events, text, i = [], data.decode(), 0
        while i < len(text):
            while i < len(text) and text[i].isspace():
                i += 1
            if i >= len(text):
                break
            obj, i = dec.raw_decode(text, i)
            events.append(obj)
        return r.status, events

    # -- kube-controller-manager ------------------------------------------------------------

    def start_controller_manager(self):
        if self.controller_manager is None:
            self.controller_manager = _Proc("kube-controller-manager", [
                os.path.join(self.bin, "kube-controller-manager"),
                "--kubeconfig=" + self.admin_kubeconfig,
                "--leader-elect=false",
                "--controllers=" + ",".join(CONTROLLERS),
                "--root-ca-file=" + os.path.join(self.pki, "ca.crt"),
                "--service-cluster-ip-range=" + SERVICE_CIDR,
                "--bind-address=127.0.0.1",
                "--secure-port=10257",
                "--cert-dir=" + os.path.join(self.dir, "kcm-certs"),
                "--profiling=false",
                "--v=1",
            ] + self.controller_manager_extra_args, self._log("kube-controller-manager"))
        self.controller_manager.start()
        # Working means: the serviceaccount controller has made `default` in namespace default
        # (pods cannot be created without it), and the root CA is published.
        wait_for("the ServiceAccount default/default (kube-controller-manager working)",
                 lambda: self.controller_manager.check_alive() or
                 self._exists("/api/v1/namespaces/default/serviceaccounts/default"))
        wait_for("the ConfigMap default/kube-root-ca.crt",
                 lambda: self._exists("/api/v1/namespaces/default/configmaps/kube-root-ca.crt"))

    def _exists(self, path):
        status, _, _ = self.request("GET", path)
        return status == 200

    # -- kubectl ----------------------------------------------------------------------------

    def kubectl(self, *args, input=None, kubeconfig=None, check=True, timeout=HANG_GUARD):
        """Runs the built kubectl with the admin kubeconfig (or kubeconfig) and returns stdout;
        raises KubectlError (with stderr) when it fails and check is true."""
        argv = [os.path.join(self.bin, "kubectl"), "--kubeconfig", kubeconfig or self.admin_kubeconfig]
        argv += [str(a) for a in args]
        r = subprocess.run(argv, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise KubectlError([str(a) for a in args], r.returncode, r.stdout, r.stderr)
        return r.stdout

    def kubectl_json(self, *args, **kw):
        return json.loads(self.kubectl(*args, "-o", "json", **kw))

    def apply(self, obj):
        """kubectl apply of one object (a dict) or a list of them."""
        if isinstance(obj, (list, tuple)):
            obj = {"apiVersion": "v1", "kind": "List", "items": list(obj)}
        return self.kubectl("apply", "-f", "-", input=json.dumps(obj))

    def ensure_namespace(self, ns):
        if ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            return
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        wait_for("ServiceAccount %s/default" % ns,
                 lambda: self._exists("/api/v1/namespaces/%s/serviceaccounts/default" % ns))

    # -- nodes and pods (no kubelet: the test writes what a kubelet would) ----------------------

    def create_node(self, name, address, labels=None, ready=True):
        """A Node with status.addresses InternalIP=address (+ Hostname) and condition Ready."""
        meta_labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
        meta_labels.update(labels or {})
        self.apply({"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": name, "labels": meta_labels}, "spec": {}})
        now = now_rfc3339()
        status = {"status": {
            "addresses": [{"type": "InternalIP", "address": address},
                          {"type": "Hostname", "address": name}],
            "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                            "reason": "KubeletReady" if ready else "KubeletNotReady",
                            "message": "written by the e2e harness",
                            "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
            "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
        }}
        self.kubectl("patch", "node", name, "--subresource=status", "--type=merge",
                     "-p", json.dumps(status))
        return self.kubectl_json("get", "node", name)

    @staticmethod
    def _container_ports(ports):
        out = []
        for i, p in enumerate(ports or []):
            if isinstance(p, int):
                p = {"containerPort": p}
            p = dict(p)
            p.setdefault("protocol", "TCP")
            out.append(p)
        return out

    def run_pod(self, ns, name, labels, ip, node, ready=True, ports=({"name": "http", "containerPort": 8080},),
                host_ip=None, wait=True):
        """Creates a Pod bound to node (spec.nodeName) with one container exposing ports (ints or
        containerPort dicts), then writes its status as a kubelet would: phase Running, podIP(s),
        conditions PodScheduled/Initialized/ContainersReady/Ready (the last two as ready says)."""
        self.ensure_namespace(ns)
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": ns, "labels": dict(labels or {})},
               "spec": {"nodeName": node, "terminationGracePeriodSeconds": 30,
                        "containers": [{"name": "app", "image": "layer4-lb.invalid/e2e:none",
                                        "ports": self._container_ports(ports)}]}}
        self.kubectl("create", "-f", "-", input=json.dumps(pod))
        if host_ip is None:
            host_ip = self._node_internal_ip(node)
        now = now_rfc3339()
        rs = "True" if ready else "False"
        status = {"status": {
            "phase": "Running",
            "hostIP": host_ip, "hostIPs": [{"ip": host_ip}] if host_ip else None,
            "podIP": ip, "podIPs": [{"ip": ip}],
            "startTime": now,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": rs, "lastTransitionTime": now},
                {"type": "Ready", "status": rs, "lastTransitionTime": now},
            ],
            "containerStatuses": [{"name": "app", "ready": ready, "started": True, "restartCount": 0,
                                   "image": "layer4-lb.invalid/e2e:none", "imageID": "",
                                   "state": {"running": {"startedAt": now}}}],
        }}
        if not host_ip:
            del status["status"]["hostIP"], status["status"]["hostIPs"]
        self.kubectl("patch", "pod", name, "-n", ns, "--subresource=status", "--type=merge",
                     "-p", json.dumps(status))
        return self.kubectl_json("get", "pod", name, "-n", ns)

    def _node_internal_ip(self, node):
        try:
            n = self.kubectl_json("get", "node", node)
        except KubectlError:
            return None
        for a in n.get("status", {}).get("addresses", []):
            if a.get("type") == "InternalIP":
                return a["address"]
        return None

    def set_pod_ready(self, ns, name, ready):
        """Flips the pod's Ready and ContainersReady conditions (strategic merge on type)."""
        now = now_rfc3339()
        rs = "True" if ready else "False"
        patch = {"status": {
            "conditions": [{"type": "ContainersReady", "status": rs, "lastTransitionTime": now},
                           {"type": "Ready", "status": rs, "lastTransitionTime": now}],
            "containerStatuses": [{"name": "app", "ready": bool(ready)}],
        }}
        self.kubectl("patch", "pod", name, "-n", ns, "--subresource=status", "--type=strategic",
                     "-p", json.dumps(patch))

    def delete_pod(self, ns, name, force=False):
        """Deletes a pod. Without force it stays Terminating (no kubelet confirms it), so its
        endpoint shows serving/terminating; force removes it at once."""
        args = ["delete", "pod", name, "-n", ns, "--wait=false"]
        if force:
            args += ["--grace-period=0", "--force"]
        self.kubectl(*args)

    def endpoint_slices(self, ns, service):
        return self.kubectl_json("get", "endpointslices", "-n", ns, "-l",
                                 "kubernetes.io/service-name=" + service)["items"]

    # -- least privilege ------------------------------------------------------------------------

    def service_account_kubeconfig(self, ns, sa_name, rbac_yaml_path=None, path=None,
                                   duration="87600h"):
        """Applies rbac_yaml_path (if given), creates ServiceAccount ns/sa_name if it does not
        exist, and writes a kubeconfig with a token for it (kubectl create token) and the
        cluster CA embedded. Returns the kubeconfig's path."""
        self.ensure_namespace(ns)
        if rbac_yaml_path:
            self.kubectl("apply", "-f", rbac_yaml_path)
        if not self._exists("/api/v1/namespaces/%s/serviceaccounts/%s" % (ns, sa_name)):
            self.kubectl("create", "serviceaccount", sa_name, "-n", ns)
        token = self.kubectl("create", "token", sa_name, "-n", ns, "--duration=" + duration).strip()
        if not token:
            raise ClusterError("kubectl create token %s/%s printed no token" % (ns, sa_name))
        with open(os.path.join(self.pki, "ca.crt"), "rb") as f:
            ca = f.read()
        path = path or os.path.join(self.dir, "sa-%s-%s.kubeconfig" % (ns, sa_name))
        return write_kubeconfig(path, self.server, ca_data=ca, token=token,
                                user="system:serviceaccount:%s:%s" % (ns, sa_name), namespace=ns)
