"""Handover: a new process takes over a running one's sockets without a failed connection."""

import array
import json
import os
import re
import shutil
import signal
import socket
import threading
import time
import unittest

import lbtest
from lbtest import (LBTestCase, connect, ctl_call, free_port, listener, render_config,
                    status_listener, udp_query, wait_for)

LOCAL = "127.0.0.1"
OP_GUARD = 5.0          # hang guard of one client operation
SESSION_REQUESTS = 10   # requests of one keep-alive session before it closes
TOOK_OVER = r"takeover: pid \d+ stops accepting and drains; we serve"


class Load:
    """A bounded load on loopback: `per_request` threads open a connection per request, and
    `keepalive` threads run sessions of SESSION_REQUESTS requests each.  Every failure (refused,
    reset, timed out, wrong answer) is counted; nothing is retried."""

    def __init__(self, addr, per_request=2, keepalive=2):
        self.addr = addr
        self.lock = threading.Lock()
        self.conns = self.conn_failures = 0
        self.requests = self.request_failures = 0
        self.errors = []
        self.stop_ev = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True)
                        for n in [1] * per_request + [SESSION_REQUESTS] * keepalive]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def _count(self, conns=0, conn_failures=0, requests=0, request_failures=0, err=None):
        with self.lock:
            self.conns += conns
            self.conn_failures += conn_failures
            self.requests += requests
            self.request_failures += request_failures
            if err is not None and len(self.errors) < 20:
                self.errors.append(repr(err))

    def _session(self, n):
        try:
            s = connect(self.addr, timeout=OP_GUARD)
        except OSError as e:
            self._count(conn_failures=1, request_failures=1, err=e)
            return False
        buf = b""
        done = 0
        try:
            for _ in range(n):
                s.sendall(b"WHO\n")
                while b"\n" not in buf:
                    d = s.recv(4096)
                    if not d:
                        raise ConnectionError("closed before the answer")
                    buf += d
                line, _, buf = buf.partition(b"\n")
                if not line.startswith(b"backend="):
                    raise AssertionError(f"answer {line!r}")
                done += 1
            self._count(conns=1, requests=done)
            return True
        except (OSError, AssertionError) as e:
            self._count(conn_failures=1, requests=done, request_failures=1, err=e)
            return False
        finally:
            s.close()

    def _run(self, n):
        while not self.stop_ev.is_set():
            if not self._session(n):
                time.sleep(0.005)   # a refusal comes back at once: do not spin on it

    def snapshot(self):
        with self.lock:
            return dict(conns=self.conns, conn_failures=self.conn_failures,
                        requests=self.requests, request_failures=self.request_failures)

    def wait_requests(self, more, what):
        """Hang guard: wait until `more` further requests have succeeded."""
        start = self.snapshot()["requests"]
        wait_for(lambda: self.snapshot()["requests"] >= start + more, 30, what)

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(OP_GUARD * 3)
        return self.snapshot()

    def stop_and_check(self, tc, what):
        """Stop, print the tally and assert that nothing failed; returns the tally."""
        got = self.stop()
        msg = (f"{what}: {got['conns']} connections, {got['requests']} requests ok; "
               f"{got['conn_failures']} connections and {got['request_failures']} requests "
               f"failed")
        print("\n" + msg, flush=True)
        tc.assertEqual((got["conn_failures"], got["request_failures"]), (0, 0),
                       f"{msg}: {self.errors}")
        return got


class HandoverCase(LBTestCase):
    def setUp(self):
        d = self.tmpdir()
        self.ho = os.path.join(d, "handover.sock")
        self.ctl = os.path.join(d, "ctl.sock")

    def config(self, port, backends, **top):
        top.setdefault("drain_timeout_ms", 20000)
        return render_config([listener(port, backends)], handover_socket=self.ho,
                             control_socket=self.ctl, **top)

    def first(self, config, port, workers=2):
        lb = self.start_lb(config=config, ready=[(LOCAL, port)], num_acceptors=workers,
                           log_level="info")
        lbtest.wait_ctl_socket(self.ctl)
        return lb

    def successor(self, config, workers=2):
        """Start a process that takes over; returns it once its predecessor was told to drain."""
        lb = self.start_lb(config=config, ready=[], num_acceptors=workers, log_level="info",
                           args=["--takeover", self.ho])
        lb.wait_stderr(TOOK_OVER, timeout=30)
        return lb

    def hand_over(self, old, config, workers=2):
        new = self.successor(config, workers)
        self.assertEqual(old.wait_exit(30), 0, "the old process did not drain and exit 0")
        self.assertRegex(old.stderr_text(), r"handed over to pid \d+: draining")
        return new


class HandoverLoadTest(HandoverCase):
    def run_handovers(self, rounds, per_request, keepalive, workers=(2,)):
        b1, b2 = self.backends("a", "b")
        port = free_port()
        conf = self.config(port, [b1, b2])
        lb = self.first(conf, port, workers[0])
        load = Load((LOCAL, port), per_request, keepalive).start()
        self.addCleanup(load.stop)
        load.wait_requests(50, "load through the first process")
        for i in range(rounds):
            lb = self.hand_over(lb, conf, workers[(i + 1) % len(workers)])
            load.wait_requests(50, f"load through the process of handover {i + 1}")
        got = load.stop_and_check(self, f"{rounds} handovers")
        self.assertGreaterEqual(got["requests"], 50 * (rounds + 1))
        return lb

    def test_twenty_handovers_under_load_lose_nothing(self):
        """Connection-per-request and keep-alive load at once, 20 handovers in a row."""
        self.run_handovers(20, per_request=3, keepalive=3)

    def test_plain_restart_fails_connections(self):
        """The same load and a stop-then-start restart: the failures the handover avoids."""
        b1, b2 = self.backends("a", "b")
        port = free_port()
        conf = self.config(port, [b1, b2])
        lb = self.first(conf, port)
        load = Load((LOCAL, port), 3, 3).start()
        self.addCleanup(load.stop)
        load.wait_requests(50, "load through the first process")
        for i in range(3):
            self.assertEqual(lb.stop(signal.SIGTERM, timeout=30), 0)
            lb = self.first(conf, port)
            load.wait_requests(50, f"load after restart {i + 1}")
        got = load.stop()
        print(f"\n3 plain restarts: {got['conns']} connections, {got['requests']} requests "
              f"ok; {got['conn_failures']} connections and {got['request_failures']} "
              f"requests failed", flush=True)
        self.assertGreater(got["conn_failures"], 0)

    def test_udp_listener_handed_over(self):
        """A udp listener's sockets go to the successor too: no query is lost, and a client's
        flow keeps its backend across the two processes (maglev on either side)."""
        b = self.backend("tcp")
        u1, u2 = self.udp_backend("u1"), self.udp_backend("u2")
        port, uport = free_port(), lbtest.free_udp_port()
        conf = render_config([listener(port, [b]),
                              listener(uport, [u1, u2], name="dns", protocol="udp",
                                       algorithm="maglev")],
                             handover_socket=self.ho, control_socket=self.ctl,
                             drain_timeout_ms=20000)
        lb = self.first(conf, port)
        uaddr = (LOCAL, uport)
        sticky = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sticky.close)
        first = udp_query(uaddr, b"q0", sock=sticky, timeout=OP_GUARD).split(b"|")[0]
        stop, lost, answered, moved = threading.Event(), [], [0], []

        def queries():
            # A new client address per query (a flow each), and the sticky client alongside.
            while not stop.is_set() and answered[0] < 5000:
                try:
                    udp_query(uaddr, b"q", timeout=OP_GUARD)
                    who = udp_query(uaddr, b"s", sock=sticky, timeout=OP_GUARD)
                    answered[0] += 1
                    if who.split(b"|")[0] != first:
                        moved.append(who)
                except OSError as e:
                    lost.append(repr(e))
                    return

        t = threading.Thread(target=queries, daemon=True)
        t.start()
        wait_for(lambda: answered[0] >= 50, 30, "queries through the first process")
        self.successor(conf)
        since = answered[0]
        wait_for(lambda: answered[0] >= since + 50 or lost, 30,
                 "queries through the successor")
        # Its flows idle now (the successor has the clients): it drains in seconds.
        self.assertEqual(lb.wait_exit(30), 0, "the old process did not drain and exit 0")
        stop.set()
        t.join(OP_GUARD * 3)
        print(f"\nudp handover: {answered[0]} query pairs answered, {len(lost)} lost",
              flush=True)
        self.assertEqual(lost, [])
        self.assertEqual(moved, [], "the sticky client changed backend")
        st = ctl_call(self.ctl, {"op": "status"})
        dns = status_listener(st, "dns")
        self.assertEqual(dns["protocol"], "udp")
        self.assertGreater(dns["udp"]["datagrams_in"], 0, "the successor relayed nothing")

    def test_worker_count_changes(self):
        """2 -> 1 -> 3 -> 1 workers: sockets beyond the worker count are accepted from, and
        missing ones are added to the group; the load never fails."""
        lb = self.run_handovers(3, per_request=4, keepalive=2, workers=(2, 1, 3, 1))
        st = ctl_call(self.ctl, {"op": "status"})
        self.assertEqual(st["workers"], 1)


class HandoverStateTest(HandoverCase):
    def test_managed_listeners_and_version_carry_over(self):
        a, m = self.backends("a", "m")
        port, mport = free_port(), free_port()
        conf = self.config(port, [a])
        lb = self.first(conf, port)
        apply = {"op": "apply", "version": 7, "listeners": [
            listener(mport, [m], name="managed/one", algorithm="least_conn")]}
        self.assertTrue(ctl_call(self.ctl, apply)["ok"])
        self.assertEqual(lbtest.who((LOCAL, mport)), "m")
        before = ctl_call(self.ctl, {"op": "status"})
        self.assertEqual(status_listener(before, "managed/one")["accepted"], 1)

        new = self.hand_over(lb, conf)
        # Served at once, by the new process, before anyone applies anything to it.
        self.assertEqual(lbtest.who((LOCAL, mport)), "m")
        st = ctl_call(self.ctl, {"op": "status"})
        self.assertEqual(st["applied_version"], 7)
        one = status_listener(st, "managed/one")
        self.assertIsNotNone(one)
        self.assertTrue(one["managed"])
        self.assertEqual(one["algorithm"], "least_conn")
        # Counters start again in the new process (docs/operations.md says so).
        self.assertEqual(one["accepted"], 1)
        self.assertEqual((st["applies_ok"], st["applies_failed"]), (0, 0))
        # And once more: what it carries over is what it was given.
        newer = self.hand_over(new, conf)
        st = ctl_call(self.ctl, {"op": "status"})
        self.assertEqual(st["applied_version"], 7)
        self.assertEqual(lbtest.who((LOCAL, mport)), "m")
        # A controller's next apply replaces it as usual.
        self.assertTrue(ctl_call(self.ctl, {"op": "apply", "version": 8,
                                            "listeners": []})["ok"])
        wait_for(lambda: refused((LOCAL, mport)), 10, "the managed listener to go")
        self.assertEqual(lbtest.who((LOCAL, port)), "a")
        self.assertTrue(newer.alive())


def refused(addr):
    """Nothing listens: refused, or reset by a listener closing under the connect."""
    try:
        connect(addr, timeout=2).close()
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    return False


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_fd_count(pid):
    """The descriptor count once two readings 200 ms apart agree (hang guard 10 s)."""
    last = [None]

    def same():
        n = fd_count(pid)
        ok, last[0] = n == last[0], n
        if not ok:
            time.sleep(0.2)
        return ok
    wait_for(same, 10, "the descriptor count to settle")
    return last[0]


def fd_links(pid):
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(f"{fd}:{os.readlink(f'/proc/{pid}/fd/{fd}')}")
        except OSError:
            pass
    return out


def seqpacket(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(lbtest.HANG)
    s.connect(path)
    return s


def recv_json(s):
    msg, fds, _, _ = socket.recv_fds(s, 65536, 64)
    for fd in fds:
        os.close(fd)
    return json.loads(msg) if msg else None


class BadPeerTest(HandoverCase):
    def test_hostile_successor_changes_nothing(self):
        a = self.backend("a")
        port = free_port()
        conf = self.config(port, [a])
        lb = self.first(conf, port)
        lbtest.who((LOCAL, port))
        time.sleep(0.3)   # the probe connection's bookkeeping
        before = ctl_call(self.ctl, {"op": "status"})
        fds_before = settled_fd_count(lb.pid)   # once the status client's close is seen
        extra = socket.socket()
        self.addCleanup(extra.close)

        cases = [
            (lambda s: s.send(b"not json"), "not a handover message"),
            (lambda s: s.send(b'{"op":"drain"}'), "unexpected message \"drain\" before hello"),
            (lambda s: s.send(b'{"op":"hello","protocol":2}'), "protocol version not 1"),
            (lambda s: socket.send_fds(s, [b'{"op":"hello","protocol":1}'], [extra.fileno()]),
             "sent us descriptors"),
            (lambda s: socket.send_fds(s, [b'{"op":"hello","protocol":1}'],
                                       [extra.fileno()] * 70), "sent us descriptors"),
            (lambda s: s.send(b"x" * 5000), "message too long"),
        ]
        for send, why in cases:
            with seqpacket(self.ho) as s:
                send(s)
                reply = recv_json(s)
                self.assertEqual(reply["op"], "error", why)
                self.assertIn(why, reply["error"])
        # One successor at a time: a second is turned away while the first is connected.
        with seqpacket(self.ho) as first:
            with seqpacket(self.ho) as second:
                reply = recv_json(second)   # sent at once, before any hello
                self.assertEqual(reply, {"op": "error", "error": "one handover at a time"})
        # A successor that takes the sockets and then hangs up without "drain" (once the old
        # process has seen the first one above hang up: until then it turns us away).
        def hello():
            s = seqpacket(self.ho)
            try:
                s.send(b'{"op":"hello","protocol":1}')
                reply = recv_json(s)
            except (BrokenPipeError, ConnectionResetError):
                reply = None
            if reply and reply["op"] == "begin":
                return s, reply
            s.close()
            return None
        s, begin = wait_for(hello, 10, "the handover socket to take a successor again")
        with s:
            for _ in range(begin["sockets"]):
                self.assertEqual(recv_json(s)["op"], "socket")   # descriptors closed at once
            self.assertEqual(recv_json(s)["op"], "end")
        lb.wait_stderr(r"hung up before telling us to drain; still serving")

        try:
            wait_for(lambda: fd_count(lb.pid) == fds_before, 10,
                     "the descriptor count to settle")
        except AssertionError:
            raise AssertionError(f"{fds_before} descriptors before, now "
                                 f"{fd_links(lb.pid)}") from None
        after = ctl_call(self.ctl, {"op": "status"})
        self.assertFalse(after["draining"])
        self.assertEqual(after["listeners"], before["listeners"])
        self.assertEqual(lbtest.who((LOCAL, port)), "a")
        self.assertTrue(lb.alive())
        # And a real successor still takes over.
        self.hand_over(lb, conf)
        self.assertEqual(lbtest.who((LOCAL, port)), "a")


class FakeOld:
    """A handover socket that answers hello with whatever a test scripts."""

    def __init__(self, path, script, hang_up=False):
        self.hang_up = hang_up
        self.ls = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.ls.bind(path)
        self.ls.listen(1)
        self.ls.settimeout(lbtest.HANG)
        self.script = script
        self.t = threading.Thread(target=self._serve, daemon=True)
        self.t.start()

    def _serve(self):
        try:
            c, _ = self.ls.accept()
        except OSError:
            return
        with c:
            c.settimeout(lbtest.HANG)
            try:
                c.recv(65536)
                for msg, fds in self.script:
                    socket.send_fds(c, [msg], fds) if fds else c.send(msg)
                if not self.hang_up:
                    c.recv(65536)   # until the new process hangs up
            except OSError:
                pass

    def close(self):
        self.ls.close()
        self.t.join(lbtest.HANG)


def begin(sockets, apply_bytes=0):
    return json.dumps({"op": "begin", "protocol": 1, "pid": os.getpid(), "sockets": sockets,
                       "apply_bytes": apply_bytes}).encode()


def sock_msg(listen, count):
    return json.dumps({"op": "socket", "role": "listener", "listen": listen,
                       "count": count}).encode()


class BadOldTest(HandoverCase):
    def takeover_fails(self, script, why, hang_up=False):
        a = self.backend("a")
        port = free_port()
        fake = FakeOld(self.ho, script(port), hang_up)
        self.addCleanup(fake.close)
        lb = self.start_lb(config=self.config(port, [a]), ready=[], log_level="info",
                           args=["--takeover", self.ho], expect_rc=1)
        self.assertEqual(lb.wait_exit(20), 1)
        err = lb.stderr_text()
        self.assertRegex(err, r"takeover: .*" + re.escape(why) + r".*; the running process "
                         r"is unchanged")
        self.assertTrue(refused((LOCAL, port)), "the port was bound after all")

    def test_unreachable(self):
        a = self.backend("a")
        port = free_port()
        lb = self.start_lb(config=self.config(port, [a]), ready=[], log_level="info",
                           args=["--takeover", self.ho], expect_rc=1)
        self.assertEqual(lb.wait_exit(20), 1)
        self.assertIn(f"cannot reach the handover socket {self.ho}: No such file or directory",
                      lb.stderr_text())
        self.assertTrue(refused((LOCAL, port)))

    def test_wrong_message(self):
        self.takeover_fails(lambda port: [(b'{"op":"hello"}', None)], 'expected a "begin"')

    def test_refusal_is_reported(self):
        self.takeover_fails(lambda port: [(b'{"op":"error","error":"draining already"}', None)],
                            "the running process refused: draining already")

    def test_no_descriptors(self):
        self.takeover_fails(lambda port: [(begin(1), None),
                                          (sock_msg(f"{LOCAL}:{port}", 2), None)],
                            "does not carry the descriptors it announces")

    def test_too_many_descriptors(self):
        spare = socket.socket()
        self.addCleanup(spare.close)
        self.takeover_fails(lambda port: [(begin(1), None),
                                          (sock_msg(f"{LOCAL}:{port}", 70),
                                           [spare.fileno()] * 70)],
                            "a message with more than 64 descriptors")

    def test_descriptor_that_is_no_listener(self):
        other = socket.socket()
        self.addCleanup(other.close)
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind((LOCAL, 0))
        other.listen(8)   # listening, but on another port than announced
        self.takeover_fails(lambda port: [(begin(1), None),
                                          (sock_msg(f"{LOCAL}:{port}", 1), [other.fileno()])],
                            "is not a SO_REUSEPORT TCP socket listening there")

    def test_hang_up_midway(self):
        self.takeover_fails(lambda port: [(begin(3), None)], "hung up in the middle",
                            hang_up=True)


class PodHandoverTest(HandoverCase):
    """Two pods of a DaemonSet on one node, as the chart runs them: the handover socket in a
    directory both see (a hostPath), the control socket at the same path in a directory each
    has of its own (an emptyDir), and --takeover-if-running, since the first pod of a node has
    nothing to take over."""

    def start_if_running(self, config, ready, prefix=(), expect_rc=0):
        return self.start_lb(config=config, ready=ready, num_acceptors=2, log_level="info",
                             args=["--takeover-if-running", self.ho], prefix=prefix,
                             expect_rc=expect_rc)

    def test_first_pod_starts_afresh(self):
        a = self.backend("a")
        port = free_port()
        lb = self.start_if_running(self.config(port, [a]), [(LOCAL, port)])
        lb.wait_stderr(r"takeover: no process to take over from \(cannot reach the handover "
                       r"socket .*: No such file or directory\); starting afresh", timeout=10)
        self.assertEqual(lbtest.who((LOCAL, port)), "a")
        # ... and the next one takes over from it.
        new = self.start_if_running(self.config(port, [a]), [])
        new.wait_stderr(TOOK_OVER, timeout=30)
        self.assertEqual(lb.wait_exit(30), 0)
        self.assertEqual(lbtest.who((LOCAL, port)), "a")

    def test_stale_socket_file_of_a_dead_process(self):
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        dead.bind(self.ho)
        dead.close()   # the file stays, nobody listens: connect() is refused
        a = self.backend("a")
        port = free_port()
        lb = self.start_if_running(self.config(port, [a]), [(LOCAL, port)])
        lb.wait_stderr(r"no process to take over from .*Connection refused\); starting "
                       r"afresh", timeout=10)
        new = self.start_if_running(self.config(port, [a]), [])
        new.wait_stderr(TOOK_OVER, timeout=30)
        self.assertEqual(lb.wait_exit(30), 0)

    def test_a_running_process_that_refuses_still_fails(self):
        a = self.backend("a")
        port = free_port()
        fake = FakeOld(self.ho, [(b'{"op":"error","error":"draining already"}', None)])
        self.addCleanup(fake.close)
        lb = self.start_if_running(self.config(port, [a]), [], expect_rc=1)
        self.assertEqual(lb.wait_exit(20), 1)
        self.assertIn("the running process refused: draining already", lb.stderr_text())
        self.assertTrue(refused((LOCAL, port)), "the port was bound after all")

    def test_control_socket_in_each_pods_own_directory(self):
        """The new pod's control socket path names another directory than the old pod's: it
        must serve its own socket there, not the old pod's, or its controller cannot reach it."""
        if os.geteuid() != 0 or not shutil.which("unshare"):
            self.skipTest("needs root and unshare(1) for a mount namespace")
        a, m = self.backends("a", "m")
        port, mport = free_port(), free_port()
        self.ho = os.path.join(self.tmpdir(), "handover.sock")   # both pods see it
        run, pod_b = os.path.dirname(self.ctl), self.tmpdir()
        conf = self.config(port, [a])
        old = self.start_lb(config=conf, ready=[(LOCAL, port)], num_acceptors=2,
                            log_level="info", args=["--wait-after-handover"])
        lbtest.wait_ctl_socket(self.ctl)
        self.assertTrue(ctl_call(self.ctl, {"op": "apply", "version": 3, "listeners": [
            listener(mport, [m], name="managed/one")]})["ok"])
        load = Load((LOCAL, mport), per_request=2, keepalive=2).start()
        load.wait_requests(50, "load through the old pod")
        # The new pod: a mount namespace where its own directory is at the old one's path.
        prefix = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                  'mount --bind "$0" "$1" && shift && exec "$@"', pod_b, run]
        new = self.start_if_running(conf, [], prefix=prefix)
        new.wait_stderr(TOOK_OVER, timeout=30)
        # The old pod's process stays (a container that exits is restarted, and would take
        # the sockets back), answering on its own control socket, until SIGTERM.
        old.wait_stderr(r"handed over and drained: waiting for SIGTERM", timeout=30)
        self.assertTrue(old.alive())
        self.assertTrue(ctl_call(self.ctl, {"op": "ping"})["ok"])
        refusal = ctl_call(self.ctl, {"op": "apply", "version": 9, "listeners": []})
        self.assertFalse(refusal["ok"])
        self.assertIn("handed over to a new process", refusal["error"])
        old.send_signal(signal.SIGTERM)
        self.assertEqual(old.wait_exit(10), 0)
        load.wait_requests(50, "load through the new pod")
        got = load.stop()
        self.assertEqual((got["conn_failures"], got["request_failures"]), (0, 0),
                         f"failures: {got}")
        # Its control socket is in its own directory, and answers for it: its state, and
        # an apply (what the new pod's controller sends) changes what it serves.
        own = os.path.join(pod_b, os.path.basename(self.ctl))
        lbtest.wait_ctl_socket(own)
        self.assertEqual(ctl_call(own, {"op": "status"})["applied_version"], 3)
        self.assertTrue(ctl_call(own, {"op": "apply", "version": 4, "listeners": []})["ok"])
        wait_for(lambda: refused((LOCAL, mport)), 10, "the managed listener removed")
        self.assertEqual(lbtest.who((LOCAL, port)), "a")


if __name__ == "__main__":
    lbtest.main()
