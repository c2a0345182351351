"""The top of a layer4-lb benchmark configuration, the same for the TCP and the UDP part."""

import os
import socket


def head(args, px, d):
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
