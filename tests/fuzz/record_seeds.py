"""record_seeds.py - seeds for fuzz_world and fuzz_watch recorded from a real API server.

Starts the control plane of the end-to-end tests (tests/e2e/k8scluster.py: etcd, kube-apiserver
and kube-controller-manager in a network namespace of its own; root), creates the LoadBalancer
CRD, a Node, Services with ready and unready Pods (kube-controller-manager makes their
EndpointSlices and Endpoints) and LoadBalancers from deploy/examples, and writes what the API
server returns:

    corpus/world/recorded    one object per line, as the informers list them
    corpus/watch/recorded    a watch of EndpointSlices from resourceVersion 0 (with the
                             one-byte prefix fuzz_watch reads as "no chunk sizes")

    python3 tests/fuzz/record_seeds.py
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))
import k8scluster  # noqa: E402

LISTS = [  # (kind, API path) as the controller's informers list them
    ("Node", "/api/v1/nodes"),
    ("Service", "/api/v1/namespaces/shop/services"),
    ("EndpointSlice", "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices"),
    ("Endpoints", "/api/v1/namespaces/shop/endpoints"),
    ("LoadBalancer", "/apis/layer4lb.io/v1alpha1/namespaces/shop/loadbalancers"),
]


def main():
    k8scluster.reexec_in_netns()
    with k8scluster.Cluster() as c:
        c.kubectl("apply", "-f", os.path.join(REPO, "crds", "layer4lb.io_loadbalancers.yaml"))
        c.kubectl("wait", "--for=condition=Established", "crd/loadbalancers.layer4lb.io")
        c.create_node("node-a", "198.18.0.2", labels={"zone": "a"})
        c.ensure_namespace("shop")
        for ex in ("basic.yaml", "multi-listener.yaml", "node-selector.yaml"):
            c.kubectl("apply", "-n", "shop", "-f", os.path.join(REPO, "deploy", "examples", ex))
        c.run_pod("shop", "web-1", {"app": "web"}, "10.1.0.5", "node-a")
        c.run_pod("shop", "web-2", {"app": "web"}, "10.1.0.6", "node-a", ready=False)
        k8scluster.wait_for("the EndpointSlice controller", lambda: any(
            e.get("endpoints") for e in c.get_json(LISTS[2][1])["items"]), 60)
        lines = []
        for kind, path in LISTS:
            for item in c.get_json(path)["items"]:
                item.setdefault("kind", kind)   # a list's items carry no kind of their own
                item.setdefault("apiVersion", c.get_json(path)["apiVersion"])
                lines.append(json.dumps(item, separators=(",", ":")))
        with open(os.path.join(HERE, "corpus", "world", "recorded"), "w") as f:
            f.write("\n".join(lines) + "\n")
        status, events = c.watch_raw(LISTS[2][1] + "?watch=1&resourceVersion=0&timeoutSeconds=1")
        assert status == 200, (status, events)
        watch = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events)
        with open(os.path.join(HERE, "corpus", "watch", "recorded"), "w") as f:
            f.write("\0" + watch)
    print("recorded %d objects and a watch of %d bytes" % (len(lines), len(watch)))


if __name__ == "__main__":
    main()
