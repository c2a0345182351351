"""Peers that misbehave and limits that bind: each must cost only its own connection.

- clients that stop reading cannot starve the worker's receive buffers for everyone else;
- max_connections leaves the clients past the limit waiting in the backlog, not closed;
- a connection cut by a time-out ends with a reset, never with what looks like a clean end;
- a drain does not wait for a health probe to a backend that never answers.
"""

import re
import signal
import socket
import time

import lbtest
from lbtest import LBTestCase, Client, connect, free_port, listener, who

LOCAL = "127.0.0.1"


def stalled_client(addr, nbytes):
    """A client that asks for nbytes and never reads: a tiny receive window, so the proxy's
    send to it stops at once and keeps its buffers."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(lbtest.HANG)
    s.connect(addr)
    s.sendall(f"SOURCE {nbytes} 7\n".encode())
    return s


def read_until_end(s, timeout=lbtest.HANG):
    """Read to the end of the stream; returns ("eof", n) or ("reset", n)."""
    s.settimeout(timeout)
    n = 0
    try:
        while True:
            d = s.recv(1 << 20)
            if not d:
                return "eof", n
            n += len(d)
    except ConnectionResetError:
        return "reset", n


def end_state(s, limit=256 << 10):
    """How a stalled client's stream stands once it reads a little: "reset", "eof" or "open"
    (data still flowing, or nothing more within a moment)."""
    s.settimeout(0.5)
    n = 0
    try:
        while n < limit:
            d = s.recv(65536)
            if not d:
                return "eof"
            n += len(d)
    except ConnectionResetError:
        return "reset"
    except socket.timeout:
        pass
    return "open"


class OverloadTest(LBTestCase):
    def test_stalled_readers_do_not_starve_others(self):
        # 64 buffers of 4 KiB: 100 clients that never read hold them all (a stalled direction
        # keeps at least the buffer of its blocked send).  A client of another listener on the same worker must still
        # be served: the worker closes the stalled connections to free their buffers.
        src, b = self.backend("src"), self.backend("b")
        sport, bport = free_port(), free_port()
        lb = self.start_lb([listener(sport, [src], name="stall"),
                            listener(bport, [b], name="other")],
                           num_acceptors=1, buffer_size=4096, buffer_count=64)
        stalled = []
        self.addCleanup(lambda: [s.close() for s in stalled])
        for _ in range(100):
            stalled.append(stalled_client((LOCAL, sport), 64 << 20))
        # Every stalled client's backend is sending: the proxy holds what it could not pass on.
        src.wait_open(lambda n: n == 100)
        time.sleep(0.5)

        self.assertEqual(who((LOCAL, bport), timeout=30), "b")
        lb.wait_stderr(r"receive buffers exhausted .* closed \d+ connections whose peers had "
                       r"not read")
        # Those closed were cut with a reset: none of them reads a clean end of stream.
        ends = [end_state(s) for s in stalled]
        self.assertNotIn("eof", ends)
        self.assertIn("reset", ends)
        self.assertTrue(lb.alive(), lb.tail())

    def test_running_out_of_descriptors_is_logged_once_per_episode(self):
        # 40 descriptors: about 15 proxied connections.  Twice, more clients than that come,
        # then leave: each time accepts fail (EMFILE) and pause, and resume once they can.
        # Each episode is one warning, and its end one line with the count of failures; the
        # retries every 100 ms in between are not logged.
        a = self.backend("a")
        port = free_port()
        lb = self.start_lb([listener(port, [a])], prefix=["prlimit", "--nofile=40:40", "--"])
        for _ in range(2):
            mark = len(lb.stderr_text())
            clients = [socket.create_connection((LOCAL, port), timeout=lbtest.HANG)
                       for _ in range(40)]
            lb.wait_stderr(r"accept failed: Too many open files", since=mark)
            time.sleep(1.5)  # the episode's length: accepts are retried every 100 ms
            for s in clients:
                s.close()
            # Served again: the episode is over.
            self.assertEqual(who((LOCAL, port), timeout=30), "a")
        text = lb.stderr_text()
        warns = re.findall(r"accept failed: Too many open files", text)
        ends = [int(n) for n in re.findall(r"accepting again after (\d+) failed accepts", text)]
        self.assertGreaterEqual(len(warns), 2, "the second episode was not logged")
        self.assertLessEqual(len(warns), len(ends) + 1, "more than one warning per episode")
        self.assertGreater(sum(ends), len(warns), "every failed accept was logged")
        self.assertTrue(lb.alive(), lb.tail())

    def test_clients_past_max_connections_wait_in_the_backlog(self):
        a = self.backend("a")
        port = free_port()
        self.start_lb([listener(port, [a], max_connections=1)], num_acceptors=1)
        self.wait_backends_idle([a])
        first = Client((LOCAL, port))
        self.addCleanup(first.close)
        self.assertEqual(first.who(), "a")
        waiting = []
        self.addCleanup(lambda: [s.close() for s in waiting])
        for _ in range(5):
            s = connect((LOCAL, port))     # the kernel completes the handshake: the backlog
            s.sendall(b"WHO\n")
            waiting.append(s)
        time.sleep(1.0)
        for i, s in enumerate(waiting):
            s.setblocking(False)
            try:
                d = s.recv(100)
                self.fail(f"client {i} past the limit got {d!r} (b'' = closed) instead of "
                          f"waiting")
            except BlockingIOError:
                pass                        # still waiting, as it should
            except ConnectionResetError:
                self.fail(f"client {i} past the limit was reset instead of waiting")
            s.settimeout(lbtest.HANG)
        self.assertEqual(a.counts()["open"], 1)
        # Each place that frees up goes to the next client in the backlog, in order.
        first.close()
        for s in waiting:
            line = b""
            while not line.endswith(b"\n"):
                d = s.recv(100)
                self.assertNotEqual(d, b"", "closed instead of served")
                line += d
            self.assertEqual(line, b"backend=a\n")
            s.close()

    def test_limit_holds_when_a_multishot_accept_was_armed_below_it(self):
        # max_connections 4200 with one worker: far enough from the limit (more than a
        # backlog of 4096) the worker starts with a multishot accept.  Then a burst fills the
        # backlog past the limit: the 150 clients over it must wait, not be accepted and closed.
        limit, burst = 4200, 4350
        soft = lbtest.raise_nofile()
        if soft < 3 * burst:
            self.skipTest(f"file descriptor limit {soft} is too low for {burst} connections")
        echo = self.echo_server()
        port = free_port()
        self.start_lb([listener(port, [echo], max_connections=limit)], num_acceptors=1)
        # The start-up readiness check made one connection through the proxy: let it land.
        lbtest.wait_for(lambda: echo.counts()["accepted"] == 1 and echo.counts()["open"] == 0,
                        what="the readiness check's backend connection")
        base = 1
        socks = []
        self.addCleanup(lambda: [s.close() for s in socks])
        for _ in range(burst):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex((LOCAL, port))
            socks.append(s)
        echo.wait_open(lambda n: n >= limit, timeout=30)
        time.sleep(1.0)   # a correct proxy accepts no more; a broken one closes the rest now
        self.assertEqual(echo.counts()["open"], limit)
        self.assertEqual(echo.counts()["accepted"] - base, limit)
        closed = 0
        for s in socks:
            try:
                if s.recv(1) == b"":
                    closed += 1
            except BlockingIOError:
                pass
            except ConnectionError:
                closed += 1
        self.assertEqual(closed, 0, f"{closed} clients past the limit were closed")
        # A place freed goes to one of those waiting.
        socks.pop(0).close()
        lbtest.wait_for(lambda: echo.counts()["accepted"] - base == limit + 1,
                        what="a waiting client to take the freed place")

    def test_idle_timeout_cuts_with_a_reset(self):
        # The client stops reading mid-stream; the idle time-out ends the connection with data
        # still queued.  It must read as cut (reset), not as a complete stream (FIN).
        src = self.backend("src")
        port = free_port()
        self.start_lb([listener(port, [src], idle_timeout_ms=1000)], num_acceptors=1)
        self.wait_backends_idle([src])
        s = stalled_client((LOCAL, port), 64 << 20)
        self.addCleanup(s.close)
        src.wait_open(lambda n: n == 1)
        src.wait_open(lambda n: n == 0)   # the proxy gave up on it
        end, n = read_until_end(s)
        self.assertEqual(end, "reset", f"read a clean end after {n} of {64 << 20} bytes")
        self.assertLess(n, 64 << 20)

    def test_drain_does_not_wait_for_a_silent_health_probe(self):
        bh_port = self.blackhole()
        good = self.backend("good")
        port = free_port()
        lb = self.start_lb([listener(port, [good, f"{LOCAL}:{bh_port}"],
                                     health_check={"interval_ms": 3600000,
                                                   "timeout_ms": 600000})],
                           num_acceptors=1, drain_timeout_ms=500)
        # The first round of checks starts at once; the probe to the black hole hangs.
        good.wait_open(lambda n: n == 0)
        self.assertEqual(who((LOCAL, port)), "good")
        lb.send_signal(signal.SIGTERM)
        # Hang guard well under the probe's 600 s time-out.
        self.assertEqual(lb.wait_exit(timeout=lbtest.HANG), 0)


if __name__ == "__main__":
    lbtest.main()
