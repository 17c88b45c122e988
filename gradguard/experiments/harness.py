"""Shared plumbing for the experiments: run detectors on a received state, write results.

Every experiment returns plain rows (dicts); :func:`write_results` stores them as
``<out>/<name>.json`` and a Markdown table ``<out>/<name>.md``.
"""

from __future__ import annotations

import copy
import json
import platform
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from gradguard.data import Dataset

if TYPE_CHECKING:
    from gradguard.detect import Verdict

GUARD = "guard"


@dataclass
class Outcome:
    """One detector's answer on one received model."""

    detector: str
    flagged: bool
    score: float
    elapsed_s: float
    verified: bool = True
    error: str = ""
    summary: str = ""


def inspect_all(
    received: dict[str, torch.Tensor],
    template: nn.Module,
    data: Dataset | None,
    detectors: Sequence[str],
    previous: dict[str, torch.Tensor] | None = None,
    guard: bool = True,
) -> dict[str, Outcome]:
    """Run each named detector, and the Guard, on ``received`` as a client would.

    A detector that raises counts as "could not verify" (``flagged`` and ``verified`` False
    both recorded), which is what the Guard does with it: fail closed.
    """
    from gradguard.detect import Context, Guard, GuardConfig, get_detector

    ctx = Context(template=template, data=data, previous=previous)
    runs: dict[str, Callable[[], Verdict]] = {
        name: (lambda name=name: get_detector(name).inspect(received, ctx)) for name in detectors
    }
    if guard:
        runs[GUARD] = lambda: Guard(GuardConfig(), template=template, data=data).check(
            received, previous
        )
    return {name: measure(name, run) for name, run in runs.items()}


def measure(name: str, run: Callable[[], Verdict]) -> Outcome:
    """One detector run as an Outcome; a crash is itself the measured outcome."""
    t0 = time.perf_counter()
    try:
        v = run()
    except Exception as exc:  # noqa: BLE001
        return Outcome(
            name,
            True,
            float("nan"),
            time.perf_counter() - t0,
            False,
            f"{type(exc).__name__}: {exc}",
        )
    return Outcome(
        name,
        bool(v.malicious),
        float(v.score),
        v.elapsed_s,
        bool(getattr(v, "verified", True)),
        "",
        v.summary(),
    )


@dataclass
class HonestFederation:
    """An honest federation an experiment watches: the federation, a copy of the initial
    model (the clients' template), the clients' data and the server's test split."""

    federation: Any
    template: nn.Module
    parts: list[Dataset]
    test: Dataset


def honest_federation(
    dataset: str,
    limit: int | None,
    model: str,
    norm: str | None,
    clients: int,
    rounds: int,
    training: Any,
    seed: int,
    scheme: str = "iid",
) -> HonestFederation:
    """Data (``train_test(seed=0)``), partition, seeded model and Federation, in that order."""
    from gradguard.data import partition, train_test
    from gradguard.fl import Client, Federation, FederationConfig
    from gradguard.models import build_model

    train, test = train_test(dataset, limit=limit, seed=0)
    parts = partition(train, clients, scheme, seed=seed)
    torch.manual_seed(seed)
    net = build_model(model, train.image_shape, train.num_classes, norm=norm)
    template = copy.deepcopy(net)
    fed = Federation(
        net,
        [Client(i, d, training) for i, d in enumerate(parts)],
        test,
        FederationConfig(rounds, training=training, seed=seed),
    )
    return HonestFederation(fed, template, parts, test)


def default_detectors() -> list[str]:
    """Every registered detector, in registry order."""
    from gradguard.detect import DETECTORS

    return list(DETECTORS)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2e}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
    }


def write_results(
    name: str, payload: dict[str, Any], markdown: str, out_dir: str | Path = "benchmarks/results"
) -> tuple[Path, Path]:
    """Write ``<out_dir>/<name>.json`` (payload + environment) and ``<out_dir>/<name>.md``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"name": name, "environment": environment(), **payload}
    js, md = out / f"{name}.json", out / f"{name}.md"
    js.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    md.write_text(markdown)
    return js, md


def _jsonable(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.tolist()
    if hasattr(v, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(v)
    return str(v)


def progress(description: str, total: int, enabled: bool = True):
    """A Rich progress bar (context manager yielding ``(bar, task)``)."""
    from contextlib import contextmanager

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    @contextmanager
    def _bar():
        cols = (
            TextColumn(f"[bold]{description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*cols, disable=not enabled, transient=True) as bar:
            yield bar, bar.add_task(description, total=total)

    return _bar()
