"""Bulk transfers through the proxy, byte-exact, and half-close in both directions."""

import hashlib
import os
import queue
import signal
import socket
import threading
import time
import unittest

import lbtest
from lbtest import LBTestCase, connect, free_port, gen_bytes, gen_hash, gen_stream, listener

LOCAL = "127.0.0.1"
MB = 1 << 20
BIG = 100 * MB
OP_TIMEOUT = 30  # hang guard per socket operation


class BulkTest(LBTestCase):
    def setUp(self):
        self.b = self.backend("bulk")
        self.port = free_port()
        self.lb = self.start_lb([listener(self.port, [self.b])], num_acceptors=1)
        self.addr = (LOCAL, self.port)

    def read_line(self, s):
        line, rest = lbtest._read_line(s, b"")
        self.assertIsNotNone(line, "connection closed before the reply line")
        return line.decode(), rest

    def sink_result(self):
        try:
            return self.b.results.get(timeout=OP_TIMEOUT)
        except queue.Empty:
            self.fail("backend never reached EOF (hang guard)")

    def test_upload_100mb(self):
        s = connect(self.addr, timeout=OP_TIMEOUT)
        self.addCleanup(s.close)
        s.sendall(b"SINK\n")
        h = hashlib.sha256()
        for chunk in gen_stream(1, BIG):
            h.update(chunk)
            s.sendall(chunk)
        s.shutdown(socket.SHUT_WR)
        line, rest = self.read_line(s)
        self.assertEqual(line, f"{BIG} {h.hexdigest()}")
        self.assertEqual(rest + lbtest.recv_all(s), b"")
        self.assertEqual(self.sink_result(), ("sink", BIG, h.hexdigest()))

    def test_download_100mb(self):
        s = connect(self.addr, timeout=OP_TIMEOUT)
        self.addCleanup(s.close)
        s.sendall(f"SOURCE {BIG} 2\n".encode())
        h = hashlib.sha256()
        n = 0
        while True:
            d = s.recv(1 << 18)
            if not d:
                break
            h.update(d)
            n += len(d)
        self.assertEqual(n, BIG)
        self.assertEqual(h.hexdigest(), gen_hash(2, BIG))

    def test_full_duplex_echo(self):
        # Both directions at full speed at once: 32 MB sent and echoed back concurrently.
        size = 32 * MB
        s = connect(self.addr, timeout=OP_TIMEOUT)
        self.addCleanup(s.close)
        s.sendall(b"ECHO\n")
        t, err = lbtest.send_in_background(s, 5, size)
        h = hashlib.sha256()
        n = 0
        while True:
            d = s.recv(1 << 18)
            if not d:
                break
            h.update(d)
            n += len(d)
        t.join(OP_TIMEOUT)
        self.assertFalse(t.is_alive())
        self.assertEqual(err, [])
        self.assertEqual(n, size)
        self.assertEqual(h.hexdigest(), gen_hash(5, size))

    def test_client_half_close(self):
        # Client sends, shuts its write side; the backend sees EOF, then replies and closes;
        # the client gets the whole reply.
        size = 5 * MB
        tail = MB
        s = connect(self.addr, timeout=OP_TIMEOUT)
        self.addCleanup(s.close)
        s.sendall(f"SINK {tail}\n".encode())
        h = hashlib.sha256()
        for chunk in gen_stream(6, size):
            h.update(chunk)
            s.sendall(chunk)
        s.shutdown(socket.SHUT_WR)
        line, rest = self.read_line(s)
        self.assertEqual(line, f"{size} {h.hexdigest()}")
        body = rest + lbtest.recv_all(s)
        self.assertEqual(len(body), tail)
        self.assertEqual(body, gen_bytes(99, tail))
        self.assertEqual(self.sink_result(), ("sink", size, h.hexdigest()))
        # Both sides closed: the backend connection is gone too.
        self.b.wait_open(lambda n: n == 0)

    def test_client_half_close_no_data(self):
        # Shut down the write side right after the command: the backend still answers.
        s = connect(self.addr, timeout=OP_TIMEOUT)
        self.addCleanup(s.close)
        s.sendall(b"SINK 10\n")
        s.shutdown(socket.SHUT_WR)
        body = lbtest.recv_all(s)
        self.assertEqual(body, f"0 {hashlib.sha256().hexdigest()}\n".encode() + gen_bytes(99, 10))

    def test_backend_half_close(self):
        # The other direction: the backend sends, shuts its write side, and still reads what
        # the client sends after that.
        down = MB
        up = 2 * MB
        s = connect(self.addr, timeout=OP_TIMEOUT)
        self.addCleanup(s.close)
        s.sendall(f"HALFCLOSE {down} 3\n".encode())
        got = lbtest.recv_all(s)
        self.assertEqual(len(got), down)
        self.assertEqual(got, gen_bytes(3, down))
        h = hashlib.sha256()
        for chunk in gen_stream(4, up):
            h.update(chunk)
            s.sendall(chunk)
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(self.sink_result(), ("halfclose", up, h.hexdigest()))
        self.b.wait_open(lambda n: n == 0)

    def test_many_medium_transfers_in_parallel(self):
        # Several connections each moving 8 MB both ways at the same time.
        self.assertEqual(parallel_transfers(self.addr, 6), [])


class SmallBufferPoolTest(LBTestCase):
    """A tiny receive-buffer pool (64 x 4 KiB per worker): transfers must wait for buffers,
    never fail or corrupt, when the pool runs dry."""

    def test_parallel_transfers_small_pool(self):
        b = self.backend("bulk")
        port = free_port()
        self.start_lb([listener(port, [b])], num_acceptors=1, buffer_size=4096,
                      buffer_count=64)
        self.assertEqual(parallel_transfers((LOCAL, port), 8, size=4 * MB), [])


def parallel_transfers(addr, count, size=8 * MB):
    """count threads, each downloading then uploading `size` bytes; returns the errors."""
    errs = []

    def one(k):
        try:
            s = connect(addr, timeout=OP_TIMEOUT)
            with s:
                s.sendall(f"SOURCE {size} {100 + k}\n".encode())
                h = hashlib.sha256()
                n = 0
                while True:
                    d = s.recv(1 << 18)
                    if not d:
                        break
                    h.update(d)
                    n += len(d)
                if (n, h.hexdigest()) != (size, gen_hash(100 + k, size)):
                    errs.append(f"download {k}: {n} bytes, hash mismatch")
            s = connect(addr, timeout=OP_TIMEOUT)
            with s:
                s.sendall(b"SINK\n")
                h = hashlib.sha256()
                for chunk in gen_stream(200 + k, size):
                    h.update(chunk)
                    s.sendall(chunk)
                s.shutdown(socket.SHUT_WR)
                reply = lbtest.recv_all(s).decode()
                if reply != f"{size} {h.hexdigest()}\n":
                    errs.append(f"upload {k}: reply {reply!r}")
        except Exception as e:
            errs.append(f"{k}: {e!r}")

    threads = [threading.Thread(target=one, args=(k,), daemon=True) for k in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
        if t.is_alive():
            errs.append("transfer hung (hang guard 120 s)")
            break
    return errs


class UrgentDataTest(LBTestCase):
    def start_paused_echo(self):
        """An echo backend behind an LB whose relay is up; returns (lb, client socket)."""
        e = self.echo_server()
        port = free_port()
        lb = self.start_lb([listener(port, [e.addr_str])], num_acceptors=1)
        c = connect((LOCAL, port), timeout=OP_TIMEOUT)
        self.addCleanup(c.close)
        c.sendall(b"x")
        self.assertEqual(c.recv(10), b"x")      # relaying, both sockets registered
        return lb, c

    def read_n(self, c, n):
        got = b""
        c.settimeout(5)                         # hang guard: far below idle_timeout_ms
        try:
            while len(got) < n:
                d = c.recv(100)
                if not d:
                    break
                got += d
        except socket.timeout:
            pass
        return got

    def test_data_before_urgent_byte(self):
        # "abc" then the urgent "X", and nothing after: the read of "abc" stops at the urgent
        # mark and the kernel reports the socket as not empty, which the relay takes for a
        # FIN behind the data and holds the send for the next receive.  That receive finds
        # no data and waits; the held "abc" must go anyway, not wait for the client's next
        # byte.
        lb, c = self.start_paused_echo()
        os.kill(lb.pid, signal.SIGSTOP)
        try:
            c.send(b"abcX", socket.MSG_OOB)
            time.sleep(0.2)
        finally:
            os.kill(lb.pid, signal.SIGCONT)
        self.assertEqual(self.read_n(c, 3), b"abc")

    def test_data_behind_urgent_byte(self):
        # A read stops short at TCP's urgent mark with data still queued behind it: that data
        # must still be relayed (the epoll engine once took the short read for an empty
        # socket and waited for an edge that never came).  The urgent byte itself is not
        # part of the stream without SO_OOBINLINE, as through any proxy that reads normally.
        lb, c = self.start_paused_echo()
        os.kill(lb.pid, signal.SIGSTOP)         # both segments wait until it reads
        try:
            c.send(b"hello", socket.MSG_OOB)    # "o" is the urgent byte
            c.send(b"world")
            time.sleep(0.2)
        finally:
            os.kill(lb.pid, signal.SIGCONT)
        self.assertEqual(self.read_n(c, 9), b"hellworld")


if __name__ == "__main__":
    lbtest.main()
