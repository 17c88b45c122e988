"""Run a :class:`~gradguard.scenario.Scenario` in Flower's simulation engine (Ray).

One Ray session can serve several runs (:func:`ray_session`): Flower's Ray backend reuses
an initialised Ray, which saves its start-up (seconds) on every run after the first. Each
client takes one CPU (``num_cpus: 1``), so a 2-core machine runs two at a time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable, Iterator

from gradguard.scenario import RunResult, Scenario

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def _cpus() -> int:
    return max(1, min(len(os.sched_getaffinity(0)), 4))


@contextlib.contextmanager
def ray_session(num_cpus: int | None = None, quiet: bool = True) -> Iterator[None]:
    """Start Ray once for the runs inside; shut it down after."""
    import ray

    started = False
    if not ray.is_initialized():
        ray.init(
            num_cpus=num_cpus or _cpus(),
            include_dashboard=False,
            logging_level=logging.ERROR if quiet else logging.WARNING,
            log_to_driver=not quiet,
            configure_logging=True,
        )
        started = True
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def run_flower(
    sc: Scenario, *, guarded: bool | str | Iterable[int], attacked: bool, quiet: bool = True
) -> RunResult:
    """The scenario as a Flower ServerApp + ClientApps in the simulation engine."""
    from flwr.simulation import run_simulation

    from gradguard.integrations.flower.apps import client_app, server_app

    spec = guarded if isinstance(guarded, bool | str) else ",".join(map(str, guarded))
    box: dict[str, RunResult] = {}
    start = time.perf_counter()
    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    if quiet:
        flwr_logger.setLevel(logging.WARNING)
    try:
        with ray_session(quiet=quiet), warnings_silenced():
            run_simulation(
                server_app(
                    sc,
                    attacked=attacked,
                    guarded=spec,
                    sink=lambda result, strategy: box.setdefault("result", result),
                ),
                client_app(sc, guarded=spec),
                num_supernodes=sc.clients,
                backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
            )
    finally:
        flwr_logger.setLevel(level)
    if "result" not in box:
        raise RuntimeError("the Flower simulation ended without a result (see its log)")
    result = box["result"]
    result.seconds = time.perf_counter() - start
    return result


@contextlib.contextmanager
def warnings_silenced() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield
