"""The Guard: detectors cheapest first under a policy, failing closed (design: Guard).

The ``health`` check always runs first: a diverged model (NaN, exploded, collapsed) is
unverifiable and names no attack. Policies: ``abstain`` (default) refuses a flagged model;
``warn`` logs it and trains anyway. Under both, a model that cannot be verified
(unreadable, non-finite, wrong shapes, absurd values, any internal error) is never trained
on.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from gradguard.data import Dataset
from gradguard.detect.architecture import peak_abs
from gradguard.detect.base import Context, Finding, Verdict

log = logging.getLogger("gradguard.detect")


@dataclass(frozen=True)
class GuardConfig:
    policy: Literal["abstain", "warn"] = "abstain"
    detectors: tuple[str, ...] = ("architecture", "forensics", "transmit-snr", "warmup+")
    thresholds: Mapping[str, float] = field(default_factory=dict)
    stop_at_first: bool = True  # stop at the first decisive (flagging) detector
    options: Mapping[str, Mapping] = field(default_factory=dict)  # per-detector options


def _unverified(detector: str, message: str, start: float, layer: str = "-") -> Verdict:
    return Verdict(
        True,
        math.inf,
        time.perf_counter() - start,
        [Finding("guard.unverifiable", layer, math.nan, math.nan, message)],
        detector,
        verified=False,
    )


class Guard:
    """Checks each received global model before the client trains on it."""

    def __init__(
        self,
        config: GuardConfig | None = None,
        template: nn.Module | None = None,
        data: Dataset | None = None,
    ) -> None:
        from gradguard.detect import DETECTORS, get_detector

        if template is None:
            raise ValueError("Guard needs the client's model as template")
        self.config = config or GuardConfig()
        if self.config.policy not in ("abstain", "warn"):
            raise ValueError(f"unknown policy {self.config.policy!r}: abstain or warn")
        order = list(DETECTORS)
        # health first, always: a diverged model is "cannot verify", not a named attack
        names = sorted(
            dict.fromkeys(("health", *self.config.detectors)),
            key=lambda n: order.index(n) if n in order else len(order),
        )
        self.detectors = [
            get_detector(n, self.config.thresholds, **dict(self.config.options.get(n, {})))
            for n in names
        ]
        self.template = template
        self.data = data
        self.accepted: dict[str, torch.Tensor] | None = None
        self.history: list[Verdict] = []

    def check(
        self, received: dict[str, torch.Tensor], previous: dict[str, torch.Tensor] | None = None
    ) -> Verdict:
        """The verdict on ``received``; never raises (errors become an unverified verdict)."""
        start = time.perf_counter()
        try:
            verdict = self._check(received, previous, start)
        except Exception as e:  # noqa: BLE001 - fail closed on anything
            verdict = _unverified(
                "guard", f"internal error while checking: {type(e).__name__}: {e}", start
            )
        self.history.append(verdict)
        if verdict.malicious:
            log.warning("gradguard: %s", verdict.summary())
        return verdict

    def _check(self, received, previous, start) -> Verdict:
        bad, peaks = _sanity(received)
        if bad:
            return _unverified("guard", bad, start)
        ctx = Context(
            self.template,
            self.data,
            previous if previous is not None else self.accepted,
            peaks,
        )
        findings: list[Finding] = []
        per: dict[str, dict] = {}
        malicious, verified, ran = False, True, []
        for det in self.detectors:
            if det.needs_data and self.data is None:
                findings.append(
                    Finding(
                        det.name,
                        "-",
                        math.nan,
                        math.nan,
                        "skipped: no local data given",
                        flagged=False,
                    )
                )
                continue
            t0 = time.perf_counter()
            try:
                v = det.inspect(received, ctx)
            except Exception as e:  # noqa: BLE001 - one failing detector fails the check
                v = _unverified(
                    det.name, f"{det.name} could not check the model: {type(e).__name__}: {e}", t0
                )
            ran.append(det.name)
            findings.extend(v.findings)
            per[det.name] = {
                "malicious": v.malicious,
                "verified": v.verified,
                "score": v.score,
                "elapsed_s": v.elapsed_s,
                **v.metadata,
            }
            malicious |= v.malicious
            verified &= v.verified
            if v.malicious and self.config.stop_at_first:
                break
        score = max((p["score"] for p in per.values()), default=0.0)
        return Verdict(
            malicious,
            score,
            time.perf_counter() - start,
            findings,
            "guard[" + ",".join(ran) + "]",
            verified,
            {"detectors": per},
        )

    def allows(self, verdict: Verdict) -> bool:
        """Whether the client may train: never on an unverifiable model; under ``warn`` on
        a flagged one (logged), under ``abstain`` only on a benign one."""
        if not verdict.verified:
            return False
        return True if self.config.policy == "warn" else not verdict.malicious

    def client_guard(self) -> Callable[[nn.Module], bool]:
        """``guard(model) -> bool`` for :class:`gradguard.fl.Client`; records verdicts."""

        def guard(model: nn.Module) -> bool:
            try:
                state = {k: v.detach() for k, v in model.state_dict().items()}
            except Exception as e:  # noqa: BLE001
                self.history.append(
                    _unverified("guard", f"unreadable model: {e}", time.perf_counter())
                )
                return False
            verdict = self.check(state)
            ok = self.allows(verdict)
            if ok and not verdict.malicious:
                self.accepted = {k: v.clone() for k, v in state.items()}
            return ok

        return guard


def _sanity(received) -> tuple[str, dict[str, float]]:
    """Why ``received`` cannot be verified at all ('' if it is a finite name->tensor map),
    and the largest magnitude of each floating entry (one pass, shared with detectors)."""
    if not isinstance(received, Mapping):
        return f"expected a mapping of names to tensors, got {type(received).__name__}", {}
    peaks: dict[str, float] = {}
    for k, v in received.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            return f"entry {k!r} is a {type(v).__name__}, not a named tensor", {}
        if v.is_complex() or v.is_sparse or v.is_quantized:
            return f"{k} has an unsupported tensor type ({v.dtype}, {v.layout})", {}
        if v.is_floating_point() and v.numel():
            peaks[k] = peak_abs(v)
            if not math.isfinite(peaks[k]):
                return f"{k} holds non-finite values (NaN or Inf): diverged or corrupted", {}
    return "", peaks
