"""The detector contract (design: Detector, Verdict).

``inspect(received, ctx) -> Verdict``. ``received`` is the received model's state (the
arrays a server sent, name -> tensor); ``ctx`` holds only what a client really has: its
own model template (the architecture it expects), a sample of its local data, and
optionally the state of the last global model it accepted.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, ClassVar, Protocol

import torch
from torch import nn
from torch.nn import functional as F

from gradguard.data import Dataset

#: ``loss(outputs, targets) -> scalar``, averaged over the batch (as ``F.cross_entropy``).
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Finding:
    """One measured fact: which check, on which layer, the value against its threshold."""

    check: str
    layer: str
    value: float
    threshold: float
    message: str
    flagged: bool = True


@dataclass
class Verdict:
    malicious: bool
    score: float
    elapsed_s: float
    findings: list[Finding] = field(default_factory=list)
    detector: str = ""
    verified: bool = True  # False: the model could not be verified (the Guard fails closed)
    metadata: dict[str, Any] = field(default_factory=dict)  # e.g. every warm-up Z-score

    def summary(self) -> str:
        """One line for logs and abstention reasons; it leads with what the round would
        expose when the leakage audit ran (``metadata["exposure"]["sentence"]``)."""
        flagged = [f for f in self.findings if f.flagged]
        exposure = self.metadata.get("exposure") or {}
        sentence = exposure.get("sentence", "") if isinstance(exposure, dict) else ""
        if not self.malicious:
            line = f"benign ({self.detector}, score {self.score:.3g})"
            return f"{line}; {sentence}" if sentence and exposure.get("exposed") else line
        if not exposure.get("tampered", True):  # another check flagged: no "not tampering"
            sentence = exposure.get("exposes", sentence)
        if not flagged:
            line = f"flagged by {self.detector} (score {self.score:.3g})"
        else:
            first = flagged[0]
            more = f" (+{len(flagged) - 1} more)" if len(flagged) > 1 else ""
            line = f"{first.check} on {first.layer}: {first.message}{more}"
        return f"{sentence}; {line}" if sentence else line

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


def _jsonable(obj: Any) -> Any:
    """Plain JSON types (non-finite floats as strings, tensors as lists)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


@dataclass
class Context:
    """What the client has when a model arrives."""

    template: nn.Module
    data: Dataset | None = None
    previous: dict[str, torch.Tensor] | None = None
    # max |value| of each floating entry of the received state, when the Guard has it
    peaks: dict[str, float] | None = None
    # the client's training loss (batch mean); None: cross-entropy
    loss: LossFn | None = None

    def loss_of(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The client's loss on a batch (its mean), the one every gradient is taken of."""
        return (self.loss or F.cross_entropy)(outputs, targets)

    @cached_property
    def expected(self) -> dict[str, torch.Tensor]:
        """The template's state (the names, shapes and dtypes it expects), read once."""
        return self.template.state_dict()

    def instantiate(self, received: dict[str, torch.Tensor]) -> nn.Module:
        """A copy of the template holding ``received`` (strict: names and shapes must match)."""
        model = copy.deepcopy(self.template)
        model.load_state_dict(received, strict=True)
        return model


MARGIN = 2.0  # calibration proposes max(floor, MARGIN x the largest honest value)


@dataclass(frozen=True)
class Threshold:
    """A decision threshold a detector reads, declared on its class (``THRESHOLDS``).

    Configured as ``"<detector>.<key>"`` (``GuardConfig.thresholds``). ``check`` names the
    findings that compare a measured value with it: calibration on honest models reads their
    values and proposes ``max(floor, margin x the largest honest value)``
    (detect/calibrate.py); ``floor`` is the literature anchor or the smallest structural
    value that means anything.
    """

    key: str
    default: float
    check: str
    floor: float = 0.0
    margin: float = MARGIN
    doc: str = ""


class Detector(Protocol):
    """``score`` of a Verdict is the largest ``value / threshold`` over its findings: a
    detector flags when its score reaches 1."""

    name: str
    needs_data: bool
    THRESHOLDS: ClassVar[tuple[Threshold, ...]]

    def inspect(self, received: dict[str, torch.Tensor], ctx: Context) -> Verdict: ...


def ratio(value: float, threshold: float) -> float:
    """``value / threshold`` as a severity (>= 1 flags); infinite for a zero threshold."""
    if not math.isfinite(value):
        return math.inf
    return value / threshold if threshold > 0 else (math.inf if value > 0 else 0.0)


def verdict_from(
    detector: str,
    findings: list[Finding],
    start: float,
    metadata: dict[str, Any] | None = None,
    verified: bool = True,
) -> Verdict:
    """A Verdict whose score is the largest ``value / threshold`` over the findings."""
    score = max((ratio(f.value, f.threshold) for f in findings), default=0.0)
    malicious = any(f.flagged for f in findings) or not verified
    return Verdict(
        malicious, score, time.perf_counter() - start, findings, detector, verified, metadata or {}
    )


def mismatch(
    received: dict[str, torch.Tensor], template: nn.Module | Mapping[str, torch.Tensor]
) -> str:
    """Why ``received`` does not fit ``template`` ('' when names, shapes and dtypes match);
    ``template`` is the client's model or its state (``Context.expected``)."""
    expected = template.state_dict() if isinstance(template, nn.Module) else template
    if received.keys() != expected.keys():
        extra = sorted(received.keys() - expected.keys())
        missing = sorted(expected.keys() - received.keys())
        return f"the received state has {len(extra)} extra and {len(missing)} missing entries"
    for k, v in expected.items():
        got = received[k]
        if not isinstance(got, torch.Tensor) or got.shape != v.shape or got.dtype != v.dtype:
            return f"{k} does not match the client's model"
    return ""


def unverifiable(
    detector: str, message: str, start: float, *, check: str = "", layer: str = "-"
) -> Verdict:
    """The model cannot be verified (by ``detector``): malicious, unverified, infinite score,
    one finding ``check`` (default ``"<detector>.unverifiable"``) saying why. The Guard and
    ``gradguard scan`` never train on it (fail closed)."""
    return Verdict(
        True,
        math.inf,
        time.perf_counter() - start,
        [Finding(check or f"{detector}.unverifiable", layer, math.nan, math.nan, message)],
        detector,
        verified=False,
    )
