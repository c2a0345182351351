"""The control socket: apply (live reconfiguration), status, errors, peers, the ctl CLI."""

import json
import os
import signal
import socket
import stat
import threading
import time
import unittest

import lbtest
from lbtest import (LBTestCase, Client, CtlClient, connect, ctl_call, free_port, listener,
                    render_config, run_lb, status_listener, tally, wait_closed, wait_for, who)

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
            return False
        return d == b""
    finally:
        t.close()


def apply_req(version, listeners, **extra):
    d = {"op": "apply", "version": version, "listeners": listeners}
    d.update(extra)
    return d


def shape(st):
    """What an apply may change, from a status reply: listeners and their backends."""
    return sorted((l["name"], l["listen"], l["managed"], l["algorithm"],
                   tuple((b["address"], b["weight"]) for b in l["backends"]))
                  for l in st["listeners"])


class ControlCase(LBTestCase):
    def start_ctl_lb(self, listeners, **kw):
        d = self.tmpdir()
        sock = os.path.join(d, "ctl.sock")
        lb = self.start_lb(listeners, control_socket=sock, **kw)
        lbtest.wait_ctl_socket(sock)
        lb.ctl = sock
        return lb

    def status(self, lb):
        st = ctl_call(lb.ctl, {"op": "status"})
        self.assertIs(st.get("ok"), True, st)
        self.assertEqual(st.get("op"), "status", st)
        return st

    def apply(self, lb, version, listeners, conn=None):
        req = apply_req(version, listeners)
        r = conn.call(req) if conn else ctl_call(lb.ctl, req)
        self.assertIs(r.get("ok"), True, f"apply version {version} refused: {r}")
        self.assertEqual(r.get("op"), "apply", r)
        self.assertEqual(r.get("version"), version, r)
        return r

    def hold(self, addr, want, limit=20):
        """Open connections until one reaches backend `want`; returns that Client (others
        are closed)."""
        for _ in range(limit):
            c = Client(addr)
            if c.who() == want:
                self.addCleanup(c.close)
                return c
            c.close()
        self.fail(f"no connection reached backend {want} in {limit} tries")


class ApplyTest(ControlCase):
    def test_ping(self):
        a = self.backend("a")
        fport = free_port()
        lb = self.start_ctl_lb([listener(fport, [a], name="file")])
        self.assertEqual(ctl_call(lb.ctl, {"op": "ping", "id": "x"}),
                         {"ok": True, "op": "ping", "id": "x"})
        self.assertEqual(ctl_call(lb.ctl, '{"op":"ping"}'), {"ok": True, "op": "ping"})

    def test_apply_adds_listener_that_serves(self):
        a, b = self.backends("a", "b")
        fport, mport = free_port(), free_port()
        lb = self.start_ctl_lb([listener(fport, [a], name="file")], num_acceptors=2)
        st = self.status(lb)
        self.assertIsNone(st["applied_version"], st)
        self.assertEqual(st["engine"], lbtest.ENGINE)
        self.assertEqual(st["workers"], 2)
        self.assertIs(st["draining"], False)
        self.assertEqual([l["name"] for l in st["listeners"]], ["file"])
        self.assertTrue(refused_now((LOCAL, mport)), "managed port served before any apply")

        r = ctl_call(lb.ctl, apply_req(1, [listener(mport, [b], name="m")], id="first"))
        self.assertIs(r.get("ok"), True, r)
        self.assertEqual((r["op"], r["version"], r["id"]), ("apply", 1, "first"), r)
        self.assertEqual(r["changes"]["listeners_added"], 1, r)
        self.assertEqual(r["changes"]["backends_added"], 1, r)

        for _ in range(4):
            self.assertEqual(who((LOCAL, mport)), "b")
        self.assertEqual(who((LOCAL, fport)), "a")

        st = self.status(lb)
        self.assertEqual(st["applied_version"], 1, st)
        self.assertEqual(st["applies_ok"], 1, st)
        self.assertEqual(st["applies_failed"], 0, st)
        m = status_listener(st, "m")
        self.assertIsNotNone(m, st)
        self.assertIs(m["managed"], True, m)
        self.assertEqual(m["listen"], f"{LOCAL}:{mport}", m)
        self.assertEqual(m["algorithm"], "round_robin", m)
        self.assertEqual([x["address"] for x in m["backends"]], [b.addr_str], m)
        self.assertGreaterEqual(m["accepted"], 4, m)
        bk = m["backends"][0]
        for k in ("weight", "healthy", "check", "passive", "active", "connections",
                  "connect_failures", "bytes_in", "bytes_out"):
            self.assertIn(k, bk)
        self.assertEqual((bk["weight"], bk["healthy"], bk["check"], bk["passive"]),
                         (1, True, "off", "ok"), bk)
        f = status_listener(st, "file")
        self.assertIs(f["managed"], False, f)
        self.assertEqual([x["address"] for x in f["backends"]], [a.addr_str], f)

    def test_apply_swaps_backends_then_empty_apply_removes(self):
        a, b1, c1, c2 = self.backends("a", "b1", "c1", "c2")
        fport, mport = free_port(), free_port()
        maddr = (LOCAL, mport)
        lb = self.start_ctl_lb([listener(fport, [a], name="file")], num_acceptors=2)
        with CtlClient(lb.ctl) as cc:
            self.apply(lb, 1, [listener(mport, [b1], name="m")], conn=cc)
            self.assertEqual(tally(who(maddr) for _ in range(4)), {"b1": 4})
            held = self.hold(maddr, "b1")

            r = self.apply(lb, 2, [listener(mport, [c1, c2], name="m")], conn=cc)
            ch = r["changes"]
            self.assertEqual((ch["listeners_added"], ch["listeners_removed"],
                              ch["listeners_changed"], ch["backends_added"],
                              ch["backends_removed"]), (0, 0, 1, 2, 1), r)
            # Every connection opened after the reply goes to the new backends.
            got = tally(who(maddr) for _ in range(10))
            self.assertEqual(set(got), {"c1", "c2"}, got)
            # The open one to the removed backend is still served (drain_timeout_ms default).
            self.assertEqual(held.who(), "b1")
            m = status_listener(self.status(lb), "m")
            self.assertEqual([x["address"] for x in m["backends"]],
                             [c1.addr_str, c2.addr_str], m)

            # The whole set is in every apply: an empty list removes every managed listener.
            r = self.apply(lb, 3, [], conn=cc)
            self.assertEqual(r["changes"]["listeners_removed"], 1, r)
            wait_for(lambda: refused_now(maddr), what="removed managed listener to refuse")
            self.assertEqual(who((LOCAL, fport)), "a")
            st = self.status(lb)
            self.assertEqual([l["name"] for l in st["listeners"]], ["file"], st)
            self.assertEqual(st["applied_version"], 3, st)
            self.assertEqual(st["applies_ok"], 3, st)

    def test_apply_same_name_overrides_file_listener(self):
        a, b = self.backends("a", "b")
        fport, mport = free_port(), free_port()
        lb = self.start_ctl_lb([listener(fport, [a], name="web")])
        self.apply(lb, 1, [listener(mport, [b], name="web")])
        st = self.status(lb)
        self.assertEqual(len(st["listeners"]), 1, st)
        web = st["listeners"][0]
        self.assertEqual((web["name"], web["listen"], web["managed"]),
                         ("web", f"{LOCAL}:{mport}", True), web)
        self.assertEqual(who((LOCAL, mport)), "b")
        wait_for(lambda: refused_now((LOCAL, fport)), what="the file's listener to be replaced")
        # Without the managed one the file's listener is back.
        self.apply(lb, 2, [])
        self.assertEqual(who((LOCAL, fport)), "a")
        wait_for(lambda: refused_now((LOCAL, mport)), what="managed listener to go")
        web = self.status(lb)["listeners"][0]
        self.assertEqual((web["listen"], web["managed"]), (f"{LOCAL}:{fport}", False), web)


    def test_integers_exact_in_replies(self):
        """2^53-1 comes back as itself (cJSON's doubles printed it as 9.00719925474099e+15)."""
        a, b = self.backends("a", "b")
        fport, mport = free_port(), free_port()
        lb = self.start_ctl_lb([listener(fport, [a], name="file")])
        top = 9007199254740991
        with CtlClient(lb.ctl) as cc:
            cc.send(apply_req(top, [listener(mport, [b], name="m")]))
            line = cc.readline()
            self.assertIn(b'"version":9007199254740991', line)
            cc.send({"op": "status"})
            line = cc.readline()
        self.assertIn(b'"applied_version":9007199254740991', line)
        st = json.loads(line)
        self.assertEqual(st["applied_version"], top)
        for k in ("applies_ok", "applies_failed", "workers"):
            self.assertIsInstance(st[k], int, k)
        m = status_listener(st, "m")
        self.assertIsInstance(m["backends"][0]["weight"], int)

    def test_nul_in_a_request_is_refused(self):
        """cJSON cut strings at a NUL: "m2\u0000evil" used to apply a listener called m2."""
        a, b = self.backends("a", "b")
        fport, mport = free_port(), free_port()
        lb = self.start_ctl_lb([listener(fport, [a], name="file")])
        with CtlClient(lb.ctl) as cc:
            r = cc.call('{"op":"ping\\u0000x"}')
            self.assertIs(r.get("ok"), False, r)
            self.assertIn("NUL", r.get("error", ""), r)
            req = json.dumps(apply_req(1, [listener(mport, [b], name="m2\u0000evil")]))
            self.assertIn("\\u0000", req)
            r = cc.call(req)
            self.assertIs(r.get("ok"), False, r)
            self.assertIn("NUL", r.get("error", ""), r)
        st = self.status(lb)
        self.assertIsNone(st["applied_version"], st)
        self.assertIsNone(status_listener(st, "m2"), st)
        self.assertTrue(refused_now((LOCAL, mport)))


class DrainTest(ControlCase):
    def test_removed_backend_keeps_open_connection(self):
        a, b1, b2 = self.backends("a", "b1", "b2")
        fport, mport = free_port(), free_port()
        maddr = (LOCAL, mport)
        lb = self.start_ctl_lb([listener(fport, [a], name="file")], drain_timeout_ms=30000)
        self.apply(lb, 1, [listener(mport, [b1, b2], name="m")])
        h1 = self.hold(maddr, "b1")
        h2 = self.hold(maddr, "b2")
        self.apply(lb, 2, [listener(mport, [b2], name="m")])
        self.assertEqual(h1.who(), "b1")
        got = tally(who(maddr) for _ in range(6))
        self.assertEqual(got, {"b2": 6})
        time.sleep(1.0)   # past a sweep of the retired set: still inside the drain time
        self.assertEqual(h1.who(), "b1")
        self.assertEqual(h2.who(), "b2")
        b1.wait_open(lambda n: n == 1)
        m = status_listener(self.status(lb), "m")
        self.assertEqual([x["address"] for x in m["backends"]], [b2.addr_str], m)

    def test_removed_backend_connection_closed_after_drain(self):
        a, b1, b2, b3 = self.backends("a", "b1", "b2", "b3")
        fport, mport, m2port = free_port(), free_port(), free_port()
        maddr = (LOCAL, mport)
        lb = self.start_ctl_lb([listener(fport, [a], name="file")], drain_timeout_ms=500)
        self.apply(lb, 1, [listener(mport, [b1, b2], name="m"),
                           listener(m2port, [b3], name="m2")])
        h1 = self.hold(maddr, "b1")
        h2 = self.hold(maddr, "b2")
        h3 = self.hold((LOCAL, m2port), "b3")
        hf = self.hold((LOCAL, fport), "a")
        # b1 leaves m, m2 goes altogether; b2 and the file's listener stay.
        self.apply(lb, 2, [listener(mport, [b2], name="m")])
        wait_closed(h1.sock, timeout=10)     # hang guard: the proxy must close it
        wait_closed(h3.sock, timeout=10)
        b1.wait_open(lambda n: n == 0)
        b3.wait_open(lambda n: n == 0)
        # Connections to backends still configured are not touched.
        self.assertEqual(h2.who(), "b2")
        self.assertEqual(hf.who(), "a")
        self.assertEqual(tally(who(maddr) for _ in range(3)), {"b2": 3})
        self.assertEqual(h2.who(), "b2")
        self.assertTrue(lb.alive())

    def test_apply_during_shutdown_is_refused_and_the_process_exits(self):
        """An apply that arrives after SIGTERM opens nothing and does not keep the process."""
        a, b = self.backends("a", "b")
        fport, mport = free_port(), free_port()
        lb = self.start_ctl_lb([listener(fport, [a], name="file")], drain_timeout_ms=30000)
        h = self.hold((LOCAL, fport), "a")
        ctl = CtlClient(lb.ctl)             # connected before the drain starts
        since = len(lb.stderr_text())
        lb.send_signal(signal.SIGTERM)
        lb.wait_stderr(r"draining", since=since)
        r = ctl.call({"op": "apply", "version": 5, "listeners": [listener(mport, [b], name="m")]})
        self.assertIs(r.get("ok"), False, r)
        self.assertIn("draining", r.get("error", ""))
        self.assertTrue(refused_now((LOCAL, mport)))
        self.assertEqual(h.who(), "a")       # the open connection still works
        ctl.close()
        h.sock.close()
        self.assertEqual(lb.wait_exit(timeout=10), 0)


class ErrorsTest(ControlCase):
    def test_bad_requests_change_nothing(self):
        a, b, c = self.backends("a", "b", "c")
        fport, mport, m3port, busyport = free_port(), free_port(), free_port(), free_port()
        maddr = (LOCAL, mport)
        lb = self.start_ctl_lb([listener(fport, [a], name="file")])
        self.apply(lb, 1, [listener(mport, [b], name="m")])
        before = self.status(lb)

        to_c = listener(mport, [c], name="m")      # what every bad apply would do if it went in
        busy = socket.socket()                      # an address the dataplane cannot bind
        self.addCleanup(busy.close)
        busy.bind((LOCAL, busyport))
        busy.listen(1)

        def lst(port, backends, name, **kw):
            return listener(port, backends, name=name, **kw)

        cases = [
            ("malformed JSON", '{"op":"apply","version":2,"listeners":[', "malformed JSON"),
            ("not an object", '["apply"]', "object"),
            ("trailing text", '{"op":"apply","version":2,"listeners":[]} {"op":"ping"}',
             "text after"),
            ("a key given twice",
             '{"op":"ping","op":"apply","version":2,"listeners":[]}', "twice"),
            ("unknown op", {"op": "frobnicate", "id": "u"}, "unknown op"),
            ("missing op", {"id": "nop"}, "op"),
            ("unknown field", apply_req(2, [to_c], dry_run=True), 'unknown field "dry_run"'),
            ("unknown field in a listener", apply_req(2, [lst(mport, [c], "m", colour="blue")]),
             "colour"),
            ("unknown field in a backend",
             apply_req(2, [dict(to_c, backends=[{"address": c.addr_str, "wieght": 2}])]),
             "wieght"),
            ("bad backend address", apply_req(2, [lst(mport, ["256.1.2.3:80"], "m")]),
             "256.1.2.3"),
            ("host name", apply_req(2, [lst(mport, ["localhost:80"], "m")]), "localhost"),
            ("backend port 0", apply_req(2, [lst(mport, [f"{LOCAL}:0"], "m")]), "port"),
            ("listen port 0", apply_req(2, [lst(0, [c], "m")]), "port"),
            ("bad weight", apply_req(2, [dict(to_c, backends=[{"address": c.addr_str,
                                                               "weight": 0}])]), "weight"),
            ("bad algorithm", apply_req(2, [lst(mport, [c], "m", algorithm="fastest")]),
             "algorithm"),
            ("missing version", {"op": "apply", "listeners": [to_c]}, "version"),
            ("bad version", apply_req(-1, [to_c]), "version"),
            ("string version", apply_req("2", [to_c]), "version"),
            ("listeners not a list", {"op": "apply", "version": 2, "listeners": {}}, "list"),
            ("duplicate listener names",
             apply_req(2, [to_c, lst(m3port, [c], "m")]), "duplicate"),
            ("duplicate listen address in the apply",
             apply_req(2, [to_c, lst(mport, [c], "m3")]), str(mport)),
            ("listen address of a file listener",
             apply_req(2, [to_c, lst(fport, [c], "m3")]), "file"),
            ("the wildcard address on a file listener's port",
             apply_req(2, [to_c, lst(fport, [c], "m3", host="0.0.0.0")]), str(fport)),
            ("a valid listener next to an invalid one",
             apply_req(2, [lst(m3port, [c], "m3"), lst(mport, ["nonsense"], "m")]),
             "nonsense"),
            # Validation is atomic even where binding is not: the held port changes nothing.
            ("an invalid listener next to one that cannot be bound",
             apply_req(2, [to_c, lst(busyport, [c], "m3"), lst(m3port, ["nonsense"], "m4")]),
             "nonsense"),
            ("a valid listener whose port is held next to a clash with the file",
             apply_req(2, [lst(busyport, [c], "m3"), lst(fport, [c], "m4")]), "file"),
        ]
        with CtlClient(lb.ctl) as cc:
            for what, req, needle in cases:
                with self.subTest(what):
                    r = cc.call(req)
                    self.assertIs(r.get("ok"), False, f"{what}: {r}")
                    self.assertIsInstance(r.get("error"), str, r)
                    self.assertIn(needle, r["error"], f"{what}: {r}")
                    if isinstance(req, dict) and req.get("op") == "apply":
                        self.assertEqual(r.get("op"), "apply", r)
                    if isinstance(req, dict) and "id" in req:
                        self.assertEqual(r.get("id"), req["id"], r)
            # The connection is still usable after all of that.
            self.assertEqual(cc.call({"op": "ping", "id": "after"}),
                             {"ok": True, "op": "ping", "id": "after"})

        self.assert_unchanged(lb, before, fport, mport, m3port)

    def test_error_reply_version_is_the_requests(self):
        """An apply error reply names the request's version, or none: never a made-up one."""
        a, c = self.backends("a", "c")
        fport, mport = free_port(), free_port()
        lb = self.start_ctl_lb([listener(fport, [a], name="file")])
        to_c = listener(mport, [c], name="m")
        cases = [
            ("unknown field", apply_req(2, [to_c], dry_run=True)),
            ("missing version", {"op": "apply", "listeners": [to_c]}),
            ("negative version", apply_req(-1, [to_c])),
            ("string version", apply_req("2", [to_c])),
            ("bad listener", apply_req(2, [listener(mport, ["nonsense"], name="m")])),
            ("clash with the file", apply_req(2, [listener(fport, [c], name="m")])),
        ]
        with CtlClient(lb.ctl) as cc:
            for what, req in cases:
                with self.subTest(what):
                    r = cc.call(req)
                    self.assertIs(r.get("ok"), False, r)
                    self.assertEqual(r.get("op"), "apply", r)
                    if "version" in r:
                        self.assertTrue(isinstance(req.get("version"), int) and
                                        r["version"] == req["version"],
                                        f"reply version {r['version']!r} for request version "
                                        f"{req.get('version', '(none)')!r}: {r}")

    def test_oversized_line(self):
        a, b, c = self.backends("a", "b", "c")
        fport, mport = free_port(), free_port()
        lb = self.start_ctl_lb([listener(fport, [a], name="file")])
        self.apply(lb, 1, [listener(mport, [b], name="m")])
        before = self.status(lb)

        # Just under the limit is an ordinary request (whitespace is valid JSON).
        with CtlClient(lb.ctl, timeout=30) as cc:
            big = b'{"op":"ping","id":"big"' + b" " * (7 << 20) + b"}"
            cc.send(big)
            self.assertEqual(cc.reply(), {"ok": True, "op": "ping", "id": "big"})

        # Over it: a valid apply padded past 8 MiB, sent in chunks.  Error line, then close.
        head = json.dumps(apply_req(2, [listener(mport, [c], name="m")]))
        line = head[:-1].encode() + b" " * (9 << 20) + b"}\n"
        cc = CtlClient(lb.ctl, timeout=30)
        self.addCleanup(cc.close)
        sent = 0
        try:
            for i in range(0, len(line), 1 << 20):
                cc.send_raw(line[i:i + (1 << 20)])
                sent += len(line[i:i + (1 << 20)])
        except (BrokenPipeError, ConnectionResetError):
            pass   # the server may hang up before the whole line is in
        self.assertGreater(sent, lbtest.CTL_LINE_MAX // 2)
        reply = cc.readline()
        self.assertIsNotNone(reply, "connection closed without an error line")
        r = json.loads(reply)
        self.assertIs(r.get("ok"), False, r)
        self.assertIn("8 MiB", r.get("error", ""), r)
        try:
            rest = cc.readline()
        except ConnectionResetError:
            rest = None
        self.assertIsNone(rest, "connection not closed after an oversized line")

        self.assert_unchanged(lb, before, fport, mport)

    def test_pipelined_large_requests(self):
        """Two 5 MiB requests in one write: each line is under the limit, both are answered,
        also when the dataplane finds both already queued (it was busy: stopped here)."""
        a = self.backend("a")
        lb = self.start_ctl_lb([listener(free_port(), [a], name="file")])
        one = b'{"op":"ping","id":"p1"' + b" " * (5 << 20) + b"}\n"
        two = b'{"op":"ping","id":"p2"' + b" " * (5 << 20) + b"}\n"
        with CtlClient(lb.ctl, timeout=30) as cc:
            # Room for both lines in the socket, so they can be queued while it is stopped.
            want = 4 * (len(one) + len(two))
            try:
                cc.sock.setsockopt(socket.SOL_SOCKET, 32, want)   # SO_SNDBUFFORCE
            except OSError:
                cc.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, want)
            queued = cc.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= want
            done = threading.Event()

            def writer():
                try:
                    cc.send_raw(one + two)
                except OSError:
                    pass
                done.set()
            t = threading.Thread(target=writer, daemon=True)
            lb.send_signal(signal.SIGSTOP)
            try:
                t.start()
                done.wait(5 if queued else 0.2)
            finally:
                lb.send_signal(signal.SIGCONT)
            r1 = cc.reply()
            r2 = cc.reply()
            t.join(30)
            self.assertEqual(r1, {"ok": True, "op": "ping", "id": "p1"})
            self.assertEqual(r2, {"ok": True, "op": "ping", "id": "p2"},
                             f"(both lines queued before the dataplane read: {queued})")

    def assert_unchanged(self, lb, before, fport, mport, *unserved):
        after = self.status(lb)
        self.assertEqual(after["applied_version"], before["applied_version"], after)
        self.assertEqual(after["applies_ok"], before["applies_ok"], after)
        self.assertEqual(shape(after), shape(before))
        self.assertEqual(tally(who((LOCAL, fport)) for _ in range(2)), {"a": 2})
        self.assertEqual(tally(who((LOCAL, mport)) for _ in range(3)), {"b": 3})
        for p in unserved:
            self.assertTrue(refused_now((LOCAL, p)), f"port {p} is served after refused applies")


class BindFailureTest(ControlCase):
    """One listener's port held by another process does not hold back the rest of an apply:
    validation stays atomic, binding is per listener, and a later apply binds it."""

    def hold_port(self):
        """A port held by a plain socket of ours, as another process would hold it."""
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind((LOCAL, 0))
        busy.listen(1)
        return busy, busy.getsockname()[1]

    def bound(self, lb, name):
        l = status_listener(self.status(lb), name)
        self.assertIsNotNone(l, name)
        return l

    def test_held_port_is_reported_and_the_rest_applied(self):
        a, b, c = self.backends("a", "b", "c")
        fport, mport, metrics = free_port(), free_port(), free_port()
        busy, busyport = self.hold_port()
        lb = self.start_ctl_lb([listener(fport, [a], name="file")],
                               metrics=f"{LOCAL}:{metrics}")
        want = [listener(mport, [b], name="default/web/http"),
                listener(busyport, [c, b], name="default/db/pg", algorithm="maglev")]
        r = self.apply(lb, 9, want)
        self.assertEqual(r["bind_failures"], [{
            "name": "default/db/pg", "listen": f"{LOCAL}:{busyport}",
            "error": f"cannot listen on {LOCAL}:{busyport}: Address already in use"}], r)
        self.assertEqual(r["changes"]["listeners_added"], 2, r)
        self.assertEqual(tally(who((LOCAL, mport)) for _ in range(3)), {"b": 3})
        self.assertEqual(who((LOCAL, fport)), "a")

        st = self.status(lb)
        self.assertEqual(st["applied_version"], 9, st)
        self.assertEqual(st["applies_failed"], 0, st)
        web, db = status_listener(st, "default/web/http"), status_listener(st, "default/db/pg")
        self.assertIs(web["bound"], True, web)
        self.assertNotIn("bind_error", web)
        self.assertIs(status_listener(st, "file")["bound"], True)
        self.assertIs(db["bound"], False, db)
        self.assertEqual(db["bind_error"],
                         f"cannot listen on {LOCAL}:{busyport}: Address already in use", db)
        self.assertEqual([x["address"] for x in db["backends"]], [c.addr_str, b.addr_str], db)
        self.assertEqual((db["accepted"], db["active"], db["failed"]), (0, 0, 0), db)
        code, _, body = lbtest.http_get((LOCAL, metrics))
        self.assertEqual(code, 200)
        text = body.decode()
        self.assertIn('layer4lb_listener_bound{listener="default/db/pg"} 0\n', text)
        self.assertIn('layer4lb_listener_bound{listener="default/web/http"} 1\n', text)
        self.assertIn('layer4lb_listener_bound{listener="file"} 1\n', text)

        # The other process lets go; the controller re-sends the same set, which binds it.
        busy.close()
        r = self.apply(lb, 10, want)
        self.assertEqual(r["bind_failures"], [], r)
        self.assertEqual(r["changes"]["listeners_unchanged"], 2, r)
        self.assertIn(who((LOCAL, busyport)), ("b", "c"))
        self.assertEqual(tally(who((LOCAL, mport)) for _ in range(3)), {"b": 3})
        db = self.bound(lb, "default/db/pg")
        self.assertIs(db["bound"], True, db)
        self.assertNotIn("bind_error", db)
        self.assertGreaterEqual(db["accepted"], 1, db)
        code, _, body = lbtest.http_get((LOCAL, metrics))
        self.assertIn('layer4lb_listener_bound{listener="default/db/pg"} 1\n', body.decode())

    def test_listener_moved_to_a_held_port_stops_serving_the_old_one(self):
        """The rule: a listener whose new address cannot be bound is in the desired set but
        not serving, not left running on its old address."""
        b = self.backend("b")
        fport, mport = free_port(), free_port()
        busy, busyport = self.hold_port()
        lb = self.start_ctl_lb([listener(fport, [b], name="file")])
        self.apply(lb, 1, [listener(mport, [b], name="m")])
        self.assertEqual(who((LOCAL, mport)), "b")
        r = self.apply(lb, 2, [listener(busyport, [b], name="m")])
        self.assertEqual([f["name"] for f in r["bind_failures"]], ["m"], r)
        self.assertEqual(r["changes"]["listeners_changed"], 1, r)
        wait_for(lambda: refused_now((LOCAL, mport)), what="the old address closed")
        m = self.bound(lb, "m")
        self.assertIs(m["bound"], False, m)
        self.assertEqual(m["listen"], f"{LOCAL}:{busyport}", m)
        self.assertGreaterEqual(m["accepted"], 1, m)   # counters stay with the name

    def test_no_backends_binds_and_closes_connections(self):
        """backends: [] (a Service with no ready endpoints): the port is bound and owned, and
        each connection is accepted and closed at once, counted as failed; every algorithm,
        health checks included, copes with nothing to pick."""
        a, b = self.backends("a", "b")
        fport = free_port()
        ports = {algo: free_port() for algo in ("round_robin", "least_conn", "random_two",
                                                "maglev")}
        lb = self.start_ctl_lb([listener(fport, [a], name="file")], num_acceptors=2)
        empty = [listener(p, [], name=f"empty-{algo}", algorithm=algo,
                          health_check={"interval_ms": 200, "timeout_ms": 100})
                 for algo, p in ports.items()]
        r = self.apply(lb, 1, empty)
        self.assertEqual(r["bind_failures"], [], r)
        for algo, p in ports.items():
            for _ in range(3):
                s = connect((LOCAL, p))       # accepted: not refused
                try:
                    s.sendall(b"WHO\n")
                    self.assertEqual(lbtest.recv_all(s), b"")
                except (ConnectionResetError, BrokenPipeError):
                    pass
                finally:
                    s.close()
        st = self.status(lb)
        for algo in ports:
            l = status_listener(st, f"empty-{algo}")
            self.assertIs(l["bound"], True, l)
            self.assertEqual(l["backends"], [], l)
            self.assertEqual((l["accepted"], l["failed"]), (3, 3), l)
        time.sleep(0.5)   # a few health-check intervals over no backends
        self.assertTrue(lb.alive())

        # Endpoints become ready: the same port now serves.
        p = ports["maglev"]
        r = self.apply(lb, 2, [listener(p, [b], name="empty-maglev", algorithm="maglev")])
        self.assertEqual(r["changes"]["backends_added"], 1, r)
        self.assertEqual(who((LOCAL, p)), "b")

    def test_reload_retries_unbound_and_file_listeners_stay_all_or_nothing(self):
        a, b = self.backends("a", "b")
        fport, otherport = free_port(), free_port()
        busy, busyport = self.hold_port()
        lb = self.start_ctl_lb([listener(fport, [a], name="file")])
        r = self.apply(lb, 1, [listener(busyport, [b], name="m")])
        self.assertEqual([f["name"] for f in r["bind_failures"]], ["m"], r)
        config = render_config([listener(fport, [a], name="file")], control_socket=lb.ctl)

        # A reload keeps the unbound listener in force, tries it again and says so.
        since = len(lb.stderr_text())
        lb.reload(config)
        lb.wait_stderr(r"reload: listener m is still not serving: cannot listen on "
                       rf"{LOCAL}:{busyport}: Address already in use", since=since)
        self.assertIs(self.bound(lb, "m")["bound"], False)

        # A file listener whose port is held refuses the reload, as it always did.
        other = socket.socket()
        self.addCleanup(other.close)
        other.bind((LOCAL, otherport))
        other.listen(1)
        since = len(lb.stderr_text())
        lb.reload(render_config([listener(fport, [a], name="file"),
                                 listener(otherport, [a], name="file2")], control_socket=lb.ctl))
        lb.wait_stderr(r"reload refused.*listener file2: cannot listen on", since=since)
        self.assertIsNone(status_listener(self.status(lb), "file2"))

        # Freed: the next reload binds the managed listener.
        busy.close()
        since = len(lb.stderr_text())
        lb.reload(config)
        lb.wait_stderr(r"reloaded", since=since)
        self.assertEqual(who((LOCAL, busyport)), "b")
        self.assertIs(self.bound(lb, "m")["bound"], True)

    def test_ctl_apply_warns_and_status_shows_unbound(self):
        b = self.backend("b")
        fport, mport = free_port(), free_port()
        busy, busyport = self.hold_port()
        lb = self.start_ctl_lb([listener(fport, [b], name="file")])
        path = os.path.join(self.tmpdir(), "m.yaml")
        with open(path, "w") as f:
            f.write(render_config([listener(mport, [b], name="one"),
                                   listener(busyport, [b], name="two"),
                                   listener(free_port(), [], name="none")]))
        r = run_lb(["ctl", "-s", lb.ctl, "apply", path, "--version", "5"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "applied version 5: listeners 3 added, 0 removed, "
                                   "0 changed, 0 unchanged; backends 2 added, 0 removed\n")
        self.assertEqual(r.stderr.strip().splitlines(), [
            f"layer4-lb ctl: warning: listener two is not serving: cannot listen on "
            f"{LOCAL}:{busyport}: Address already in use (applied; tried again at every apply)"])
        r = run_lb(["ctl", "-s", lb.ctl, "status"])
        self.assertEqual(r.returncode, 0, r.stderr)
        out = r.stdout
        two = out[out.index("listener two"):]
        self.assertIn(f"NOT BOUND, not serving: cannot listen on {LOCAL}:{busyport}: "
                      "Address already in use", two.splitlines()[1])
        none = out[out.index("listener none"):]
        self.assertIn("no backends", none.splitlines()[1])
        one = out[out.index("listener one"):]
        self.assertNotIn("NOT BOUND", one.split("\n\n")[0])


class ConcurrencyTest(ControlCase):
    def test_concurrent_clients(self):
        a, b = self.backends("a", "b")
        fport, mport = free_port(), free_port()
        lb = self.start_ctl_lb([listener(fport, [a], name="file")])
        n_clients, rounds = 5, 20
        barrier = threading.Barrier(n_clients + 1)
        errors = []
        answered = [0] * n_clients

        # A client that has sent half a line must not hold up anyone.
        partial = CtlClient(lb.ctl)
        self.addCleanup(partial.close)
        partial.send_raw(b'{"op":"ping",')

        def run(k):
            try:
                with CtlClient(lb.ctl) as cc:
                    barrier.wait(lbtest.HANG)
                    for i in range(rounds):
                        r = cc.call({"op": "ping", "id": f"c{k}-{i}"})
                        if r != {"ok": True, "op": "ping", "id": f"c{k}-{i}"}:
                            raise AssertionError(f"client {k} ping {i}: {r}")
                        r = cc.call({"op": "status", "id": f"s{k}-{i}"})
                        if not (r.get("ok") is True and r.get("op") == "status" and
                                r.get("id") == f"s{k}-{i}" and "listeners" in r):
                            raise AssertionError(f"client {k} status {i}: {str(r)[:300]}")
                        answered[k] += 2
            except Exception as e:   # noqa: BLE001 - reported below
                errors.append(f"client {k}: {e!r}")

        threads = [threading.Thread(target=run, args=(k,), daemon=True)
                   for k in range(n_clients)]
        for t in threads:
            t.start()
        barrier.wait(lbtest.HANG)
        # An apply in the middle of it all.
        self.apply(lb, 1, [listener(mport, [b], name="m")])
        for t in threads:
            t.join(30)
        self.assertFalse(any(t.is_alive() for t in threads), "a control client hung")
        self.assertEqual(errors, [])
        self.assertEqual(answered, [2 * rounds] * n_clients)

        # Pipelined: ten requests in one write, ten replies in order.
        with CtlClient(lb.ctl) as cc:
            cc.send_raw(b"".join(json.dumps({"op": "ping", "id": f"p{i}"}).encode() + b"\n"
                                 for i in range(10)))
            self.assertEqual([cc.reply().get("id") for _ in range(10)],
                             [f"p{i}" for i in range(10)])
        # The half-line client finishes its line and gets its answer.
        partial.send_raw(b'"id":"late"}\n')
        self.assertEqual(partial.reply(), {"ok": True, "op": "ping", "id": "late"})
        self.assertEqual(who((LOCAL, mport)), "b")


class PeerTest(ControlCase):
    @unittest.skipUnless(os.geteuid() == 0, "needs root to switch to another uid")
    def test_other_uid_refused(self):
        a, b = self.backends("a", "b")
        fport, mport = free_port(), free_port()
        lb = self.start_ctl_lb([listener(fport, [a], name="file")])
        st = os.stat(lb.ctl)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600, oct(st.st_mode))
        self.assertEqual(st.st_uid, os.geteuid())
        before = self.status(lb)
        # Open the file itself to everyone so that only the peer-credential check is left.
        os.chmod(os.path.dirname(lb.ctl), 0o755)
        os.chmod(lb.ctl, 0o666)
        req = (json.dumps(apply_req(5, [listener(mport, [b], name="m")])) + "\n").encode()

        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:   # child: no Python-level cleanup, report through the pipe
            out = {"lines": [], "eof": False, "err": None}
            try:
                os.close(rfd)
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(5)
                s.connect(lb.ctl)
                out["connected"] = True
                try:
                    s.sendall(req)
                except OSError as e:
                    out["send_err"] = repr(e)
                buf = b""
                while True:
                    try:
                        d = s.recv(65536)
                    except ConnectionResetError:
                        out["eof"] = True
                        break
                    if not d:
                        out["eof"] = True
                        break
                    buf += d
                out["lines"] = buf.decode(errors="replace").splitlines()
            except BaseException as e:   # noqa: BLE001
                out["err"] = repr(e)
            os.write(wfd, json.dumps(out).encode())
            os._exit(0)
        os.close(wfd)
        data = b""
        deadline = time.monotonic() + 15
        while True:
            d = os.read(rfd, 65536)
            if not d:
                break
            data += d
            self.assertLess(time.monotonic(), deadline)
        os.close(rfd)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(status, 0)
        out = json.loads(data)
        self.assertIsNone(out["err"], out)
        self.assertTrue(out.get("connected"), out)
        self.assertTrue(out["eof"], f"connection from uid 65534 not closed: {out}")
        self.assertEqual(len(out["lines"]), 1, out)
        r = json.loads(out["lines"][0])
        self.assertIs(r.get("ok"), False, r)
        self.assertIn("permission", r.get("error", ""), r)
        lb.wait_stderr(r"refused pid \d+ uid 65534")

        after = self.status(lb)
        self.assertEqual(shape(after), shape(before))
        self.assertIsNone(after["applied_version"], after)
        self.assertEqual(after["applies_ok"], 0, after)
        self.assertTrue(refused_now((LOCAL, mport)))

    @unittest.skipUnless(os.geteuid() == 0, "needs root to give the socket to a group")
    def test_socket_group_mode(self):
        a = self.backend("a")
        lb = self.start_ctl_lb([listener(free_port(), [a], name="file")],
                               control_socket_group="65534")
        st = os.stat(lb.ctl)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o660, oct(st.st_mode))
        self.assertEqual(st.st_gid, 65534)
        self.assertEqual(ctl_call(lb.ctl, {"op": "ping"}), {"ok": True, "op": "ping"})


class CliTest(ControlCase):
    def ctl(self, *args, env=None):
        return run_lb(["ctl"] + list(args), env=env)

    def test_control_socket_flag(self):
        """--control-socket serves the socket even when the file sets none."""
        a, b = self.backends("a", "b")
        fport, mport = free_port(), free_port()
        sock = os.path.join(self.tmpdir(), "flag.sock")
        lb = self.start_lb([listener(fport, [a])], args=["--control-socket", sock])
        self.assertNotIn("control_socket", lb.config_text)
        r = self.ctl("-s", sock, "ping")
        self.assertEqual(r.returncode, 0, r.stderr)
        reply = ctl_call(sock, {"op": "apply", "version": 3,
                                "listeners": [listener(mport, [b], name="viaflag")]})
        self.assertTrue(reply["ok"], reply)
        self.assertEqual(who((LOCAL, mport)), "b")
        r = run_lb(["--config", lb.config_path, "--control-socket", "relative.sock"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("absolute path", r.stderr)

    def test_ctl_commands(self):
        a, b, c = self.backends("a", "b", "c")
        fport, mport = free_port(), free_port()
        lb = self.start_ctl_lb([listener(fport, [a], name="filelistener")])
        sock = lb.ctl

        r = self.ctl("-s", sock, "ping")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("pong", r.stdout)

        d = self.tmpdir()
        good = os.path.join(d, "managed.yaml")
        with open(good, "w") as f:
            f.write(render_config([listener(mport, [b], name="managedone")]))
        r = self.ctl("-s", sock, "apply", good, "--version", "7")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("7", r.stdout)
        self.assertEqual(who((LOCAL, mport)), "b")

        r = self.ctl("-s", sock, "status")
        self.assertEqual(r.returncode, 0, r.stderr)
        for needle in ("filelistener", "managedone", b.addr_str, a.addr_str, lbtest.ENGINE):
            self.assertIn(needle, r.stdout)

        r = self.ctl("-s", sock, "status", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        st = json.loads(r.stdout)
        self.assertIs(st["ok"], True)
        self.assertEqual(st["applied_version"], 7)
        self.assertIs(status_listener(st, "managedone")["managed"], True)

        # No --version: the applied version + 1.
        with open(good, "w") as f:
            f.write(render_config([listener(mport, [c], name="managedone")]))
        r = self.ctl("-s", sock, "apply", good)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.status(lb)["applied_version"], 8)
        self.assertEqual(who((LOCAL, mport)), "c")

        # JSON works as well as YAML.
        js = os.path.join(d, "managed.json")
        with open(js, "w") as f:
            json.dump({"listeners": [listener(mport, [b], name="managedone")]}, f)
        r = self.ctl("-s", sock, "apply", js, "--version", "9")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(who((LOCAL, mport)), "b")

        # The socket can come from the environment or from the configuration file.
        r = self.ctl("ping", env=lbtest.base_env(extra={"LAYER4_LB_SOCKET": sock}))
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.ctl("-c", lb.config_path, "ping")
        self.assertEqual(r.returncode, 0, r.stderr)

        before = self.status(lb)
        # A bad file: file:line on stderr, non-zero, and the dataplane never hears of it.
        bad = os.path.join(d, "bad.yaml")
        text = ("listeners:\n"
                "  - name: managedone\n"
                f"    listen: 127.0.0.1:{mport}\n"
                "    backends:\n"
                f"      - address: {c.addr_str}\n"
                "        weight: lots\n")
        with open(bad, "w") as f:
            f.write(text)
        r = self.ctl("-s", sock, "apply", bad)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(f"{bad}:6:", r.stderr)
        self.assertIn("weight", r.stderr)
        r = self.ctl("-s", os.path.join(d, "nobody-here.sock"), "apply", bad)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(f"{bad}:6:", r.stderr)
        self.assertNotIn("nobody-here", r.stderr)
        after = self.status(lb)
        self.assertEqual(after["applies_failed"], before["applies_failed"])
        self.assertEqual(after["applied_version"], 9)
        self.assertEqual(who((LOCAL, mport)), "b")

        # A file that is valid alone but refused by the dataplane: exit 1 and the reason.
        clash = os.path.join(d, "clash.yaml")
        with open(clash, "w") as f:
            f.write(render_config([listener(fport, [c], name="other")]))
        r = self.ctl("-s", sock, "apply", clash)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("refused", r.stderr)
        self.assertIn("filelistener", r.stderr)
        self.assertEqual(self.status(lb)["applied_version"], 9)

        # Nobody listening: exit non-zero, naming the socket.
        r = self.ctl("-s", os.path.join(d, "nobody-here.sock"), "ping")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("nobody-here.sock", r.stderr)


    def write(self, name, text, mode="w"):
        path = os.path.join(self.tmpdir(), name)
        with open(path, mode) as f:
            f.write(text)
        return path

    def assert_not_crashed(self, r):
        self.assertGreaterEqual(r.returncode, 0, f"killed by signal {-r.returncode}:\n{r.stderr}")

    def assert_nothing_applied(self, lb):
        st = self.status(lb)
        self.assertIsNone(st["applied_version"], st)
        self.assertEqual((st["applies_ok"], st["applies_failed"]), (0, 0), st)

    def test_ctl_apply_empty_or_missing_file(self):
        """An empty file printed "Success" and crashed (getdelim gave -1 with errno 0)."""
        a = self.backend("a")
        lb = self.start_ctl_lb([listener(free_port(), [a], name="file")])
        empty = self.write("empty.yaml", "")
        r = self.ctl("-s", lb.ctl, "apply", empty)
        self.assert_not_crashed(r)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(f"{empty}:1: the file is empty", r.stderr)
        self.assertNotIn("Success", r.stderr)
        missing = os.path.join(self.tmpdir(), "missing.yaml")
        r = self.ctl("-s", lb.ctl, "apply", missing)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(f"cannot read {missing}: No such file or directory", r.stderr)
        r = self.ctl("-s", lb.ctl, "apply", self.tmpdir())
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("Is a directory", r.stderr)
        self.assert_nothing_applied(lb)

    def test_ctl_apply_file_with_nul(self):
        """Text after a NUL byte was ignored (getdelim + strlen): this applied "[]"."""
        a = self.backend("a")
        lb = self.start_ctl_lb([listener(free_port(), [a], name="file")])
        nul = self.write("nul.yaml", b"listeners: []\n\0listeners: [junk\n", "wb")
        r = self.ctl("-s", lb.ctl, "apply", nul, "--version", "3")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(f"{nul}:2: a NUL byte", r.stderr)
        self.assert_nothing_applied(lb)

    def test_ctl_apply_over_line_limit(self):
        """An apply over 8 MiB: a short send and a stale errno made ctl crash."""
        a = self.backend("a")
        lb = self.start_ctl_lb([listener(free_port(), [a], name="file")])
        # 64 listeners sharing 4096 backends through an alias: 262144 backends, the most a
        # configuration may have, but over 8 MiB as JSON.
        lines = ["listeners:", "  - name: l0", f"    listen: 127.0.0.2:{free_port()}",
                 "    backends: &b"]
        lines += [f"      - {{address: 10.{i // 250}.{i % 250}.1:80, weight: 256}}"
                  for i in range(4096)]
        for i in range(1, 64):
            lines += [f"  - name: l{i}", f"    listen: 127.0.1.{i}:8080", "    backends: *b"]
        big = self.write("big.yaml", "\n".join(lines) + "\n")
        r = run_lb(["ctl", "-s", lb.ctl, "apply", big, "--version", "3"], timeout=120)
        self.assert_not_crashed(r)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("over the control socket's limit of 8 MiB", r.stderr)
        self.assert_nothing_applied(lb)

    def test_ctl_version_option(self):
        """--version takes an integer 0..2^53-1 and sends it exactly; anything else is a
        usage error (strtoll read abc as 0, 1.5 as 1 and -1 as "the next one")."""
        a, b = self.backends("a", "b")
        mport = free_port()
        lb = self.start_ctl_lb([listener(free_port(), [a], name="file")])
        good = self.write("m.yaml", render_config([listener(mport, [b], name="m")]))
        for bad in ("abc", "1.5", "-1", "", "01", "+1", " 1", "1e3", "0x10",
                    "9007199254740992", "99999999999999999999"):
            with self.subTest(version=bad):
                r = self.ctl("-s", lb.ctl, "apply", good, "--version", bad)
                self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                self.assertIn("--version must be an integer from 0 to 9007199254740991",
                              r.stderr)
        self.assertIsNone(self.status(lb)["applied_version"])
        r = self.ctl("-s", lb.ctl, "apply", good, "--version", "9007199254740991")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("applied version 9007199254740991", r.stdout)
        self.assertEqual(self.status(lb)["applied_version"], 9007199254740991)
        r = self.ctl("-s", lb.ctl, "status")
        self.assertIn("applied version: 9007199254740991 ", r.stdout)
        # There is no version after the largest: say so rather than send one.
        r = self.ctl("-s", lb.ctl, "apply", good)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("give --version", r.stderr)
        r = self.ctl("-s", lb.ctl, "apply", good, "--version", "0")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.status(lb)["applied_version"], 0)

    def test_ctl_apply_sends_scalars_as_written(self):
        """Plain scalars that look like numbers are still the strings the file's parser
        reads: names 8080, 1e3, nan, inf and 0x1F were refused by the dataplane."""
        a, b = self.backends("a", "b")
        lb = self.start_ctl_lb([listener(free_port(), [a], name="file")])
        names = ["8080", "1e3", "nan", "inf", "0x1F", "true"]
        text = "listeners:\n"
        for n in names:
            text += (f"  - name: {n}\n    listen: 127.0.0.1:{free_port()}\n"
                     f"    connect_timeout_ms: 1500\n"
                     f"    backends:\n      - address: {b.addr_str}\n        weight: 2\n")
        text += "    health_check:\n"      # nothing after it: checks on, every default
        path = self.write("numbers.yaml", text)
        r = self.ctl("-s", lb.ctl, "apply", path, "--version", "5")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        st = self.status(lb)
        got = {l["name"]: l for l in st["listeners"] if l["managed"]}
        self.assertEqual(sorted(got), sorted(names), st)
        self.assertEqual(got["8080"]["backends"][0]["weight"], 2)
        self.assertEqual(got["8080"]["backends"][0]["check"], "off")
        self.assertNotEqual(got["true"]["backends"][0]["check"], "off")

    def test_ctl_apply_prints_changes(self):
        a, b, c = self.backends("a", "b", "c")
        lb = self.start_ctl_lb([listener(free_port(), [a], name="file")])
        m1, m2 = free_port(), free_port()
        path = self.write("m.yaml", render_config([listener(m1, [b], name="one"),
                                                   listener(m2, [b, c], name="two")]))
        r = self.ctl("-s", lb.ctl, "apply", path, "--version", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "applied version 1: listeners 2 added, 0 removed, "
                                   "0 changed, 0 unchanged; backends 3 added, 0 removed\n")
        with open(path, "w") as f:
            f.write(render_config([listener(m2, [c], name="two")]))
        r = self.ctl("-s", lb.ctl, "apply", path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "applied version 2: listeners 0 added, 1 removed, "
                                   "1 changed, 0 unchanged; backends 0 added, 2 removed\n")

    def test_ctl_config_being_edited(self):
        """-c FILE needs only the file's control_socket: a mistake elsewhere (an operator
        half-way through an edit) must not stop ctl from finding the socket."""
        a = self.backend("a")
        lb = self.start_ctl_lb([listener(free_port(), [a], name="file")])
        editing = self.write("lb.yaml", f"control_socket: {lb.ctl}\n"
                                        "listeners:\n  - name: web\n    colour: blue\n"
                                        "    backends: [\n")
        r = self.ctl("-c", editing, "ping")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("pong", r.stdout)
        none = self.write("none.yaml", render_config([listener(free_port(), [a])]))
        r = self.ctl("-c", none, "ping")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("sets no control_socket", r.stderr)
        self.assertIn("-s PATH", r.stderr)
        broken = self.write("broken.yaml", "log_level: [\ncontrol_socket: /x\n")
        r = self.ctl("-c", broken, "ping")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("YAML syntax error", r.stderr)
        self.assertIn("-s PATH", r.stderr)


class ReloadTest(ControlCase):
    def test_sighup_keeps_managed_listeners(self):
        a, a2, b = self.backends("a", "a2", "b")
        fport, mport = free_port(), free_port()
        lb = self.start_ctl_lb([listener(fport, [a], name="file")])
        self.apply(lb, 4, [listener(mport, [b], name="m")])
        self.assertEqual(who((LOCAL, mport)), "b")
        held = self.hold((LOCAL, mport), "b")

        since = len(lb.stderr_text())
        lb.reload(render_config([listener(fport, [a2], name="file")], control_socket=lb.ctl))
        lb.wait_stderr(r"reloaded", since=since)
        self.assertEqual(tally(who((LOCAL, fport)) for _ in range(3)), {"a2": 3})
        self.assertEqual(tally(who((LOCAL, mport)) for _ in range(3)), {"b": 3})
        self.assertEqual(held.who(), "b")
        st = self.status(lb)
        self.assertEqual(st["applied_version"], 4)
        m = status_listener(st, "m")
        self.assertIsNotNone(m, st)
        self.assertIs(m["managed"], True)
        self.assertEqual([x["address"] for x in m["backends"]], [b.addr_str])

        # A refused reload keeps both.
        since = len(lb.stderr_text())
        lb.reload("listeners: [\n")
        lb.wait_stderr(r"reload refused", since=since)
        self.assertEqual(who((LOCAL, mport)), "b")
        self.assertEqual(who((LOCAL, fport)), "a2")

        # A reload whose file now uses the managed listener's address is refused: the
        # managed listener stays.
        since = len(lb.stderr_text())
        lb.reload(render_config([listener(fport, [a2], name="file"),
                                 listener(mport, [a], name="other")], control_socket=lb.ctl))
        lb.wait_stderr(r"reload refused", since=since)
        self.assertEqual(who((LOCAL, mport)), "b")


if __name__ == "__main__":
    lbtest.main()
