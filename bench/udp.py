"""udp.py - the UDP part of the proxy benchmark: bench.py runs it after the TCP part (or
alone with --only udp).  See docs/benchmarks.md, "UDP".

Starts, on 127.0.0.1 only: an unbound DNS server answering a static local zone (no
recursion), an iperf3 server, and every UDP-capable proxy of the run (nginx stream and
layer4-lb; HAProxy has no UDP proxying), each with

  dns     a udp listener in front of unbound, flows closed after one reply
          (nginx `proxy_responses 1`, layer4-lb `responses: 1`)
  iperf   a tcp and a udp listener on the same address in front of the iperf3 server (iperf3
          -u keeps its control connection on TCP and sends its datagrams on UDP)

and measures, against the backend directly (the baseline) and through each proxy:

  dns        dnsperf, closed loop (-q outstanding queries from -c client sockets), in rounds
             alternating the targets: queries/s, lost queries, proxy CPU time per query
  dns@nginx  dnsperf open loop at nginx's median queries/s (-Q): lost queries through each
  udp        iperf3 -u: the highest offered rate (stepping -b, a bounded number of steps) at
             which loss stays at or below --udp-loss percent; then the loss through each
             proxy at nginx's rate
  syscalls   strace -c -f on the proxy while dnsperf sends a fixed rate: syscalls per query

Every process is started through bench.py's Procs (stopped by PID) and every client run is
bounded in time.  `h` below is the bench module (its helpers: Procs, Sampler, run_client, ...).
"""

import json
import math
import os
import re
import shutil
import socket
import statistics
import subprocess
import time

import proxyconf

UDP_KINDS = ("nginx", "layer4-lb")
DNS_NAMES = ["www", "mail", "ns1", "api", "cdn", "db", "git", "vpn"]
DIRECT = dict(key="direct", name="direct (no proxy)", kind="direct")


def add_args(ap):
    g = ap.add_argument_group("UDP part (docs/benchmarks.md, \"UDP\")")
    g.add_argument("--only", choices=("tcp", "udp"),
                   help="run only the TCP or only the UDP part (results then go to "
                        "latest-tcp.* or latest-udp.*, leaving latest.* to full runs)")
    g.add_argument("--udp-rounds", type=int, default=3, help="dnsperf rounds (3)")
    g.add_argument("--udp-duration", type=int, default=5, help="seconds per dnsperf run (5)")
    g.add_argument("--dns-clients", type=int, default=64,
                   help="dnsperf -c: client sockets, each a flow through the proxy (64)")
    g.add_argument("--dns-outstanding", type=int, default=64,
                   help="dnsperf -q: queries in flight at most (64)")
    g.add_argument("--udp-loss", type=float, default=0.1,
                   help="iperf3 -u loss ceiling, percent of datagrams (0.1)")
    g.add_argument("--udp-steps", type=int, default=7, help="iperf3 -u rates tried per target (7)")
    g.add_argument("--udp-step-time", type=int, default=2, help="seconds per iperf3 -u step (2)")
    g.add_argument("--udp-start-mbps", type=float, default=100,
                   help="first iperf3 -u rate tried, Mbit/s; doubled until loss (100)")
    g.add_argument("--udp-len", type=int, default=1400,
                   help="iperf3 -u datagram payload, bytes (1400: fits a 1500-byte MTU)")
    g.add_argument("--udp-window", default="4M",
                   help="iperf3 -w: the endpoints' socket buffers, so that they are not what "
                        "loses datagrams (4M; the proxies keep their own defaults)")
    g.add_argument("--udp-strace", type=int, default=3,
                   help="seconds of strace -c -f per proxy under a fixed dnsperf rate (3; 0: off)")
    g.add_argument("--udp-strace-qps", type=int, default=10000,
                   help="dnsperf -Q during the strace run: one rate for every proxy (10000)")


def want(a, part):
    return a.only in (None, part)


def udp_proxies(ctx):
    return [p for p in ctx.proxies if p["kind"] in UDP_KINDS]


def ports(ctx):
    base = ctx.args.port_base + 200
    return [base + 1, base + 2] + [base + 10 + 10 * i + j
                                  for i in range(len(udp_proxies(ctx))) for j in (0, 1)]


def port_free(port):
    """Free for TCP and for UDP on 127.0.0.1."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_INET, kind)
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def tool_versions():
    v = {}
    for name, argv in (("dnsperf", ["dnsperf", "-h"]), ("unbound", ["unbound", "-V"])):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            m = re.search(r"Version (\S+)", out.stdout + out.stderr)
            v[name] = m.group(1) if m else "?"
        except (OSError, subprocess.TimeoutExpired):
            v[name] = "missing"
    return v


# ----------------------------------------------------------------------------------------
# Backends and proxies


def dns_query(port, name="www.bench.test", timeout=1.0):
    """One A query by hand; True when a NOERROR answer with one record comes back."""
    qid = 0x4242
    q = qid.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\x00\x00\x01\x00\x01"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(q, ("127.0.0.1", port))
        r, _ = s.recvfrom(512)
        return r[:2] == q[:2] and r[3] & 0x0F == 0 and int.from_bytes(r[6:8], "big") == 1
    except OSError:
        return False
    finally:
        s.close()


def wait_dns(port, proc, name, logpath, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            break
        if dns_query(port, timeout=0.3):
            return None
        time.sleep(0.1)
    tail = open(logpath, errors="replace").read()[-1500:] if os.path.exists(logpath) else ""
    state = f"exited with status {proc.returncode}" if proc.poll() is not None else "no answer"
    return f"{name}: DNS on 127.0.0.1:{port}: {state} after {timeout:.0f} s; its log:\n{tail}"


def start_backends(ctx, h):
    a, u = ctx.args, ctx.udp
    d = os.path.join(ctx.tmp, "unbound")
    os.makedirs(d)
    conf = os.path.join(d, "unbound.conf")
    data = "\n".join(f'    local-data: "{n}.bench.test. 3600 IN A 127.0.1.{i + 1}"'
                     for i, n in enumerate(DNS_NAMES))
    with open(conf, "w") as f:
        f.write(f"""server:
    interface: 127.0.0.1@{u['dns_port']}
    port: {u['dns_port']}
    do-ip6: no
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "{d}"
    pidfile: "{d}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 0
    num-threads: 1
    so-reuseport: no
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: yes
    module-config: "iterator"
    auto-trust-anchor-file: ""
    num-queries-per-thread: 4096
    local-zone: "bench.test." static
{data}
remote-control:
    control-enable: no
""")
    with open(os.path.join(ctx.tmp, "queries.txt"), "w") as f:
        f.write("".join(f"{n}.bench.test A\n" for n in DNS_NAMES))
    logpath = os.path.join(d, "stderr.log")
    p = ctx.procs.start("unbound", ["unbound", "-d", "-c", conf], logpath, cpus=a.cpus_backends)
    err = wait_dns(u["dns_port"], p, "unbound", logpath)
    if err:
        raise SystemExit(f"bench: {err}")
    u["unbound_pids"] = h.tree(p.pid)
    d = os.path.join(ctx.tmp, "iperf3-udp")
    os.makedirs(d)
    logpath = os.path.join(d, "stderr.log")
    p = ctx.procs.start("iperf3 server (udp)",
                        ["iperf3", "-s", "-B", "127.0.0.1", "-p", str(u["iperf_port"])],
                        logpath, cpus=a.cpus_backends)
    h.wait_port(u["iperf_port"], p, "iperf3 server (udp)", logpath)


def nginx_conf(ctx, h, d, dns_port, iperf_port):
    a, u = ctx.args, ctx.udp
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(proxyconf.nginx_head(a, ctx.nofile, d, h.NGINX_STREAM_MODULE, 20000) + f"""    server {{
        listen 127.0.0.1:{dns_port} udp reuseport;
        proxy_pass 127.0.0.1:{u['dns_port']};
        proxy_responses 1;
        proxy_timeout 30s;
    }}
    server {{
        listen 127.0.0.1:{iperf_port} udp reuseport;
        proxy_pass 127.0.0.1:{u['iperf_port']};
        proxy_timeout 30s;
    }}
    server {{
        listen 127.0.0.1:{iperf_port} reuseport;
        proxy_pass 127.0.0.1:{u['iperf_port']};
    }}
}}
""")
    return ["nginx", "-p", d, "-c", conf, "-e", f"{d}/error.log"], None


def layer4lb_conf(ctx, h, px, d, dns_port, iperf_port):
    a, u = ctx.args, ctx.udp
    conf = os.path.join(d, "lb.yaml")
    # As the TCP part (proxyconf.l4lb_head): every feature on in its default setting; a udp
    # listener's active checks are a TCP connect to a named port (unbound and iperf3 both listen
    # on TCP too).  idle_timeout_ms and max_flows keep their defaults (30000 and 16384), as
    # nginx's proxy_timeout 30s.
    with open(conf, "w") as f:
        f.write(proxyconf.l4lb_head(a, px, d) + f"""  - name: dns
    listen: 127.0.0.1:{dns_port}
    protocol: udp
    responses: 1
    health_check: {{port: {u['dns_port']}}}
    backends:
      - address: 127.0.0.1:{u['dns_port']}
  - name: iperf-udp
    listen: 127.0.0.1:{iperf_port}
    protocol: udp
    health_check: {{port: {u['iperf_port']}}}
    backends:
      - address: 127.0.0.1:{u['iperf_port']}
  - name: iperf-tcp
    listen: 127.0.0.1:{iperf_port}
    health_check: {{}}
    backends:
      - address: 127.0.0.1:{u['iperf_port']}
""")
    binary = px.get("binary", a.l4lb_binary)
    try:
        chk = subprocess.run([binary, "--config", conf, "--check"], capture_output=True,
                             text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"{binary} --check: {e}"
    if chk.returncode != 0:
        return None, (chk.stderr or chk.stdout).strip()[-500:]
    return ([binary, "--config", conf], dict(os.environ, NUM_ACCEPTORS=str(a.acceptors))), None


def start_proxy(ctx, h, px, index):
    """Start px's UDP instance; its figures go to ctx.udp["results"][px["key"]].  Returns an
    error string (the column is then skipped) or None."""
    base = ctx.args.port_base + 200 + 10 + 10 * index
    d = os.path.join(ctx.tmp, "udp-" + px["key"])
    os.makedirs(d)
    t = dict(key=px["key"], name=px["name"], kind=px["kind"], dns_port=base, iperf_port=base + 1,
             dir=d, log=os.path.join(d, "stderr.log"))
    if px["kind"] == "nginx":
        argv, env = nginx_conf(ctx, h, d, t["dns_port"], t["iperf_port"])
    else:
        got, err = layer4lb_conf(ctx, h, px, d, t["dns_port"], t["iperf_port"])
        if err:
            return t, f"configuration refused: {err}"
        argv, env = got
    p = ctx.procs.start(px["name"] + " (udp)", argv, t["log"], env=env, cpus=ctx.args.cpus_proxy)
    t["proc"] = p
    err = wait_dns(t["dns_port"], p, px["name"], t["log"])
    if err:
        return t, err
    h.wait_port(t["iperf_port"], p, px["name"], t["log"])
    time.sleep(0.3)
    t["pids"] = h.tree(p.pid)
    return t, None


# ----------------------------------------------------------------------------------------
# Measurements


def parse_dnsperf(out):
    r = {}
    for key, pat in (("sent", r"Queries sent:\s+(\d+)"), ("completed", r"Queries completed:\s+(\d+)"),
                     ("lost", r"Queries lost:\s+(\d+)"), ("qps", r"Queries per second:\s+([\d.]+)"),
                     ("lat_ms", r"Average Latency \(s\):\s+([\d.]+)"),
                     ("lat_max_ms", r"Average Latency \(s\):.*max ([\d.]+)"),
                     ("lat_sd_ms", r"Latency StdDev \(s\):\s+([\d.]+)"),
                     ("run_s", r"Run time \(s\):\s+([\d.]+)")):
        m = re.search(pat, out)
        v = float(m.group(1)) if m else None
        if v is not None and key.endswith("_ms"):
            v *= 1000
        r[key] = v
    for k in ("sent", "completed", "lost"):
        r[k] = int(r[k]) if r[k] is not None else None
    m = re.search(r"Response codes:\s+(.*)", out)
    r["rcodes"] = m.group(1).strip() if m else ""
    r["noerror"] = bool(m) and all(c.startswith("NOERROR") for c in r["rcodes"].split(", "))
    return r


def run_dnsperf(ctx, h, t, duration, qps=None):
    """Closed loop (-q queries in flight), or open loop at qps: then with twice the window,
    so that the window is not what holds the rate back (more would let dnsperf catch up after
    a stall in bursts of hundreds, which any proxy's default socket buffer drops)."""
    a = ctx.args
    argv = ["dnsperf", "-s", "127.0.0.1", "-p", str(t["dns_port"]),
            "-d", os.path.join(ctx.tmp, "queries.txt"), "-l", str(duration),
            "-c", str(a.dns_clients), "-q", str(a.dns_outstanding * (2 if qps else 1)), "-t", "1"]
    if qps:
        argv += ["-Q", str(int(qps))]
    px = {"pids": t.get("pids", [])}
    with h.Sampler(ctx, px) as s:
        out, rc, timed_out = h.run_client(argv, duration + 20, a.cpus_client)
    r = parse_dnsperf(out)
    s.record(r)
    r["offered_qps"] = qps
    r["rc"], r["timed_out"] = rc, timed_out
    r["cpu_us"] = (s.cpu / h.CLK_TCK) / r["completed"] * 1e6 if t.get("pids") and r["completed"] else None
    if rc != 0 or timed_out or not r["completed"]:
        r["raw"] = out[-1500:]
    return r


def udp_drops():
    """{(local port, remote port): datagrams dropped} of the UDP sockets on 127.0.0.1
    (/proc/net/udp, last column: the socket's receive-buffer overflows)."""
    out = {}
    try:
        with open("/proc/net/udp") as f:
            next(f)
            for line in f:
                x = line.split()
                if x[1].startswith("0100007F:") and len(x) >= 13:
                    k = (int(x[1].split(":")[1], 16), int(x[2].split(":")[1], 16))
                    out[k] = out.get(k, 0) + int(x[12])
    except (OSError, ValueError, StopIteration):
        pass
    return out


def drops_where(before, after, t, server_port):
    """Where the datagrams of one iperf3 run were dropped: at the proxy's listening socket
    (client to proxy), at the server's socket, elsewhere (a flow socket, the client)."""
    d = {"proxy_listener": 0, "server": 0, "other": 0}
    for k, v in after.items():
        n = v - before.get(k, 0)
        if n <= 0:
            continue
        if t["kind"] != "direct" and k[0] == t["iperf_port"]:
            d["proxy_listener"] += n
        elif k[0] == server_port:
            d["server"] += n
        else:
            d["other"] += n
    return d


def run_iperf_udp(ctx, h, t, mbps, seconds):
    a = ctx.args
    argv = ["iperf3", "-u", "-c", "127.0.0.1", "-p", str(t["iperf_port"]), "-b", f"{mbps:.0f}M",
            "-l", str(a.udp_len), "-w", a.udp_window, "-t", str(seconds), "-J"]
    r = {"offered_mbps": round(mbps, 1)}
    for attempt in range(2):                    # once more if a health probe took the server
        px = {"pids": t.get("pids", [])}
        d0 = udp_drops()
        with h.Sampler(ctx, px) as s:
            out, rc, timed_out = h.run_client(argv, seconds + 20, a.cpus_client)
        r["drops"] = drops_where(d0, udp_drops(), t, ctx.udp["iperf_port"])
        r.update(rc=rc, timed_out=timed_out, others_cpus=round(s.others, 2))
        r["proxy_cpus"] = round(s.cpu / h.CLK_TCK / s.elapsed, 3) if t.get("pids") else None
        try:
            j = json.loads(out)
        except ValueError:
            j = {}
        err = j.get("error")
        if err and "busy" in err and attempt == 0:
            time.sleep(1)
            continue
        break
    try:
        rx, tx = j["end"]["sum_received"], j["end"]["sum_sent"]
        r["sent_mbps"] = round(tx["bits_per_second"] / 1e6, 1)
        r["mbps"] = round(rx["bits_per_second"] / 1e6, 1)
        r["lost"], r["packets"] = rx["lost_packets"], rx["packets"]
        r["loss_pct"] = rx["lost_percent"]
        r["cpu_s_per_gb"] = round(s.cpu / h.CLK_TCK / (rx["bytes"] / 1e9), 3) \
            if t.get("pids") and rx["bytes"] else None
        if err:
            r["error"] = err
    except (KeyError, TypeError):
        r["mbps"] = r["loss_pct"] = None
        r["error"] = (err or "no iperf3 result") + (" (timed out)" if timed_out else "")
        r["raw"] = out[-1000:]
    return r


def iperf_search(ctx, h, t):
    """The highest offered rate with loss <= the ceiling: double from --udp-start-mbps until a
    step loses more, then bisect (geometric mean) between the best passing and the lowest failing
    rate, --udp-steps runs at most; stops early when they are within 10% of each other."""
    a = ctx.args
    ok, bad, steps = None, None, []
    rate = a.udp_start_mbps
    for _ in range(a.udp_steps):
        # Repeated, as the DNS runs, only while other work disturbed it (bench.py's quiet()).
        r = h.quiet(ctx, lambda: run_iperf_udp(ctx, h, t, rate, a.udp_step_time))
        r["ok"] = r.get("loss_pct") is not None and not r.get("error") and r["loss_pct"] <= a.udp_loss
        steps.append(r)
        if r["ok"]:
            ok = rate if ok is None else max(ok, rate)
        else:
            bad = rate if bad is None else min(bad, rate)
        if r["ok"] and r.get("sent_mbps") and r["sent_mbps"] < 0.9 * rate:
            r["client_limited"] = True              # iperf3 cannot send faster here
            break
        if bad is None:
            rate = ok * 2
        elif ok is None:
            rate = bad / 2
        elif bad / ok <= 1.1:
            break
        else:
            rate = math.sqrt(ok * bad)
        if r.get("error") and r.get("mbps") is None and len(steps) >= 2 and \
                all(x.get("mbps") is None for x in steps[-2:]):
            break                                   # two failed runs in a row: give up
    best = max((s for s in steps if s["ok"]), key=lambda s: s["offered_mbps"], default=None)
    return {"steps": steps, "best_offered_mbps": best["offered_mbps"] if best else None,
            "client_limited": any(x.get("client_limited") for x in steps),
            "mbps": best["mbps"] if best else None, "first_failing_mbps": bad}


def strace_run(ctx, h, t):
    """strace -c -f on the proxy while dnsperf sends --udp-strace-qps for --udp-strace s."""
    a = ctx.args
    if not shutil.which("strace"):
        return {"error": "strace not installed"}
    out_path = os.path.join(t["dir"], "strace.txt")
    argv = ["strace", "-c", "-f", "-o", out_path]
    for p in t["pids"]:
        argv += ["-p", str(p)]
    st = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        time.sleep(1.0)                             # attached to every thread
        r = run_dnsperf(ctx, h, t, a.udp_strace, a.udp_strace_qps)
        time.sleep(0.2)
    finally:
        st.send_signal(2)                           # SIGINT: detach and write the summary
        try:
            st.wait(15)
        except subprocess.TimeoutExpired:
            st.kill()
            st.wait()
    try:
        text = open(out_path).read()
    except OSError:
        return {"error": "no strace output: " + (st.stderr.read() or "")[-300:]}
    calls = {}
    for line in text.splitlines():
        f = line.split()
        # "% time seconds usecs/call calls [errors] syscall"
        if len(f) >= 5 and re.match(r"^[\d.]+$", f[0]) and f[3].isdigit() and f[-1] != "total":
            calls[f[-1]] = int(f[3])
    q = r.get("completed") or 0
    top = sorted(calls.items(), key=lambda kv: -kv[1])[:8]
    return {"qps": a.udp_strace_qps, "seconds": a.udp_strace, "queries": q, "lost": r.get("lost"),
            "calls": sum(calls.values()),
            "per_query": round(sum(calls.values()) / q, 2) if q else None,
            "top": {k: (round(v / q, 2) if q else None) for k, v in top}}


# ----------------------------------------------------------------------------------------


def run(ctx, h):
    a = ctx.args
    base = a.port_base + 200
    ctx.udp = u = {"dns_port": base + 1, "iperf_port": base + 2, "results": {}, "problems": [],
                   "targets": [], "versions": tool_versions()}
    for tool in ("unbound", "dnsperf", "iperf3"):
        if not shutil.which(tool):
            u["problems"].append(f"{tool} not installed: no UDP part")
            return
    busy = [p for p in ports(ctx) if not port_free(p)]
    if busy:
        raise SystemExit(f"bench: UDP/TCP ports in use on 127.0.0.1: {busy}; pick others with --port-base")
    start_backends(ctx, h)
    targets = [dict(DIRECT, dns_port=u["dns_port"], iperf_port=u["iperf_port"], pids=[])]
    for i, px in enumerate(udp_proxies(ctx)):
        t, err = start_proxy(ctx, h, px, i)
        if err:
            u["problems"].append(f"{px['name']}: UDP column skipped: {err}")
            h.log(f"bench: udp: {px['name']} skipped: {err}")
            if t.get("proc"):
                ctx.procs.stop(t["proc"])
            continue
        targets.append(t)
        h.log(f"bench: udp: {px['name']} on 127.0.0.1:{t['dns_port']} (dns), "
              f":{t['iperf_port']} (iperf3 tcp+udp), pids {t['pids']}")
    u["targets"] = [{k: v for k, v in t.items() if k not in ("proc", "pids")} for t in targets]
    for t in targets:
        u["results"][t["key"]] = {"dns": []}
    ref = next((t for t in targets if t["kind"] == "nginx"), None)

    # Warm-up, not recorded.
    for t in targets:
        run_dnsperf(ctx, h, t, 1)
        run_iperf_udp(ctx, h, t, a.udp_start_mbps, 1)

    n = len(targets)
    for rnd in range(a.udp_rounds):
        for t in targets[rnd % n:] + targets[:rnd % n]:
            r = h.quiet(ctx, lambda: run_dnsperf(ctx, h, t, a.udp_duration))
            u["results"][t["key"]]["dns"].append(r)
            h.log(f"udp round {rnd + 1}/{a.udp_rounds} {t['name']:<22} dns "
                  f"{h.fmt(r['qps'], 'k')} q/s, {h.fmt(r['cpu_us'], '2')} us/query, lost "
                  f"{r['lost']}, latency {h.fmt(r['lat_ms'], '3')} ms | others "
                  f"{r['others_cpus']:.2f} CPUs" + (f" | tries {r['tries']}" if r["tries"] > 1 else "")
                  + ("" if r["noerror"] else f" | answers {r['rcodes'] or r.get('raw', '')[-300:]}"))
    if ref:
        qps = statistics.median([r["qps"] for r in u["results"][ref["key"]]["dns"] if r["qps"]] or [0])
        if qps:
            for t in targets[1:]:
                r = h.quiet(ctx, lambda: run_dnsperf(ctx, h, t, a.udp_duration, qps))
                u["results"][t["key"]]["dns_at_ref"] = r
                h.log(f"udp {t['name']:<22} dns at nginx's {qps / 1e3:.1f}k q/s: "
                      f"{h.fmt(r['qps'], 'k')} q/s, lost {r['lost']} of {r['sent']}, "
                      f"{h.fmt(r['cpu_us'], '2')} us/query")

    for t in targets[1:]:
        s = iperf_search(ctx, h, t)
        u["results"][t["key"]]["iperf"] = s
        h.log(f"udp {t['name']:<22} iperf3 -u: {h.fmt(s['mbps'], '0')} Mbit/s at <= {a.udp_loss}% "
              f"loss (offered {s['best_offered_mbps']}, first failing {h.fmt(s['first_failing_mbps'], '0')}); "
              "steps " + ", ".join(f"{x['offered_mbps']:.0f}:"
                                   f"{'n/a' if x.get('loss_pct') is None else round(x['loss_pct'], 2)}%"
                                   for x in s["steps"]))
    # The endpoints alone, once, at twice the best rate through a proxy: were iperf3's client
    # and server able to carry more than the proxies did (so that the ceilings are the proxies')?
    best = max([u["results"][t["key"]]["iperf"]["best_offered_mbps"] or 0 for t in targets[1:]]
               + [a.udp_start_mbps])
    r = run_iperf_udp(ctx, h, targets[0], 2 * best, a.udp_step_time)
    r["ok"] = r.get("loss_pct") is not None and not r.get("error") and r["loss_pct"] <= a.udp_loss
    u["results"]["direct"]["iperf"] = {
        "steps": [r], "best_offered_mbps": r["offered_mbps"] if r["ok"] else None,
        "mbps": r["mbps"] if r["ok"] else None,
        "first_failing_mbps": None if r["ok"] else r["offered_mbps"], "client_limited": False}
    h.log(f"udp {targets[0]['name']:<22} iperf3 -u at {2 * best:.0f} Mbit/s (twice the best proxy's): "
          f"{h.fmt(r.get('mbps'), '0')} Mbit/s received, loss {h.fmt(r.get('loss_pct'), '3')}%")
    if not r["ok"]:
        u["problems"].append(f"iperf3 alone lost {h.fmt(r.get('loss_pct'), '3')}% at {2 * best:.0f} "
                             "Mbit/s: the UDP throughput ceilings may be iperf3's, not the proxies'")
    if ref and u["results"][ref["key"]]["iperf"]["best_offered_mbps"]:
        rate = u["results"][ref["key"]]["iperf"]["best_offered_mbps"]
        for t in targets[1:]:
            r = h.quiet(ctx, lambda: run_iperf_udp(ctx, h, t, rate, a.udp_duration))
            u["results"][t["key"]]["iperf_at_ref"] = r
            h.log(f"udp {t['name']:<22} iperf3 -u at nginx's {rate:.0f} Mbit/s: "
                  f"{h.fmt(r.get('mbps'), '0')} Mbit/s received, loss "
                  f"{h.fmt(r.get('loss_pct'), '3')}%" + (f" ({r['error']})" if r.get("error") else ""))

    if a.udp_strace > 0:
        for t in targets[1:]:
            r = strace_run(ctx, h, t)
            u["results"][t["key"]]["strace"] = r
            h.log(f"udp {t['name']:<22} strace at {a.udp_strace_qps} q/s: "
                  + (r["error"] if r.get("error") else
                     f"{h.fmt(r['per_query'], '2')} syscalls/query ({r['queries']} queries, "
                     f"lost {r['lost']}); " + ", ".join(f"{k} {v}" for k, v in r["top"].items())))

    for t in targets[1:]:
        p = t["proc"]
        if p.poll() is not None:
            u["problems"].append(f"{t['name']} (udp): exited during the run with status {p.returncode}")
        ctx.procs.stop(p)
        if p.returncode not in (0, None) and t["kind"] == "layer4-lb":
            u["problems"].append(f"{t['name']} (udp): exit status {p.returncode} after SIGTERM")


def problems(ctx):
    u, a = ctx.udp, ctx.args
    out = list(u["problems"])
    for t in u["targets"]:
        res = u["results"].get(t["key"], {})
        runs = [(f"round {i + 1}", r) for i, r in enumerate(res.get("dns", []))]
        if res.get("dns_at_ref"):
            runs.append(("at nginx's rate", res["dns_at_ref"]))
        for what, r in runs:
            if r["rc"] != 0 or r["timed_out"] or not r["completed"] or not r["noerror"]:
                out.append(f"{t['name']} dnsperf {what}: {r['completed']} of {r['sent']} queries "
                           f"answered, codes {r['rcodes'] or 'none'}, exit {r['rc']}"
                           + (" (timed out)" if r["timed_out"] else ""))
        it = res.get("iperf")
        if it is not None and it["mbps"] is None and t["key"] != "direct":
            errs = sorted({x.get("error") or f"loss {x.get('loss_pct')}%" for x in it["steps"]})
            out.append(f"{t['name']} iperf3 -u: no rate with loss <= {a.udp_loss}% "
                       f"({'; '.join(map(str, errs))[:300]})")
    return out
