"""Where new connections land: round_robin, weights, least_conn, random_two, maglev, IPv6.

One worker (NUM_ACCEPTORS=1) wherever exact counts are asserted: each worker balances on its
own.  Counts are taken from the replies clients get, so the readiness probe and health checks
(which send nothing) never count."""

import unittest

import lbtest
from lbtest import LBTestCase, Client, free_port, have_ipv6, listener, tally, who

LOCAL = "127.0.0.1"


class BalancingTest(LBTestCase):
    def test_round_robin_even(self):
        bs = self.backends("a", "b", "c")
        port = free_port()
        self.start_lb([listener(port, bs, algorithm="round_robin")], num_acceptors=1)
        names = [who((LOCAL, port)) for _ in range(30)]
        self.assertEqual(tally(names), {"a": 10, "b": 10, "c": 10}, names)

    def test_round_robin_keepalive_stays(self):
        # A connection stays on its backend for its whole life.
        bs = self.backends("a", "b", "c")
        port = free_port()
        self.start_lb([listener(port, bs)], num_acceptors=1)
        for _ in range(3):
            with Client((LOCAL, port)) as c:
                first = c.who()
                self.assertEqual({c.who() for _ in range(10)}, {first})

    def test_round_robin_weights(self):
        a, b = self.backends("a", "b")
        port = free_port()
        self.start_lb([listener(port, [(a, 3), (b, 1)], algorithm="round_robin")],
                      num_acceptors=1)
        names = [who((LOCAL, port)) for _ in range(40)]
        self.assertEqual(tally(names), {"a": 30, "b": 10}, names)
        # Smooth weighted round robin interleaves: never 4 of a in a row (a a a b repeats).
        run = best = 0
        for n in names:
            run = run + 1 if n == "a" else 0
            best = max(best, run)
        self.assertLessEqual(best, 3, names)

    def test_least_conn(self):
        bs = self.backends("a", "b", "c")
        by_name = {b.name: b for b in bs}
        port = free_port()
        self.start_lb([listener(port, bs, algorithm="least_conn")], num_acceptors=1)
        self.wait_backends_idle(bs)
        addr = (LOCAL, port)

        held = []
        self.addCleanup(lambda: [c.close() for c, _ in held])

        def hold():
            c = Client(addr)
            n = c.who()
            held.append((c, n))
            return n

        # Five held connections spread out: counts 2, 2, 1 in some order.
        first5 = [hold() for _ in range(5)]
        counts = tally(first5)
        self.assertEqual(sorted(counts.values()), [1, 2, 2], first5)
        fewest = min(counts, key=counts.get)
        self.assertEqual(len(counts), 3, first5)
        # The next one goes to the backend with the fewest open.
        self.assertEqual(hold(), fewest)
        # Now 2, 2, 2.  Close both connections on one backend: it becomes the least loaded.
        target = first5[0]
        for c, n in [h for h in held if h[1] == target]:
            c.close()
        held[:] = [h for h in held if h[1] != target]
        by_name[target].wait_open(lambda n: n == 0)
        lbtest.time.sleep(0.2)   # let the LB finish tearing those two down
        self.assertEqual([hold(), hold()], [target, target])
        # 2, 2, 2 again: three more land one on each.
        self.assertEqual(sorted(hold() for _ in range(3)), ["a", "b", "c"])

    def test_least_conn_weighted(self):
        a, b = self.backends("a", "b")
        port = free_port()
        self.start_lb([listener(port, [(a, 3), (b, 1)], algorithm="least_conn")],
                      num_acceptors=1)
        self.wait_backends_idle([a, b])
        held = []
        self.addCleanup(lambda: [c.close() for c in held])
        names = []
        for _ in range(12):
            c = Client((LOCAL, port))
            names.append(c.who())
            held.append(c)
        # Held connections in proportion to the weights: 9 and 3 (give or take a tie).
        # Weights ignored, least_conn would hold 6 and 6.
        counts = tally(names)
        self.assertIn(counts.get("a", 0), (8, 9, 10), names)

    def test_random_two(self):
        bs = self.backends("a", "b", "c")
        port = free_port()
        self.start_lb([listener(port, bs, algorithm="random_two")], num_acceptors=1)
        names = [who((LOCAL, port)) for _ in range(300)]
        counts = tally(names)
        self.assertEqual(set(counts), {"a", "b", "c"}, counts)
        # Expected about 100 each; 30 is far outside chance for a fair picker.
        for n, k in counts.items():
            self.assertGreaterEqual(k, 30, counts)

    def test_random_two_held(self):
        # With connections held open, two choices keep the load close to even.
        bs = self.backends("a", "b", "c")
        port = free_port()
        self.start_lb([listener(port, bs, algorithm="random_two")], num_acceptors=1)
        self.wait_backends_idle(bs)
        held = []
        self.addCleanup(lambda: [c.close() for c in held])
        names = []
        for _ in range(30):
            c = Client((LOCAL, port))
            names.append(c.who())
            held.append(c)
        counts = tally(names)
        self.assertEqual(set(counts), {"a", "b", "c"}, counts)
        # Power of two choices never lets one backend run away: with 30 held over 3 the
        # spread stays small (a single random choice would often differ by 8 or more).
        self.assertLessEqual(max(counts.values()) - min(counts.values()), 6, counts)

    def test_maglev_sticky_by_source_ip(self):
        bs = self.backends("a", "b", "c")
        port = free_port()
        # Two workers: the maglev table must give the same answer on each.
        self.start_lb([listener(port, bs, algorithm="maglev")], num_acceptors=2)
        addr = (LOCAL, port)
        first = {}
        for rnd in range(3):
            for i in range(2, 61):
                src = f"127.0.0.{i}"
                n = who(addr, src=src)
                if rnd == 0:
                    first[src] = n
                else:
                    self.assertEqual(n, first[src], f"{src} moved from {first[src]} to {n}")
        counts = tally(first.values())
        self.assertEqual(set(counts), {"a", "b", "c"}, counts)

    def test_maglev_keeps_mapping_across_restart(self):
        # The table depends on the backend set only, not on the process.
        bs = self.backends("a", "b", "c")
        port = free_port()
        lb = self.start_lb([listener(port, bs, algorithm="maglev")], num_acceptors=1)
        srcs = [f"127.0.0.{i}" for i in range(2, 32)]
        first = {s: who((LOCAL, port), src=s) for s in srcs}
        self.assertEqual(lb.stop(), 0)
        port2 = free_port()
        self.start_lb([listener(port2, bs, algorithm="maglev")], num_acceptors=1)
        second = {s: who((LOCAL, port2), src=s) for s in srcs}
        self.assertEqual(first, second)

    def test_ipv6(self):
        if not have_ipv6():
            self.skipTest("::1 unavailable")
        a6, b6 = self.backends("a6", "b6", host="::1")
        v4 = self.backend("v4")
        p6 = free_port("::1")
        p4 = free_port()
        self.start_lb([listener(p6, [a6, b6, v4], name="v6", host="::1"),
                       listener(p4, [a6], name="v4-to-v6")], num_acceptors=1)
        names = [who(("::1", p6)) for _ in range(9)]
        self.assertEqual(tally(names), {"a6": 3, "b6": 3, "v4": 3}, names)
        # An IPv4 listener in front of an IPv6 backend.
        self.assertEqual(who((LOCAL, p4)), "a6")

    def test_two_listeners_independent(self):
        a, b = self.backends("a", "b")
        c, d = self.backends("c", "d")
        p1, p2 = free_port(), free_port()
        self.start_lb([listener(p1, [a, b], name="one"),
                       listener(p2, [c, d], name="two", algorithm="least_conn")],
                      num_acceptors=1)
        self.assertEqual(set(who((LOCAL, p1)) for _ in range(6)), {"a", "b"})
        self.assertLessEqual(set(who((LOCAL, p2)) for _ in range(6)), {"c", "d"})


if __name__ == "__main__":
    lbtest.main()
