"""Command line: --version, --help, --check, bad configs at start-up, NUM_ACCEPTORS, logging."""

import os
import re
import unittest

import lbtest
from lbtest import (LBTestCase, Client, base_env, line_of, listener, render_config, run_lb, who,
                    free_port)


def good_config(port=None):
    port = port or free_port()
    return render_config([listener(port, ["127.0.0.1:9001", ("127.0.0.1:9002", 2)],
                                   health_check={"interval_ms": 2000, "timeout_ms": 1000,
                                                 "rise": 2, "fall": 3},
                                   connect_timeout_ms=3000, idle_timeout_ms=300000,
                                   max_connections=1000)],
                         drain_timeout_ms=5000, log_level="info")


# (file name, text, marker of the line that must be reported)
BAD_CONFIGS = [
    ("unknown-key.yaml",
     "log_level: info\n"
     "listeners:\n"
     "  - name: web\n"
     "    listen: 127.0.0.1:18080\n"
     "    protocol: tcp\n"
     "    colour: blue\n"
     "    backends:\n"
     "      - address: 127.0.0.1:19000\n",
     "colour"),
    ("unknown-top-key.yaml",
     "log_level: info\n"
     "listnrs: []\n"
     "listeners:\n"
     "  - name: web\n"
     "    listen: 127.0.0.1:18080\n"
     "    backends:\n"
     "      - address: 127.0.0.1:19000\n",
     "listnrs"),
    ("bad-port.yaml",
     "listeners:\n"
     "  - name: web\n"
     "    protocol: tcp\n"
     "    listen: 127.0.0.1:70000\n"
     "    backends:\n"
     "      - address: 127.0.0.1:19000\n",
     "70000"),
    ("bad-backend-port.yaml",
     "listeners:\n"
     "  - name: web\n"
     "    listen: 127.0.0.1:18080\n"
     "    backends:\n"
     "      - address: 127.0.0.1:19000\n"
     "      - address: 127.0.0.1:99999\n"
     "        weight: 1\n",
     "99999"),
    ("missing-backends.yaml",
     "log_level: info\n"
     "listeners:\n"
     "  - name: web\n"
     "    listen: 127.0.0.1:18080\n"
     "    protocol: tcp\n"
     "    algorithm: round_robin\n",
     "- name: web"),
    ("yaml-syntax.yaml",
     "log_level: info\n"
     "listeners:\n"
     "  - name: web\n"
     "    listen: 127.0.0.1:18080\n"
     "    protocol: tcp: extra\n"
     "    backends:\n"
     "      - address: 127.0.0.1:19000\n",
     "tcp: extra"),
    ("bad-algorithm.yaml",
     "listeners:\n"
     "  - name: web\n"
     "    listen: 127.0.0.1:18080\n"
     "    algorithm: fastest\n"
     "    backends:\n"
     "      - address: 127.0.0.1:19000\n",
     "fastest"),
    ("bad-number.yaml",
     "listeners:\n"
     "  - name: web\n"
     "    listen: 127.0.0.1:18080\n"
     "    backends:\n"
     "      - address: 127.0.0.1:19000\n"
     "    connect_timeout_ms: soon\n",
     "soon"),
]


class CliTest(LBTestCase):
    def write(self, name, text):
        path = os.path.join(self.tmpdir(), name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def assert_names_line(self, stderr, path, line):
        base = os.path.basename(path)
        rx = re.compile(re.escape(base) + r":(\d+)\b")
        found = [int(m.group(1)) for m in rx.finditer(stderr)]
        self.assertIn(line, found, f"expected '{base}:{line}' in stderr, got:\n{stderr}")

    def test_version(self):
        r = run_lb(["--version"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("layer4-lb", r.stdout + r.stderr)

    def test_help(self):
        r = run_lb(["--help"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("--config", r.stdout + r.stderr)
        self.assertIn("--check", r.stdout + r.stderr)

    def test_unknown_option(self):
        r = run_lb(["--no-such-option"])
        self.assertNotEqual(r.returncode, 0)

    def test_check_good(self):
        path = self.write("good.yaml", good_config())
        r = run_lb(["--check", "--config", path])
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_check_example_config(self):
        # If the project ships example configs, they must pass --check.
        ex = os.path.join(lbtest.HERE, "..", "..", "examples")
        files = [f for f in sorted(os.listdir(ex)) if f.endswith((".yaml", ".yml"))] \
            if os.path.isdir(ex) else []
        if not files:
            self.skipTest("no examples/*.yaml yet")
        for f in files:
            with self.subTest(file=f):
                r = run_lb(["--check", "--config", os.path.join(ex, f)])
                self.assertEqual(r.returncode, 0, r.stderr)

    def test_check_bad_files(self):
        for name, text, marker in BAD_CONFIGS:
            with self.subTest(file=name):
                path = self.write(name, text)
                line = line_of(text, marker)
                r = run_lb(["--check", "--config", path])
                self.assertNotEqual(r.returncode, 0, f"{name} accepted:\n{r.stderr}")
                self.assert_names_line(r.stderr, path, line)

    def test_check_missing_file(self):
        path = os.path.join(self.tmpdir(), "does-not-exist.yaml")
        r = run_lb(["--check", "--config", path])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("does-not-exist.yaml", r.stderr)

    def test_start_with_bad_file(self):
        for name, text, marker in (BAD_CONFIGS[0], BAD_CONFIGS[2], BAD_CONFIGS[5]):
            with self.subTest(file=name):
                path = self.write(name, text)
                r = run_lb(["--config", path])
                self.assertNotEqual(r.returncode, 0, f"started with {name}:\n{r.stderr}")
                self.assert_names_line(r.stderr, path, line_of(text, marker))

    def test_num_acceptors_invalid(self):
        path = self.write("good.yaml", good_config())
        for value in ("abc", "0", "-1", "3x"):
            with self.subTest(NUM_ACCEPTORS=value):
                r = run_lb(["--config", path], env=base_env(extra={"NUM_ACCEPTORS": value}))
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn("NUM_ACCEPTORS", r.stderr)

    def test_check_reads_the_environment(self):
        """--check fails where start-up would: it ignored NUM_ACCEPTORS."""
        path = self.write("good.yaml", good_config())
        for value in ("abc", "0", "-1", "3x", ""):
            with self.subTest(NUM_ACCEPTORS=value):
                r = run_lb(["--check", "--config", path],
                           env=base_env(extra={"NUM_ACCEPTORS": value}))
                self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                self.assertIn("NUM_ACCEPTORS", r.stderr)
                self.assertNotIn("valid", r.stdout)
        r = run_lb(["--check", "--config", path], env=base_env(extra={"NUM_ACCEPTORS": "3"}))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("configuration is valid", r.stdout)
        self.assertEqual(r.stderr, "")

    def test_bad_log_level_is_named(self):
        path = self.write("good.yaml", good_config())
        for args in (["--check", "--config", path], ["--config", path]):
            with self.subTest(args=args[0]):
                r = run_lb(args, env=base_env(log_level="bogus"))
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn('LOG_LEVEL="bogus" names no log level', r.stderr)
                r = run_lb(args, env=base_env(log_level=None, extra={"RUST_LOG": "x=loud"}))
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn('RUST_LOG="x=loud"', r.stderr)

    def test_num_acceptors_logged(self):
        b = self.backend("a")
        port = free_port()
        lb = self.start_lb([listener(port, [b])], num_acceptors=3, log_level="info")
        self.assertEqual(who(("127.0.0.1", port)), "a")
        # "Log the figure and where it came from at startup."
        self.assertTrue(any("NUM_ACCEPTORS" in l and re.search(r"\b3\b", l)
                            for l in lb.stderr_text().splitlines()),
                        "no start-up line naming 3 workers from NUM_ACCEPTORS")

    def test_quiet_at_warn(self):
        # "Nothing is logged per connection at warn or error."
        a, b = self.backends("a", "b")
        port = free_port()
        lb = self.start_lb([listener(port, [a, b])], log_level="warn")
        before = lb.stderr_text()
        for _ in range(20):
            who(("127.0.0.1", port))
        with Client(("127.0.0.1", port)) as c:
            c.who()
        lbtest.wait_for(lambda: a.counts()["open"] == 0 and b.counts()["open"] == 0,
                        what="backend connections to close")
        lb.stop()
        after = lb.stderr_text()
        extra = after[len(before):]
        # Shutdown may say something; per-connection noise would be dozens of lines.
        self.assertLess(len(extra.splitlines()), 5, f"logged at warn for connections:\n{extra}")

    def test_rust_log_alias(self):
        a = self.backend("a")
        port = free_port()
        lb = self.start_lb([listener(port, [a])], log_level=None,
                           env={"RUST_LOG": "error"})
        who(("127.0.0.1", port))
        lb.stop()
        text = lb.stderr_text()
        noisy = [l for l in text.splitlines() if re.match(r"\S+\s+(info|debug)\b", l)]
        self.assertEqual(noisy, [], "RUST_LOG=error still logged info/debug lines")

        port2 = free_port()
        lb2 = self.start_lb([listener(port2, [a])], log_level=None,
                            env={"RUST_LOG": "layer4_lb=debug"})
        who(("127.0.0.1", port2))
        lb2.stop()
        lines = lb2.stderr_text().splitlines()
        self.assertTrue(any(re.match(r"\S+\s+(info|debug)\b", l) for l in lines),
                        "RUST_LOG=layer4_lb=debug logged no info/debug lines")


if __name__ == "__main__":
    lbtest.main()
