"""The engine registry: every engine runs a :class:`~gradguard.bench.scenario.Scenario` with
one signature, ``run(sc, *, guarded, attacked, progress=False) -> RunResult``.

Each entry names its run function (and optionally a ``session``: a context manager that
several runs share, such as one Ray start-up) as ``"module:function"``, so an engine is one
module plus one line here, and nothing is imported until the engine is chosen.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from gradguard.bench.records import RunResult
from gradguard.bench.scenario import Scenario
from gradguard.errors import GradguardError


@dataclass(frozen=True)
class Engine:
    run: str  # "module:function" with the engine signature
    session: str | None = None  # "module:function" returning a context manager
    extra: str | None = None  # the optional dependency it needs (pip extra)
    secure_aggregation: bool = False  # runs a Scenario with secure_aggregation=True


ENGINES: dict[str, Engine] = {
    "inprocess": Engine("gradguard.bench.inprocess:run_inprocess", secure_aggregation=True),
    "flower": Engine(
        "gradguard.integrations.flower.simulation:run_flower",
        session="gradguard.integrations.flower.simulation:ray_session",
        extra="flower",
    ),
    "flower-secagg": Engine(
        "gradguard.integrations.flower.secagg_engine:run_flower_secagg",
        session="gradguard.integrations.flower.simulation:ray_session",
        extra="flower",
        secure_aggregation=True,
    ),
    "flower-deployment": Engine(
        "gradguard.integrations.flower.deployment:run_deployment", extra="flower"
    ),
    "nvflare": Engine("gradguard.integrations.nvflare.engine:run_nvflare", extra="nvflare"),
}


def _load(name: str, ref: str) -> Callable[..., Any]:
    module, function = ref.split(":")
    try:
        return getattr(importlib.import_module(module), function)
    except ImportError as e:
        extra = ENGINES[name].extra
        hint = f" (pip install 'gradguard[{extra}]')" if extra else ""
        raise GradguardError(f"engine {name!r} cannot be loaded{hint}: {e}") from None


def get_engine(name: str) -> Callable[..., RunResult]:
    """The run function of engine ``name``."""
    if name not in ENGINES:
        raise GradguardError(f"unknown engine {name!r}; valid: {', '.join(ENGINES)}")
    return _load(name, ENGINES[name].run)


@contextlib.contextmanager
def engine_session(name: str) -> Iterator[None]:
    """The engine's shared session around several runs (nothing for most engines)."""
    if name not in ENGINES:
        raise GradguardError(f"unknown engine {name!r}; valid: {', '.join(ENGINES)}")
    ref = ENGINES[name].session
    if ref is None:
        yield
        return
    with _load(name, ref)():
        yield


def run_engine(
    name: str,
    sc: Scenario,
    *,
    guarded: bool | str | Iterable[int],
    attacked: bool,
    progress: bool = False,
) -> RunResult:
    """Run ``sc`` on engine ``name``."""
    return get_engine(name)(sc, guarded=guarded, attacked=attacked, progress=progress)
