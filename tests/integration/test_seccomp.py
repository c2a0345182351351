#!/usr/bin/env python3
"""The shipped seccomp profile (deploy/seccomp/layer4-lb.json) runs the whole dataplane.

tests/tools/seccomp_run installs the profile the way a container runtime does (no_new_privs, the
filter, execve) and execs layer4-lb under it.  The io_uring pass runs the profile as shipped and
expects the io_uring engine; the epoll pass runs it with the three io_uring calls taken out (what
a runtime's default profile does) and expects the fallback to epoll.  Either way, everything a
deployment exercises must work under the filter: traffic, health checks, metrics, the control
socket (status, apply), ctl, a reload and the drain on SIGTERM.  A system call missing from the
profile fails with EPERM and shows up here.
"""
import json
import os
import signal
import unittest

import lbtest
from lbtest import (LBTestCase, ctl_call, free_port, http_get, listener, render_config, run_cmd,
                    who)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROFILE = os.path.join(ROOT, "deploy", "seccomp", "layer4-lb.json")
SECCOMP_RUN = os.environ.get("LBTEST_SECCOMP_RUN") or os.path.join(
    os.path.dirname(lbtest.LB_BIN), "tests", "seccomp_run")
URING_CALLS = {"io_uring_setup", "io_uring_enter", "io_uring_register"}
LOCAL = "127.0.0.1"


def sanitized():
    """The ASan build (scripts/test.sh sets ASAN_OPTIONS for it): its runtime needs calls a
    release binary does not, LeakSanitizer's ptrace first."""
    return "ASAN_OPTIONS" in os.environ


@unittest.skipUnless(os.access(SECCOMP_RUN, os.X_OK), "tests/tools/seccomp_run not built")
class SeccompProfileTest(LBTestCase):
    def profile(self):
        """The shipped profile, or for the epoll pass the same without io_uring."""
        with open(PROFILE) as f:
            prof = json.load(f)
        if lbtest.ENGINE == "io_uring":
            return PROFILE, "io_uring"
        found = set()
        for e in prof["syscalls"]:
            found |= URING_CALLS & set(e["names"])
            e["names"] = [n for n in e["names"] if n not in URING_CALLS]
        self.assertEqual(found, URING_CALLS, "the shipped profile must allow io_uring")
        path = os.path.join(self.tmpdir(), "no-io_uring.json")
        with open(path, "w") as f:
            json.dump(prof, f)
        return path, "epoll"

    def test_profile_is_an_allow_list(self):
        with open(PROFILE) as f:
            prof = json.load(f)
        self.assertEqual(prof["defaultAction"], "SCMP_ACT_ERRNO")
        names = [n for e in prof["syscalls"] for n in e["names"]]
        self.assertEqual(len(names), len(set(names)), "a system call listed twice")
        for e in prof["syscalls"]:
            self.assertEqual(e["action"], "SCMP_ACT_ALLOW")
        # What a proxy never needs stays refused.
        for forbidden in ("ptrace", "mount", "bpf", "kexec_load", "init_module", "setns",
                          "unshare", "keyctl", "perf_event_open", "process_vm_writev",
                          "open_by_handle_at", "personality", "userfaultfd", "fork", "vfork"):
            self.assertNotIn(forbidden, names)

    def test_filter_refuses_what_is_not_listed(self):
        """The runner really filters: ls needs getdents64, which a proxy never does."""
        path, _ = self.profile()
        self.assertEqual(run_cmd(["/bin/ls", "/"]).returncode, 0)
        r = run_cmd([SECCOMP_RUN, path, "/bin/ls", "/"])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("Operation not permitted", r.stderr)

    def test_dataplane_runs_under_the_profile(self):
        if sanitized():
            self.skipTest("sanitizer runtimes need system calls a release binary does not")
        path, engine = self.profile()
        a, b = self.backends("a", "b")
        port, mport = free_port(), free_port()
        sock = os.path.join(self.tmpdir(), "ctl.sock")
        cfg = render_config([listener(port, [a, b], health_check={"interval_ms": 200, "timeout_ms": 100})],
                            metrics=f"{LOCAL}:{mport}", control_socket=sock)
        cfg += "io_engine: auto\n"
        lb = self.start_lb(config=cfg, ready=[(LOCAL, port)], prefix=[SECCOMP_RUN, path])
        line = lb.wait_stderr(r"running: \d+ workers?, (\w+) engine")
        self.assertEqual(line.group(1), engine, lb.tail(20))
        if engine == "epoll":
            self.assertIn("using the epoll engine", lb.stderr_text())

        # Traffic over both backends; health checks run.
        seen = {who((LOCAL, port)) for _ in range(6)}
        self.assertEqual(seen, {"a", "b"})

        # Metrics, control socket status and apply, and ctl (same binary, same filter).
        status, _, body = http_get((LOCAL, mport))
        self.assertEqual(status, 200)
        self.assertIn(b"layer4lb_listener_connections_accepted_total", body)
        st = ctl_call(sock, {"op": "status"})
        self.assertIs(st.get("ok"), True, st)
        mport2 = free_port()
        r = ctl_call(sock, {"op": "apply", "version": 1, "listeners": [
            listener(mport2, [a], name="managed")]})
        self.assertIs(r.get("ok"), True, r)
        self.assertEqual(who((LOCAL, mport2)), "a")
        r = run_cmd([SECCOMP_RUN, path, lbtest.LB_BIN, "ctl", "-s", sock, "status"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("managed", r.stdout)

        # A reload (SIGHUP) that drops backend b.
        lb.reload(render_config([listener(port, [a], health_check={"interval_ms": 200, "timeout_ms": 100})],
                                metrics=f"{LOCAL}:{mport}", control_socket=sock) +
                  "io_engine: auto\n")
        lb.wait_stderr(r"reload.*ok|reloaded", since=0)
        lbtest.wait_for(lambda: {who((LOCAL, port)) for _ in range(4)} == {"a"},
                        what="reload in force")

        # Drain and exit 0 on SIGTERM; nothing was refused by the filter on the way.
        lb.send_signal(signal.SIGTERM)
        self.assertEqual(lb.wait_exit(), 0, lb.tail(20))
        refused = [l for l in lb.stderr_text().splitlines()
                   if "not permitted" in l and "io_engine auto: io_uring_setup" not in l]
        self.assertEqual(refused, [])


if __name__ == "__main__":
    unittest.main()
