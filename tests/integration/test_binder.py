"""Ports below 1024 for a dataplane that holds no capability: `layer4-lb binder` binds them."""

import errno
import json
import os
import re
import shutil
import socket
import subprocess
import unittest

import lbtest
from lbtest import LBTestCase, ctl_call, listener, render_config

LOCAL = "127.0.0.1"
NOBODY = 65534
# The dataplane as the chart runs it: another uid, no capability at all, none to gain.
UNPRIVILEGED = ["sh", "-c", 'chown -R %d:%d "$(dirname "$3")" && exec setpriv --reuid=%d '
                '--regid=%d --clear-groups --inh-caps=-all --bounding-set=-all '
                '--no-new-privs "$@"' % (NOBODY, NOBODY, NOBODY, NOBODY), "sh"]


def free_low_port(kinds=(socket.SOCK_STREAM,)):
    """A port below 1024 free on loopback (for every socket type of kinds).  ctest runs this
    file for both engines at once: each takes its ports from its own half of 600-1023, so the
    two never pick the same one between the check and the bind."""
    lo = 812 if os.environ.get("LBTEST_IO_ENGINE") == "epoll" else 600
    for port in range(lo + 211, lo - 1, -1):
        if all(_free(port, k) for k in kinds):
            return port
    raise unittest.SkipTest("no free port below 1024 on loopback")


def _free(port, kind):
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.bind((LOCAL, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def capabilities(pid):
    with open("/proc/%d/status" % pid) as f:
        return {k: v.strip() for k, v in (line.split(":", 1) for line in f if
                                          line.startswith("Cap"))}


def binder_call(path, req):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(lbtest.HANG)
    try:
        s.connect(path)
        s.send(req)
        msg, fds, _flags, _addr = socket.recv_fds(s, 4096, 64)
        for fd in fds:
            os.close(fd)
        return json.loads(msg), len(fds)
    finally:
        s.close()


class BinderTest(LBTestCase):
    def setUp(self):
        if os.geteuid() != 0 or not shutil.which("setpriv"):
            self.skipTest("needs root (for the binder) and setpriv(1)")
        self.dir = self.tmpdir()
        os.chmod(self.dir, 0o755)   # the binder's socket file is reached through it
        self.sock = os.path.join(self.dir, "binder.sock")
        self.log = open(os.path.join(self.dir, "binder.log"), "w+")
        self.addCleanup(self.log.close)
        self.binder = self.start_binder(self.sock)

    def start_binder(self, path, *args):
        binder = subprocess.Popen([lbtest.LB_BIN, "binder", "--socket", path,
                                   "--uid", str(NOBODY)] + list(args), stderr=self.log,
                                  env=dict(os.environ, LOG_LEVEL="info"))
        self.addCleanup(self.stop_binder, binder)
        lbtest.wait_for(lambda: os.path.exists(path), 10, "the binder's socket")
        return binder

    def stop_binder(self, binder):
        binder.terminate()   # by pid: ours
        binder.wait(10)

    def binder_log(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def test_port_below_1024_without_any_capability(self):
        a = self.backend("a")
        port = free_low_port()
        lb = self.start_lb(config=render_config([listener(port, [a])],
                                                binder_socket=self.sock),
                           ready=[(LOCAL, port)], num_acceptors=2, log_level="info",
                           prefix=UNPRIVILEGED)
        self.assertEqual(lbtest.who((LOCAL, port)), "a")
        caps = capabilities(lb.pid)
        self.assertEqual((caps["CapEff"], caps["CapPrm"], caps["CapAmb"]),
                         ("0" * 16,) * 3, caps)
        with open("/proc/%d/status" % lb.pid) as f:
            self.assertIn("Uid:\t%d\t%d" % (NOBODY, NOBODY), f.read())
        self.assertRegex(self.binder_log(), r"binder: 2 sockets for pid %d" % lb.pid)

    def test_dns_on_a_low_port_udp_and_tcp(self):
        """A udp and a tcp listener on one port below 1024 (DNS), both bound by the binder
        for a dataplane without any capability."""
        a, u = self.backend("a"), self.udp_backend("u")
        port = free_low_port((socket.SOCK_STREAM, socket.SOCK_DGRAM))
        lb = self.start_lb(config=render_config([listener(port, [a], name="dns-tcp"),
                                                 listener(port, [u], name="dns",
                                                          protocol="udp", responses=1)],
                                                binder_socket=self.sock),
                           ready=[(LOCAL, port)], num_acceptors=2, log_level="info",
                           prefix=UNPRIVILEGED)
        self.assertRegex(lbtest.udp_query((LOCAL, port), b"q"), rb"^u\|\d+\|q$")
        self.assertEqual(lbtest.who((LOCAL, port)), "a")
        self.assertEqual(capabilities(lb.pid)["CapEff"], "0" * 16)
        self.assertEqual(len(re.findall(r"binder: 2 sockets for pid %d" % lb.pid,
                                        self.binder_log())), 2)

    def test_more_workers_than_one_request_carries(self):
        """70 workers, 70 sockets of one group, sent as 64 and 6 (a message carries at most
        64 descriptors); a second request would find the address in use."""
        a = self.backend("a")
        port = free_low_port()
        # epoll: 70 rings would need more locked memory than another uid's limit allows.
        lb = self.start_lb(config=render_config([listener(port, [a])],
                                                binder_socket=self.sock, io_engine="epoll"),
                           ready=[(LOCAL, port)], num_acceptors=70, log_level="info",
                           prefix=UNPRIVILEGED)
        self.assertEqual(lbtest.who((LOCAL, port)), "a")
        self.assertRegex(self.binder_log(), r"binder: 70 sockets for pid %d" % lb.pid)
        with open("/proc/%d/status" % lb.pid) as f:
            self.assertIn("Threads:\t71\n", f.read())   # the main thread and 70 workers

    def test_managed_listener_on_a_low_port(self):
        a = self.backend("a")
        port = free_low_port()
        ctl = os.path.join(self.tmpdir(), "ctl.sock")
        os.chmod(os.path.dirname(ctl), 0o777)
        lb = self.start_lb(config=render_config([], binder_socket=self.sock,
                                                control_socket=ctl),
                           ready=[], log_level="info", prefix=UNPRIVILEGED)
        lbtest.wait_ctl_socket(ctl)
        r = ctl_call(ctl, {"op": "apply", "version": 1, "listeners": [
            listener(port, [a], name="ns/lb/http")]})
        self.assertTrue(r["ok"], r)
        self.assertEqual(r["bind_failures"], [])
        self.assertEqual(lbtest.who((LOCAL, port)), "a")
        self.assertTrue(lb.alive())

    def test_without_the_binder_the_port_is_refused(self):
        """What the binder is for: the same dataplane alone cannot bind the port."""
        a = self.backend("a")
        port = free_low_port()
        lb = self.start_lb(config=render_config([listener(port, [a])]), ready=[],
                           log_level="info", prefix=UNPRIVILEGED, expect_rc=1)
        self.assertEqual(lb.wait_exit(20), 1)
        self.assertIn("cannot listen on 127.0.0.1:%d: Permission denied" % port,
                      lb.stderr_text())

    def test_bad_requests_are_refused_and_change_nothing(self):
        cases = [
            (b'{"op":"bind","listen":"127.0.0.1:8080","count":1}', "only ports below 1024"),
            (b'{"op":"bind","listen":"127.0.0.1:80","count":0}', "count must be 1 to 1024"),
            (b'{"op":"bind","listen":"127.0.0.1:80","count":1025}', "count must be 1 to 1024"),
            (b'{"op":"bind","listen":"localhost:80","count":1}', "listen: "),
            (b'{"op":"bind","listen":"127.0.0.1:80","count":1,"protocol":"sctp"}',
             'protocol must be "tcp" or "udp"'),
            (b'{"op":"unbind"}', "not a bind request"),
            (b'not json', "not a bind request"),
        ]
        for req, why in cases:
            with self.subTest(req=req):
                got, n = binder_call(self.sock, req)
                self.assertFalse(got["ok"])
                self.assertIn(why, got["error"])
                self.assertEqual(n, 0)
        # It still serves a good one.
        port = free_low_port()
        got, n = binder_call(self.sock, json.dumps(
            {"op": "bind", "listen": "%s:%d" % (LOCAL, port), "count": 3}).encode())
        self.assertEqual((got, n), ({"ok": True, "left": 0}, 3))
        self.assertEqual(self.binder.poll(), None)

    def test_reuseport_overlap_joins_only_where_the_binder_allows(self):
        """An upgrade without a handover socket (--reuseport-overlap): the new pod's binder
        binds into the old pod's group only when it runs with --reuseport-overlap too."""
        a = self.backend("a")
        port = free_low_port()
        conf = render_config([listener(port, [a])], binder_socket=self.sock,
                             drain_timeout_ms=5000)
        old = self.start_lb(config=conf, ready=[(LOCAL, port)], log_level="info",
                            prefix=UNPRIVILEGED, args=["--reuseport-overlap"])
        refused = self.start_lb(config=conf, ready=[], log_level="info", prefix=UNPRIVILEGED,
                                args=["--reuseport-overlap"], expect_rc=1)
        self.assertEqual(refused.wait_exit(20), 1)
        self.assertIn("Address already in use, and this binder joins no other process's "
                      "listeners", refused.stderr_text())

        joining = os.path.join(self.dir, "binder2.sock")
        self.start_binder(joining, "--reuseport-overlap")
        # Even that binder joins only when asked to, and asked properly.
        listen = "%s:%d" % (LOCAL, port)
        got, n = binder_call(joining, json.dumps({"op": "bind", "listen": listen,
                                                  "count": 1}).encode())
        self.assertEqual((got["ok"], got["errno"], n), (False, errno.EADDRINUSE, 0), got)
        got, n = binder_call(joining, json.dumps({"op": "bind", "listen": listen, "count": 1,
                                                  "join": "yes"}).encode())
        self.assertIn("join must be true or false", got["error"])
        new = self.start_lb(config=conf.replace(self.sock, joining), ready=[],
                            log_level="info", prefix=UNPRIVILEGED, args=["--reuseport-overlap"])
        new.wait_stderr(r"layer4-lb \S+ running", timeout=20)
        self.assertEqual(old.stop(timeout=20), 0)
        self.assertEqual(lbtest.who((LOCAL, port)), "a")   # the new process alone now
        self.assertTrue(new.alive())
        # Without the flag the binder refuses to join, asked or not.
        for join in (False, True):
            got, n = binder_call(self.sock, json.dumps(
                {"op": "bind", "listen": listen, "count": 1, "join": join}).encode())
            self.assertEqual((got["ok"], got["errno"]), (False, errno.EADDRINUSE), got)

    def test_only_the_dataplanes_uid_may_connect(self):
        st = os.stat(self.sock)
        self.assertEqual((st.st_uid, st.st_mode & 0o777), (NOBODY, 0o600))
        r = subprocess.run(["setpriv", "--reuid=65533", "--regid=65533", "--clear-groups",
                            "python3", "-c", "import socket; s = socket.socket(socket.AF_UNIX,"
                            " socket.SOCK_SEQPACKET); s.connect(%r)" % self.sock],
                           stderr=subprocess.PIPE, text=True)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("PermissionError", r.stderr)


if __name__ == "__main__":
    lbtest.main()
