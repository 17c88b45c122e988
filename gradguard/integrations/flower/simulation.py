"""Run a :class:`~gradguard.bench.scenario.Scenario` in Flower's simulation engine (Ray).

One Ray session can serve several runs (:func:`ray_session`): Flower's Ray backend reuses
an initialised Ray, which saves its start-up (seconds) on every run after the first. Each
client takes one CPU (``num_cpus: 1``), so a 2-core machine runs two at a time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from gradguard.bench.records import RunResult
from gradguard.bench.scenario import Scenario

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def _cpus() -> int:
    return max(1, min(len(os.sched_getaffinity(0)), 4))


@contextlib.contextmanager
def _ray_kept_between_runs() -> Iterator[None]:
    """Flower's Ray backend ends every run with ``ray.shutdown()``, so the next run of a
    session would start Ray again (seconds). Inside the session it only stops its actors."""
    from flwr.server.superlink.fleet.vce.backend import raybackend

    original = raybackend.RayBackend.terminate

    def terminate(self) -> None:
        if self.pool:
            self.pool.terminate_all_actors()

    raybackend.RayBackend.terminate = terminate
    try:
        yield
    finally:
        raybackend.RayBackend.terminate = original


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
        if started:
            with _ray_kept_between_runs():
                yield
        else:
            yield
    finally:
        if started:
            ray.shutdown()


def run_flower(
    sc: Scenario,
    *,
    guarded: bool | str | Iterable[int],
    attacked: bool,
    progress: bool = False,
    quiet: bool = True,
    run_config: Mapping[str, Any] | None = None,
) -> RunResult:
    """The scenario as a Flower ServerApp + ClientApps in the simulation engine (the
    ``flower`` engine of :mod:`gradguard.bench.engines`; ``progress`` is not shown).

    ``guarded`` is given to the client app in code (the client's side). ``run_config``,
    when given, is what the clients' ``Context.run_config`` holds: the server's side, as
    ``flwr run --run-config`` would set it (its ``guard-*`` keys may only tighten).
    """
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
            simulate(
                server_app(
                    sc,
                    attacked=attacked,
                    guarded=spec,
                    sink=lambda result, strategy: box.setdefault("result", result),
                ),
                client_app(sc, guarded=spec),
                sc.clients,
                run_config,
            )
    finally:
        flwr_logger.setLevel(level)
    if "result" not in box:
        raise RuntimeError("the Flower simulation ended without a result (see its log)")
    result = box["result"]
    result.seconds = time.perf_counter() - start
    return result


def simulate(server, client, clients: int, run_config: Mapping[str, Any] | None = None) -> None:
    """Run a ServerApp and ``clients`` ClientApps in Flower's simulation runtime.

    Flower 1.41 deprecates ``flwr.simulation.run_simulation`` (for ``flwr run``, which needs
    a SuperLink); this calls the runtime it wraps, which ``flwr run``'s simulation also uses.
    """
    from flwr.simulation.run_simulation import _run_simulation
    from flwr.supercore.telemetry import EventType

    kw = {
        "num_supernodes": clients,
        "exit_event": EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
        "client_app": client,
        "server_app": server,
        "backend_config": {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    }
    if run_config is None:
        _run_simulation(**kw)
        return
    # Flower 1.41's Python API gives clients an empty run config; its app-directory path
    # reads one from the app's pyproject.toml, as `flwr run` does.
    from gradguard.integrations.flower.deployment import write_app

    with tempfile.TemporaryDirectory(prefix="gradguard-sim-") as folder:
        write_app(Path(folder), dict(run_config))
        _run_simulation(**kw, app_dir=folder, is_app=True)


@contextlib.contextmanager
def warnings_silenced() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield
