"""The Ray a search runs on: joined (`--address`, checked reachable first: ray.init would retry for
minutes) or started privately on this machine, and whether its nodes can hold a trial."""

from __future__ import annotations

import logging
import socket
import warnings

from prunetune.config import SearchSettings
from prunetune.errors import PrunetuneError

CONNECT_TIMEOUT_S = 5.0
# Ray's console output off the user's screen; Ctrl-C reaches us (Tune would swallow it); no
# Tune loggers or per-trial working directories. setdefault: the user's own settings win.
RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_DISABLE_SIGINT_HANDLER": "1",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_CHDIR_TO_TRIAL_DIR": "0",
}
# ... and so Tune's result analysis finds no result.json files: its warning about that is noise here
SILENCED_LOGGER = "ray.tune.analysis.experiment_analysis"


def _check_reachable(address: str) -> None:
    """A clear error for an address nobody listens on (ray.init would retry for minutes)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise PrunetuneError(
            f"--address must be auto or HOST:PORT of a Ray head node, got {address!r}"
        )
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise PrunetuneError(
            f"no Ray cluster at {address} ({why}); start one with `ray start --head`, "
            f"or give the head node's HOST:PORT"
        ) from None


def init_ray(cfg: SearchSettings) -> None:
    """Join the cluster at cfg.runner.address (`auto`: RAY_ADDRESS, or the one `ray start` made on
    this machine; `ray://HOST:PORT`: Ray Client), or start a private local Ray with this machine's
    CPUs (as Ray counts them: container CPU limits respected)."""
    import ray

    if cfg.runner.address and cfg.runner.address != "auto":
        _check_reachable(cfg.runner.address)
    kwargs = dict(logging_level=logging.WARNING, log_to_driver=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if cfg.runner.address:
                ray.init(address=cfg.runner.address, **kwargs)
            else:  # "local": never attach to a cluster that happens to run on this machine
                ray.init(address="local", include_dashboard=False, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise PrunetuneError(
            f"cannot {'join' if cfg.runner.address else 'start'} Ray "
            f"({cfg.runner.address or 'local'}): {str(exc).splitlines()[0][:200]}"
        ) from None


def _trials_fitting(node: dict, cfg: SearchSettings) -> int:
    """How many trials one node's resources hold at once."""
    counts = [
        int(node.get(key, 0.0) // need)
        for key, need in (("CPU", cfg.runner.cpus_per_trial), ("GPU", cfg.runner.gpus_per_trial))
        if need > 0
    ]
    return min(counts) if counts else cfg.runner.workers


def check_resources(cfg: SearchSettings, remaining: int, log) -> None:
    """Log what will run where; refuse trials no node of a local Ray can hold (Tune would wait
    forever). A joined cluster may grow (autoscaler): there it is a warning."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    fit = sum(_trials_fitting(n, cfg) for n in nodes)
    resources = {"cpu": cfg.runner.cpus_per_trial, "gpu": cfg.runner.gpus_per_trial}
    log(
        f"ray: {remaining} trial(s), at most {cfg.runner.workers} at once, {resources} each; "
        f"cluster: {len(nodes)} node(s), {sum(n.get('CPU', 0.0) for n in nodes):g} CPU(s)"
        + (f" (only {fit} trial(s) fit at once)" if fit < cfg.runner.workers else "")
    )
    if fit == 0:
        msg = (
            f"no node of the Ray cluster has {cfg.runner.cpus_per_trial:g} CPU(s) and "
            f"{cfg.runner.gpus_per_trial:g} GPU(s) for one trial (see --cpus-per-trial, "
            f"--gpus-per-trial)"
        )
        if not cfg.runner.address:
            raise PrunetuneError(msg)
        log(f"warning: {msg}; trials wait until the cluster grows")
