"""The worker's memory budget: receive buffers are a fixed pool, and idle ones are given back.

A worker receives only into its pool of buffer_count x buffer_size bytes: when peers do not
read, data waits in the pool (and then in the kernel's socket buffers, by backpressure), never
in memory allocated per connection.  After the load, buffers nobody used for a trim period
(5 s) are given back with madvise, so resident memory falls back (dataplane/bufstack.h).

The figures asserted are sizes, not times: how far RSS rose (within the pool's size, and far
enough that the pool was really used) and that it falls back; the waits are hang guards.
"""

import socket
import time

import lbtest
from lbtest import LBTestCase, free_port, listener

LOCAL = "127.0.0.1"
BUF_SIZE = 64 << 10
BUF_COUNT = 256
POOL = BUF_SIZE * BUF_COUNT  # 16 MiB
MIB = 1 << 20


def rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for pid %d" % pid)


def stalled_client(addr, nbytes):
    """Asks for nbytes and never reads: the proxy's sends to it stop and it keeps buffers."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(lbtest.HANG)
    s.connect(addr)
    s.sendall(b"SOURCE %d 7\n" % nbytes)
    return s


class MemoryBudgetTest(LBTestCase):
    def test_slow_readers_stay_within_the_pool_and_memory_falls_back(self):
        src = self.backend("src")
        port = free_port()
        lb = self.start_lb([listener(port, [src], name="bulk")], num_acceptors=1,
                           buffer_size=BUF_SIZE, buffer_count=BUF_COUNT)
        pid = lb.pid
        base = rss(pid)
        clients = []
        self.addCleanup(lambda: [s.close() for s in clients])
        # 300 peers that do not read, each sent 64 MiB by its backend: 19 GiB in flight if
        # anything buffered per connection; the pool is 16 MiB.
        for _ in range(300):
            clients.append(stalled_client((LOCAL, port), 64 << 20))
        # A hang guard, and a generous one: 300 backend connections, each with a thread of the
        # test's sending, come up slowly on a machine busy with other tests.
        src.wait_open(lambda n: n == 300, timeout=60)
        peak = base
        deadline = time.monotonic() + 8  # the load's length, not a timing of the proxy
        while time.monotonic() < deadline:
            peak = max(peak, rss(pid))
            time.sleep(0.05)
        rose = peak - base
        print("\n  RSS %.1f MiB at start, %.1f MiB at the peak (pool %.0f MiB)" %
              (base / MIB, peak / MIB, POOL / MIB), flush=True)
        self.assertLessEqual(rose, POOL + 8 * MIB, "RSS rose beyond the buffer pool")
        self.assertGreaterEqual(rose, POOL // 2, "the load did not fill the pool: no test")
        for s in clients:
            s.close()
        clients.clear()
        src.wait_open(lambda n: n == 0, timeout=60)
        # Idle buffers are given back within two trim periods (5 s each): a hang guard.
        lbtest.wait_for(lambda: rss(pid) - base <= POOL // 8, timeout=60,
                        what="RSS back near its start")
        after = rss(pid)
        print("  %.1f MiB once the load stopped" % (after / MIB), flush=True)
        self.assertTrue(lb.alive(), lb.tail())


if __name__ == "__main__":
    lbtest.main()
