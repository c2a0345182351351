"""relay - a TCP relay between the controller and the API server that a test can cut.

cut() resets every connection passing through it (a watch dies mid-stream); pause() also
refuses new ones until resume() (the API server looks unreachable to the controller only,
while kubectl still reaches it directly)."""

import select
import socket
import struct
import threading


class Relay:
    def __init__(self, target, host="127.0.0.1"):
        self.target = target
        self.lock = threading.Lock()
        self.pairs = set()
        self.paused = False
        self.accepted = 0
        self.ls = listening_socket(host, 0.1)
        self.addr = self.ls.getsockname()
        self.stop_ev = threading.Event()
        self.thr = threading.Thread(target=self._accept, daemon=True)
        self.thr.start()

    @property
    def url(self):
        return "https://%s:%d" % self.addr

    def _accept(self):
        while not self.stop_ev.is_set():
            try:
                c, _ = self.ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                paused = self.paused
            if paused:
                _reset(c)
                continue
            try:
                u = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(c)
                continue
            with self.lock:
                self.accepted += 1
                self.pairs.add((c, u))
            threading.Thread(target=self._pump, args=(c, u), daemon=True).start()

    def _pump(self, c, u):
        try:
            while True:
                r, _, _ = select.select([c, u], [], [], 0.2)
                with self.lock:
                    if (c, u) not in self.pairs:
                        return
                for s in r:
                    d = s.recv(65536)
                    if not d:
                        return
                    (u if s is c else c).sendall(d)
        except OSError:
            return
        finally:
            with self.lock:
                self.pairs.discard((c, u))
            _reset(c)
            _reset(u)

    def cut(self):
        """Reset every connection now (the pumps notice within 0.2 s)."""
        with self.lock:
            pairs = list(self.pairs)
            self.pairs.clear()
        for c, u in pairs:
            _reset(c)
            _reset(u)

    def pause(self):
        with self.lock:
            self.paused = True
        self.cut()

    def resume(self):
        with self.lock:
            self.paused = False

    def close(self):
        self.stop_ev.set()
        self.cut()
        self.ls.close()


def listening_socket(host, accept_timeout):
    """A TCP listener on host and a free port, whose accept gives up after accept_timeout (so
    that an accept loop sees its stop flag)."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, 0))
    ls.listen(128)
    ls.settimeout(accept_timeout)
    return ls


def _reset(s):
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
