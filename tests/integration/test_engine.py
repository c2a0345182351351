#!/usr/bin/env python3
"""I/O engine choice: io_engine auto falls back to epoll where io_uring is forbidden.

Forbidding io_uring uses tests/tools/no_uring, which installs the same kind of seccomp filter
as Docker 25+'s default profile (io_uring_setup fails with EPERM) and execs layer4-lb.
"""
import os
import unittest

import lbtest
from lbtest import LBTestCase, listener, render_config, run_lb, who, free_port

NO_URING = os.environ.get("LBTEST_NO_URING") or os.path.join(
    os.path.dirname(lbtest.LB_BIN), "tests", "no_uring")


@unittest.skipUnless(os.access(NO_URING, os.X_OK), "tests/tools/no_uring not built")
class EngineTest(LBTestCase):
    def config(self, port, backends, engine):
        return render_config([listener(port, backends)]) + f"io_engine: {engine}\n"

    def test_auto_falls_back_to_epoll_under_seccomp(self):
        a, b = self.backends("a", "b")
        port = free_port()
        lb = self.start_lb(config=self.config(port, [a, b], "auto"),
                           ready=[("127.0.0.1", port)], prefix=[NO_URING])
        err = lb.stderr_text()
        self.assertRegex(err, r"io_engine auto: io_uring_setup failed: Operation not permitted")
        self.assertIn("seccomp", err)
        self.assertIn("using the epoll engine", err)
        self.assertIn("epoll engine", lb.wait_stderr(r"running: \d+ workers?, \w+ engine").group(0))
        seen = {who(("127.0.0.1", port)) for _ in range(4)}
        self.assertEqual(seen, {"a", "b"})

    def test_io_uring_required_fails_clearly_under_seccomp(self):
        a, = self.backends("a")
        port = free_port()
        d = self.tmpdir()
        path = os.path.join(d, "lb.yaml")
        with open(path, "w") as f:
            f.write(self.config(port, [a], "io_uring"))
        r = lbtest.run_cmd([NO_URING, lbtest.LB_BIN, "--config", path])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("io_engine: io_uring was configured but io_uring_setup failed", r.stderr)
        self.assertIn("kernel.io_uring_disabled", r.stderr)

    def test_epoll_configured(self):
        a, = self.backends("a")
        port = free_port()
        lb = self.start_lb(config=self.config(port, [a], "epoll"), ready=[("127.0.0.1", port)])
        self.assertIn("io_engine: epoll (configured)", lb.stderr_text())
        self.assertEqual(who(("127.0.0.1", port)), "a")

    def test_auto_prefers_io_uring(self):
        a, = self.backends("a")
        port = free_port()
        lb = self.start_lb(config=self.config(port, [a], "auto"), ready=[("127.0.0.1", port)])
        line = lb.wait_stderr(r"running: \d+ workers?, (\w+) engine")
        if line.group(1) != "io_uring":
            self.skipTest("this host forbids io_uring: " + lb.tail(5))
        self.assertNotIn("using the epoll engine", lb.stderr_text())
        self.assertEqual(who(("127.0.0.1", port)), "a")


if __name__ == "__main__":
    unittest.main()
