"""lbtest - harness for the layer4-lb integration tests.

Drives the real binary on loopback in front of real backend servers that live in threads of
the test process.  Standard library only.

    LB_BIN      path of the layer4-lb binary (default ../../build/layer4-lb from this folder)
    LBTEST_KEEP set to keep the temporary directories (configs and LB stderr) after a run

Every socket operation has a timeout.  Timeouts here are hang guards only: a test never
asserts that something was fast, only that it did not hang.
"""

import ctypes
import json
import hashlib
import os
import queue
import random
import re
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
LB_BIN = os.environ.get("LB_BIN") or os.path.normpath(os.path.join(HERE, "..", "..", "build", "layer4-lb"))

HANG = 10.0               # default hang guard for one socket operation / one wait
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:")

# ----------------------------------------------------------------------------------------
# Addresses and ports


def family_of(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def fmt_addr(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def free_port(host="127.0.0.1"):
    """A port that was free a moment ago (bind port 0 and read it back)."""
    s = socket.socket(family_of(host), socket.SOCK_STREAM)
    try:
        s.bind((host, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def free_udp_port(host="127.0.0.1", tcp_too=False, hosts=None):
    """A port free a moment ago for UDP (and TCP with tcp_too) on host, drawn at random below
    the ephemeral range (as test_apply_load does): a port the kernel hands out for port 0 is
    soon handed out again to another process's connected UDP socket, DNS lookups and the
    like, and would be taken before the LB binds it."""
    rnd = random.Random()
    for _ in range(200):
        port = rnd.randrange(10000, 32000)
        socks = []
        try:
            for h in hosts or (host,):
                for typ in (socket.SOCK_DGRAM, socket.SOCK_STREAM) if tcp_too else \
                        (socket.SOCK_DGRAM,):
                    s = socket.socket(family_of(h), typ)
                    socks.append(s)
                    s.bind((h, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no free port in 200 tries")


_ipv6 = None


def have_ipv6():
    global _ipv6
    if _ipv6 is None:
        try:
            s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            try:
                s.bind(("::1", 0))
                s.listen(1)
                c = socket.create_connection(("::1", s.getsockname()[1]), timeout=2)
                c.close()
                _ipv6 = True
            finally:
                s.close()
        except OSError:
            _ipv6 = False
    return _ipv6


def raise_nofile(want=None):
    """Raise this process's RLIMIT_NOFILE soft limit (to the hard limit by default)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if want is None or (hard != resource.RLIM_INFINITY and want > hard) else want
    if target == resource.RLIM_INFINITY:
        target = 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


# ----------------------------------------------------------------------------------------
# Deterministic pseudo-random data

BLOCK = 1 << 20


def gen_block(seed, i):
    return random.Random(seed * 1000003 + i).randbytes(BLOCK)


def gen_stream(seed, n):
    """Yield n bytes of deterministic pseudo-random data in chunks of at most 1 MiB."""
    i = 0
    left = n
    while left > 0:
        b = gen_block(seed, i)
        if left < len(b):
            b = b[:left]
        yield b
        left -= len(b)
        i += 1


def gen_bytes(seed, n):
    return b"".join(gen_stream(seed, n))


def send_in_background(sock, seed, n):
    """Send gen_stream(seed, n) on sock and shut its write side, from a thread, so the caller
    can read at the same time.  Returns (thread, errors): the OSErrors the sender met."""
    err = []

    def sender():
        try:
            for chunk in gen_stream(seed, n):
                sock.sendall(chunk)
            sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            err.append(e)

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    return t, err


def gen_hash(seed, n):
    h = hashlib.sha256()
    for b in gen_stream(seed, n):
        h.update(b)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------
# Backends


class Endpoint:
    """A server of the tests' (host, port): its address as a tuple, and as config text."""

    @property
    def addr(self):
        return (self.host, self.port)

    @property
    def addr_str(self):
        return fmt_addr(self.host, self.port)


class DeadPort(Endpoint):
    """A port that refuses connections: bound (so nobody else takes it) but never listening."""

    def __init__(self, host="127.0.0.1"):
        self.host = host
        self.sock = socket.socket(family_of(host), socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]
        self.name = f"dead-{self.port}"

    def close(self):
        self.sock.close()


def _read_line(sock, buf, limit=4096):
    """Read one line.  Returns (line without newline, rest) or (None, buf) on EOF."""
    while b"\n" not in buf:
        if len(buf) > limit:
            raise ValueError("line too long")
        d = sock.recv(65536)
        if not d:
            return None, buf
        buf += d
    line, _, rest = buf.partition(b"\n")
    return line.rstrip(b"\r"), rest


class Backend(Endpoint):
    """A threaded TCP backend speaking a tiny line protocol (one thread per connection).

    The first line of a connection is a command:
      WHO                      -> "backend=<name>\\n"; more WHO lines may follow (keep-alive)
      SINK [tail]              -> reads to EOF, replies "<bytes> <sha256>\\n" then `tail` bytes of
                                  gen_stream(99, tail), then closes; result also put on .results
      SOURCE <n> <seed>        -> sends gen_stream(seed, n) and closes
      DRIBBLE <k> <size> <ms> <seed> -> sends gen_stream(seed, k*size) in k chunks, sleeping ms
                                  between chunks, then closes
      ECHO                     -> echoes until EOF, then closes
      HALFCLOSE <n> <seed>     -> sends gen_stream(seed, n), shuts its write side, reads to EOF
                                  and puts ("halfclose", bytes, sha256) on .results
    A connection that sends nothing and closes (health check, probe) is just closed.

    mode="close": every connection is closed as soon as it is accepted.
    """

    def __init__(self, name, host="127.0.0.1", mode="tool", port=0):
        self.name = name
        self.host = host
        self.mode = mode
        self.lock = threading.Lock()
        self.accepted = 0      # connections accepted (including health checks and probes)
        self.open = 0          # connections open now
        self.max_open = 0
        self.requests = 0      # WHO lines answered
        self.results = queue.Queue()
        self._conns = set()
        self._ls = None
        self._thr = None
        self._stop = None
        self.port = None
        self.start_listening(port)

    def start_listening(self, port=None):
        if self._ls is not None:
            return
        if port is None:
            port = self.port
        ls = socket.socket(family_of(self.host), socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((self.host, port or 0))
        ls.listen(4096)
        ls.settimeout(0.05)
        self.port = ls.getsockname()[1]
        self._ls = ls
        self._stop = threading.Event()
        self._thr = threading.Thread(target=self._accept_loop, args=(ls, self._stop),
                                     name=f"backend-{self.name}", daemon=True)
        self._thr.start()

    def stop_listening(self):
        """Close the listening socket: from now on connections to the port are refused."""
        if self._ls is None:
            return
        self._stop.set()
        self._thr.join(HANG)
        self._ls.close()
        self._ls = None

    def close_connections(self):
        with self.lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.stop_listening()
        self.close_connections()

    def counts(self):
        with self.lock:
            return dict(accepted=self.accepted, open=self.open, max_open=self.max_open,
                        requests=self.requests)

    def wait_open(self, pred, timeout=HANG):
        """Wait until pred(open count) holds; returns the count or raises AssertionError."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                n = self.open
            if pred(n):
                return n
            if time.monotonic() > deadline:
                raise AssertionError(f"backend {self.name}: open connections stuck at {n}")
            time.sleep(0.02)

    def _accept_loop(self, ls, stop):
        while not stop.is_set():
            try:
                c, _ = ls.accept()
            except socket.timeout:
                continue
            except OSError:
                if stop.is_set():
                    break
                time.sleep(0.01)
                continue
            with self.lock:
                self.accepted += 1
                self.open += 1
                self.max_open = max(self.max_open, self.open)
                self._conns.add(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.settimeout(60)
            if self.mode == "close":
                return
            self._tool(c)
        except (OSError, ValueError):
            pass
        finally:
            with self.lock:
                self.open -= 1
                self._conns.discard(c)
            c.close()

    def _tool(self, c):
        buf = b""
        line, buf = _read_line(c, buf)
        while line is not None:
            cmd = line.split()
            op = cmd[0] if cmd else b""
            if op == b"WHO":
                with self.lock:
                    self.requests += 1
                c.sendall(f"backend={self.name}\n".encode())
                line, buf = _read_line(c, buf)
                continue
            if op == b"SINK":
                tail = int(cmd[1]) if len(cmd) > 1 else 0
                h = hashlib.sha256(buf)
                n = len(buf)
                while True:
                    d = c.recv(262144)
                    if not d:
                        break
                    h.update(d)
                    n += len(d)
                self.results.put(("sink", n, h.hexdigest()))
                c.sendall(f"{n} {h.hexdigest()}\n".encode())
                for b in gen_stream(99, tail):
                    c.sendall(b)
                return
            if op == b"SOURCE":
                n, seed = int(cmd[1]), int(cmd[2])
                for b in gen_stream(seed, n):
                    c.sendall(b)
                return
            if op == b"DRIBBLE":
                k, size, ms, seed = (int(x) for x in cmd[1:5])
                data = gen_bytes(seed, k * size)
                for i in range(k):
                    c.sendall(data[i * size:(i + 1) * size])
                    if i + 1 < k:
                        time.sleep(ms / 1000.0)
                return
            if op == b"ECHO":
                if buf:
                    c.sendall(buf)
                while True:
                    d = c.recv(262144)
                    if not d:
                        return
                    c.sendall(d)
            if op == b"HALFCLOSE":
                n, seed = int(cmd[1]), int(cmd[2])
                for b in gen_stream(seed, n):
                    c.sendall(b)
                c.shutdown(socket.SHUT_WR)
                h = hashlib.sha256(buf)
                got = len(buf)
                while True:
                    d = c.recv(262144)
                    if not d:
                        break
                    h.update(d)
                    got += len(d)
                self.results.put(("halfclose", got, h.hexdigest()))
                return
            c.sendall(b"ERR unknown command\n")
            line, buf = _read_line(c, buf)


class EchoServer(Endpoint):
    """A selector-based echo backend for many concurrent connections (one thread in all)."""

    def __init__(self, name="echo", host="127.0.0.1"):
        self.name = name
        self.host = host
        self.lock = threading.Lock()
        self.accepted = 0
        self.open = 0
        self.max_open = 0
        self._ls = socket.socket(family_of(host), socket.SOCK_STREAM)
        self._ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._ls.bind((host, 0))
        self._ls.listen(4096)
        self._ls.setblocking(False)
        self.port = self._ls.getsockname()[1]
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._ls, selectors.EVENT_READ, None)
        self._wr, self._ww = socket.socketpair()
        self._wr.setblocking(False)
        self._sel.register(self._wr, selectors.EVENT_READ, "wake")
        self._stop = False
        self._conns = {}
        self._thr = threading.Thread(target=self._loop, name=f"echo-{name}", daemon=True)
        self._thr.start()

    def counts(self):
        with self.lock:
            return dict(accepted=self.accepted, open=self.open, max_open=self.max_open)

    def wait_open(self, pred, timeout=HANG):
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                n = self.open
            if pred(n):
                return n
            if time.monotonic() > deadline:
                raise AssertionError(f"echo {self.name}: open connections stuck at {n}")
            time.sleep(0.02)

    def close(self):
        self._stop = True
        try:
            self._ww.send(b"x")
        except OSError:
            pass
        self._thr.join(HANG)
        for c in list(self._conns):
            c.close()
        self._conns.clear()
        self._sel.close()
        self._ls.close()
        self._wr.close()
        self._ww.close()

    def _drop(self, c):
        self._sel.unregister(c)
        del self._conns[c]
        c.close()
        with self.lock:
            self.open -= 1

    def _loop(self):
        while not self._stop:
            for key, ev in self._sel.select(0.5):
                if key.data == "wake":
                    continue
                if key.fileobj is self._ls:
                    for _ in range(256):
                        try:
                            c, _ = self._ls.accept()
                        except (BlockingIOError, InterruptedError):
                            break
                        except OSError:
                            break
                        c.setblocking(False)
                        self._conns[c] = [bytearray(), False]   # pending output, saw EOF
                        self._sel.register(c, selectors.EVENT_READ, "c")
                        with self.lock:
                            self.accepted += 1
                            self.open += 1
                            self.max_open = max(self.max_open, self.open)
                    continue
                c = key.fileobj
                st = self._conns.get(c)
                if st is None:
                    continue
                out = st[0]
                try:
                    if ev & selectors.EVENT_READ and not st[1]:
                        d = c.recv(65536)
                        if d:
                            out += d
                        else:
                            st[1] = True
                    if out:
                        n = c.send(out)
                        del out[:n]
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    self._drop(c)
                    continue
                if st[1] and not out:
                    self._drop(c)
                    continue
                want = (0 if st[1] else selectors.EVENT_READ) | (selectors.EVENT_WRITE if out else 0)
                # Stop reading while a lot is queued: backpressure.
                if len(out) > (1 << 20):
                    want = selectors.EVENT_WRITE
                if want != key.events:
                    self._sel.modify(c, want, "c")


# ----------------------------------------------------------------------------------------
# Clients


class UdpEcho(Endpoint):
    """A UDP backend in a thread.  Each datagram is answered, to the address it came from,
    with b"<name>|<that address's port>|" + the datagram, except:
      b"TWICE ..."          -> that reply sent twice
      b"BIG <n>"            -> one reply of n bytes
      b"DRIBBLE <k> <ms>"   -> k replies b"<name>|<port>|dribble <i>", ms apart
    Every datagram received is recorded as (peer address, length): the port shows which flow
    socket of the proxy sent it, and the length that nothing was cut."""

    def __init__(self, name, host="127.0.0.1"):
        self.name = name
        self.host = host
        self.sock = socket.socket(family_of(host), socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.seen = []
        self._stop = threading.Event()
        self._thr = threading.Thread(target=self._loop, name=f"udp-{name}", daemon=True)
        self._thr.start()

    def peers(self):
        with self.lock:
            return [p for p, _ in self.seen]

    def lengths(self):
        with self.lock:
            return [n for _, n in self.seen]

    def close(self):
        self._stop.set()
        self._thr.join(HANG)
        self.sock.close()

    def _loop(self):
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                continue          # ICMP errors from earlier sends to a closed flow socket
            with self.lock:
                self.seen.append((peer, len(data)))
            tag = f"{self.name}|{peer[1]}|".encode()
            try:
                if data.startswith(b"BIG "):
                    self.sock.sendto(b"x" * int(data.split()[1]), peer)
                elif data.startswith(b"DRIBBLE "):
                    k, ms = (int(x) for x in data.split()[1:3])
                    threading.Thread(target=self._dribble, args=(peer, tag, k, ms),
                                     daemon=True).start()
                elif data.startswith(b"TWICE"):
                    self.sock.sendto(tag + data, peer)
                    self.sock.sendto(tag + data, peer)
                else:
                    self.sock.sendto(tag + data, peer)
            except OSError:
                pass

    def _dribble(self, peer, tag, k, ms):
        for i in range(k):
            if i:
                time.sleep(ms / 1000.0)
            try:
                self.sock.sendto(tag + f"dribble {i}".encode(), peer)
            except OSError:
                return


def udp_query(addr, data=b"WHO", sock=None, src=None, timeout=HANG):
    """Send one datagram to addr and return the reply (socket.timeout when none comes in
    timeout: a hang guard).  sock: reuse a socket (one client, one flow), else a new one."""
    s = sock or socket.socket(family_of(addr[0]), socket.SOCK_DGRAM)
    try:
        if src is not None and sock is None:
            s.bind(src)
        s.settimeout(timeout)
        s.sendto(data, addr)
        return s.recvfrom(65535)[0]
    finally:
        if sock is None:
            s.close()


def connect(addr, src=None, timeout=HANG):
    """A connected TCP socket with a hang-guard timeout on every operation."""
    host, port = addr
    s = socket.socket(family_of(host), socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        if src is not None:
            s.bind((src, 0))
        s.connect((host, port))
    except BaseException:
        s.close()
        raise
    return s


class Client:
    """A client connection speaking the Backend line protocol."""

    def __init__(self, addr, src=None, timeout=HANG):
        self.sock = connect(addr, src=src, timeout=timeout)
        self.buf = b""

    def readline(self):
        line, self.buf = _read_line(self.sock, self.buf)
        if line is None:
            raise ConnectionError("connection closed before a full line arrived")
        return line.decode()

    def who(self):
        """Ask which backend is on the other end; returns its name."""
        self.sock.sendall(b"WHO\n")
        line = self.readline()
        if not line.startswith("backend="):
            raise AssertionError(f"unexpected reply {line!r}")
        return line[len("backend="):]

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


# The engine the LB under test runs: io_uring unless this pass of the suite is the epoll one.
ENGINE = os.environ.get("LBTEST_IO_ENGINE", "io_uring")


def who(addr, src=None, timeout=HANG):
    """One new connection, one WHO; returns the backend's name."""
    with Client(addr, src=src, timeout=timeout) as c:
        return c.who()


def tally(names):
    out = {}
    for n in names:
        out[n] = out.get(n, 0) + 1
    return out


def recv_all(sock, limit=None):
    """Read until EOF; returns the bytes."""
    parts = []
    n = 0
    while True:
        d = sock.recv(262144)
        if not d:
            return b"".join(parts)
        parts.append(d)
        n += len(d)
        if limit is not None and n > limit:
            raise AssertionError(f"more than {limit} bytes received")


def wait_closed(sock, timeout=HANG):
    """Wait until the peer closes or resets the connection; returns the bytes read meanwhile.

    Raises AssertionError when the connection is still open after `timeout` (a hang)."""
    sock.settimeout(timeout)
    got = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            d = sock.recv(65536)
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            return b"".join(got)
        except socket.timeout:
            raise AssertionError(f"connection still open after {timeout} s (hang guard)")
        if not d:
            return b"".join(got)
        got.append(d)
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"connection still open after {timeout} s (hang guard)")
        sock.settimeout(left)


def main_thread_cpu_ticks(pid):
    """CPU time (clock ticks, user + system) used so far by the main thread of process pid."""
    with open(f"/proc/{pid}/task/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])   # utime, stime (fields 14 and 15 of stat)


def wait_for(pred, timeout=HANG, what="condition", interval=0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# ----------------------------------------------------------------------------------------
# Configuration files


def _scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    s = str(v)
    if s == "" or s[0] in "[]{}&*!|>'\"%@`#,?:-" or ": " in s or " #" in s or s != s.strip():
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return s


def _emit(obj, indent, out):
    pad = " " * indent
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and not v:
                out.append(f"{pad}{k}: {'[]' if isinstance(v, list) else '{}'}")
            elif isinstance(v, (dict, list)):
                out.append(f"{pad}{k}:")
                _emit(v, indent + 2, out)
            else:
                out.append(f"{pad}{k}: {_scalar(v)}")
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, dict):
                sub = []
                _emit(item, indent + 2, sub)
                sub[0] = pad + "- " + sub[0][indent + 2:]
                out.extend(sub)
            else:
                out.append(f"{pad}- {_scalar(item)}")
    else:
        out.append(pad + _scalar(obj))


def render_config(listeners, **top):
    """YAML text for a config with the given listener dicts and top-level keys."""
    doc = dict(top)
    doc["listeners"] = listeners
    out = []
    _emit(doc, 0, out)
    return "\n".join(out) + "\n"


def listener(port, backends, name="web", algorithm="round_robin", host="127.0.0.1", **extra):
    """A listener dict.  backends: Backend/DeadPort objects, or (obj, weight) pairs, or strings."""
    bl = []
    for b in backends:
        weight = None
        if isinstance(b, tuple):
            b, weight = b
        addr = b if isinstance(b, str) else b.addr_str
        e = {"address": addr}
        if weight is not None:
            e["weight"] = weight
        bl.append(e)
    d = {"name": name, "listen": fmt_addr(host, port), "protocol": "tcp", "algorithm": algorithm,
         "backends": bl}
    d.update(extra)
    return d


def line_of(text, needle, nth=1):
    """1-based number of the nth line of text that contains needle."""
    seen = 0
    for i, l in enumerate(text.splitlines(), 1):
        if needle in l:
            seen += 1
            if seen == nth:
                return i
    raise ValueError(f"{needle!r} not in the text")


def sanitizer_report(text):
    for m in SANITIZER_MARKERS:
        i = text.find(m)
        if i >= 0:
            start = text.rfind("\n", 0, max(0, i - 2000)) + 1
            return text[start:i + 4000]
    return None


# ----------------------------------------------------------------------------------------
# The load balancer process

_PR_SET_PDEATHSIG = 1
_prctl = None
try:
    # Resolved once here: between fork and exec the child only makes the call.
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
    _prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                       ctypes.c_ulong]
    _prctl.restype = ctypes.c_int
except (OSError, AttributeError):
    _prctl = None


def _die_with_parent():
    # Runs in the child between fork and exec: SIGKILL the LB if the test process dies.
    _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


_live = set()


def _kill_leftovers():
    for p in list(_live):
        if p.poll() is None:
            try:
                p.kill()
                p.wait(5)
            except Exception:
                pass


import atexit  # noqa: E402
atexit.register(_kill_leftovers)


def base_env(num_acceptors=None, log_level="debug", extra=None):
    env = dict(os.environ)
    for k in ("LOG_LEVEL", "RUST_LOG", "NUM_ACCEPTORS"):
        env.pop(k, None)
    if log_level is not None:
        env["LOG_LEVEL"] = log_level
    if num_acceptors is not None:
        env["NUM_ACCEPTORS"] = str(num_acceptors)
    if extra:
        for k, v in extra.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
    return env


def run_lb(args, env=None, timeout=HANG, cwd=None):
    """Run the binary to completion (hang guard: killed and AssertionError after timeout)."""
    return run_cmd([LB_BIN] + list(args), env=env, timeout=timeout, cwd=cwd)


def run_cmd(argv, env=None, timeout=HANG, cwd=None):
    """Run argv (the LB, maybe behind a wrapper) to completion, with the same hang guard."""
    args = list(argv)
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env if env is not None else base_env(),
                         cwd=cwd, preexec_fn=_die_with_parent if _prctl else None)
    _live.add(p)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise AssertionError(f"{' '.join(args)}: still running after {timeout} s (hang guard)"
                             f"\nstderr:\n{err.decode(errors='replace')[-3000:]}")
    finally:
        _live.discard(p)
    r = subprocess.CompletedProcess(p.args, p.returncode, out.decode(errors="replace"),
                                    err.decode(errors="replace"))
    rep = sanitizer_report(r.stderr)
    if rep:
        raise AssertionError(f"sanitizer report from {' '.join(args)}:\n{rep}")
    return r


class LB:
    """One layer4-lb process on a config written to a temporary directory."""

    def __init__(self, tc, config_text, ready=(), num_acceptors=1, log_level="debug", env=None,
                 expect_rc=0, args=(), prefix=()):
        self.tc = tc
        self.args = list(args)
        self.prefix = list(prefix)
        self.dir = tempfile.mkdtemp(prefix="lbtest-")
        self.config_path = os.path.join(self.dir, "lb.yaml")
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        self.stdout_path = os.path.join(self.dir, "stdout.log")
        self.ready_addrs = list(ready)
        self.expect_rc = expect_rc
        self.env = base_env(num_acceptors, log_level, env)
        self.proc = None
        self.rc = None
        self.write_config(config_text)

    # -- files
    def write_config(self, text):
        # The whole suite runs once per I/O engine: ctest sets LBTEST_IO_ENGINE=epoll for
        # the second pass.  A test that sets io_engine itself keeps its own.
        engine = os.environ.get("LBTEST_IO_ENGINE")
        if engine and not re.search(r"^io_engine:", text, re.M):
            # Appended, so the line numbers that error messages are checked against stay put.
            text = text.rstrip("\n") + f"\nio_engine: {engine}\n"
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.config_path)
        self.config_text = text

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, n=60):
        lines = self.stderr_text().splitlines()
        return "\n".join(lines[-n:])

    def wait_stderr(self, pattern, timeout=HANG, since=0):
        """Wait until stderr (from offset `since`) matches the regex; returns the match."""
        rx = re.compile(pattern)

        def look():
            return rx.search(self.stderr_text()[since:])
        try:
            return wait_for(look, timeout, f"LB stderr to match {pattern!r}", 0.05)
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- LB stderr tail:\n{self.tail()}") from None

    # -- process
    def start(self, wait=True):
        self._err = open(self.stderr_path, "wb")
        self._out = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen(self.prefix + [LB_BIN, "--config", self.config_path] +
                                     self.args,
                                     stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=self._err, env=self.env, cwd=self.dir,
                                     preexec_fn=_die_with_parent if _prctl else None)
        _live.add(self.proc)
        if wait:
            self.wait_ready()
        return self

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout=HANG):
        """Wait until every ready address accepts TCP connections."""
        deadline = time.monotonic() + timeout
        for addr in self.ready_addrs:
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(f"layer4-lb exited with {self.proc.returncode} before "
                                         f"listening on {addr}\n--- stderr:\n{self.tail()}")
                try:
                    s = connect(addr, timeout=2)
                    s.close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"layer4-lb not listening on {addr} after {timeout}"
                                             f" s\n--- stderr:\n{self.tail()}")
                    time.sleep(0.05)

    def send_signal(self, sig):
        if self.alive():
            os.kill(self.proc.pid, sig)

    def reload(self, config_text):
        """Write a new config file and send SIGHUP."""
        self.write_config(config_text)
        self.send_signal(signal.SIGHUP)

    def wait_exit(self, timeout=HANG):
        """Wait for the process to exit on its own; returns its exit code.  Hang guard: on
        timeout it is SIGKILLed and AssertionError raised."""
        try:
            self.rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.rc = self.proc.wait(HANG)
            raise AssertionError(f"layer4-lb did not exit within {timeout} s (hang guard), "
                                 f"killed\n--- stderr:\n{self.tail()}")
        finally:
            _live.discard(self.proc)
        return self.rc

    def stop(self, sig=signal.SIGTERM, timeout=HANG):
        """Send sig (by pid) and wait; SIGKILL and AssertionError when it hangs."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        return self.wait_exit(timeout)

    def _cleanup(self):
        problems = []
        if self.proc is not None:
            try:
                if self.proc.poll() is None:
                    self.stop()
                rc = self.proc.returncode
                if rc != self.expect_rc:
                    problems.append(f"layer4-lb exit code {rc}, expected {self.expect_rc}")
            except AssertionError as e:
                problems.append(str(e))
            for f in (self._err, self._out):
                f.close()
        rep = sanitizer_report(self.stderr_text())
        if rep:
            problems.append("sanitizer report in layer4-lb stderr:\n" + rep)
        if problems:
            raise AssertionError("\n".join(problems) + f"\n--- LB stderr tail:\n{self.tail()}")


class LBTestCase(unittest.TestCase):
    """Base class: creates backends and LB processes and checks them at teardown."""

    def run(self, result=None):
        self._lbs = []
        self._tmpdirs = []
        if result is None:
            result = self.defaultTestResult()
        before = len(result.failures) + len(result.errors)
        try:
            return super().run(result)
        finally:
            failed = len(result.failures) + len(result.errors) > before
            for lb in self._lbs:
                if failed:
                    sys.stderr.write(f"\n--- {self.id()}: layer4-lb stderr ({lb.stderr_path}):\n"
                                     f"{lb.tail(80)}\n--- config:\n{lb.config_text}\n")
                if not os.environ.get("LBTEST_KEEP"):
                    shutil.rmtree(lb.dir, ignore_errors=True)
            for d in self._tmpdirs:
                if not os.environ.get("LBTEST_KEEP"):
                    shutil.rmtree(d, ignore_errors=True)

    def tmpdir(self):
        d = tempfile.mkdtemp(prefix="lbtest-")
        self._tmpdirs.append(d)
        return d

    def backend(self, name, **kw):
        b = Backend(name, **kw)
        self.addCleanup(b.close)
        return b

    def backends(self, *names, **kw):
        return [self.backend(n, **kw) for n in names]

    def udp_backend(self, name, **kw):
        b = UdpEcho(name, **kw)
        self.addCleanup(b.close)
        return b

    def echo_server(self, name="echo", **kw):
        e = EchoServer(name, **kw)
        self.addCleanup(e.close)
        return e

    def dead(self, host="127.0.0.1"):
        d = DeadPort(host)
        self.addCleanup(d.close)
        return d

    def blackhole(self, host="127.0.0.1"):
        """A port whose accept queue is full: SYNs to it are dropped and connects hang.
        Returns the port, or skips the test when this kernel answers anyway."""
        bh = socket.socket(family_of(host), socket.SOCK_STREAM)
        self.addCleanup(bh.close)
        bh.bind((host, 0))
        bh.listen(0)
        port = bh.getsockname()[1]
        for _ in range(8):
            f = socket.socket(family_of(host), socket.SOCK_STREAM)
            self.addCleanup(f.close)
            f.setblocking(False)
            f.connect_ex((host, port))
        time.sleep(0.2)
        probe = socket.socket(family_of(host), socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect((host, port))
        except socket.timeout:
            return port
        except OSError:
            pass
        finally:
            probe.close()
        self.skipTest("could not make a backend that drops SYNs on this kernel")

    def start_lb(self, listeners=None, config=None, ready=None, num_acceptors=1,
                 log_level="debug", env=None, expect_rc=0, wait=True, args=(), prefix=(),
                 **top):
        """Write a config (listener dicts + top-level keys, or raw text) and start the LB.

        ready: addresses to wait for; default: every listener's listen address."""
        if config is None:
            config = render_config(listeners, **top)
        if ready is None:
            ready = []
            for l in listeners or []:
                host, _, port = l["listen"].rpartition(":")
                ready.append((host.strip("[]"), int(port)))
        lb = LB(self, config, ready=ready, num_acceptors=num_acceptors, log_level=log_level,
                env=env, expect_rc=expect_rc, args=args, prefix=prefix)
        self._lbs.append(lb)
        self.addCleanup(lb._cleanup)
        lb.start(wait=wait)
        return lb

    def wait_backends_idle(self, backends, settle=0.2, timeout=HANG):
        """Wait until no backend has an open connection (e.g. the readiness probe's), then a
        short settle so the LB has finished its own bookkeeping for them."""
        for b in backends:
            b.wait_open(lambda n: n == 0, timeout)
        time.sleep(settle)


def main():
    if not os.path.exists(LB_BIN):
        sys.stderr.write(f"layer4-lb binary not found at {LB_BIN} (set LB_BIN)\n")
    unittest.main(verbosity=2)


# ----------------------------------------------------------------------------------------
# Control socket and metrics clients


CTL_LINE_MAX = 8 << 20     # the dataplane's limit for one control request line


class CtlClient:
    """One connection to the control socket: newline-delimited JSON, one reply per request."""

    def __init__(self, path, timeout=HANG):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except BaseException:
            self.sock.close()
            raise
        self.buf = b""

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, req):
        """Send one request: a dict (serialised as JSON) or a str/bytes line (no newline)."""
        if isinstance(req, dict):
            req = json.dumps(req, separators=(",", ":"))
        if isinstance(req, str):
            req = req.encode()
        self.sock.sendall(req + b"\n")

    def readline(self, limit=64 << 20):
        """One reply line (bytes, without the newline), or None at EOF."""
        line, self.buf = _read_line(self.sock, self.buf, limit)
        return line

    def reply(self):
        line = self.readline()
        if line is None:
            raise ConnectionError("control socket closed before a reply line")
        return json.loads(line)

    def call(self, req):
        self.send(req)
        return self.reply()

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def wait_ctl_socket(path, timeout=HANG):
    """Wait until the control socket takes connections.  Its file appears at bind(), a moment
    before listen(): a client that only waited for the file could be refused."""
    def up():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return True
        except OSError:
            return False
        finally:
            s.close()
    wait_for(up, timeout, what=f"control socket {path}")


def ctl_call(path, req, timeout=HANG):
    """One request on a fresh control connection; returns the parsed reply."""
    with CtlClient(path, timeout) as c:
        return c.call(req)


def http_get(addr, path="/metrics", method="GET", timeout=HANG):
    """A one-shot HTTP/1.1 request; returns (status code, headers dict lower-cased, body)."""
    s = connect(addr, timeout=timeout)
    try:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: {fmt_addr(*addr)}\r\n"
                  f"Connection: close\r\n\r\n".encode())
        data = recv_all(s, limit=64 << 20)
    finally:
        s.close()
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise AssertionError(f"no end of HTTP header in {data[:200]!r}")
    lines = head.decode("iso-8859-1").split("\r\n")
    m = re.match(r"HTTP/1\.[01] (\d{3}) ", lines[0] + " ")
    if not m:
        raise AssertionError(f"bad HTTP status line {lines[0]!r}")
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        headers[k.strip().lower()] = v.strip()
    if method != "HEAD" and "content-length" in headers and \
            int(headers["content-length"]) != len(body):
        raise AssertionError(f"Content-Length {headers['content-length']} but body has "
                             f"{len(body)} bytes")
    return int(m.group(1)), headers, body


def status_listener(st, name):
    """The listener called name in a status reply, or None."""
    for l in st.get("listeners", []):
        if l.get("name") == name:
            return l
    return None


# ----------------------------------------------------------------------------------------
# A network namespace of the test's own

def _run_quiet(argv):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def netns_unavailable():
    """Why this process cannot make a network namespace (a skip reason), or None."""
    if os.geteuid() != 0:
        return "needs root (it creates a network namespace)"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed"
    return None


class NetnsUnavailable(RuntimeError):
    """`ip netns add` failed: root without CAP_SYS_ADMIN (a container), for example."""


def run_in_netns(prefix, env_name):
    """Re-runs this Python command (sys.orig_argv) in a fresh network namespace with its
    loopback up, $env_name set to the namespace's name, and exits with the command's status;
    the namespace and whatever still runs in it go afterwards.  Check netns_unavailable()
    first.  Raises NetnsUnavailable when the namespace cannot be made (a reason to skip), and
    RuntimeError when it is made but cannot be set up (a failure)."""
    name = "%s-%d" % (prefix, os.getpid())
    r = _run_quiet(["ip", "netns", "add", name])
    if r.returncode != 0:
        raise NetnsUnavailable("ip netns add %s: %s" % (name, r.stderr.strip()))
    child = None
    try:
        r = _run_quiet(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"])
        if r.returncode != 0:
            raise RuntimeError("ip link set lo up in %s: %s" % (name, r.stderr.strip()))
        env = dict(os.environ)
        env[env_name] = name
        argv = list(getattr(sys, "orig_argv", [sys.executable] + sys.argv))
        argv[0] = sys.executable
        child = subprocess.Popen(["ip", "netns", "exec", name] + argv, env=env)

        def forward(signum, _frame):
            if child.poll() is None:
                child.send_signal(signum)
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, forward)
        rc = child.wait()
    finally:
        _cleanup_netns(name)
    sys.exit(rc if rc >= 0 else 128 - rc)


def _cleanup_netns(name):
    # Whatever the test left running in the namespace (it is ours alone: we created it).
    for sig in (signal.SIGTERM, signal.SIGKILL):
        r = _run_quiet(["ip", "netns", "pids", name])
        pids = [int(p) for p in r.stdout.split() if p.isdigit()] if r.returncode == 0 else []
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _run_quiet(["ip", "netns", "pids", name]).stdout.strip():
            time.sleep(0.1)
    _run_quiet(["ip", "netns", "del", name])
