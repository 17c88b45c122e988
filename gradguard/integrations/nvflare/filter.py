"""The Guard as an NVIDIA FLARE client task-data filter: check the global model before training.

NVFlare applies a client's task-data filters to every task the server sends, before the
executor sees it. :class:`GuardFilter` reads the model out of the task (a DXO of weights,
NumPy arrays or torch tensors), runs gradguard's Guard on it, and on a flagged or
unverifiable model refuses the task: it raises :class:`~nvflare.apis.filter.
ContentBlockedException`, so NVFlare answers the server with ``TASK_DATA_FILTER_ERROR``, the
executor never runs and no update leaves the client. The filter fails closed: a task it
cannot read, a template or data function that raises, a weight diff instead of weights,
all refuse the task.

The client's own model and data come from import paths (``"package.module:callable"``),
because NVFlare builds components from JSON configuration: ``model`` returns the client's
model (the template), ``data`` receives the site name and returns the client's local data.
``verdict_log`` appends one JSON line per checked task (round, site, verdict): the client's
own audit trail.

Where the filter is configured matters: a filter in the job's own config travels with the
job, which the server side submits. Against a malicious server, the site's operator
installs it as a site-level task-data filter (the site's ``privacy.json`` scope), which a
job cannot remove.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nvflare.apis.dxo import DataKind, from_shareable
from nvflare.apis.filter import ContentBlockedException, Filter
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable
from nvflare.app_common.app_constant import AppConstants

from gradguard.detect.breakdown import detector_breakdown, exposure_counts
from gradguard.errors import GradguardError
from gradguard.fl.guarded import ClientGuard

log = logging.getLogger("gradguard.nvflare")

REASON_PREFIX = "gradguard refused the task"


def load_callable(path: str):
    """``"package.module:name"`` -> the object it names."""
    module, sep, name = str(path).partition(":")
    if not sep or not module or not name:
        raise GradguardError(f"expected 'package.module:name', got {path!r}")
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise GradguardError(f"{path!r} is not callable")
    return obj


def task_state(shareable: Shareable, max_bytes: int | None = None) -> dict[str, torch.Tensor]:
    """The model weights a task carries, as named tensors (copies).

    Raises :class:`GradguardError` on anything but a WEIGHTS DXO of numeric arrays, or on
    more than ``max_bytes`` of them (checked before anything is copied).
    """
    dxo = from_shareable(shareable)
    if dxo.data_kind != DataKind.WEIGHTS:
        raise GradguardError(f"the task carries {dxo.data_kind!r}, not model weights")
    if not isinstance(dxo.data, Mapping) or not dxo.data:
        raise GradguardError(f"the task carries no named weights (got {type(dxo.data).__name__})")
    if max_bytes is not None:
        total = sum(
            v.numel() * v.element_size() if isinstance(v, torch.Tensor) else getattr(v, "nbytes", 0)
            for v in dxo.data.values()
        )
        if total > max_bytes:
            raise GradguardError(f"the task's weights hold {total} bytes (at most {max_bytes})")
    state: dict[str, torch.Tensor] = {}
    for name, value in dxo.data.items():
        if not isinstance(name, str):
            raise GradguardError(f"weight name {name!r} is not a string")
        if isinstance(value, torch.Tensor):
            state[name] = value.detach().clone()
        elif isinstance(value, np.ndarray | np.generic) and value.dtype.kind in "biuf":
            # np.generic: NVFlare's averaging turns a 0-d buffer into a NumPy scalar
            state[name] = torch.from_numpy(np.array(value, copy=True))
        else:
            raise GradguardError(f"weight {name!r} is a {type(value).__name__}, not numeric")
    return state


class GuardFilter(Filter):
    """Refuse a task whose global model the Guard flags or cannot verify.

    Args:
        model: import path of a callable returning the client's model (the template).
        model_args: keyword arguments for ``model``.
        data: import path of a callable ``(site_name, **data_args)`` returning the client's
            local data (a gradguard Dataset); empty: run only data-free detectors.
        data_args: keyword arguments for ``data``.
        policy, detectors, thresholds, stop_at_first: the Guard's settings
            (:class:`gradguard.detect.GuardConfig`; empty detectors: its defaults).
        verdict_log: a file to append one JSON line per checked task to.
    """

    def __init__(
        self,
        model: str,
        model_args: dict | None = None,
        data: str = "",
        data_args: dict | None = None,
        policy: str = "abstain",
        detectors: list | None = None,
        thresholds: dict | None = None,
        stop_at_first: bool = True,
        verdict_log: str = "",
    ) -> None:
        super().__init__()
        self.model = model
        self.model_args = dict(model_args or {})
        self.data = data
        self.data_args = dict(data_args or {})
        self.policy = policy
        self.detectors = list(detectors or [])
        self.thresholds = dict(thresholds or {})
        self.stop_at_first = stop_at_first
        self.verdict_log = verdict_log
        self._guard: ClientGuard | None = None

    def guard(self, site: str) -> ClientGuard:
        """The site's Guard and its reference model, built on first use (in the client's
        process)."""
        if self._guard is None:
            from gradguard.detect import Guard, GuardConfig

            kw: dict[str, Any] = {
                "policy": self.policy,
                "thresholds": self.thresholds,
                "stop_at_first": self.stop_at_first,
            }
            if self.detectors:
                kw["detectors"] = tuple(self.detectors)
            template = load_callable(self.model)(**self.model_args)
            data = load_callable(self.data)(site, **self.data_args) if self.data else None
            self._guard = ClientGuard(Guard(GuardConfig(**kw), template=template, data=data))
        return self._guard

    def process(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        site = fl_ctx.get_identity_name()
        rnd = shareable.get_header(AppConstants.CURRENT_ROUND)
        start = time.perf_counter()
        try:
            guard = self.guard(site)
            received = task_state(shareable, guard.guard.max_bytes)
            verdict, allowed = guard.review(received)  # averaged integer counts: Guard.check
            exposed, batch = exposure_counts(verdict)
            record = {
                "round": rnd,
                "site": site,
                "malicious": bool(verdict.malicious),
                "allowed": bool(allowed),
                "score": float(verdict.score),
                "summary": verdict.summary(),
                "elapsed_s": float(verdict.elapsed_s),
                "detectors": detector_breakdown(verdict),
                "exposed": exposed,
                "batch": batch,
            }
        except Exception as e:  # noqa: BLE001 - fail closed on anything
            record = {
                "round": rnd,
                "site": site,
                "malicious": True,
                "allowed": False,
                "score": float("inf"),
                "summary": f"cannot verify: {type(e).__name__}: {e}",
                "elapsed_s": time.perf_counter() - start,
            }
        self._write(record)
        if not record["allowed"]:
            reason = f"{REASON_PREFIX}: {record['summary']} [score={record['score']:.4g}]"
            log.warning("%s (round %s, %s)", reason, rnd, site)
            raise ContentBlockedException(reason)
        return shareable

    def _write(self, record: dict[str, Any]) -> None:
        if not self.verdict_log:
            return
        try:
            with Path(self.verdict_log).open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            log.warning("gradguard: cannot write the verdict log %s: %s", self.verdict_log, e)
