"""PROXY protocol (v1 and v2) to backends: the header, its addresses, and what follows it."""

import hashlib
import ipaddress
import os
import socket
import struct
import threading
import unittest

import lbtest
from lbtest import (LBTestCase, HANG, connect, ctl_call, free_port, gen_hash, gen_stream,
                    have_ipv6, listener, status_listener, wait_for)

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def _recv_exact(c, n):
    buf = b""
    while len(buf) < n:
        d = c.recv(n - len(buf))
        if not d:
            raise EOFError(f"EOF after {len(buf)} of {n} header bytes")
        buf += d
    return buf


def read_header(c):
    """Read one PROXY header, byte by byte where the length is not known yet (so nothing
    after it is consumed).  Returns (version, raw bytes, src (ip, port), dst (ip, port)),
    with src/dst None for UNKNOWN / UNSPEC."""
    first = _recv_exact(c, 12)
    if first == V2_SIG:
        rest = _recv_exact(c, 4)
        ver_cmd, fam, alen = struct.unpack("!BBH", rest)
        body = _recv_exact(c, alen)
        raw = first + rest + body
        if ver_cmd not in (0x20, 0x21):
            raise ValueError(f"v2 version/command byte {ver_cmd:#x}")
        if fam == 0x11 and alen >= 12:
            s, d = socket.inet_ntop(socket.AF_INET, body[0:4]), \
                socket.inet_ntop(socket.AF_INET, body[4:8])
            sp, dp = struct.unpack("!HH", body[8:12])
            return 2, raw, (s, sp), (d, dp)
        if fam == 0x21 and alen >= 36:
            s, d = socket.inet_ntop(socket.AF_INET6, body[0:16]), \
                socket.inet_ntop(socket.AF_INET6, body[16:32])
            sp, dp = struct.unpack("!HH", body[32:36])
            return 2, raw, (s, sp), (d, dp)
        return 2, raw, None, None
    line = first
    while not line.endswith(b"\r\n"):
        if len(line) >= 107:
            raise ValueError(f"v1 line longer than 107 bytes: {line!r}")
        line += _recv_exact(c, 1)
    f = line[:-2].decode("ascii").split(" ")
    if f[0] != "PROXY":
        raise ValueError(f"not a PROXY header: {line!r}")
    if f[1] == "UNKNOWN":
        return 1, line, None, None
    if f[1] not in ("TCP4", "TCP6") or len(f) != 6:
        raise ValueError(f"bad v1 line: {line!r}")
    return 1, line, (f[2], int(f[4])), (f[3], int(f[5]))


class ProxyBackend:
    """Reads the PROXY header, greets at once with what it learned (a server that speaks
    first), then answers "<bytes> <sha256>" for what follows, up to the client's EOF.

    Connections that close before a whole header (health checks) are counted apart."""

    def __init__(self, host="127.0.0.1"):
        self.host = host
        self.headers = []          # (version, raw, src, dst) of every header read
        self.bad = []              # connections whose first bytes were not a header
        self.empty = 0             # connections closed before any byte (health checks)
        self.lock = threading.Lock()
        self.ls = socket.socket(lbtest.family_of(host), socket.SOCK_STREAM)
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind((host, 0))
        self.ls.listen(128)
        self.port = self.ls.getsockname()[1]
        self.stop = threading.Event()
        self.thr = threading.Thread(target=self._loop, daemon=True)
        self.thr.start()

    @property
    def addr_str(self):
        return lbtest.fmt_addr(self.host, self.port)

    def close(self):
        self.stop.set()
        self.ls.close()
        self.thr.join(HANG)

    def _loop(self):
        self.ls.settimeout(0.05)
        while not self.stop.is_set():
            try:
                c, _ = self.ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.settimeout(HANG)
            try:
                h = read_header(c)
            except EOFError as e:
                with self.lock:
                    if str(e).startswith("EOF after 0 "):
                        self.empty += 1     # a health check: connect and close
                    else:
                        self.bad.append(f"truncated header: {e}")
                return
            except ValueError as e:
                with self.lock:
                    self.bad.append(str(e))
                return
            with self.lock:
                self.headers.append(h)
            _, _, src, dst = h
            c.sendall(f"src={src} dst={dst}\n".encode())
            n, sha = 0, hashlib.sha256()
            while True:
                d = c.recv(1 << 18)
                if not d:
                    break
                n += len(d)
                sha.update(d)
            c.sendall(f"{n} {sha.hexdigest()}\n".encode())
        except OSError:
            pass
        finally:
            c.close()


def read_line(s):
    line, rest = lbtest._read_line(s, b"")
    if line is None:
        raise AssertionError("connection closed before a line")
    return line.decode(), rest


def headers_from(b, port):
    """The headers backend b read for the client whose source port is `port`."""
    with b.lock:
        return [h for h in b.headers if h[2] and h[2][1] == port]


class ProxyProtocolTest(LBTestCase):
    def proxy_backend(self, host="127.0.0.1"):
        b = ProxyBackend(host)
        self.addCleanup(b.close)
        return b

    @staticmethod
    def checks_seen(b):
        with b.lock:
            return b.empty

    def start(self, version, host="127.0.0.1", **extra):
        b = self.proxy_backend(host)
        port = free_port(host)
        self.start_lb([listener(port, [b.addr_str], host=host, proxy_protocol=version,
                                **extra)])
        return b, (host, port)

    def check_roundtrip(self, b, addr, version, payload=0):
        """The greeting arrives before the client sends a byte, names the client's own
        address and port and the listener's; then `payload` bytes pass intact."""
        s = connect(addr)
        self.addCleanup(s.close)
        me = s.getsockname()[:2]
        greeting, rest = read_line(s)
        self.assertEqual(rest, b"")
        want_src = (str(ipaddress.ip_address(me[0])), me[1])
        want_dst = (str(ipaddress.ip_address(addr[0])), addr[1])
        self.assertEqual(greeting, f"src={want_src} dst={want_dst}")
        sha = hashlib.sha256()
        for chunk in gen_stream(7, payload):
            sha.update(chunk)
            s.sendall(chunk)
        s.shutdown(socket.SHUT_WR)
        reply, _ = read_line(s)
        self.assertEqual(reply, f"{payload} {sha.hexdigest()}")
        with b.lock:
            self.assertEqual(b.bad, [])
        hs = headers_from(b, me[1])
        self.assertEqual(len(hs), 1, hs)
        self.assertEqual(hs[0][0], version)
        return hs[0]

    def test_v1_ipv4(self):
        b, addr = self.start("v1")
        h = self.check_roundtrip(b, addr, 1, payload=10000)
        self.assertTrue(h[1].startswith(b"PROXY TCP4 127.0.0.1 127.0.0.1 "), h[1])

    def test_v2_ipv4(self):
        b, addr = self.start("v2")
        h = self.check_roundtrip(b, addr, 2, payload=10000)
        self.assertEqual(len(h[1]), 28)

    def test_v1_ipv6(self):
        if not have_ipv6():
            self.skipTest("no IPv6 loopback")
        b, addr = self.start("v1", host="::1")
        h = self.check_roundtrip(b, addr, 1, payload=1000)
        self.assertTrue(h[1].startswith(b"PROXY TCP6 ::1 ::1 "), h[1])

    def test_v2_ipv6(self):
        if not have_ipv6():
            self.skipTest("no IPv6 loopback")
        b, addr = self.start("v2", host="::1")
        h = self.check_roundtrip(b, addr, 2, payload=1000)
        self.assertEqual(len(h[1]), 52)

    def test_header_then_bulk_sent_at_once(self):
        # The client sends 8 MB before reading anything: whatever arrives before the backend
        # is connected queues behind the header, which still goes first and only once.
        b, addr = self.start("v2")
        s = connect(addr)
        self.addCleanup(s.close)
        size = 8 << 20
        t, err = lbtest.send_in_background(s, 11, size)
        greeting, rest = read_line(s)
        self.assertTrue(greeting.startswith("src=('127.0.0.1', "), greeting)
        t.join(HANG)
        self.assertEqual(err, [])
        reply, _ = lbtest._read_line(s, rest)
        self.assertEqual(reply.decode(), f"{size} {gen_hash(11, size)}")
        self.assertEqual(len(headers_from(b, s.getsockname()[1])), 1)

    def test_many_connections(self):
        # Headers live in a per-slot table: connections beyond the first slab chunk (1,024)
        # and reused slots each carry their own client's port.
        lbtest.raise_nofile(4096)
        b, addr = self.start("v1")
        open_socks, ports = [], set()
        for _ in range(1100):
            s = connect(addr)
            open_socks.append(s)
            ports.add(s.getsockname()[1])
        try:
            for s in open_socks:
                greeting, _ = read_line(s)
                self.assertIn(f"{s.getsockname()[1]})", greeting.split(" dst=")[0])
        finally:
            for s in open_socks:
                s.close()
        with b.lock:
            got = [h[2][1] for h in b.headers if h[2][1] in ports]
        self.assertEqual(sorted(got), sorted(ports))

    def test_health_checks_send_no_header(self):
        # A check connects and closes: the backend sees no header and nothing wrong.
        b, addr = self.start("v2", health_check={"interval_ms": 100, "timeout_ms": 50})
        self.check_roundtrip(b, addr, 2)
        wait_for(lambda: self.checks_seen(b) >= 3, what="three health checks")
        with b.lock:
            self.assertEqual(b.bad, [])

    def test_apply_turns_it_on(self):
        d = self.tmpdir()
        sock = os.path.join(d, "ctl.sock")
        b = self.proxy_backend()
        plain = self.backend("plain")
        port = free_port()
        self.start_lb([listener(port, [plain], name="file")], control_socket=sock)
        lbtest.wait_ctl_socket(sock)
        lport = free_port()
        r = ctl_call(sock, {"op": "apply", "version": 1, "listeners": [
            {"name": "pp", "listen": f"127.0.0.1:{lport}", "proxy_protocol": "v2",
             "backends": [{"address": b.addr_str}]}]})
        self.assertIs(r.get("ok"), True, r)
        st = ctl_call(sock, {"op": "status"})
        self.assertEqual(status_listener(st, "pp")["proxy_protocol"], "v2")
        self.assertEqual(status_listener(st, "file")["proxy_protocol"], "off")
        self.check_roundtrip(b, ("127.0.0.1", lport), 2, payload=100)
        # The file's listener is untouched: its backend gets no header.
        self.assertEqual(lbtest.who(("127.0.0.1", port)), "plain")

    def test_bad_value_refused(self):
        b = self.proxy_backend()
        port = free_port()
        lb = self.start_lb([listener(port, [b.addr_str], proxy_protocol="on")], expect_rc=1,
                           wait=False)
        lb.wait_exit()
        self.assertIn("proxy_protocol: must be one of off, v1, v2, got \"on\"",
                      lb.stderr_text())


if __name__ == "__main__":
    unittest.main()
