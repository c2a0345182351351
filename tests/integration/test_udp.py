"""UDP listeners: DNS through the proxy (real unbound backends, real dig clients), flows and
their stickiness (per flow; with maglev across flows), `responses`, idle timeout, max_flows and
eviction, oversized datagrams, passive health from ICMP port unreachable and active checks on
health_check.port, IPv6, a wildcard listener's reply address, the drain at SIGTERM, applies that
add, change and remove a UDP listener under traffic, a tcp and a udp listener on one address,
and the refusal of keys of the other protocol (--check and apply).

Backends are unbound processes (a local-zone answering `who.test. TXT "<name>"`, so an answer
names the backend that gave it) or, where finer control is needed, a Python UDP backend that
tags each reply with its name and the source port the proxy's flow socket used: one flow is one
connected socket, so a new source port at the backend means a new flow.

A UDP listener cannot be probed with a TCP connect, so every LB here has a control socket and
is ready once status shows its listeners bound: no probe traffic disturbs the counts.  One
worker (NUM_ACCEPTORS=1) wherever exact counts are asserted: flows and max_flows are per
worker.  Loopback does not lose datagrams, so every query is expected to be answered unless
the test says why not.  Timeouts are hang guards only.
"""

import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time

import lbtest
from lbtest import (LBTestCase, UdpEcho, ctl_call, family_of, free_port, free_udp_port,
                    have_ipv6, listener, run_lb, status_listener, tally, wait_for, who)
from test_metrics import Metrics, parse_prometheus

LOCAL = "127.0.0.1"
V6 = "::1"
UNBOUND = shutil.which("unbound") or ("/usr/sbin/unbound"
                                      if os.path.exists("/usr/sbin/unbound") else None)
DIG = shutil.which("dig")
TXT = 16


# ----------------------------------------------------------------------------------------
# Ports


# ----------------------------------------------------------------------------------------
# DNS on the wire (enough for a TXT question and its answer)


def dns_query(qid, name="who.test", qtype=TXT):
    hdr = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)   # RD set, one question
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return hdr + q + struct.pack("!HH", qtype, 1)


def _skip_name(msg, pos):
    while True:
        n = msg[pos]
        if n == 0:
            return pos + 1
        if n & 0xC0 == 0xC0:
            return pos + 2
        pos += 1 + n


def dns_txt(msg):
    """(id, first TXT string of the answer or None) of a DNS reply."""
    qid, _flags, qd, an, _ns, _ar = struct.unpack("!HHHHHH", msg[:12])
    pos = 12
    for _ in range(qd):
        pos = _skip_name(msg, pos) + 4
    for _ in range(an):
        pos = _skip_name(msg, pos)
        typ, _cls, _ttl, rdlen = struct.unpack("!HHIH", msg[pos:pos + 10])
        pos += 10
        rdata = msg[pos:pos + rdlen]
        pos += rdlen
        if typ == TXT and rdata:
            return qid, rdata[1:1 + rdata[0]].decode()
    return qid, None


class DnsClient:
    """A connected UDP socket asking who.test TXT.  Connected: replies from any address but
    the one asked (the listener's) are filtered out by the kernel, so an answer proves it came
    back from the listener's address.  One socket = one client address = one flow."""

    def __init__(self, addr, src=None):
        self.addr = addr
        self.sock = socket.socket(family_of(addr[0]), socket.SOCK_DGRAM)
        if src is not None:
            self.sock.bind(src if isinstance(src, tuple) else (src, 0))
        self.sock.connect(addr)
        self.qid = int.from_bytes(os.urandom(2), "big")

    @property
    def port(self):
        return self.sock.getsockname()[1]

    def ask(self, timeout=lbtest.HANG):
        """The TXT answer, or None when nothing came back within timeout, or "refused" when
        the kernel reported ICMP port unreachable for the listener's address."""
        self.qid = (self.qid + 1) & 0xFFFF
        try:
            self.sock.send(dns_query(self.qid))
        except ConnectionRefusedError:
            return "refused"
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                msg = self.sock.recv(65535)
            except socket.timeout:
                return None
            except ConnectionRefusedError:
                return "refused"
            qid, txt = dns_txt(msg)
            if qid == self.qid:        # an older query's late answer is skipped
                return txt

    def close(self):
        self.sock.close()


def dig(addr, src=None, timeout=2):
    """Ask who.test TXT with dig through addr; src: "ip" or "ip#port".  The TXT string, or
    None when dig got no answer."""
    host, port = addr
    argv = [DIG, "+short", "+tries=1", f"+timeout={timeout}", "-p", str(port), f"@{host}",
            "who.test", "TXT"]
    if src is not None:
        argv[1:1] = ["-b", src]
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=timeout + 10)
    lines = [l.strip() for l in r.stdout.splitlines() if l.strip()]
    if r.returncode != 0 or len(lines) != 1 or not lines[0].startswith('"'):
        if r.returncode == 0 and lines and not lines[0].startswith(";"):
            raise AssertionError(f"dig: unexpected output {r.stdout!r}")
        return None
    return lines[0].strip('"')


# ----------------------------------------------------------------------------------------
# Backends


class Unbound(lbtest.Endpoint):
    """A real DNS server: unbound in the foreground, answering who.test TXT "<name>" from a
    local-zone (static: it never recurses), on host at a port free for UDP and TCP (its TCP
    port serves the UDP listener's active health check)."""

    def __init__(self, tc, name, host=LOCAL, port=None):
        self.tc = tc
        self.name = name
        self.host = host
        self.dir = tc.tmpdir()
        self.log_path = os.path.join(self.dir, "unbound.log")
        self.proc = None
        for attempt in range(1 if port else 3):   # another process may take the port meanwhile
            self.port = port or free_udp_port(host, tcp_too=True)
            try:
                self._start()
                return
            except AssertionError:
                self.stop()
                if attempt == 2:
                    raise

    def _start(self):
        conf = os.path.join(self.dir, "unbound.conf")
        with open(conf, "w") as f:
            f.write(f"""server:
    verbosity: 1
    interface: {self.host}
    port: {self.port}
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "{self.dir}"
    pidfile: ""
    use-syslog: no
    logfile: ""
    num-threads: 1
    so-reuseport: no
    access-control: 127.0.0.0/8 allow
    access-control: ::1 allow
    module-config: "iterator"
    auto-trust-anchor-file: ""
    outgoing-range: 16
    local-zone: "test." static
    local-data: 'who.test. 0 IN TXT "{self.name}"'
remote-control:
    control-enable: no
""")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([UNBOUND, "-d", "-c", conf], stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=self._log, cwd=self.dir,
                                     preexec_fn=lbtest._die_with_parent if lbtest._prctl else None)
        lbtest._live.add(self.proc)

        def answers():
            if self.proc.poll() is not None:
                raise AssertionError(f"unbound {self.name} exited with {self.proc.returncode}:"
                                     f"\n{self.log()}")
            c = DnsClient(self.addr)
            try:
                return c.ask(timeout=0.5) == self.name
            finally:
                c.close()
        wait_for(answers, what=f"unbound {self.name} to answer on {self.addr_str}",
                 interval=0.05)

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-3000:]
        except FileNotFoundError:
            return ""

    def stop(self):
        """Stop it (by pid): from then on datagrams to its port get ICMP port unreachable."""
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            os.kill(p.pid, signal.SIGTERM)
            try:
                p.wait(lbtest.HANG)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(lbtest.HANG)
        lbtest._live.discard(p)
        self._log.close()
        self.proc = None


class UdpClient:
    """A connected UDP client socket for the UdpEcho protocol."""

    def __init__(self, addr, src=None):
        self.sock = socket.socket(family_of(addr[0]), socket.SOCK_DGRAM)
        if src is not None:
            self.sock.bind((src, 0))
        self.sock.connect(addr)

    def send(self, data):
        self.sock.send(data)

    def recv(self, timeout=lbtest.HANG):
        """One datagram, or None after timeout."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65535)
        except socket.timeout:
            return None

    def ask(self, data=b"hello", timeout=lbtest.HANG):
        """Send data, return (backend name, the flow socket's port at the backend, payload).
        AssertionError when nothing comes back (hang guard)."""
        self.send(data)
        r = self.recv(timeout)
        if r is None:
            raise AssertionError(f"no reply to {data[:40]!r} within {timeout} s (hang guard)")
        name, port, payload = r.split(b"|", 2)
        return name.decode(), int(port), payload

    def close(self):
        self.sock.close()


# ----------------------------------------------------------------------------------------
# Status and metrics


def udp_listener(port, backends, name="dns", host=LOCAL, **extra):
    return listener(port, backends, name=name, host=host, protocol="udp", **extra)


class UdpCase(LBTestCase):
    tools = ()     # external programs the tests of the class need

    def setUp(self):
        super().setUp()
        missing = [t for t, path in (("unbound", UNBOUND), ("dig", DIG))
                   if t in self.tools and not path]
        if missing:
            # scripts/test.sh installs them (unbound, dnsutils) and says so with
            # LBTEST_REQUIRE_TOOLS: there a missing tool fails, never a silent skip.
            if os.environ.get("LBTEST_REQUIRE_TOOLS"):
                self.fail(f"{' and '.join(missing)} not installed (Debian: unbound dnsutils)")
            self.skipTest(f"needs {' and '.join(missing)} (Debian: unbound dnsutils)")

    def unbound(self, name, host=LOCAL, port=None):
        u = Unbound(self, name, host, port)
        self.addCleanup(u.stop)
        return u

    def echo(self, name, host=LOCAL):
        e = UdpEcho(name, host)
        self.addCleanup(e.close)
        return e

    def udp_client(self, addr, src=None):
        c = UdpClient(addr, src)
        self.addCleanup(c.close)
        return c

    def dns_client(self, addr, src=None):
        c = DnsClient(addr, src)
        self.addCleanup(c.close)
        return c

    def start_udp_lb(self, listeners, ready=(), metrics=False, **kw):
        """Start the LB with a control socket (and a metrics endpoint with metrics=True); it
        is ready when status shows every listener bound.  ready: TCP addresses to wait for
        too."""
        d = self.tmpdir()
        sock = os.path.join(d, "ctl.sock")
        # Open flows hold SIGTERM's drain until they go idle (30 s by default) or the drain
        # deadline: a short deadline lets the tests' LBs stop at cleanup.
        kw.setdefault("drain_timeout_ms", 1000)
        if metrics:
            mport = free_port()
            kw["metrics"] = f"{LOCAL}:{mport}"
        lb = self.start_lb(listeners, ready=list(ready), control_socket=sock, **kw)
        lb.ctl = sock
        lb.maddr = (LOCAL, mport) if metrics else None

        def up():
            if not lb.alive():
                raise AssertionError(f"layer4-lb exited with {lb.proc.returncode}\n{lb.tail()}")
            try:
                st = ctl_call(sock, {"op": "status"}, timeout=2)
            except OSError:
                return False
            ls = st.get("listeners", [])
            return len(ls) == len(listeners) and all(l.get("bound") for l in ls)
        wait_for(up, what="the control socket and every listener bound", interval=0.05)
        return lb

    def status(self, lb):
        st = ctl_call(lb.ctl, {"op": "status"})
        self.assertIs(st.get("ok"), True, st)
        return st

    def listener_status(self, lb, name="dns"):
        l = status_listener(self.status(lb), name)
        self.assertIsNotNone(l, f"no listener {name} in status")
        return l

    def udp(self, lb, name="dns"):
        """The listener's udp counters from status."""
        l = self.listener_status(lb, name)
        self.assertEqual(l.get("protocol"), "udp", l)
        self.assertIn("udp", l, l)
        return l["udp"]

    def wait_udp(self, lb, pred, what, name="dns", timeout=lbtest.HANG):
        """Poll the listener's udp counters until pred(udp) holds; returns them."""
        last = {}

        def ok():
            last["u"] = self.udp(lb, name)
            return pred(last["u"])
        try:
            wait_for(ok, timeout, what, interval=0.05)
        except AssertionError as e:
            raise AssertionError(f"{e}; last udp status: {last.get('u')}") from None
        return last["u"]

    def expect_udp(self, lb, name="dns", **want):
        """Poll until the listener's udp counters equal want (drops as drops_<reason>);
        returns them.  Counters may reach status a moment after the datagrams: the poll is
        the hang guard, the values are exact."""
        def pick(u):
            return {k: (u["drops"][k[6:]] if k.startswith("drops_") else u[k]) for k in want}
        u = self.wait_udp(lb, lambda u: pick(u) == want, f"udp counters {want}", name)
        self.assertEqual(pick(u), want, u)
        return u

    def backend_status(self, lb, addr_str, name="dns"):
        for b in self.listener_status(lb, name)["backends"]:
            if b["address"] == addr_str:
                return b
        self.fail(f"no backend {addr_str} in listener {name}")

    def scrape(self, lb):
        code, _, body = lbtest.http_get(lb.maddr)
        self.assertEqual(code, 200, body[:300])
        return Metrics(parse_prometheus(body.decode("utf-8")))


# ----------------------------------------------------------------------------------------
# DNS with real servers and clients


class DnsTest(UdpCase):
    tools = ("unbound", "dig")

    def test_fixtures_answer_directly(self):
        # The fixtures on their own, so a failure below is the proxy's and not theirs.
        u = self.unbound("solo")
        self.assertEqual(dig(u.addr), "solo")
        self.assertEqual(dig(u.addr, src="127.0.0.9"), "solo")

    def test_dns_many_clients_spread_and_sticky(self):
        b1, b2 = self.unbound("b1"), self.unbound("b2")
        port = free_udp_port()
        addr = (LOCAL, port)
        lb = self.start_udp_lb([udp_listener(port, [b1, b2])], metrics=True)
        l = self.listener_status(lb)
        self.assertEqual((l["protocol"], l["listen"], l["algorithm"]),
                         ("udp", f"{LOCAL}:{port}", "round_robin"), l)

        self.assertIn(dig(addr), ("b1", "b2"))
        # 20 clients (distinct addresses, each from a fixed port: one flow each), 3 queries
        # each: every one answered, each client always by the same backend (its flow's).
        clients = []
        for i in range(20):
            src = f"127.0.0.{10 + i}"
            clients.append(f"{src}#{free_udp_port(src)}")
        first = {}
        for rnd in range(3):
            for c in clients:
                got = dig(addr, src=c)
                self.assertIsNotNone(got, f"client {c}, round {rnd}: no answer")
                if rnd == 0:
                    first[c] = got
                else:
                    self.assertEqual(got, first[c], f"client {c} moved from {first[c]} to {got}")
        # Round robin over new flows, one worker: an even split.
        self.assertEqual(tally(first.values()), {"b1": 10, "b2": 10}, first)

        # idle_timeout_ms is 30 s by default: every flow is still open.
        u = self.expect_udp(lb, datagrams_in=61, datagrams_out=61, flows_created=21,
                            flows_active=21, flows_evicted=0, flows_timed_out=0)
        self.assertEqual(set(u["drops"].values()), {0}, u)
        self.assertGreater(u["bytes_in"], 61 * 20, u)     # a who.test TXT query is > 20 bytes
        self.assertGreater(u["bytes_out"], u["bytes_in"], u)   # answers carry the question
        # Backend counters count flows.
        per = {b.name: self.backend_status(lb, b.addr_str) for b in (b1, b2)}
        self.assertEqual(sum(p["connections"] for p in per.values()), 21, per)
        self.assertEqual(sum(p["active"] for p in per.values()), 21, per)

        m = self.scrape(lb)
        self.assertEqual(m.get("layer4lb_listener_datagrams_total", listener="dns",
                               direction="in"), 61)
        self.assertEqual(m.get("layer4lb_listener_datagrams_total", listener="dns",
                               direction="out"), 61)
        self.assertEqual(m.get("layer4lb_listener_flows_active", listener="dns"), 21)
        self.assertEqual(m.get("layer4lb_listener_flows_total", listener="dns",
                               event="created"), 21)
        self.assertEqual(m.get("layer4lb_listener_flows_total", listener="dns",
                               event="evicted"), 0)
        self.assertEqual(m.total("layer4lb_listener_datagrams_dropped_total", listener="dns"), 0)
        for b in (b1, b2):
            self.assertEqual(m.get("layer4lb_backend_connections_total", listener="dns",
                                   backend=b.addr_str), per[b.name]["connections"])
            self.assertEqual(m.get("layer4lb_backend_up", listener="dns", backend=b.addr_str), 1)

    def test_dns_maglev_sticky_across_flows_and_responses_close_them(self):
        b1, b2, b3 = self.unbound("b1"), self.unbound("b2"), self.unbound("b3")
        port = free_udp_port()
        addr = (LOCAL, port)
        # Two workers: the maglev table must give the same answer on each.  responses: 1 ends
        # every flow at its answer, so each query below opens a flow of its own.
        lb = self.start_udp_lb([udp_listener(port, [b1, b2, b3], algorithm="maglev",
                                             responses=1)], num_acceptors=2)
        first = {}
        n = 0
        for rnd in range(3):
            for i in range(2, 32):
                src = f"127.0.0.{i}"
                got = dig(addr, src=src)    # a new source port each time: a new flow
                n += 1
                self.assertIsNotNone(got, f"{src} round {rnd}: no answer")
                if rnd == 0:
                    first[src] = got
                else:
                    self.assertEqual(got, first[src], f"{src} moved from {first[src]} to {got}")
        self.assertEqual(set(tally(first.values())), {"b1", "b2", "b3"}, first)
        # Every answer closed its flow: as many flows as queries, none left open.
        self.expect_udp(lb, flows_active=0, datagrams_out=n, datagrams_in=n, flows_created=n,
                        flows_evicted=0, flows_timed_out=0)
        self.assertEqual(sum(b["active"] for b in self.listener_status(lb)["backends"]), 0)

        # The same client from one fixed port: still one flow per query.
        c = f"127.0.0.40#{free_udp_port('127.0.0.40')}"
        names = [dig(addr, src=c) for _ in range(5)]
        self.assertEqual(len(set(names)), 1, names)
        self.assertIsNotNone(names[0])
        self.expect_udp(lb, flows_active=0, datagrams_out=n + 5, flows_created=n + 5)

    def test_dead_backend_detected_passively_and_avoided(self):
        b1, b2 = self.unbound("b1"), self.unbound("b2")
        port = free_udp_port()
        addr = (LOCAL, port)
        lb = self.start_udp_lb([udp_listener(port, [b1, b2], max_fails=2,
                                             fail_timeout_ms=60000)], metrics=True)
        # A client whose flow is on b2, held (fixed socket) across b2's death.
        held = None
        for _ in range(4):
            c = self.dns_client(addr)
            if c.ask() == "b2":
                held = c
                break
        self.assertIsNotNone(held, "no flow reached b2 in 4 tries (round robin)")
        self.assertEqual(held.ask(), "b2")
        self.assertEqual(self.backend_status(lb, b2.addr_str)["passive"], "ok")

        b2.stop()
        # New clients: those sent to b2 go unanswered (the datagram reached a closed port),
        # and each ICMP port unreachable that comes back is a failure: the second (max_fails)
        # takes b2 out.  Round robin sends one new flow in two there; 20 is the hang guard.
        lost = 0
        for i in range(20):
            got = self.dns_client(addr).ask(timeout=1)
            if got is None:
                lost += 1
            else:
                self.assertEqual(got, "b1")
            if self.backend_status(lb, b2.addr_str)["passive"] == "out":
                break
        bs = self.backend_status(lb, b2.addr_str)
        self.assertEqual(bs["passive"], "out", bs)
        self.assertIs(bs["healthy"], False, bs)
        self.assertEqual((lost, bs["connect_failures"]), (2, 2), bs)
        # From now on every new client is answered, by b1.
        names = [dig(addr, src=f"127.0.0.{50 + i}") for i in range(10)]
        self.assertEqual(names, ["b1"] * 10)
        # The held client's flow to b2 failed; its next datagrams open a flow to b1.  Its
        # first query after the death may be lost (sent on the old flow before the ICMP came
        # back), so up to 3 tries.
        got = [held.ask(timeout=1) for _ in range(3)]
        self.assertIn(got[0], (None, "b1"), got)
        self.assertEqual(got[1:], ["b1", "b1"], got)
        m = self.scrape(lb)
        self.assertEqual(m.get("layer4lb_backend_up", listener="dns", backend=b2.addr_str), 0)
        self.assertEqual(m.get("layer4lb_backend_up", listener="dns", backend=b1.addr_str), 1)
        self.assertEqual(m.get("layer4lb_backend_connect_errors_total", listener="dns",
                               backend=b2.addr_str, kind="refused"), 2 + (got[0] is None))
        self.assertTrue(lb.alive())

    def test_active_check_on_the_tcp_port_takes_a_dead_server_out(self):
        # health_check.port names one port for every backend's address: two servers on
        # 127.0.0.2 and 127.0.0.3 at the same port, each answering TCP there too (as a DNS
        # server does on 53).  A stopped one is found out by the check, not by traffic: no
        # query is lost to it.
        hp = free_udp_port(tcp_too=True, hosts=("127.0.0.2", "127.0.0.3"))
        b1 = self.unbound("b1", host="127.0.0.2", port=hp)
        b2 = self.unbound("b2", host="127.0.0.3", port=hp)
        port = free_udp_port()
        addr = (LOCAL, port)
        lb = self.start_udp_lb([udp_listener(port, [b1, b2], health_check={
            "port": hp, "interval_ms": 200, "timeout_ms": 100, "rise": 1, "fall": 1})])

        def checks():
            return {b["address"]: b["check"] for b in self.listener_status(lb)["backends"]}
        wait_for(lambda: set(checks().values()) == {"up"}, what="both backends checked up")
        self.assertEqual(set(dig(addr, src=f"127.0.0.{20 + i}") for i in range(4)),
                         {"b1", "b2"})
        b2.stop()
        wait_for(lambda: checks()[b2.addr_str] == "down", what="the check to take b2 out")
        bs = self.backend_status(lb, b2.addr_str)
        self.assertEqual((bs["healthy"], bs["passive"]), (False, "ok"), bs)
        # Every query answered, all by b1: none went to the dead server.
        names = [dig(addr, src=f"127.0.0.{30 + i}") for i in range(10)]
        self.assertEqual(names, ["b1"] * 10)
        self.expect_udp(lb, datagrams_in=14, datagrams_out=14)

    def test_all_backends_dead_counts_no_backend(self):
        # A port nobody listens on, found out by passive health; then no usable backend.
        gone = free_udp_port()
        port = free_udp_port()
        addr = (LOCAL, port)
        lb = self.start_udp_lb([udp_listener(port, [f"{LOCAL}:{gone}"], max_fails=1,
                                             fail_timeout_ms=60000)])
        for i in range(5):
            self.assertIn(self.dns_client(addr).ask(timeout=1), (None, "refused"))
            if self.backend_status(lb, f"{LOCAL}:{gone}")["passive"] == "out":
                break
        self.assertEqual(self.backend_status(lb, f"{LOCAL}:{gone}")["passive"], "out")
        self.assertIn(self.dns_client(addr).ask(timeout=1), (None, "refused"))
        self.expect_udp(lb, drops_no_backend=1, flows_active=0)
        self.assertTrue(lb.alive())

    def test_ipv6(self):
        if not have_ipv6():
            self.skipTest("::1 unavailable")
        a6, b6 = self.unbound("a6", host=V6), self.unbound("b6", host=V6)
        v4 = self.unbound("v4")
        p6, p4 = free_udp_port(V6), free_udp_port()
        lb = self.start_udp_lb([udp_listener(p6, [a6, b6, v4], name="v6", host=V6),
                                udp_listener(p4, [a6], name="v4-to-v6")])
        l = self.listener_status(lb, "v6")
        self.assertEqual(l["listen"], f"[{V6}]:{p6}", l)
        # Nine new flows from nine fixed ports, round robin: three each; each sticky.
        clients = [self.dns_client((V6, p6)) for _ in range(9)]
        first = [c.ask() for c in clients]
        self.assertEqual(tally(first), {"a6": 3, "b6": 3, "v4": 3}, first)
        self.assertEqual([c.ask() for c in clients], first)
        # dig over IPv6, and an IPv4 listener in front of an IPv6 backend.
        self.assertIn(dig((V6, p6)), ("a6", "b6", "v4"))
        self.assertEqual(dig((LOCAL, p4)), "a6")
        self.expect_udp(lb, "v6", flows_created=10, datagrams_in=19, datagrams_out=19)

    def test_tcp_and_udp_listener_on_one_address(self):
        web = self.backend("web")
        d1 = self.unbound("d1")
        port = free_udp_port(tcp_too=True)
        lb = self.start_udp_lb([listener(port, [web], name="web"),
                                udp_listener(port, [d1], name="dns")], ready=[(LOCAL, port)])
        self.assertEqual(who((LOCAL, port)), "web")
        self.assertEqual(dig((LOCAL, port)), "d1")
        self.assertEqual(who((LOCAL, port)), "web")
        self.assertEqual(dig((LOCAL, port)), "d1")
        st = self.status(lb)
        self.assertEqual(status_listener(st, "web").get("protocol"), "tcp")
        self.assertEqual(status_listener(st, "dns")["protocol"], "udp")
        self.expect_udp(lb, datagrams_in=2, datagrams_out=2)
        self.assertGreaterEqual(status_listener(self.status(lb), "web")["accepted"], 2)

    def test_apply_adds_changes_removes_udp_listener_under_traffic(self):
        f, b1, b2, b3 = (self.unbound(n) for n in ("f", "b1", "b2", "b3"))
        fport, p1, p2 = free_udp_port(), free_udp_port(), free_udp_port()
        # The file's listener is udp too; the applies carry "dns" unchanged every time and add,
        # change and remove "extra" around it.
        lb = self.start_udp_lb([udp_listener(fport, [f], name="file")], num_acceptors=2)
        dns = udp_listener(p1, [b1], name="dns")

        def apply(version, listeners):
            r = ctl_call(lb.ctl, {"op": "apply", "version": version, "listeners": listeners})
            self.assertIs(r.get("ok"), True, f"apply {version} refused: {r}")
            self.assertEqual(r.get("version"), version, r)
            return r["changes"]

        apply(1, [dns])
        self.assertEqual(dig((LOCAL, p1)), "b1")

        # Traffic on "dns" and on the file's listener throughout: each client asks 25 times
        # from one socket (one flow, which must survive the applies), then a new one.
        stop = threading.Event()
        stats = {"sent": 0, "answered": 0, "wrong": [], "lost": []}

        def traffic():
            k = 0
            while not stop.is_set():
                target, want = ((LOCAL, p1), "b1") if k % 2 == 0 else ((LOCAL, fport), "f")
                c = DnsClient(target)
                try:
                    for _ in range(25):
                        if stop.is_set():
                            break
                        stats["sent"] += 1
                        got = c.ask(timeout=3)
                        if got == want:
                            stats["answered"] += 1
                        elif got is None or got == "refused":
                            stats["lost"].append((k, target[1], got))
                        else:
                            stats["wrong"].append((k, target[1], got))
                        stop.wait(0.005)
                finally:
                    c.close()
                k += 1
        t = threading.Thread(target=traffic, daemon=True)
        t.start()
        self.addCleanup(stop.set)
        wait_for(lambda: stats["answered"] >= 20, what="traffic to start")

        ch = apply(2, [dns, udp_listener(p2, [b2], name="extra")])
        self.assertEqual((ch["listeners_added"], ch["listeners_changed"],
                          ch["listeners_removed"]), (1, 0, 0), ch)
        self.assertEqual([dig((LOCAL, p2)) for _ in range(4)], ["b2"] * 4)
        held = self.dns_client((LOCAL, p2))
        self.assertEqual(held.ask(), "b2")

        ch = apply(3, [dns, udp_listener(p2, [b3], name="extra", algorithm="maglev")])
        self.assertEqual((ch["listeners_added"], ch["listeners_changed"],
                          ch["listeners_removed"]), (0, 1, 0), ch)
        self.assertEqual((ch["backends_added"], ch["backends_removed"]), (1, 1), ch)
        # New flows go to the new backend.
        self.assertEqual([dig((LOCAL, p2), src=f"127.0.0.{60 + i}") for i in range(6)],
                         ["b3"] * 6)
        ex = self.listener_status(lb, "extra")
        self.assertEqual(([b["address"] for b in ex["backends"]], ex["algorithm"]),
                         ([b3.addr_str], "maglev"), ex)
        # The flow opened before the change stays on its removed backend while it drains
        # (drain_timeout_ms, 1 s here), and is closed after: the client's next datagrams open
        # a flow to b3.  (The datagram in flight at the cut may go unanswered.)
        self.assertEqual(held.ask(), "b2")
        wait_for(lambda: held.ask(timeout=1) == "b3", 15,
                 what="the drained flow to give way to one on b3", interval=0.1)

        ch = apply(4, [dns])
        self.assertEqual((ch["listeners_added"], ch["listeners_changed"],
                          ch["listeners_removed"]), (0, 0, 1), ch)
        # The removed listener stops receiving once the workers have taken the apply in (as
        # for TCP, a moment after the reply); its socket stays open only while its flows
        # drain (drain_timeout_ms, 1 s here), then the port refuses: a connected client
        # socket gets the ICMP port unreachable.
        wait_for(lambda: self.dns_client((LOCAL, p2)).ask(timeout=0.5) == "refused", 15,
                 what="the removed listener's port to refuse")
        self.assertIsNone(status_listener(self.status(lb), "extra"))

        n = stats["answered"]
        wait_for(lambda: stats["answered"] >= n + 20, what="traffic after the last apply")
        stop.set()
        t.join(lbtest.HANG)
        self.assertFalse(t.is_alive(), "the traffic thread hangs")
        # No datagram of the untouched listeners may be lost or misrouted across the applies.
        self.assertEqual(stats["wrong"], [], stats)
        self.assertEqual(stats["lost"], [], stats)
        self.assertEqual(stats["answered"], stats["sent"], stats)
        self.assertGreater(stats["sent"], 40, stats)
        # "dns" was never changed: its flows were not re-created by the applies (each client
        # socket is one flow).
        u = self.udp(lb)
        self.assertEqual(u["flows_evicted"], 0, u)
        self.assertEqual(set(u["drops"].values()), {0}, u)
        st = self.status(lb)
        self.assertEqual(st["applied_version"], 4, st)
        self.assertEqual(sorted(l["name"] for l in st["listeners"]), ["dns", "file"], st)


# ----------------------------------------------------------------------------------------
# Flows in detail, with a Python backend


class FlowTest(UdpCase):
    def test_flow_per_client_and_replies_from_listener_address(self):
        a, b = self.echo("a"), self.echo("b")
        port = free_udp_port()
        addr = (LOCAL, port)
        lb = self.start_udp_lb([udp_listener(port, [a, b])])
        c1, c2, c3 = (self.udp_client(addr) for _ in range(3))
        up = down = 0

        def ask(c, data):
            nonlocal up, down
            r = c.ask(data)
            up += len(data)
            down += len(b"%s|%d|" % (r[0].encode(), r[1])) + len(r[2])
            return r
        r1, r2, r3 = ask(c1, b"one"), ask(c2, b"two"), ask(c3, b"three")
        self.assertEqual((r1[0], r2[0], r3[0]), ("a", "b", "a"))   # round robin by flow
        self.assertEqual((r1[2], r2[2], r3[2]), (b"one", b"two", b"three"))
        self.assertNotEqual(r1[1], r3[1], "two clients share one flow socket")
        # Each client keeps its flow: same backend, same flow socket (source port).
        for c, r in ((c1, r1), (c2, r2), (c3, r3)):
            for i in range(5):
                got = ask(c, b"again %d" % i)
                self.assertEqual(got[:2], r[:2])
                self.assertEqual(got[2], b"again %d" % i)
        # Datagrams are never split or merged: a burst of sizes comes back one for one.
        sizes = [1, 100, 1400, 9000, 60000, 0, 7]     # an empty datagram is one too
        for n in sizes:
            c1.send(bytes([n % 251]) * n)
            up += n
        for n in sizes:
            r = c1.recv()
            self.assertIsNotNone(r, f"no reply for the {n}-byte datagram (hang guard)")
            self.assertEqual(r, b"a|%d|" % r1[1] + bytes([n % 251]) * n)
            down += len(r)
        self.assertEqual([n for n in a.lengths() + b.lengths() if n > 100],
                         [1400, 9000, 60000])
        self.expect_udp(lb, flows_created=3, flows_active=3, datagrams_in=25, datagrams_out=25,
                        bytes_in=up, bytes_out=down)
        self.assertEqual(self.backend_status(lb, a.addr_str)["active"], 2)
        self.assertEqual(self.backend_status(lb, b.addr_str)["active"], 1)

    def test_responses_closes_flow_after_that_many_replies(self):
        e = self.echo("e")
        p1, p2, p0 = free_udp_port(), free_udp_port(), free_udp_port()
        lb = self.start_udp_lb([udp_listener(p1, [e], name="one", responses=1),
                                udp_listener(p2, [e], name="two", responses=2),
                                udp_listener(p0, [e], name="never")])

        # The backend answers every "TWICE" twice.  responses: 1 passes the first reply and
        # closes the flow: the second is not relayed, and the next query opens a new flow.
        c = self.udp_client((LOCAL, p1))
        for i in range(5):
            self.assertEqual(c.ask(b"TWICE %d" % i)[2], b"TWICE %d" % i)
            # The flow is gone once its reply is out; then the second reply has nowhere to go.
            self.wait_udp(lb, lambda u: u["flows_active"] == 0, "the flow to close", "one")
            self.assertIsNone(c.recv(timeout=0.3), "a reply past responses: 1 was relayed")
        self.expect_udp(lb, "one", flows_created=5, flows_active=0, datagrams_in=5,
                        datagrams_out=5, flows_timed_out=0, flows_evicted=0)

        # responses: 2 passes both and then closes.
        c = self.udp_client((LOCAL, p2))
        for i in range(3):
            first = c.ask(b"TWICE %d" % i)
            second = c.recv()
            self.assertIsNotNone(second, "the second reply of two was not relayed")
            self.assertEqual(second, b"e|%d|TWICE %d" % (first[1], i))
            self.wait_udp(lb, lambda u: u["flows_active"] == 0, "the flow to close", "two")
        self.expect_udp(lb, "two", flows_created=3, flows_active=0, datagrams_in=3,
                        datagrams_out=6)

        # responses: 0 (the default): the flow stays and relays every reply.
        c = self.udp_client((LOCAL, p0))
        first = c.ask(b"TWICE")
        self.assertIsNotNone(c.recv())
        for i in range(3):
            self.assertEqual(c.ask(b"x")[1], first[1])
        self.expect_udp(lb, "never", flows_created=1, flows_active=1, datagrams_in=4,
                        datagrams_out=5)

    def test_wildcard_listener_replies_from_the_address_written_to(self):
        # A 0.0.0.0 listener: the reply must leave from the address each client wrote to
        # (IP_PKTINFO), or the client's connected socket drops it.
        e = self.echo("e")
        port = free_udp_port(host="0.0.0.0")
        lb = self.start_udp_lb([udp_listener(port, [e], host="0.0.0.0")])
        for dst in ("127.0.0.1", "127.0.0.7", "127.0.0.42"):
            c = self.udp_client((dst, port))
            self.assertEqual(c.ask(b"to " + dst.encode())[2], b"to " + dst.encode(), dst)
        self.expect_udp(lb, datagrams_in=3, datagrams_out=3, flows_created=3)

    def test_sigterm_drains_open_flows(self):
        # SIGTERM: the listener stops taking datagrams, an open flow still relays its
        # backend's replies, and the process exits once its flows are idle (before the
        # 20 s drain deadline: the hang guard).
        e = self.echo("e")
        port = free_udp_port()
        addr = (LOCAL, port)
        lb = self.start_udp_lb([udp_listener(port, [e])], drain_timeout_ms=20000)
        c = self.udp_client(addr)
        c.send(b"DRIBBLE 4 300")
        self.assertTrue(c.recv().endswith(b"|dribble 0"))
        lb.send_signal(signal.SIGTERM)
        lb.wait_stderr(r"drain", timeout=lbtest.HANG)
        for i in range(1, 4):
            r = c.recv()
            self.assertIsNotNone(r, f"reply {i} lost in the drain (hang guard)")
            self.assertTrue(r.endswith(b"|dribble %d" % i), r)
        # A new client is not served any more.
        late = self.udp_client(addr)
        late.send(b"late")
        try:
            got = late.recv(timeout=0.5)
        except ConnectionRefusedError:       # the listener's socket is already closed
            got = None
        self.assertIsNone(got, "a new flow opened during the drain")
        self.assertEqual(lb.wait_exit(timeout=19), 0)
        self.assertNotIn(4, e.lengths(), "the late datagram reached the backend")

    def test_idle_timeout_closes_flows(self):
        e = self.echo("e")
        port = free_udp_port()
        addr = (LOCAL, port)
        lb = self.start_udp_lb([udp_listener(port, [e], idle_timeout_ms=1000)])
        idle = self.udp_client(addr)
        active = self.udp_client(addr)
        dribble = self.udp_client(addr)
        idle.ask()
        active_port = active.ask()[1]
        # A flow whose client is silent but whose backend keeps sending is not idle: 10
        # replies 300 ms apart (3 s, three idle timeouts) all arrive.
        dribble.send(b"DRIBBLE 10 300")
        self.expect_udp(lb, flows_active=3, flows_created=3)
        # The active client sends every 100 ms meanwhile: its flow stays.
        end = time.monotonic() + 2.5
        while time.monotonic() < end:
            self.assertEqual(active.ask()[1], active_port, "the active flow was re-created")
            time.sleep(0.1)
        for i in range(10):
            r = dribble.recv()
            self.assertIsNotNone(r, f"dribbled reply {i} not relayed (hang guard)")
            self.assertTrue(r.endswith(b"|dribble %d" % i), r)
        # The idle one timed out (it said nothing for 2.5 s).
        u = self.wait_udp(lb, lambda u: u["flows_timed_out"] >= 1, "the idle flow to time out")
        self.assertEqual(u["flows_created"], 3, u)
        # Its next datagram is answered, on a new flow.
        idle.ask()
        self.expect_udp(lb, flows_created=4)
        # Everything goes once silent.
        self.expect_udp(lb, flows_active=0, flows_created=4, flows_timed_out=4,
                        flows_evicted=0)
        self.assertEqual(self.backend_status(lb, e.addr_str)["active"], 0)

    def test_max_flows_evicts_least_recently_used(self):
        e = self.echo("e")
        port = free_udp_port()
        addr = (LOCAL, port)
        lb = self.start_udp_lb([udp_listener(port, [e], max_flows=2)], metrics=True)
        c1, c2, c3 = (self.udp_client(addr) for _ in range(3))
        c1.ask(b"1")
        p2 = c2.ask(b"2")[1]
        self.expect_udp(lb, flows_active=2, flows_evicted=0, flows_created=2)
        # A third flow evicts the least recently used: c1's.
        p3 = c3.ask(b"3")[1]
        self.expect_udp(lb, flows_active=2, flows_evicted=1, flows_created=3)
        # c2 and c3 keep theirs.
        self.assertEqual(c2.ask(b"2")[1], p2)
        self.assertEqual(c3.ask(b"3")[1], p3)
        # c1's next datagram is answered, on a new flow; it evicts c2 (used before c3).
        p1b = c1.ask(b"1 again")[1]
        self.assertNotEqual(p1b, p3)
        self.assertEqual(c3.ask(b"3")[1], p3)
        self.expect_udp(lb, flows_active=2, flows_evicted=2, flows_created=4)
        c2.ask(b"2 again")                                  # evicts c1 (c3 was used since)
        self.assertEqual(c3.ask(b"3")[1], p3)
        self.expect_udp(lb, flows_active=2, flows_evicted=3, flows_created=5)
        m = self.scrape(lb)
        self.assertEqual(m.get("layer4lb_listener_flows_total", listener="dns",
                               event="evicted"), 3)
        self.assertEqual(m.get("layer4lb_listener_flows_active", listener="dns"), 2)
        self.assertEqual(self.backend_status(lb, e.addr_str)["active"], 2)
        # Many more clients than the cap: every one answered, the cap held.
        for i in range(20):
            self.assertEqual(self.udp_client(addr).ask(b"n")[0], "e")
        self.expect_udp(lb, flows_active=2, flows_evicted=23, flows_created=25)

    def test_oversized_datagram_dropped_and_counted(self):
        e = self.echo("e")
        port = free_udp_port()
        addr = (LOCAL, port)
        lb = self.start_udp_lb([udp_listener(port, [e])], buffer_size=4096, metrics=True)
        c = self.udp_client(addr)
        fport = c.ask(b"small")[1]
        # 6000 bytes, past the 4096-byte buffer: dropped whole, not cut to 4096.
        c.send(b"y" * 6000)
        self.wait_udp(lb, lambda u: u["drops"]["oversized"] == 1, "the oversized drop")
        # A datagram that fits still goes through intact, on the same flow.
        self.assertEqual(c.ask(b"z" * 3500), ("e", fport, b"z" * 3500))
        self.assertIsNone(c.recv(timeout=0.2), "something came back for the oversized one")
        self.assertEqual(e.lengths(), [5, 3500], "the backend got a cut or oversized datagram")
        # A reply too large for the buffer is dropped and counted too; the flow goes on.
        c.send(b"BIG 6000")
        self.wait_udp(lb, lambda u: u["drops"]["oversized"] == 2, "the oversized reply drop")
        self.assertEqual(c.ask(b"after")[2], b"after")
        self.assertIsNone(c.recv(timeout=0.2), "an oversized reply was relayed")
        # Relayed: small, the 3500 bytes, "BIG 6000" and "after" up; three replies down.
        self.expect_udp(lb, datagrams_out=3, flows_created=1, flows_active=1)
        self.assertIn(self.udp(lb)["datagrams_in"], (4, 5))
        m = self.scrape(lb)
        self.assertEqual(m.get("layer4lb_listener_datagrams_dropped_total", listener="dns",
                               reason="oversized"), 2)


# ----------------------------------------------------------------------------------------
# Configuration checks


class UdpConfigTest(UdpCase):
    def write(self, text):
        path = os.path.join(self.tmpdir(), "udp.yaml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_check_accepts_udp_listener(self):
        text = lbtest.render_config([
            udp_listener(5353, ["127.0.0.1:5300"], algorithm="maglev", idle_timeout_ms=30000,
                         responses=1, max_flows=16384, max_fails=3, fail_timeout_ms=10000,
                         health_check={"port": 5300, "interval_ms": 2000}),
            listener(5353, ["127.0.0.1:5300"], name="dns-tcp")])
        r = run_lb(["--check", "--config", self.write(text)])
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_check_refuses_keys_of_the_other_protocol(self):
        cases = [(udp_listener(5353, ["127.0.0.1:5300"], proxy_protocol="v1"), "proxy_protocol"),
                 (udp_listener(5353, ["127.0.0.1:5300"], connect_timeout_ms=100),
                  "connect_timeout_ms"),
                 (udp_listener(5353, ["127.0.0.1:5300"], connect_retries=1), "connect_retries"),
                 (udp_listener(5353, ["127.0.0.1:5300"], max_connections=10), "max_connections"),
                 (listener(5353, ["127.0.0.1:5300"], responses=1), "responses"),
                 (listener(5353, ["127.0.0.1:5300"], max_flows=10), "max_flows"),
                 (udp_listener(5353, ["127.0.0.1:5300"], health_check={"interval_ms": 2000}),
                  "port")]
        for l, key in cases:
            with self.subTest(key=key, protocol=l["protocol"]):
                text = lbtest.render_config([l])
                path = self.write(text)
                r = run_lb(["--check", "--config", path])
                self.assertNotEqual(r.returncode, 0, f"accepted:\n{text}")
                self.assertIn(key, r.stderr)
                line = lbtest.line_of(text, key + ":") if key != "port" else \
                    lbtest.line_of(text, "health_check:")
                self.assertIn(f"{path}:{line}", r.stderr)

    def test_apply_refuses_proxy_protocol_on_udp(self):
        e = self.echo("e")
        port = free_udp_port()
        lb = self.start_udp_lb([udp_listener(port, [e])])
        r = ctl_call(lb.ctl, {"op": "apply", "version": 1,
                              "listeners": [udp_listener(free_udp_port(), [e], name="pp",
                                                         proxy_protocol="v2")]})
        self.assertIs(r.get("ok"), False, r)
        self.assertIn("proxy_protocol", r.get("error", ""), r)
        self.assertIsNone(status_listener(self.status(lb), "pp"))


if __name__ == "__main__":
    lbtest.main()
