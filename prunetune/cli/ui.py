"""`prunetune ui`: the MLflow UI for a store, its address checked before the server starts."""

from __future__ import annotations

import argparse
import errno
import os

from prunetune.cli.console import log
from prunetune.cli.settings_flags import FLAG_HELP
from prunetune.errors import EnvironmentFault, PrunetuneError


def cmd_ui(args) -> int:
    """Replace this process with `mlflow server` for the store (see tracking.ui_command): Ctrl-C
    and SIGTERM reach the server itself, which stops its web worker; nothing is left running."""
    from prunetune.redact import mask_url
    from prunetune.search.tracking import experiment_links, tracking_uri, ui_command

    check_ui_address(args.host, args.port)
    if not _loopback(args.host):
        log(
            f"warning: the MLflow UI has no login: anyone who can reach {args.host}:{args.port} "
            f"can "
            "read, change and delete every run and registered model (default --host 127.0.0.1)"
        )
    argv, env = ui_command(args.tracking_uri, host=args.host, port=args.port)
    log(
        f"MLflow UI on http://{args.host}:{args.port} (store "
        f"{mask_url(tracking_uri(args.tracking_uri))}); "
        "Ctrl-C stops it. Each study's runs and front (MLflow's model-training view):"
    )
    for line in experiment_links(args.tracking_uri, f"http://{args.host}:{args.port}"):
        log(f"  {line}")
    os.execve(argv[0], argv, env)  # does not return


def check_ui_address(host: str, port: int) -> None:
    """Before the server starts: PrunetuneError (one line, exit 2) for a port outside 1-65535 or
    a host that is no address of this machine; EnvironmentFault (exit 1) for a port in use."""
    import socket

    if not 1 <= port <= 65535:
        raise PrunetuneError(f"--port must be in 1-65535, got {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
            probe.bind(address)
    except socket.gaierror as exc:
        raise PrunetuneError(f"--host {host!r} is not an address here ({exc.strerror})") from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise EnvironmentFault(
                f"port {port} on {host} is in use (another server?): pass another --port"
            ) from None
        raise PrunetuneError(f"cannot serve on {host}:{port}: {exc.strerror}") from None


def _loopback(host: str) -> bool:
    """Whether `host` names this machine's loopback interface only."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ui_flags(q: argparse.ArgumentParser) -> None:
    q.add_argument("--host", default="127.0.0.1")
    q.add_argument("--port", type=int, default=5000)
    q.add_argument("--tracking-uri", help=FLAG_HELP["tracking_uri"])
