"""report.py - the figures of a bench/bench.py run: medians, ratios, Markdown, text table, chart."""

import os
import shutil
import statistics
import subprocess

# The figures, in table order: key, label, unit, "higher" or "lower" is better, format.
METRICS = [
    ("ka_rps", "keep-alive requests/s", "", "higher", "k"),
    ("ka_cpu_us", "keep-alive proxy CPU per request", "us", "lower", "2"),
    ("ka_p50_ms", "keep-alive latency p50", "ms", "lower", "3"),
    ("ka_p99_ms", "keep-alive latency p99", "ms", "lower", "3"),
    ("cl_cps", "new connections/s (Connection: close)", "", "higher", "k"),
    ("cl_cpu_us", "proxy CPU per new connection", "us", "lower", "1"),
    ("cl_p50_ms", "new connection latency p50", "ms", "lower", "3"),
    ("cl_p99_ms", "new connection latency p99", "ms", "lower", "3"),
    ("bulk_gbps", "bulk throughput (iperf3)", "Gbit/s", "higher", "2"),
    ("idle_kib", "memory per idle proxied connection", "KiB", "lower", "2"),
]
CHART_METRICS = ["ka_rps", "ka_cpu_us", "ka_p99_ms", "cl_cps", "cl_cpu_us", "bulk_gbps", "idle_kib"]
CHART_LABELS = {
    "ka_rps": "keep-alive req/s (higher is better)",
    "ka_cpu_us": "CPU/request (lower is better)",
    "ka_p99_ms": "keep-alive p99 (lower is better)",
    "cl_cps": "new conn/s (higher is better)",
    "cl_cpu_us": "CPU/new conn (lower is better)",
    "bulk_gbps": "bulk Gbit/s (higher is better)",
    "idle_kib": "KiB/idle conn (lower is better)",
}


# The UDP part (bench/udp.py): the same shape, one column per target, ratios against nginx.
UDP_METRICS = [
    ("dns_qps", "DNS queries/s (dnsperf)", "", "higher", "k"),
    ("dns_cpu_us", "proxy CPU per DNS query", "us", "lower", "2"),
    ("dns_lat_ms", "DNS latency, mean", "ms", "lower", "3"),
    ("dns_lost", "DNS queries lost, all rounds", "", "lower", "0"),
    ("dns_ref_lost", "DNS queries lost at nginx's rate", "", "lower", "0"),
    ("udp_mbps", "UDP throughput within the loss ceiling (iperf3 -u)", "Mbit/s", "higher", "0"),
    ("udp_ref_loss", "UDP loss at nginx's sustained rate", "%", "lower", "3"),
    ("udp_ref_drops", "of which dropped at the proxy's listening socket", "%", "lower", "3"),
    ("udp_cpu_s_per_gb", "proxy CPU per GB at nginx's rate (iperf3 -u)", "s", "lower", "2"),
    ("syscalls", "syscalls per DNS query (strace -c)", "", "lower", "2"),
]
UDP_RATIOS = {"dns_qps", "dns_cpu_us", "dns_lat_ms", "udp_mbps", "udp_cpu_s_per_gb", "syscalls"}


def log(msg):
    print(msg, flush=True)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(v, how):
    if v is None:
        return "n/a"
    if how == "k":
        return f"{v / 1000:.1f}k"
    return f"{v:.{int(how)}f}"


def summarize(ctx):
    res = {}
    for px in ctx.proxies:
        k = px["key"]
        rounds = ctx.results[k]["rounds"]
        ka = [r["keepalive"] for r in rounds]
        cl = [r["close"] for r in rounds]
        bk = [r["bulk"] for r in rounds]
        idle = ctx.results[k].get("idle", {})
        res[k] = {
            "ka_rps": median([r["rps"] for r in ka]),
            "ka_cpu_us": median([r["cpu_us"] for r in ka]),
            "ka_p50_ms": median([r["p50_ms"] for r in ka]),
            "ka_p99_ms": median([r["p99_ms"] for r in ka]),
            "cl_cps": median([r["rps"] for r in cl]),
            "cl_cpu_us": median([r["cpu_us"] for r in cl]),
            "cl_p50_ms": median([r["p50_ms"] for r in cl]),
            "cl_p99_ms": median([r["p99_ms"] for r in cl]),
            "bulk_gbps": median([r["gbps"] for r in bk]),
            "idle_kib": idle.get("kib_per_conn"),
            "errors": sum(r["errors"] for r in ka + cl),
            "bulk_failures": sum(1 for r in bk if r.get("gbps") is None or r.get("error")),
        }
    if getattr(ctx, "udp", None):
        res["udp"] = summarize_udp(ctx)
    return res


def spread(xs):
    xs = [x for x in xs if x is not None]
    return (min(xs), max(xs)) if xs else (None, None)


def summarize_udp(ctx):
    u = ctx.udp
    res = {}
    for t in u["targets"]:
        r = u["results"].get(t["key"], {})
        dns = r.get("dns", [])
        at = r.get("dns_at_ref") or {}
        it = r.get("iperf") or {}
        iat = r.get("iperf_at_ref") or {}
        st = r.get("strace") or {}
        res[t["key"]] = {
            "dns_qps": median([x["qps"] for x in dns]),
            "dns_qps_range": spread([x["qps"] for x in dns]),
            "dns_cpu_us": median([x["cpu_us"] for x in dns]),
            "dns_cpu_us_range": spread([x["cpu_us"] for x in dns]),
            "dns_lat_ms": median([x["lat_ms"] for x in dns]),
            "dns_lost": sum(x["lost"] or 0 for x in dns) if dns else None,
            "dns_sent": sum(x["sent"] or 0 for x in dns) if dns else None,
            "dns_ref_qps": at.get("offered_qps"),
            "dns_ref_lost": at.get("lost"),
            "dns_ref_sent": at.get("sent"),
            "udp_mbps": it.get("mbps"),
            "udp_offered_mbps": it.get("best_offered_mbps"),
            "udp_ref_mbps": iat.get("offered_mbps"),
            "udp_ref_loss": iat.get("loss_pct"),
            "udp_ref_drops": (100.0 * iat["drops"]["proxy_listener"] / iat["packets"]
                              if iat.get("packets") and iat.get("drops") else None),
            "udp_cpu_s_per_gb": iat.get("cpu_s_per_gb"),
            "syscalls": st.get("per_query"),
        }
    return res


def udp_targets(ctx, s):
    """The issue's targets for each layer4-lb column against nginx: (text, met) pairs."""
    u, a = ctx.udp, ctx.args
    ref = next((t["key"] for t in u["targets"] if t["kind"] == "nginx"), None)
    out = {}
    if not ref:
        return out
    n = s[ref]
    for t in u["targets"]:
        if t["kind"] != "layer4-lb":
            continue
        x, rows = s[t["key"]], []
        rc = ratio(x["dns_cpu_us"], n["dns_cpu_us"])
        rows.append((f"CPU per query <= 0.80x nginx's: {'n/a' if rc is None else f'{rc:.2f}x'}",
                     rc is not None and rc <= 0.80))
        rq = ratio(x["dns_qps"], n["dns_qps"])
        rows.append((f"queries/s >= nginx's: {'n/a' if rq is None else f'{rq:.2f}x'}",
                     rq is not None and rq >= 1.0))
        rows.append((f"no DNS query lost at nginx's {fmt(x['dns_ref_qps'], 'k')} q/s: "
                     f"{x['dns_ref_lost'] if x['dns_ref_lost'] is not None else 'n/a'} of "
                     f"{x['dns_ref_sent'] if x['dns_ref_sent'] is not None else 'n/a'} lost",
                     x["dns_ref_lost"] == 0))
        rows.append((f"iperf3 -u loss <= {a.udp_loss}% at nginx's {fmt(x['udp_ref_mbps'], '0')} Mbit/s: "
                     f"{fmt(x['udp_ref_loss'], '3')}%",
                     x["udp_ref_loss"] is not None and x["udp_ref_loss"] <= a.udp_loss))
        ru = ratio(x["udp_mbps"], n["udp_mbps"])
        rows.append((f"(no target) UDP throughput: {'n/a' if ru is None else f'{ru:.2f}x'} nginx's", None))
        out[t["key"]] = rows
    return out


def markdown_udp(ctx, summary):
    a, u = ctx.args, ctx.udp
    s = summary["udp"]
    ts = u["targets"]
    ref = next((t["key"] for t in ts if t["kind"] == "nginx"), None)
    L = ["## UDP", "",
         f"unbound {ctx.tool_versions.get('unbound', '?')} answering a static local zone (the "
         f"direct column: no proxy) and an iperf3 -u server, each proxy with one worker "
         f"(`proxy_responses 1` / `responses: 1` for DNS).  DNS: `dnsperf -c {a.dns_clients} "
         f"-q {a.dns_outstanding} -l {a.udp_duration} -t 1` (dnsperf "
         f"{ctx.tool_versions.get('dnsperf', '?')}), {a.udp_rounds} rounds alternating the "
         f"targets, medians [min-max]; then `-Q` at nginx's median.  UDP throughput: the highest "
         f"`iperf3 -u -l {a.udp_len} -b RATE -t {a.udp_step_time}` rate (doubling from "
         f"{a.udp_start_mbps:.0f} Mbit/s, then bisecting, {a.udp_steps} steps at most) whose loss "
         f"stays <= {a.udp_loss}%, received Mbit/s; then {a.udp_duration} s at nginx's rate.  "
         f"Syscalls: `strace -c -f` for {a.udp_strace} s at {a.udp_strace_qps} q/s.", "",
         "| figure | " + " | ".join(t["name"] for t in ts) + " |", "|---|" + "---:|" * len(ts)]
    for key, label, unit, better, how in UDP_METRICS:
        cells = []
        for t in ts:
            v = s[t["key"]][key]
            c = fmt(v, how)
            rng = s[t["key"]].get(key + "_range")
            if rng and rng[0] is not None and v is not None:
                c += f" [{fmt(rng[0], how)}-{fmt(rng[1], how)}]"
            if key in UDP_RATIOS and ref and t["key"] not in (ref, "direct"):
                x = ratio(v, s[ref][key])
                c += f" ({x:.2f}x)" if x is not None else ""
            cells.append(c)
        u_ = f" ({unit})" if unit else ""
        L.append(f"| {label}{u_}, {better} is better | " + " | ".join(cells) + " |")
    L += ["", "Ratios in parentheses: against nginx stream.  The direct column's UDP throughput is "
          "one run of iperf3 alone at twice the best proxy's rate (a floor of what the endpoints "
          "carry, not a search).", ""]
    tg = udp_targets(ctx, s)
    if tg:
        L += ["### Targets (layer4-lb against nginx)", ""]
        for k, rows in tg.items():
            name = next(t["name"] for t in ts if t["key"] == k)
            for text, met in rows:
                mark = "" if met is None else (" - **met**" if met else " - **missed**")
                L.append(f"- {name}: {text}{mark}")
        L.append("")
    L += ["### DNS per round", "", "| round | target | q/s | CPU us/query | lost | latency ms | "
          "proxy CPUs | others (CPUs) | tries |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    n = len(ts)
    for i in range(a.udp_rounds):
        for t in ts[i % n:] + ts[:i % n]:
            rs = u["results"][t["key"]]["dns"]
            if i >= len(rs):
                continue
            r = rs[i]
            L.append(f"| {i + 1} | {t['name']} | {fmt(r['qps'], 'k')} | {fmt(r['cpu_us'], '2')} | "
                     f"{r['lost']} | {fmt(r['lat_ms'], '3')} | "
                     f"{r['proxy_cpus']:.2f} | {r['others_cpus']:.2f} | {r['tries']} |")
    L += ["", "### iperf3 -u steps", "", "Offered Mbit/s: loss % (received Mbit/s); "
          "the proxy's CPUs during the step; datagrams dropped (receive buffer full, "
          "/proc/net/udp) at the proxy's listening socket / the server's / elsewhere.", ""]
    for t in ts:
        it = u["results"][t["key"]].get("iperf")
        if not it:
            continue
        steps = ", ".join(
            f"{x['offered_mbps']:.0f}: " + ("error" if x.get("loss_pct") is None else
                                              f"{x['loss_pct']:.2f}% ({x['mbps']:.0f})")
            + (f" cpu {x['proxy_cpus']:.2f}" if x.get("proxy_cpus") is not None else "")
            + (" drops " + "/".join(str(x["drops"][k]) for k in ("proxy_listener", "server", "other"))
               if x.get("drops") and any(x["drops"].values()) else "")
            for x in it["steps"])
        L.append(f"- {t['name']}: {steps}")
    L.append("")
    st = [(t, u["results"][t["key"]].get("strace")) for t in ts]
    st = [(t, x) for t, x in st if x]
    if st:
        L += ["### Syscalls per query (strace -c -f)", ""]
        for t, x in st:
            if x.get("error"):
                L.append(f"- {t['name']}: {x['error']}")
            else:
                L.append(f"- {t['name']}: {fmt(x['per_query'], '2')} per query over {x['queries']} "
                         f"queries ({x['lost']} lost): " +
                         ", ".join(f"{k} {v}" for k, v in x["top"].items()))
        L += ["", "(io_uring work submitted with io_uring_enter is one syscall for many "
              "operations; strace slows the proxy, so this run is not measured otherwise.)", ""]
    return L


def text_table_udp(ctx, summary):
    s, ts = summary["udp"], ctx.udp["targets"]
    ref = next((t["key"] for t in ts if t["kind"] == "nginx"), None)
    w0 = max(len(f"{m[1]} ({m[2]})") for m in UDP_METRICS) + 2
    w = max(22, max(len(t["name"]) for t in ts) + 2)
    lines = ["UDP".ljust(w0) + "".join(t["name"].rjust(w) for t in ts)]
    for key, label, unit, better, how in UDP_METRICS:
        lab = f"{label} ({unit})" if unit else label
        cells = []
        for t in ts:
            v = s[t["key"]][key]
            c = fmt(v, how)
            if key in UDP_RATIOS and ref and t["key"] not in (ref, "direct"):
                x = ratio(v, s[ref][key])
                c += f" ({'-' if x is None else f'{x:.2f}'})"
            cells.append(c.rjust(w))
        lines.append(lab.ljust(w0) + "".join(cells))
    lines.append("(ratios: vs nginx stream)")
    for k, rows in udp_targets(ctx, s).items():
        name = next(t["name"] for t in ts if t["key"] == k)
        for text, met in rows:
            lines.append(f"target {name}: {text}" + ("" if met is None else
                                                      (" - met" if met else " - MISSED")))
    return "\n".join(lines)


def tcp_ran(ctx):
    return any(ctx.results[p["key"]]["rounds"] for p in ctx.proxies)


def ratio(v, ref):
    if v is None or not ref:
        return None
    return v / ref


def markdown(ctx, summary):
    a = ctx.args
    pxs = ctx.proxies
    ref_h = next((p["key"] for p in pxs if p["kind"] == "haproxy"), None)
    ref_n = next((p["key"] for p in pxs if p["kind"] == "nginx"), None)
    L = []
    L.append(f"# Proxy benchmark, {ctx.started:%Y-%m-%d %H:%M} UTC")
    L.append("")
    L.append(f"Machine: {ctx.machine}.  ")
    L.append("Versions: " + ", ".join(f"{p['name']} {p['version']}" for p in pxs) +
             f"; wrk {ctx.tool_versions['wrk']}, iperf3 {ctx.tool_versions['iperf3']}.  ")
    cmd = " ".join(["bench/run.sh"] + ctx.argv)
    if not tcp_ran(ctx):
        L.append(f"Run: `{cmd}`: the UDP part only; total {ctx.elapsed / 60:.1f} min.")
        L.append("")
        if getattr(ctx, "udp", None):
            L += markdown_udp(ctx, summary)
        problems = ctx.problems()
        if problems:
            L += ["## Problems seen", ""] + [f"- {x}" for x in problems] + [""]
        return "\n".join(L)
    L.append(f"Run: `{cmd}`, {a.rounds} rounds alternating "
             f"the proxies, medians; {a.acceptors} worker(s) per proxy; two nginx backends "
             f"({a.backend_workers} worker each); `wrk -t{a.wrk_threads} -c{a.wrk_conns} -d{a.duration}s "
             f"--latency`; `iperf3 -t {a.iperf_time}`; {a.idle_conns} idle connections; "
             f"total {ctx.elapsed / 60:.1f} min.")
    L.append("")
    head = "| figure | " + " | ".join(p["name"] for p in pxs) + " |"
    sep = "|---|" + "---:|" * len(pxs)
    L += ["## Medians", "", head, sep]
    for key, label, unit, better, how in METRICS:
        u = f" ({unit})" if unit else ""
        L.append(f"| {label}{u}, {better} is better | " +
                 " | ".join(fmt(summary[p["key"]][key], how) for p in pxs) + " |")
    L.append("| wrk errors (socket errors + non-2xx, all rounds) | " +
             " | ".join(str(summary[p["key"]]["errors"]) for p in pxs) + " |")
    L.append("| failed iperf3 runs | " +
             " | ".join(str(summary[p["key"]]["bulk_failures"]) for p in pxs) + " |")
    L.append("")
    refs = [(ref_h, "HAProxy"), (ref_n, "nginx stream")]
    refs = [(k, n) for k, n in refs if k]
    L += ["## Ratios", "",
          "Each cell: this proxy's figure divided by " +
          " / ".join(f"{n}'s" for _, n in refs) + " (so 1.00 is equal; read with the "
          "\"better\" direction of the figure).", "", head, sep]
    for key, label, unit, better, how in METRICS:
        cells = []
        for p in pxs:
            rs = [ratio(summary[p["key"]][key], summary[k][key]) for k, _ in refs]
            cells.append(" / ".join("n/a" if x is None else f"{x:.2f}" for x in rs))
        L.append(f"| {label} | " + " | ".join(cells) + " |")
    L.append("")
    if os.path.exists(ctx.png):
        L += ["![ratios against HAProxy](latest.png)", ""]
    L += ["## Per round", "",
          "In the order run.  \"others\" is the CPU (in CPUs, of " + str(os.cpu_count()) + ") "
          "that processes outside the benchmark used during the keep-alive / close / bulk run: "
          "other work on a shared machine.  A run disturbed by more than "
          f"{a.max_others} CPUs was repeated (at most twice, {a.retry_budget} s in all) and the "
          "quietest attempt kept; \"tries\" counts the attempts.  Proxy CPUs: the proxy's CPU "
          "time during the keep-alive run divided by its length (1.00 = one core busy).", "",
          "| round | proxy | keep-alive req/s | CPU us/req | p99 ms | max ms | proxy CPUs | "
          "new conn/s | CPU us/conn | p99 ms | Gbit/s | others (CPUs) | tries |",
          "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    n = len(pxs)
    for i in range(a.rounds):
        for p in pxs[i % n:] + pxs[:i % n]:
            r = ctx.results[p["key"]]["rounds"][i]
            ka, cl, bk = r["keepalive"], r["close"], r["bulk"]
            L.append(f"| {i + 1} | {p['name']} | {fmt(ka['rps'], 'k')} | {fmt(ka['cpu_us'], '2')} | "
                     f"{fmt(ka['p99_ms'], '2')} | {fmt(ka.get('max_ms'), '1')} | "
                     f"{ka['proxy_cpus']:.2f} | {fmt(cl['rps'], 'k')} | {fmt(cl['cpu_us'], '1')} | "
                     f"{fmt(cl['p99_ms'], '2')} | {fmt(bk.get('gbps'), '2')} | "
                     f"{ka['others_cpus']:.2f} / {cl['others_cpus']:.2f} / {bk['others_cpus']:.2f} | "
                     f"{ka['tries']} / {cl['tries']} / {bk['tries']} |")
    L.append("")
    L.append(f"Repeats: {ctx.retries}, adding {a.retry_budget - ctx.retry_left:.0f} s.")
    L.append("")
    L += ["## Idle connections", "",
          "| proxy | client connections | backend connections | closed by proxy | RSS before KiB | "
          "RSS after KiB | KiB/conn |", "|---|---:|---:|---:|---:|---:|---:|"]
    for p in pxs:
        r = ctx.results[p["key"]].get("idle", {})
        L.append(f"| {p['name']} | {r.get('client_connected', 'n/a')} | "
                 f"{r.get('backend_connections', 'n/a')} | {r.get('closed_by_proxy', 'n/a')} | "
                 f"{r.get('rss_before_kib', 'n/a')} | {r.get('rss_after_kib', 'n/a')} | "
                 f"{fmt(r.get('kib_per_conn'), '2')} |" + (f" {r['error']}" if r.get("error") else ""))
    L.append("")
    if a.acceptors > 1:
        L += ["## Per-worker spread", "",
              "Idle connections held per worker (nginx: by worker process; HAProxy: by thread "
              "mask of the client fd; layer4-lb: its drain log), and each worker's share of the "
              "proxy's CPU in the last keep-alive run.", ""]
        for p in pxs:
            idle = ctx.results[p["key"]].get("idle", {})
            share = ctx.results[p["key"]]["rounds"][-1]["keepalive"].get("worker_cpu_share", [])
            conns = idle.get("worker_conns")
            L.append(f"- {p['name']}: connections "
                     f"{'/'.join(map(str, conns)) if conns else 'n/a'}; CPU share "
                     f"{'/'.join(f'{x * 100:.0f}%' for x in share if x >= 0.01) or 'n/a'}")
        L.append("")
    if getattr(ctx, "udp", None):
        L += markdown_udp(ctx, summary)
    problems = ctx.problems()
    if problems:
        L += ["## Problems seen", ""] + [f"- {x}" for x in problems] + [""]
    return "\n".join(L)


def text_table(ctx, summary):
    parts = [text_table_tcp(ctx, summary)] if tcp_ran(ctx) else []
    if getattr(ctx, "udp", None) and ctx.udp["targets"]:
        parts.append(text_table_udp(ctx, summary))
    return "\n\n".join(parts)


def text_table_tcp(ctx, summary):
    pxs = ctx.proxies
    ref_h = next((p["key"] for p in pxs if p["kind"] == "haproxy"), None)
    ref_n = next((p["key"] for p in pxs if p["kind"] == "nginx"), None)
    w0 = max(len(f"{m[1]} ({m[2]})") for m in METRICS) + 2
    w = max(22, max(len(p["name"]) for p in pxs) + 2)
    lines = ["".ljust(w0) + "".join(p["name"].rjust(w) for p in pxs)]
    for key, label, unit, better, how in METRICS:
        lab = f"{label} ({unit})" if unit else label
        cells = []
        for p in pxs:
            v = summary[p["key"]][key]
            rs = [ratio(v, summary[k][key]) for k in (ref_h, ref_n) if k]
            rt = "/".join("-" if x is None else f"{x:.2f}" for x in rs)
            cells.append(f"{fmt(v, how)} ({rt})".rjust(w))
        lines.append(lab.ljust(w0) + "".join(cells))
    lines.append("wrk errors".ljust(w0) + "".join(str(summary[p["key"]]["errors"]).rjust(w) for p in pxs))
    names = [p["name"] for k in (ref_h, ref_n) for p in pxs if k and p["key"] == k]
    lines.append("(ratios: vs " + " / vs ".join(names) + ")")
    return "\n".join(lines)


def chart(ctx, summary):
    if not shutil.which("gnuplot"):
        log("bench: gnuplot not installed, no chart")
        return
    pxs = ctx.proxies
    ref = next((p["key"] for p in pxs if p["kind"] == "haproxy"), pxs[0]["key"])
    dat = os.path.join(ctx.tmp, "ratios.dat")
    with open(dat, "w") as f:                           # a row per proxy, a column per figure
        for p in pxs:
            vals = []
            for m in CHART_METRICS:
                x = ratio(summary[p["key"]][m], summary[ref][m])
                vals.append("NaN" if x is None else f"{x:.4f}")
            f.write(f'"{p["name"]}" ' + " ".join(vals) + "\n")
    n = len(CHART_METRICS)
    titles = ", ".join(f'"{CHART_LABELS[m]}"' for m in CHART_METRICS)
    gp = os.path.join(ctx.tmp, "chart.gp")
    with open(gp, "w") as f:
        f.write(f"""set terminal pngcairo size 1200,650 font "sans,10" noenhanced
set output "{ctx.png}"
set title "Ratio to HAProxy (1.0 = HAProxy): {ctx.args.acceptors} worker(s) per proxy, {ctx.args.rounds} rounds, medians ({ctx.started:%Y-%m-%d})"
array T[{n}] = [{titles}]
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key outside below horizontal maxrows 2
set ylabel "ratio to HAProxy"
set yrange [0:*]
set xrange [-0.6:{len(pxs) - 0.4}]
set offsets 0, 0, graph 0.08, 0
set grid ytics
set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 1.5 lc rgb "black" front
plot for [i=2:{n + 1}] "{dat}" using i:xtic(1) title T[i - 1], \\
     for [i=2:{n + 1}] "{dat}" using ($0 + (i - 2 - {(n - 1) / 2}) / {n + 1}.0):i:(sprintf("%.2f", column(i))) \\
         with labels rotate by 90 left offset 0,0.3 font ",8" notitle
""")
    r = subprocess.run(["gnuplot", gp], capture_output=True, text=True)
    if r.returncode != 0:
        log(f"bench: gnuplot failed: {r.stderr.strip()}")
