"""GET /metrics: strict Prometheus text format 0.0.4 and exact counters after known traffic."""

import math
import os
import re
import socket
import time
import unittest

import lbtest
from lbtest import (LBTestCase, connect, free_port, gen_stream, http_get, listener, recv_all,
                    wait_for)

LOCAL = "127.0.0.1"

# --- a strict parser for the text exposition format 0.0.4 ------------------------------

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")
SAMPLE_RX = re.compile(rf"^({NAME})(\{{(.*)\}})? ([^ ]+)( -?[0-9]+)?$")
LABEL_RX = re.compile(rf'({LABEL})="((?:[^"\\\n]|\\[\\"n])*)"')
FLOAT_RX = re.compile(r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$")


class ParseError(AssertionError):
    pass


def _labels(text, lineno):
    out = {}
    pos = 0
    while pos < len(text):
        m = LABEL_RX.match(text, pos)
        if not m:
            raise ParseError(f"line {lineno}: bad label syntax at {text[pos:]!r}")
        name, value = m.group(1), m.group(2)
        if name in out:
            raise ParseError(f"line {lineno}: label {name} given twice")
        out[name] = value.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
        pos = m.end()
        if pos < len(text):
            if text[pos] != ",":
                raise ParseError(f"line {lineno}: expected ',' between labels in {text!r}")
            pos += 1
            if pos == len(text):   # a trailing comma is allowed by the format
                break
    return out


def _value(s, lineno):
    if s in ("NaN", "+Inf", "-Inf"):
        return float(s.replace("+", ""))
    if not FLOAT_RX.match(s):
        raise ParseError(f"line {lineno}: value {s!r} is not a number")
    return float(s)


def parse_prometheus(text):
    """Parse strictly.  Returns {family: {"type", "help", "samples": {(name, labels): value}}}
    where labels is a sorted tuple of (name, value).  Raises ParseError on any deviation."""
    if not text.endswith("\n"):
        raise ParseError("the text does not end with a newline")
    fams = {}
    cur = None            # the family whose samples may follow
    done = set()          # families whose sample block is over
    for lineno, line in enumerate(text[:-1].split("\n"), 1):
        if line == "":
            raise ParseError(f"line {lineno}: empty line")
        if line.startswith("#"):
            m = re.match(rf"^# (HELP|TYPE) ({NAME}) (.*)$", line)
            if not m:
                if line.startswith("# HELP") or line.startswith("# TYPE"):
                    raise ParseError(f"line {lineno}: malformed {line!r}")
                continue   # a plain comment
            kind, name, rest = m.groups()
            f = fams.setdefault(name, {"type": None, "help": None, "samples": {}})
            if f["samples"] or name in done:
                raise ParseError(f"line {lineno}: # {kind} for {name} after its samples")
            if kind == "HELP":
                if f["help"] is not None:
                    raise ParseError(f"line {lineno}: second HELP for {name}")
                if re.search(r"\\[^\\n]", rest):
                    raise ParseError(f"line {lineno}: bad escape in HELP {rest!r}")
                f["help"] = rest
            else:
                if f["type"] is not None:
                    raise ParseError(f"line {lineno}: second TYPE for {name}")
                if rest not in TYPES:
                    raise ParseError(f"line {lineno}: unknown type {rest!r}")
                f["type"] = rest
            if cur is not None and cur != name:
                done.add(cur)
            cur = name
            continue
        m = SAMPLE_RX.match(line)
        if not m:
            raise ParseError(f"line {lineno}: not 'name{{labels}} value': {line!r}")
        name, _, ltext, vtext, _ = m.groups()
        fam = name
        if fam not in fams:
            for suffix in ("_sum", "_count", "_bucket"):
                if name.endswith(suffix) and name[:-len(suffix)] in fams and \
                        fams[name[:-len(suffix)]]["type"] in ("histogram", "summary"):
                    fam = name[:-len(suffix)]
        f = fams.get(fam)
        if f is None or f["help"] is None or f["type"] is None:
            raise ParseError(f"line {lineno}: sample of {name} without # HELP and # TYPE before")
        if fam != cur or fam in done:
            raise ParseError(f"line {lineno}: samples of {fam} are not in one block")
        labels = _labels(ltext, lineno) if ltext is not None else {}
        key = (name, tuple(sorted(labels.items())))
        if key in f["samples"]:
            raise ParseError(f"line {lineno}: series {key} given twice")
        v = _value(vtext, lineno)
        if f["type"] == "counter" and (math.isnan(v) or v < 0):
            raise ParseError(f"line {lineno}: counter {name} is {v}")
        f["samples"][key] = v
    for name, f in fams.items():
        if f["type"] is None or f["help"] is None:
            raise ParseError(f"family {name} lacks # HELP or # TYPE")
    return fams


class Metrics:
    """One scrape, with lookups by family and labels."""

    def __init__(self, fams):
        self.fams = fams

    def get(self, name, **labels):
        f = self.fams.get(name)
        if f is None:
            raise AssertionError(f"no family {name}")
        key = (name, tuple(sorted(labels.items())))
        if key not in f["samples"]:
            raise AssertionError(f"no series {name}{labels}; have "
                                 f"{[dict(k[1]) for k in f['samples']][:20]}")
        return f["samples"][key]

    def series(self, name):
        return {k[1]: v for k, v in self.fams[name]["samples"].items()}

    def total(self, name, **match):
        return sum(v for lbls, v in self.series(name).items()
                   if all(dict(lbls).get(k) == w for k, w in match.items()))


class ParserSelfTest(unittest.TestCase):
    """The parser must itself reject what is wrong, or the format test proves nothing."""

    GOOD = ("# HELP a_total Things.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\"} 3\n"
            "a_total{x=\"2\"} 4e3\n# HELP g A gauge.\n# TYPE g gauge\ng -1\ng{k=\"v\",} NaN\n")

    def test_good(self):
        f = parse_prometheus(self.GOOD)
        self.assertEqual(f["a_total"]["samples"][("a_total", (("x", "1"), ("y", 'q"')))], 3)
        self.assertEqual(f["g"]["samples"][("g", ())], -1)

    def test_bad(self):
        bad = [
            "# TYPE a counter\na 1\n",                                  # no HELP
            "# HELP a x\na 1\n",                                        # no TYPE
            "# HELP a x\n# TYPE a counter\na 1",                         # no final newline
            "# HELP a x\n# TYPE a counter\na one\n",                     # value
            "# HELP a x\n# TYPE a counter\na{b=1} 1\n",                  # unquoted label
            "# HELP a x\n# TYPE a counter\na{1b=\"1\"} 1\n",             # label name
            "# HELP a x\n# TYPE a counter\na{b=\"1\" c=\"2\"} 1\n",      # missing comma
            "# HELP a x\n# TYPE a counter\na 1\na 2\n",                  # duplicate series
            "# HELP a x\n# TYPE a counter\na -1\n",                      # negative counter
            "# HELP a x\n# TYPE a blob\na 1\n",                          # type
            "# HELP a x\n# TYPE a gauge\na 1\n# HELP b y\n# TYPE b gauge\nb 1\na{z=\"1\"} 2\n",
            "# HELP a x\n# TYPE a gauge\na 1\n\n",                       # empty line
            "# HELP a x\n# TYPE a gauge\na  1\n",                        # two spaces
            "# HELP a x\n# TYPE a gauge\n# HELP a y\na 1\n",             # second HELP
        ]
        for t in bad:
            with self.subTest(t):
                with self.assertRaises(ParseError):
                    parse_prometheus(t)


# --- against the dataplane -------------------------------------------------------------

EXPECTED_FAMILIES = {
    "layer4lb_workers": "gauge",
    "layer4lb_applies_total": "counter",
    "layer4lb_applied_version": "gauge",
    "layer4lb_reloads_total": "counter",
    "layer4lb_listener_connections_accepted_total": "counter",
    "layer4lb_listener_connections_active": "gauge",
    "layer4lb_listener_connections_failed_total": "counter",
    "layer4lb_listener_bytes_total": "counter",
    "layer4lb_backend_connections_total": "counter",
    "layer4lb_backend_connections_active": "gauge",
    "layer4lb_backend_connect_errors_total": "counter",
    "layer4lb_backend_up": "gauge",
    "layer4lb_backend_bytes_total": "counter",
    "layer4lb_worker_connections_active": "gauge",
    "layer4lb_worker_connections_accepted_total": "counter",
}


class MetricsTest(LBTestCase):
    def start(self, listeners, workers=2, **top):
        mport = free_port()
        lb = self.start_lb(listeners, num_acceptors=workers, metrics=f"{LOCAL}:{mport}", **top)
        lb.maddr = (LOCAL, mport)
        wait_for(lambda: self._try_scrape(lb), what="the metrics endpoint")
        return lb

    @staticmethod
    def _try_scrape(lb):
        try:
            return http_get(lb.maddr, timeout=2)[0] == 200
        except OSError:
            return False

    def scrape(self, lb):
        code, headers, body = http_get(lb.maddr)
        self.assertEqual(code, 200, body[:300])
        ctype = headers.get("content-type", "")
        self.assertTrue(ctype.startswith("text/plain"), ctype)
        self.assertIn("version=0.0.4", ctype)
        return Metrics(parse_prometheus(body.decode("utf-8")))

    def test_format_and_paths(self):
        a = self.backend("a")
        port = free_port()
        lb = self.start([listener(port, [a], name="web")], workers=2)
        m = self.scrape(lb)
        for name, typ in EXPECTED_FAMILIES.items():
            self.assertIn(name, m.fams)
            self.assertEqual(m.fams[name]["type"], typ, name)
        self.assertEqual(m.get("layer4lb_workers"), 2)
        self.assertEqual(m.get("layer4lb_applies_total", result="ok"), 0)
        self.assertEqual(m.get("layer4lb_applies_total", result="failed"), 0)
        self.assertEqual(m.get("layer4lb_backend_up", listener="web", backend=a.addr_str), 1)
        self.assertEqual(set(dict(k)["worker"] for k in
                             m.series("layer4lb_worker_connections_accepted_total")), {"0", "1"})
        for path in ("/", "/metric", "/metricsx", "/favicon.ico"):
            with self.subTest(path):
                code, _, _ = http_get(lb.maddr, path)
                self.assertEqual(code, 404)
        code, _, body = http_get(lb.maddr, "/metrics", method="HEAD")
        self.assertEqual((code, body), (200, b""))
        code, _, _ = http_get(lb.maddr, "/metrics", method="POST")
        self.assertNotEqual(code, 200)
        # Still serving after all that.
        self.scrape(lb)

    def test_counters_match_traffic(self):
        a, b = self.backends("a", "b")
        dead = self.dead()
        port, dport = free_port(), free_port()
        addr = (LOCAL, port)
        lb = self.start([listener(port, [a, b], name="web"),
                         listener(dport, [dead], name="deadend", connect_retries=0)],
                        workers=2)
        self.wait_backends_idle([a, b])       # the readiness probes are over
        wait_for(lambda: self.scrape(lb).get("layer4lb_listener_connections_active",
                                             listener="web") == 0, what="idle listener")
        m0 = self.scrape(lb)
        for bk in (a, b):                     # forget the probes' results
            while not bk.results.empty():
                bk.results.get_nowait()

        # Each connection: "SINK <tail>\n" + payload up, half-close, then the backend's
        # "<n> <sha256>\n" + tail bytes down.  Sizes differ per connection.
        n_conns = 8
        sent_in = {}      # payload size -> (bytes client->backend, bytes backend->client)
        for i in range(n_conns):
            size = 1000 + 37 * i + (i * i * 4099)
            tail = 500 + 101 * i
            s = connect(addr)
            cmd = f"SINK {tail}\n".encode()
            s.sendall(cmd)
            for chunk in gen_stream(i + 1, size):
                s.sendall(chunk)
            s.shutdown(socket.SHUT_WR)
            got = recv_all(s)
            s.close()
            head, _, rest = got.partition(b"\n")
            self.assertEqual(int(head.split()[0]), size, got[:100])
            self.assertEqual(len(rest), tail)
            sent_in[size] = (len(cmd) + size, len(got))
        total_in = sum(v[0] for v in sent_in.values())
        total_out = sum(v[1] for v in sent_in.values())

        per_backend = {}
        for bk in (a, b):
            n = bin_ = bout = 0
            while not bk.results.empty():
                kind, size, _ = bk.results.get_nowait()
                self.assertEqual(kind, "sink")
                n += 1
                bin_ += sent_in[size][0]
                bout += sent_in[size][1]
            per_backend[bk.addr_str] = (n, bin_, bout)
        self.assertEqual(sum(v[0] for v in per_backend.values()), n_conns, per_backend)
        self.assertTrue(all(v[0] > 0 for v in per_backend.values()), per_backend)

        # Bytes are counted when a connection ends: wait until none is open.
        def settled():
            m = self.scrape(lb)
            return m if (m.get("layer4lb_listener_connections_active", listener="web") == 0
                         and m.total("layer4lb_worker_connections_active") == 0) else None
        m1 = wait_for(settled, what="the connections to end in the metrics")

        def d(name, **lbl):
            return m1.get(name, **lbl) - m0.get(name, **lbl)

        self.assertEqual(d("layer4lb_listener_connections_accepted_total", listener="web"),
                         n_conns)
        self.assertEqual(d("layer4lb_listener_connections_failed_total", listener="web"), 0)
        self.assertEqual(d("layer4lb_listener_bytes_total", listener="web", direction="in"),
                         total_in)
        self.assertEqual(d("layer4lb_listener_bytes_total", listener="web", direction="out"),
                         total_out)
        for bk in (a, b):
            n, bin_, bout = per_backend[bk.addr_str]
            with self.subTest(backend=bk.name):
                self.assertEqual(d("layer4lb_backend_connections_total", listener="web",
                                   backend=bk.addr_str), n)
                self.assertEqual(d("layer4lb_backend_bytes_total", listener="web",
                                   backend=bk.addr_str, direction="in"), bin_)
                self.assertEqual(d("layer4lb_backend_bytes_total", listener="web",
                                   backend=bk.addr_str, direction="out"), bout)
                self.assertEqual(m1.get("layer4lb_backend_connections_active", listener="web",
                                        backend=bk.addr_str), 0)
                for kind in ("refused", "timeout", "unreachable", "other"):
                    self.assertEqual(d("layer4lb_backend_connect_errors_total", listener="web",
                                       backend=bk.addr_str, kind=kind), 0)
        self.assertEqual(m1.total("layer4lb_worker_connections_accepted_total") -
                         m0.total("layer4lb_worker_connections_accepted_total"), n_conns)

        # A dead backend: its refused connects are counted as such.
        before = m1.get("layer4lb_backend_connect_errors_total", listener="deadend",
                        backend=dead.addr_str, kind="refused")
        s = connect((LOCAL, dport))
        self.assertEqual(recv_all(s), b"")
        s.close()
        m2 = wait_for(lambda: (lambda m: m if m.get(
            "layer4lb_backend_connect_errors_total", listener="deadend",
            backend=dead.addr_str, kind="refused") > before else None)(self.scrape(lb)),
            what="a refused connect to be counted")
        self.assertEqual(m2.get("layer4lb_backend_connect_errors_total", listener="deadend",
                                backend=dead.addr_str, kind="refused") - before, 1)
        for kind in ("timeout", "unreachable", "other"):
            self.assertEqual(m2.get("layer4lb_backend_connect_errors_total", listener="deadend",
                                    backend=dead.addr_str, kind=kind), 0)
        # The client connection failed: no backend took it.
        self.assertEqual(m2.get("layer4lb_listener_connections_failed_total",
                                listener="deadend") -
                         m1.get("layer4lb_listener_connections_failed_total",
                                listener="deadend"), 1)
        self.assertEqual(m2.get("layer4lb_listener_bytes_total", listener="deadend",
                                direction="in"), 0)
        # The web counters did not move.
        self.assertEqual(m2.get("layer4lb_listener_bytes_total", listener="web", direction="in"),
                         m1.get("layer4lb_listener_bytes_total", listener="web", direction="in"))

    def test_apply_and_reload_counters(self):
        a, b = self.backends("a", "b")
        port, mport = free_port(), free_port()
        sock = os.path.join(self.tmpdir(), "ctl.sock")
        lb = self.start([listener(port, [a], name="web")], workers=1, control_socket=sock)
        m = self.scrape(lb)
        self.assertEqual(m.get("layer4lb_applied_version"), -1)
        r = lbtest.ctl_call(sock, {"op": "apply", "version": 12,
                                   "listeners": [listener(mport, [b], name="managed")]})
        self.assertIs(r["ok"], True, r)
        r = lbtest.ctl_call(sock, {"op": "apply", "version": 13,
                                   "listeners": [listener(port, [b], name="clash")]})
        self.assertIs(r["ok"], False, r)
        m = self.scrape(lb)
        self.assertEqual(m.get("layer4lb_applied_version"), 12)
        self.assertEqual(m.get("layer4lb_applies_total", result="ok"), 1)
        self.assertEqual(m.get("layer4lb_applies_total", result="failed"), 1)
        self.assertEqual(m.get("layer4lb_backend_up", listener="managed", backend=b.addr_str), 1)
        self.assertEqual(m.get("layer4lb_listener_connections_accepted_total",
                               listener="managed"), 0)
        self.assertEqual(lbtest.who((LOCAL, mport)), "b")
        wait_for(lambda: self.scrape(lb).get("layer4lb_listener_connections_accepted_total",
                                             listener="managed") == 1,
                 what="the managed listener's connection to be counted")
        lb.reload(lb.config_text)
        wait_for(lambda: self.scrape(lb).get("layer4lb_reloads_total", result="ok") == 1,
                 what="the reload to be counted")
        # Counters of a listener that stays are kept across reloads.
        m = self.scrape(lb)
        self.assertEqual(m.get("layer4lb_listener_connections_accepted_total",
                               listener="managed"), 1)
        # An apply without the listener takes its series away.
        r = lbtest.ctl_call(sock, {"op": "apply", "version": 14, "listeners": []})
        self.assertIs(r["ok"], True, r)
        m = self.scrape(lb)
        self.assertNotIn((("listener", "managed"),),
                         m.series("layer4lb_listener_connections_accepted_total"))
        self.assertEqual(m.get("layer4lb_applied_version"), 14)

    def test_active_gauges_while_open(self):
        a = self.backend("a")
        port = free_port()
        addr = (LOCAL, port)
        lb = self.start([listener(port, [a], name="web")], workers=1)
        self.wait_backends_idle([a])
        held = []
        for _ in range(3):
            c = lbtest.Client(addr)
            self.addCleanup(c.close)
            self.assertEqual(c.who(), "a")
            held.append(c)
        m = self.scrape(lb)
        self.assertEqual(m.get("layer4lb_listener_connections_active", listener="web"), 3)
        self.assertEqual(m.get("layer4lb_backend_connections_active", listener="web",
                               backend=a.addr_str), 3)
        self.assertEqual(m.get("layer4lb_worker_connections_active", worker="0"), 3)
        for c in held:
            c.close()
        wait_for(lambda: self.scrape(lb).get("layer4lb_listener_connections_active",
                                             listener="web") == 0, what="gauges back to 0")
        m = self.scrape(lb)
        self.assertEqual(m.get("layer4lb_backend_connections_active", listener="web",
                               backend=a.addr_str), 0)
        self.assertEqual(m.get("layer4lb_worker_connections_active", worker="0"), 0)

    def test_stalled_scrapers(self):
        """Scrapers that send a request, shut their side and never read: the main thread does
        not spin on their EOF, and they do not each pin a copy of a large text: past a
        budget, new scrapes get 503 until the stalled ones are gone."""
        many = [f"10.{i // 250}.{i % 250}.1:80" for i in range(4096)]
        lb = self.start([listener(free_port(), many, name=f"l{i}") for i in range(4)],
                        workers=1)
        size = len(http_get(lb.maddr)[2])
        self.assertGreater(size, 8 << 20)      # each stalled scraper would hold about this
        stalled, codes = [], []
        for _ in range(30):                    # under the limit of 32 clients
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.addCleanup(s.close)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # before connect: the window
            s.settimeout(lbtest.HANG)
            s.connect(lb.maddr)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            s.shutdown(socket.SHUT_WR)
            head = b""
            while b"\r\n" not in head:
                d = s.recv(64)
                self.assertTrue(d, "closed before a status line")
                head += d
            codes.append(int(head.split()[1]))
            stalled.append(s)
            if codes[-1] == 503:
                break
        self.assertEqual(codes[-1], 503, f"every stalled scraper got a full response: {codes}")

        # Their EOF is read and their responses wait: nothing for the main thread to do.
        t0 = lbtest.main_thread_cpu_ticks(lb.pid)
        time.sleep(2.0)   # a measuring window, not a bound on any operation
        busy = lbtest.main_thread_cpu_ticks(lb.pid) - t0
        ticks = os.sysconf("SC_CLK_TCK")
        self.assertLess(busy, ticks, f"main thread used {busy} of {2 * ticks} ticks in 2 s "
                                     f"with {len(stalled)} stalled scrapers")
        for s in stalled:
            s.close()
        wait_for(lambda: self._try_scrape(lb), what="scrapes to be served again")


if __name__ == "__main__":
    lbtest.main()
