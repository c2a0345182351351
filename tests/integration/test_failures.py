"""Backends that refuse, vanish, hang or close; idle connections; clients that reset."""

import os
import signal
import socket
import struct
import time
import unittest

import lbtest
from lbtest import (LBTestCase, Client, connect, free_port, listener, tally, wait_closed, who)

LOCAL = "127.0.0.1"


class FailuresTest(LBTestCase):
    def test_one_dead_backend_is_skipped(self):
        a, c = self.backends("a", "c")
        dead = self.dead()
        port = free_port()
        self.start_lb([listener(port, [a, dead, c], connect_timeout_ms=10000)],
                      num_acceptors=1)
        names = []
        for i in range(50):
            try:
                names.append(who((LOCAL, port), timeout=5))
            except (OSError, ConnectionError, AssertionError) as e:
                self.fail(f"connection {i} failed with a dead backend in the set: {e!r}")
        counts = tally(names)
        self.assertEqual(set(counts), {"a", "c"}, counts)
        self.assertEqual(sum(counts.values()), 50)

    def test_one_dead_backend_each_algorithm(self):
        for algo in ("least_conn", "random_two", "maglev"):
            with self.subTest(algorithm=algo):
                a, c = self.backend("a"), self.backend("c")
                dead = self.dead()
                port = free_port()
                lb = self.start_lb([listener(port, [dead, a, c], algorithm=algo,
                                             connect_timeout_ms=10000)], num_acceptors=1)
                # maglev: many source addresses, so some map to the dead backend.
                names = [who((LOCAL, port), src=f"127.0.0.{2 + i % 40}", timeout=5)
                         for i in range(40)]
                self.assertLessEqual(set(names), {"a", "c"})
                self.assertEqual(lb.stop(), 0)

    def test_all_backends_dead(self):
        d1, d2 = self.dead(), self.dead()
        port = free_port()
        lb = self.start_lb([listener(port, [d1, d2], connect_timeout_ms=10000)],
                           num_acceptors=1)
        for i in range(5):
            s = connect((LOCAL, port), timeout=5)
            try:
                try:
                    s.sendall(b"WHO\n")
                except (BrokenPipeError, ConnectionResetError):
                    continue
                # Closed right away, not after connect_timeout_ms (10 s): hang guard 5 s.
                got = wait_closed(s, timeout=5)
                self.assertEqual(got, b"", f"attempt {i}: data from nowhere")
            finally:
                s.close()
        self.assertTrue(lb.alive(), "layer4-lb died")

    def test_dead_backend_comes_back(self):
        # Passive health must not keep a backend out forever: it returns after
        # fail_timeout_ms once it listens again.
        a = self.backend("a")
        b = self.backend("b")
        b.stop_listening()
        port = free_port()
        self.start_lb([listener(port, [a, b], connect_timeout_ms=10000, max_fails=1,
                                fail_timeout_ms=300)], num_acceptors=1)
        names = [who((LOCAL, port), timeout=5) for _ in range(10)]
        self.assertEqual(set(names), {"a"})
        b.start_listening()

        def b_seen():
            return who((LOCAL, port), timeout=5) == "b"
        lbtest.wait_for(b_seen, 15, "backend b to get connections again", interval=0.1)

    def test_connect_timeout_moves_on(self):
        # A backend whose accept queue is full drops SYNs: connects to it hang.  The proxy
        # gives up after connect_timeout_ms and tries another backend.
        bh_port = self.blackhole()
        good = self.backend("good")
        port = free_port()
        self.start_lb([listener(port, [f"{LOCAL}:{bh_port}", good], connect_timeout_ms=300,
                                connect_retries=2, max_fails=100)], num_acceptors=1)
        for i in range(4):
            self.assertEqual(who((LOCAL, port), timeout=10), "good")

    def test_idle_timeout(self):
        a = self.backend("a")
        port = free_port()
        self.start_lb([listener(port, [a], idle_timeout_ms=500)], num_acceptors=1)
        idle = Client((LOCAL, port))
        self.addCleanup(idle.close)
        active = Client((LOCAL, port))
        self.addCleanup(active.close)
        self.assertEqual(idle.who(), "a")
        self.assertEqual(active.who(), "a")
        # Traffic every 100 ms for 1.5 s keeps a connection alive.
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            try:
                self.assertEqual(active.who(), "a")
            except (OSError, ConnectionError) as e:
                self.fail(f"active connection closed by the proxy: {e!r}")
            time.sleep(0.1)
        # The idle one is closed by the proxy (hang guard 10 s).
        wait_closed(idle.sock, timeout=10)
        # The active one still works, and is closed once it goes idle in turn.
        self.assertEqual(active.who(), "a")
        wait_closed(active.sock, timeout=10)
        # Backend sides are closed too.
        a.wait_open(lambda n: n == 0)

    def test_idle_timeout_during_one_way_transfer(self):
        # A long download counts as activity: it must not be cut at idle_timeout_ms.
        a = self.backend("a")
        port = free_port()
        self.start_lb([listener(port, [a], idle_timeout_ms=500)], num_acceptors=1)
        s = connect((LOCAL, port))
        self.addCleanup(s.close)
        s.sendall(b"DRIBBLE 15 1000 100 11\n")   # 15 chunks over ~1.4 s, client silent
        got = lbtest.recv_all(s)
        self.assertEqual(got, lbtest.gen_bytes(11, 15000))

    def test_backend_accepts_then_closes(self):
        closer = self.backend("closer", mode="close")
        good = self.backend("good")
        p1, p2 = free_port(), free_port()
        lb = self.start_lb([listener(p1, [closer], name="closing"),
                            listener(p2, [good], name="fine")], num_acceptors=1)
        for i in range(5):
            s = connect((LOCAL, p1), timeout=10)
            try:
                try:
                    s.sendall(b"WHO\n")
                except (BrokenPipeError, ConnectionResetError):
                    continue
                self.assertEqual(wait_closed(s, timeout=10), b"")
            finally:
                s.close()
        self.assertTrue(lb.alive())
        self.assertEqual([who((LOCAL, p2)) for _ in range(5)], ["good"] * 5)

    def test_backend_goes_away_mid_connection(self):
        a = self.backend("a")
        port = free_port()
        self.start_lb([listener(port, [a])], num_acceptors=1)
        cs = [Client((LOCAL, port)) for _ in range(3)]
        for c in cs:
            self.addCleanup(c.close)
            self.assertEqual(c.who(), "a")
        a.close_connections()
        for c in cs:
            wait_closed(c.sock, timeout=10)
        self.assertEqual(who((LOCAL, port)), "a")

    def test_client_resets_mid_transfer(self):
        a = self.backend("a")
        port = free_port()
        self.start_lb([listener(port, [a])], num_acceptors=1)
        for i in range(5):
            s = connect((LOCAL, port))
            s.sendall(f"SOURCE {64 << 20} {i}\n".encode())
            s.recv(65536)
            # Close with unread data and SO_LINGER 0: a reset.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        # The proxy drops the backend sides and keeps serving.
        a.wait_open(lambda n: n == 0, 15)
        self.assertEqual(who((LOCAL, port)), "a")

    def response_then_reset(self, fin_first):
        """A backend that answers and then resets (SO_LINGER 0), all while the LB is stopped,
        so the response, the reset and (fin_first) a FIN before it are queued together.  The
        client must get the response before the reset: the relay may hold a send back to see
        whether a FIN follows, but never drops what it holds."""
        ls = socket.socket()
        self.addCleanup(ls.close)
        ls.bind((LOCAL, 0))
        ls.listen(8)
        ls.settimeout(10)
        port = free_port()
        lb = self.start_lb([listener(port, [f"{LOCAL}:{ls.getsockname()[1]}"])],
                           num_acceptors=1)
        got = []
        for _ in range(3):
            c = connect((LOCAL, port), timeout=10)
            self.addCleanup(c.close)
            c.sendall(b"req")
            while True:                       # skip the readiness probe's connection
                b, _ = ls.accept()
                b.settimeout(10)
                if b.recv(10) == b"req":
                    break
                b.close()
            os.kill(lb.pid, signal.SIGSTOP)
            try:
                b.sendall(b"RESPONSE")
                if fin_first:
                    b.shutdown(socket.SHUT_WR)
                    time.sleep(0.05)
                b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                b.close()
                time.sleep(0.2)
            finally:
                os.kill(lb.pid, signal.SIGCONT)
            data = b""
            try:
                while len(data) < 8:
                    d = c.recv(100)
                    if not d:
                        break
                    data += d
            except (ConnectionResetError, socket.timeout):
                pass
            got.append(data)
        self.assertEqual(got, [b"RESPONSE"] * 3)

    def test_backend_answers_then_resets(self):
        self.response_then_reset(fin_first=False)

    def test_backend_answers_closes_then_resets(self):
        self.response_then_reset(fin_first=True)

    def test_client_closes_before_backend_connects(self):
        # Connections that come and go at once (health probes of a front LB, port scans).
        a = self.backend("a")
        port = free_port()
        self.start_lb([listener(port, [a])], num_acceptors=1)
        for _ in range(50):
            s = connect((LOCAL, port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        a.wait_open(lambda n: n == 0, 15)
        self.assertEqual(who((LOCAL, port)), "a")


if __name__ == "__main__":
    lbtest.main()
