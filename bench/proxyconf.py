"""The top of each proxy's benchmark configuration, the same for the TCP and the UDP part."""

import os
import socket


def l4lb_head(args, px, d):
    """Every feature on in its default setting, as a deployment has it: metrics (on a free
    port), the control socket (in d) and the engine px names.  No benchmark-only setting."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        metrics_port = s.getsockname()[1]
    return f"""acceptors: {args.acceptors}
log_level: info
io_engine: {px.get("io_engine", "auto")}
drain_timeout_ms: 2000
metrics: 127.0.0.1:{metrics_port}
control_socket: {os.path.join(d, "control.sock")}
listeners:
"""


def nginx_head(args, nofile, d, module, connections):
    """nginx stream up to its stream block's opening: one worker per acceptor, logs in d."""
    return f"""load_module {module};
daemon off;
master_process on;
worker_processes {args.acceptors};
worker_rlimit_nofile {nofile};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections {connections}; }}
stream {{
"""
