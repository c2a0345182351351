"""Signals (SIGTERM/SIGINT drain, SIGHUP reload) and active health checks."""

import os
import re
import signal
import socket
import threading
import time
import unittest

import lbtest
from lbtest import (LBTestCase, Client, connect, free_port, gen_bytes, line_of, listener,
                    render_config, run_lb, tally, wait_closed, wait_for, who)

LOCAL = "127.0.0.1"


def refused_now(addr):
    """True when a new connection is refused, or closed/reset without being served."""
    try:
        t = connect(addr, timeout=2)
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    except socket.timeout:
        return False
    try:
        t.settimeout(1.0)
        try:
            t.sendall(b"WHO\n")
            d = t.recv(100)
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False   # accepted by the kernel, not served: still "listening"
        return d == b""
    finally:
        t.close()


class SignalsTest(LBTestCase):
    def test_sigterm_drains_in_flight_transfer(self):
        b = self.backend("slow")
        port = free_port()
        addr = (LOCAL, port)
        lb = self.start_lb([listener(port, [b])], num_acceptors=2, drain_timeout_ms=15000)
        k, size = 20, 4096
        expected = gen_bytes(21, k * size)
        s = connect(addr, timeout=15)
        self.addCleanup(s.close)
        s.sendall(f"DRIBBLE {k} {size} 100 21\n".encode())
        got = bytearray(s.recv(65536))
        self.assertTrue(got, "no first chunk")
        done = threading.Event()
        err = []

        def reader():
            try:
                while True:
                    d = s.recv(65536)
                    if not d:
                        break
                    got.extend(d)
            except OSError as e:
                err.append(e)
            done.set()

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        lb.send_signal(signal.SIGTERM)
        # New connections are refused soon after SIGTERM (hang guard 5 s)...
        wait_for(lambda: refused_now(addr), 5, "new connections to be refused after SIGTERM",
                 interval=0.05)
        # ...while the old transfer is still being served (it runs ~2 s).
        self.assertFalse(done.is_set(), "transfer already over when refusal was first seen")
        self.assertTrue(lb.alive(), "layer4-lb exited before the in-flight transfer finished")
        t.join(20)
        self.assertFalse(t.is_alive(), "in-flight transfer hung after SIGTERM")
        self.assertEqual(err, [])
        self.assertEqual(len(got), len(expected))
        self.assertTrue(bytes(got) == expected, "in-flight transfer corrupted")
        # The client closes its side as clients do after EOF; the drain is then over.
        s.close()
        self.assertEqual(lb.wait_exit(10), 0)

    def test_sigterm_drain_timeout(self):
        b = self.backend("a")
        port = free_port()
        lb = self.start_lb([listener(port, [b])], num_acceptors=2, drain_timeout_ms=1000)
        c = Client((LOCAL, port), timeout=15)
        self.addCleanup(c.close)
        self.assertEqual(c.who(), "a")
        lb.send_signal(signal.SIGTERM)
        # The connection never finishes on its own: the drain limit ends it.
        self.assertEqual(lb.wait_exit(10), 0)
        wait_closed(c.sock, timeout=5)

    def test_sigint_exits_zero(self):
        b = self.backend("a")
        port = free_port()
        lb = self.start_lb([listener(port, [b])], num_acceptors=2, drain_timeout_ms=1000)
        self.assertEqual(who((LOCAL, port)), "a")
        self.assertEqual(lb.stop(signal.SIGINT), 0)

    def test_sigterm_idle_exits_zero(self):
        b = self.backend("a")
        port = free_port()
        lb = self.start_lb([listener(port, [b])], num_acceptors=2)
        self.assertEqual(who((LOCAL, port)), "a")
        self.assertEqual(lb.stop(signal.SIGTERM), 0)


class ReloadTest(LBTestCase):
    def test_sighup_new_backends(self):
        a, b = self.backends("a", "b")
        c, d = self.backends("c", "d")
        port = free_port()
        addr = (LOCAL, port)
        lb = self.start_lb([listener(port, [a, b])], num_acceptors=2)
        old = Client(addr)
        self.addCleanup(old.close)
        old_name = old.who()
        self.assertIn(old_name, ("a", "b"))
        lb.reload(render_config([listener(port, [c, d])]))
        wait_for(lambda: who(addr) in ("c", "d"), 10, "new connections to reach c or d",
                 interval=0.05)
        names = [who(addr) for _ in range(20)]
        self.assertEqual(set(names), {"c", "d"}, names)
        # The connection opened before the reload still works, on its old backend.
        for _ in range(3):
            self.assertEqual(old.who(), old_name)
        self.assertTrue(lb.alive())

    def test_sighup_bad_file_keeps_old_config(self):
        a, b = self.backends("a", "b")
        c = self.backend("c")
        port = free_port()
        addr = (LOCAL, port)
        lb = self.start_lb([listener(port, [a, b])], num_acceptors=1)
        self.assertEqual(tally(who(addr) for _ in range(4)), {"a": 2, "b": 2})
        held = Client(addr)
        self.addCleanup(held.close)
        held_name = held.who()

        bad = (f"listeners:\n"
               f"  - name: web\n"
               f"    listen: {LOCAL}:{port}\n"
               f"    protocol: tcp\n"
               f"    algorithm: round_robin\n"
               f"    colour: blue\n"
               f"    backends:\n"
               f"      - address: {c.addr_str}\n")
        line = line_of(bad, "colour")
        since = len(lb.stderr_text())
        lb.reload(bad)
        lb.wait_stderr(r"lb\.yaml:%d\b" % line, timeout=10, since=since)
        self.assertTrue(lb.alive(), "a bad reload killed the process")
        names = [who(addr) for _ in range(10)]
        self.assertEqual(set(names), {"a", "b"}, "traffic left the old backends: " + str(names))
        self.assertEqual(held.who(), held_name)

        # A YAML syntax error is refused the same way.
        bad2 = bad.replace("    colour: blue\n", "    protocol: tcp: extra\n")
        since = len(lb.stderr_text())
        lb.reload(bad2)
        lb.wait_stderr(r"lb\.yaml:%d\b" % line_of(bad2, "tcp: extra"), timeout=10, since=since)
        self.assertEqual(set(who(addr) for _ in range(6)), {"a", "b"})

        # And a good file afterwards is still applied.
        lb.reload(render_config([listener(port, [c])]))
        wait_for(lambda: who(addr) == "c", 10, "traffic to reach c after a good reload",
                 interval=0.05)
        self.assertEqual(held.who(), held_name)

    def test_sighup_adds_and_removes_listener(self):
        a, b = self.backends("a", "b")
        p1, p2 = free_port(), free_port()
        lb = self.start_lb([listener(p1, [a], name="one")], num_acceptors=2)
        lb.reload(render_config([listener(p1, [a], name="one"),
                                 listener(p2, [b], name="two")]))

        def two_up():
            try:
                return who((LOCAL, p2), timeout=5) == "b"
            except (OSError, ConnectionError):
                return False
        wait_for(two_up, 10, "the added listener to serve", interval=0.05)
        self.assertEqual(who((LOCAL, p1)), "a")
        held = Client((LOCAL, p2))
        self.addCleanup(held.close)
        self.assertEqual(held.who(), "b")
        lb.reload(render_config([listener(p1, [a], name="one")]))
        wait_for(lambda: refused_now((LOCAL, p2)), 10, "the removed listener to stop accepting",
                 interval=0.05)
        self.assertEqual(who((LOCAL, p1)), "a")
        # A removed listener's open connections drain rather than being cut.
        self.assertEqual(held.who(), "b")


    def test_sighup_names_restart_only_settings(self):
        """The reload warning names what changed, not every setting it might be."""
        a = self.backend("a")
        port = free_port()
        lb = self.start_lb([listener(port, [a])], buffer_count=512)
        since = len(lb.stderr_text())
        lb.reload(render_config([listener(port, [a])], buffer_count=1024))
        line = lb.wait_stderr(r"reload: .* only at restart", since=since).group(0)
        self.assertEqual(line, "reload: buffer_count changed; it takes effect only at restart")
        lb.wait_stderr(r"reloaded", since=since)
        since = len(lb.stderr_text())
        lb.reload(render_config([listener(port, [a])], buffer_count=1024, acceptors=3,
                                metrics=f"{LOCAL}:{free_port()}"))
        line = lb.wait_stderr(r"reload: .* only at restart", since=since).group(0)
        self.assertEqual(line, "reload: acceptors, metrics changed; these take effect only at "
                               "restart")
        lb.wait_stderr(r"reloaded", since=since)
        self.assertEqual(who((LOCAL, port)), "a")

    def test_sighup_with_a_fifo_at_the_config_path(self):
        """A FIFO there blocked the main thread in open() for ever; now it is refused."""
        a, b = self.backends("a", "b")
        port = free_port()
        lb = self.start_lb([listener(port, [a])])
        os.remove(lb.config_path)
        os.mkfifo(lb.config_path)
        since = len(lb.stderr_text())
        lb.send_signal(signal.SIGHUP)
        lb.wait_stderr(r"reload refused, keeping the running configuration: cannot read "
                       r"\S+lb\.yaml: not a regular file", since=since)
        self.assertEqual(who((LOCAL, port)), "a")
        lb.reload(render_config([listener(port, [b])]))   # replaces the FIFO
        wait_for(lambda: who((LOCAL, port)) == "b", what="a good reload after the FIFO")


class StartupFailureTest(LBTestCase):
    """Each start-up failure exits with its status and frees what it had (the sanitizer build
    reports any leak: 4560 bytes leaked when the control socket was taken)."""

    def config(self, **top):
        path = os.path.join(self.tmpdir(), "lb.yaml")
        with open(path, "w") as f:
            f.write(render_config([listener(free_port(), ["127.0.0.1:9"])], **top))
        return path

    def test_control_socket_taken(self):
        a = self.backend("a")
        sock = os.path.join(self.tmpdir(), "ctl.sock")
        self.start_lb([listener(free_port(), [a])], control_socket=sock)
        lbtest.wait_ctl_socket(sock)
        r = run_lb(["--config", self.config(control_socket=sock)])
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("another process is serving it", r.stderr)
        self.assertTrue(os.path.exists(sock), "the other process's socket was removed")

    def test_metrics_address_taken(self):
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind((LOCAL, 0))
        busy.listen(1)
        sock = os.path.join(self.tmpdir(), "ctl.sock")
        r = run_lb(["--config", self.config(control_socket=sock,
                                            metrics=f"{LOCAL}:{busy.getsockname()[1]}")])
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("metrics", r.stderr)
        self.assertFalse(os.path.exists(sock), "the control socket file was left behind")

    def test_listen_address_taken(self):
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind((LOCAL, 0))
        busy.listen(1)
        path = os.path.join(self.tmpdir(), "lb.yaml")
        with open(path, "w") as f:
            f.write(render_config([listener(busy.getsockname()[1], ["127.0.0.1:9"])]))
        r = run_lb(["--config", path])
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("cannot listen", r.stderr)


class HealthCheckTest(LBTestCase):
    def test_active_checks_down_and_up(self):
        a, b, c = self.backends("a", "b", "c")
        port = free_port()
        addr = (LOCAL, port)
        lb = self.start_lb([listener(port, [a, b, c],
                                     health_check={"interval_ms": 200, "timeout_ms": 100,
                                                   "rise": 2, "fall": 2},
                                     connect_timeout_ms=10000, fail_timeout_ms=30000)],
                           num_acceptors=1)
        # Checks run without any client traffic: every backend gets check connections.
        for bk in (a, b, c):
            wait_for(lambda: bk.counts()["accepted"] >= 3, 10,
                     f"health checks to reach {bk.name}")
        wait_for(lambda: {who(addr) for _ in range(6)} == {"a", "b", "c"}, 10,
                 "all backends to be in rotation")

        since = len(lb.stderr_text())
        b.stop_listening()
        # The checks see it (fall 2 x 200 ms) and say so: a state change is an event worth a
        # log line.  Only then send traffic, so passive failure counting (fail_timeout_ms
        # 30 s) never gets to take it out: coming back below must be the checks' doing.
        lb.wait_stderr(re.escape(b.addr_str) + r".*\bdown\b", timeout=10, since=since)
        names = [who(addr) for _ in range(30)]
        self.assertNotIn("b", names)
        self.assertEqual(set(names), {"a", "c"}, names)

        # It comes back once it listens again (rise 2), long before fail_timeout_ms.
        b.start_listening()
        wait_for(lambda: who(addr) == "b", 10, "backend b back in rotation", interval=0.05)
        wait_for(lambda: {who(addr) for _ in range(6)} == {"a", "b", "c"}, 10,
                 "all three backends in rotation again")

    def test_backend_down_at_start(self):
        a, b = self.backends("a", "b")
        b.stop_listening()
        port = free_port()
        addr = (LOCAL, port)
        lb = self.start_lb([listener(port, [a, b],
                                     health_check={"interval_ms": 200, "timeout_ms": 100,
                                                   "rise": 2, "fall": 2},
                                     connect_timeout_ms=10000, fail_timeout_ms=30000)],
                           num_acceptors=1)
        lb.wait_stderr(re.escape(b.addr_str) + r".*\bdown\b", timeout=10)
        self.assertEqual({who(addr) for _ in range(10)}, {"a"})
        since = len(lb.stderr_text())
        b.start_listening()
        lb.wait_stderr(re.escape(b.addr_str) + r".*\bup\b", timeout=10, since=since)
        wait_for(lambda: who(addr) == "b", 10, "backend b to get connections", interval=0.05)

    def test_active_checks_on_a_check_port(self):
        """health_check.port: the checks connect there, not to the traffic port.  Both
        backends serve traffic all along; what they are judged by is a listener of the test's
        on the check port (both backends are 127.0.0.1, so it stands for both)."""
        a, b = self.backends("a", "b")
        port, check = free_port(), free_port()
        addr = (LOCAL, port)
        lb = self.start_lb([listener(port, [a, b],
                                     health_check={"interval_ms": 200, "timeout_ms": 100,
                                                   "rise": 2, "fall": 2, "port": check},
                                     connect_timeout_ms=10000, fail_timeout_ms=30000)],
                           num_acceptors=1)
        # Nothing listens on the check port: both go down, though their traffic ports answer.
        for bk in (a, b):
            lb.wait_stderr(re.escape(bk.addr_str) + r".*\bdown\b", timeout=10)
        # (Checked on their traffic ports they would have stayed up: those answer.)
        self.assertTrue(refused_now(addr))
        since = len(lb.stderr_text())
        probe = socket.socket()
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((LOCAL, check))
        probe.listen(64)
        try:
            for bk in (a, b):
                lb.wait_stderr(re.escape(bk.addr_str) + r".*\bup\b", timeout=10, since=since)
            wait_for(lambda: {who(addr) for _ in range(6)} == {"a", "b"}, 10,
                     "both backends in rotation")
        finally:
            probe.close()


if __name__ == "__main__":
    lbtest.main()
