"""`interp serve`: the local explorer app in the web browser.

    interp serve                          # the fact-world model at http://127.0.0.1:8765
    interp serve --model DIR --port 9000

One page: type a prompt and see the top next tokens, the attention patterns, the logit lens
and direct logit attribution; click a head, neuron or feature for its dashboard; run a
patching sweep against a second prompt, a causal trace, a localisation, a ROME edit
(apply, compare, revert) or an attribution graph over the transcoders as background jobs
with progress and cancel. Each browser tab is
its own session: an edit in one tab is applied only around that tab's computations.

The app binds 127.0.0.1 by default. It has no authentication: with a non-loopback --host
anyone who can reach the port can use it (a warning says so).
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from typing import Any, Optional, Sequence

from analyses.common import add_model_arguments, main_for

DEFAULT_PORT = 8765


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT})")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; anything else is reachable "
                        "from the network, without authentication)")


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def network_warning(host: str) -> Optional[str]:
    """The warning printed for a host other than loopback (None for loopback)."""
    if is_loopback(host):
        return None
    return (f"WARNING: binding {host}: the explorer is then reachable from the network and has NO "
            "authentication; anyone who can reach this port can run computations on the model. "
            "Use the default --host 127.0.0.1 unless you mean this.")


def allowed_hosts(host: str) -> Optional[list[str]]:
    """The Host names the app answers when bound to `host`: the loopback names plus `host`
    itself for a loopback address (127.0.0.2, ...); None (any) for a non-loopback bind."""
    from analyses.app import LOOPBACK_HOSTS

    if not is_loopback(host):
        return None
    bare = host.strip("[]")
    return list(dict.fromkeys(list(LOOPBACK_HOSTS) + [bare, f"[{bare}]"]))


def url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


def create_app(model: Any = "factworld", **kwargs: Any) -> Any:
    """The explorer app for `model` (see `analyses.app.create_app`)."""
    from analyses.app import create_app as make

    return make(model, **kwargs)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from analyses.common import as_model

    if not 0 < args.port < 65536:
        print(f"--port must be in 1..65535, got {args.port}", file=sys.stderr)
        return 2
    warning = network_warning(args.host)
    if warning:
        print(warning, file=sys.stderr)
    model = as_model(args.model, args.dtype)
    app = create_app(model, name=str(args.model), allowed_hosts=allowed_hosts(args.host))
    print(f"interp explorer ({args.model}) at {url(args.host, args.port)}  (Ctrl-C to stop)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return main_for("analyses.serve", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
