"""faultrelay - an HTTPS relay between the controller and the real API server that misbehaves
on demand.

It ends the controller's TLS with the API server's own certificate (or, to test the controller's
checks, with one that does not match), reads each HTTP/1.1 request and either forwards it to the
API server over a TLS connection of its own or answers it with the fault the test set: an error
status, a delay, a body cut short or not JSON, garbage in the middle of a watch, a body or a
watch event larger than any the API server sends.  Forwarded responses are streamed as they
come (watches are chunked), so the controller sees the real API server's answers and events in
between faults.

A fault is a function of (method, path) that returns None (forward) or an action tuple:
  ("status", code, headers, body)      answer with this (429 with Retry-After, 500, 410, ...)
  ("delay", seconds)                    forward after a pause
  ("cut_body",)                         forward, but close the connection halfway through a
                                        body whose Content-Length promised more
  ("short_json",)                       forward, with the body cut in half and an honest length
  ("not_json",)                         200 with a body that is not JSON
  ("watch_garbage",)                    forward a watch, then garbage after its first event
  ("huge_body", n)                      200 with an n-byte JSON body
  ("huge_event", n)                     a watch stream whose first event is an n-byte line
Every request is recorded (time, method, path, what was done) for the test to count.
"""

import http.client
import json
import socket
import ssl
import threading
import time

from relay import listening_socket

HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "te", "upgrade",
       "proxy-connection", "content-length", "host"}


class Request:
    def __init__(self, method, path, headers, body):
        self.method, self.path, self.headers, self.body = method, path, headers, body

    @property
    def watch(self):
        return "watch=1" in self.path or "watch=true" in self.path


class FaultRelay:
    def __init__(self, upstream, cafile, certfile, keyfile, host="127.0.0.1"):
        self.upstream = upstream
        self.up_ctx = ssl.create_default_context(cafile=cafile)
        self.up_ctx.check_hostname = False  # the API server's address is an IP we trust
        self.good = self._server_ctx(certfile, keyfile)
        self.cert = self.good
        self.lock = threading.Lock()
        self.fault = None
        self.conns = set()
        self.watches = {}      # TLS socket -> the lock its writes take, while it streams a watch
        self.gen = 0           # cut() count: a connection older than the last cut closes
        self.log = []          # (monotonic time, method, path, action name)
        self.handshake_failures = 0
        self.handshakes = 0    # completed on our side (a client may still refuse the cert)
        self.ls = listening_socket(host, 0.2)
        self.addr = self.ls.getsockname()
        self.stop_ev = threading.Event()
        self.thr = threading.Thread(target=self._accept, daemon=True)
        self.thr.start()

    @staticmethod
    def _server_ctx(certfile, keyfile):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certfile, keyfile)
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    @property
    def url(self):
        return "https://%s:%d" % self.addr

    # --- what the test calls ------------------------------------------------------------

    def set_fault(self, fault, cut=True):
        """From now on, answer with fault(req).  With cut, every open connection is closed
        first, so the controller's next requests meet it at once: watches end as the API
        server ends one (the last chunk), which the controller takes as normal and watches
        again; without, requests under way finish as they began."""
        with self.lock:
            self.fault = fault
        if cut:
            self.cut()

    def clear(self, cut=True):
        self.set_fault(None, cut)

    def serve_certificate(self, certfile=None, keyfile=None):
        """Present another certificate (None: the API server's own again) and reset every
        connection, so the next ones are made with it."""
        ctx = self._server_ctx(certfile, keyfile) if certfile else self.good
        with self.lock:
            self.cert = ctx
        self.cut()

    def cut(self):
        """End every connection: a watch with its last chunk first.  Only shut down here: the
        thread that owns a socket closes it (a descriptor closed under another thread's feet
        could be reused by a new connection before that thread writes to it)."""
        with self.lock:
            self.gen += 1
            conns = list(self.conns)
            watches = list(self.watches.items())
        for s, lock in watches:
            with lock:
                try:
                    s.sendall(b"0\r\n\r\n")
                except OSError:
                    pass
        for s in conns:
            _shutdown(s)

    def requests(self, since=0.0, path_part=None):
        with self.lock:
            return [e for e in self.log if e[0] >= since and
                    (path_part is None or path_part in e[2])]

    def close(self):
        self.stop_ev.set()
        self.ls.close()
        self.thr.join(timeout=5)
        self.cut()

    # --- the relay ----------------------------------------------------------------------

    def _accept(self):
        while not self.stop_ev.is_set():
            try:
                c, _ = self.ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, raw):
        with self.lock:
            ctx, gen = self.cert, self.gen
            self.conns.add(raw)
        conn = raw
        try:
            raw.settimeout(30)
            try:
                conn = ctx.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError):
                with self.lock:
                    self.handshake_failures += 1
                return
            with self.lock:
                self.handshakes += 1
                self.conns.discard(raw)  # its descriptor is the TLS socket's now
                self.conns.add(conn)
                if gen != self.gen:
                    return  # cut while in the handshake (with what may be the old cert)
            conn.settimeout(None)
            rf = conn.makefile("rb")
            while not self.stop_ev.is_set():
                req = self._read_request(rf, conn)
                if req is None:
                    return
                with self.lock:
                    if gen != self.gen:
                        return
                    fault = self.fault
                act = fault(req.method, req.path) if fault else None
                with self.lock:
                    self.log.append((time.monotonic(), req.method, req.path,
                                     act[0] if act else "forward"))
                if not self._answer(conn, req, act, gen):
                    return
        except (OSError, ValueError, http.client.HTTPException):
            return
        finally:
            with self.lock:
                self.conns.discard(raw)
                self.conns.discard(conn)
            _reset(conn)

    @staticmethod
    def _read_request(rf, c):
        line = rf.readline(65537)
        if not line:
            return None
        method, path, _ = line.decode("latin-1").split(" ", 2)
        headers = []
        while True:
            h = rf.readline(65537)
            if h in (b"\r\n", b"\n", b""):
                break
            k, v = h.decode("latin-1").split(":", 1)
            headers.append((k.strip(), v.strip()))
        hd = {k.lower(): v for k, v in headers}
        if hd.get("expect", "").lower() == "100-continue":
            c.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        n = int(hd.get("content-length", "0"))
        body = rf.read(n) if n else None
        return Request(method, path, headers, body)

    def _answer(self, c, req, act, gen):
        """Answer one request; False when the connection must close."""
        kind = act[0] if act else None
        if kind == "status":
            _, code, headers, body = act
            _respond(c, code, headers, body)
            return True
        if kind == "not_json":
            _respond(c, 200, [("Content-Type", "application/json")],
                     b"<html><body>502 Bad Gateway, or so</body></html>")
            return True
        if kind == "huge_body":
            n = act[1]
            head = b'{"kind":"List","apiVersion":"v1","metadata":{"resourceVersion":"1"},' \
                   b'"items":[],"padding":"'
            tail = b'"}'
            c.sendall(_head(200, [("Content-Type", "application/json"),
                                  ("Content-Length", str(n))]))
            c.sendall(head)
            left = n - len(head) - len(tail)
            block = b"x" * (1 << 20)
            while left > 0:
                c.sendall(block[:min(left, len(block))])
                left -= len(block)
            c.sendall(tail)
            return True
        if kind == "huge_event":
            n = act[1]
            c.sendall(_head(200, [("Content-Type", "application/json"),
                                  ("Transfer-Encoding", "chunked")]))
            line = b'{"type":"ADDED","object":{"metadata":{"name":"' + b"a" * n + b'"}}}\n'
            for i in range(0, len(line), 1 << 20):
                _chunk(c, line[i:i + (1 << 20)])
            c.recv(1)  # hold the stream open until the controller ends it
            return False
        if kind == "delay":
            time.sleep(act[1])
        return self._forward(c, req, kind, gen)

    def _forward(self, c, req, kind, gen):
        up = http.client.HTTPSConnection(self.upstream[0], self.upstream[1],
                                         context=self.up_ctx, timeout=700)
        try:
            headers = {k: v for k, v in req.headers if k.lower() not in HOP}
            up.request(req.method, req.path, body=req.body, headers=headers)
            resp = up.getresponse()
            rh = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP]
            if not req.watch or resp.status != 200:
                body = resp.read()
                if kind == "short_json":
                    body = body[:len(body) // 2]
                if kind == "cut_body":
                    c.sendall(_head(resp.status, rh + [("Content-Length", str(len(body)))]))
                    c.sendall(body[:len(body) // 2])
                    return False
                _respond(c, resp.status, rh, body)
                return True
            lock = threading.Lock()
            # Known to cut() before its first byte, or not started at all if a cut came first:
            # a cut in between would reset it without its last chunk.
            with self.lock:
                if gen != self.gen:
                    return False
                self.watches[c] = lock
            with lock:
                c.sendall(_head(200, rh + [("Transfer-Encoding", "chunked")]))
            while True:
                d = resp.read1(65536)
                if not d:
                    break
                with lock:
                    _chunk(c, d)
                    if kind == "watch_garbage" and b"\n" in d:
                        _chunk(c, b"this is not a watch event {\"type\":\n")
                        return False  # the controller ends it at once
            with lock:
                c.sendall(b"0\r\n\r\n")
            return True
        finally:
            with self.lock:
                self.watches.pop(c, None)
            up.close()


def _head(code, headers):
    lines = ["HTTP/1.1 %d %s" % (code, http.client.responses.get(code, "Status"))]
    lines += ["%s: %s" % (k, v) for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _respond(c, code, headers, body):
    body = body or b""
    c.sendall(_head(code, list(headers) + [("Content-Length", str(len(body)))]) + body)


def _chunk(c, d):
    c.sendall(b"%x\r\n" % len(d) + d + b"\r\n")


def _shutdown(s):
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _reset(s):
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass


def status_body(code, reason, message):
    """A metav1.Status, as the API server writes one."""
    return json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {},
                       "status": "Failure", "message": message, "reason": reason,
                       "code": code}).encode()
