"""The Guard: detectors cheapest first under a policy, failing closed (design: Guard).

The ``health`` check always runs first: a diverged model (NaN, exploded, collapsed) is
unverifiable and names no attack. Policies: ``abstain`` (default) refuses a flagged model;
``warn`` logs it and trains anyway; ``strict`` also refuses an honest model whose update
would expose more of the client's batch than ``exposure.strict_fraction`` (the leakage
audit, detect/exposure.py). Under every policy, a model that cannot be verified
(unreadable, non-finite, wrong shapes, absurd values, expanded tensor views, more bytes
than the client's model, any internal error) is never trained on. A configured detector
that needs local data and got none makes the verdict unverified too: configure only
data-free detectors to run without data.

The client's own model and data: ``template`` is any ``nn.Module``; ``data`` a gradguard
Dataset, ``(x, y)`` tensors, a torch Dataset or a DataLoader (:func:`gradguard.data.adapt.
as_dataset`, once, at construction); ``loss`` the client's batch-mean loss (default
cross-entropy), used by every check that takes a gradient. Data the model cannot take
raises :class:`~gradguard.errors.DataError` at construction. Integer entries that a stock
strategy's averaging turned into floats are validated and cast back before any check
(:func:`~gradguard.detect.architecture.restore_integers`). Invalid configurations (unknown policy or
detector, an empty detector set, unknown or disarming thresholds) raise
:class:`~gradguard.detect.thresholds.ConfigError`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from gradguard.data import Dataset
from gradguard.data.adapt import as_dataset
from gradguard.detect.architecture import peak_abs, restore_integers
from gradguard.detect.base import Context, Finding, LossFn, Verdict, mismatch, unverifiable
from gradguard.detect.registry import DEFAULT_DETECTORS, DETECTORS, get_detector
from gradguard.detect.thresholds import ConfigError, validate
from gradguard.errors import DataError
from gradguard.models.io import LIMIT_FACTOR, max_entries, state_bytes, view_problem

log = logging.getLogger("gradguard.detect")


@dataclass(frozen=True)
class GuardConfig:
    policy: Literal["abstain", "warn", "strict"] = "abstain"
    detectors: tuple[str, ...] = DEFAULT_DETECTORS
    thresholds: Mapping[str, float] = field(default_factory=dict)
    stop_at_first: bool = True  # stop at the first decisive (flagging) detector
    options: Mapping[str, Mapping] = field(default_factory=dict)  # per-detector options

    def __post_init__(self) -> None:
        valid = ", ".join(DETECTORS)
        if self.policy not in ("abstain", "warn", "strict"):
            raise ConfigError(f"unknown policy {self.policy!r}: abstain, warn or strict")
        if isinstance(self.detectors, str) or not isinstance(self.detectors, (tuple, list)):
            raise ConfigError(f"detectors must be a tuple of names, got {self.detectors!r}")
        if not self.detectors:
            raise ConfigError(f"an empty detector set checks nothing; valid: {valid}")
        unknown = [d for d in self.detectors if not isinstance(d, str) or d not in DETECTORS]
        if unknown:
            raise ConfigError(f"unknown detector(s) {unknown!r}; valid: {valid}")
        validate(self.thresholds)
        if not isinstance(self.stop_at_first, bool):
            raise ConfigError(f"stop_at_first must be a bool, got {self.stop_at_first!r}")
        if not isinstance(self.options, Mapping) or not all(
            k in DETECTORS and isinstance(v, Mapping) for k, v in self.options.items()
        ):
            raise ConfigError(f"options must map detector names ({valid}) to mappings")


UNVERIFIABLE = "guard.unverifiable"  # the check of every Guard finding "cannot verify"


class Guard:
    """Checks each received global model before the client trains on it."""

    def __init__(
        self,
        config: GuardConfig | None = None,
        template: nn.Module | None = None,
        data: Dataset | object | None = None,
        loss: LossFn | None = None,
    ) -> None:
        if not isinstance(template, nn.Module):
            raise ConfigError("Guard needs the client's model (an nn.Module) as template")
        self.config = config if config is not None else GuardConfig()
        if not isinstance(self.config, GuardConfig):
            raise ConfigError(f"config must be a GuardConfig, got {type(config).__name__}")
        order = list(DETECTORS)
        # health first, always: a diverged model is "cannot verify", not a named attack
        names = sorted(
            dict.fromkeys(("health", *self.config.detectors)),
            key=lambda n: order.index(n) if n in order else len(order),
        )
        options = {n: dict(self.config.options.get(n, {})) for n in names}
        if self.config.policy == "strict" and "exposure" in options:
            options["exposure"].setdefault("strict", True)
        self.detectors = [get_detector(n, self.config.thresholds, **options[n]) for n in names]
        if loss is not None and not callable(loss):
            raise ConfigError(f"loss must be a function (outputs, targets) -> loss, got {loss!r}")
        self.template = template
        self.loss = loss
        self.data = None if data is None or _is_empty(data) else as_dataset(data)
        if self.data is not None:
            check_fit(template, self.data, loss)
        # a received state may hold at most this many bytes (the client's model's, x2)
        self.max_bytes = LIMIT_FACTOR * state_bytes(template) + 65536
        self.max_entries = max_entries(template)
        self.history: list[Verdict] = []

    def check(
        self, received: dict[str, torch.Tensor], previous: dict[str, torch.Tensor] | None = None
    ) -> Verdict:
        """The verdict on ``received``; never raises (errors become an unverified verdict)."""
        start = time.perf_counter()
        try:
            verdict = self._check(received, previous, start)
        except Exception as e:  # noqa: BLE001 - fail closed on anything
            verdict = unverifiable(
                "guard",
                f"internal error while checking: {type(e).__name__}: {e}",
                start,
                check=UNVERIFIABLE,
            )
        self.history.append(verdict)
        if verdict.malicious:
            log.warning("gradguard: %s", verdict.summary())
        return verdict

    def _check(self, received, previous, start) -> Verdict:
        bad, peaks = _sanity(received, self.max_bytes, self.max_entries)
        if bad:
            return unverifiable("guard", bad, start, check=UNVERIFIABLE)
        ctx = Context(
            self.template,
            self.data,
            previous,
            peaks,
            self.loss,
        )
        # counts a stock strategy averaged into floats: validated and cast back
        received, restored = restore_integers(received, ctx.expected)
        bad = [f for f in restored if f.flagged]
        if bad:
            v = unverifiable("architecture", bad[0].message, start, layer=bad[0].layer)
            v.findings[0] = bad[0]
            return v
        if ctx.previous is not None:
            ctx.previous = restore_integers(ctx.previous, ctx.expected)[0]
        findings: list[Finding] = []
        per: dict[str, dict] = {}
        malicious, verified, ran, stopped = False, True, [], False
        skipped: dict[str, str] = {}
        for det in self.detectors:
            # after a decisive flag only the exposure audit still runs (the client-terms number)
            if stopped and not (
                getattr(det, "runs_after_flag", False)
                and verified
                and not mismatch(received, ctx.expected)
            ):
                skipped[det.name] = "not run: an earlier detector flagged the model"
                continue
            if det.needs_data and self.data is None:
                skipped[det.name] = "needs local data and none was given"
                continue
            t0 = time.perf_counter()
            try:
                v = det.inspect(received, ctx)
            except Exception as e:  # noqa: BLE001 - one failing detector fails the check
                v = unverifiable(
                    det.name,
                    f"{det.name} could not check the model: {type(e).__name__}: {e}",
                    t0,
                    check=UNVERIFIABLE,
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
                stopped = True
        no_data = [n for n, why in skipped.items() if why.startswith("needs local data")]
        if no_data and not malicious:
            # a configured check could not run: the model is not verified (fail closed)
            verified, malicious = False, True
            findings.append(
                Finding(
                    UNVERIFIABLE,
                    "-",
                    math.nan,
                    math.nan,
                    f"cannot verify: {', '.join(no_data)} need local data and none was given "
                    "(configure only data-free detectors to run without data)",
                )
            )
        score = max((p["score"] for p in per.values()), default=0.0)
        if not verified:
            score = math.inf
        exposure = "exposure" in per and "exposure" in per["exposure"]
        return Verdict(
            malicious,
            score,
            time.perf_counter() - start,
            findings,
            "guard[" + ",".join(ran) + "]",
            verified,
            {
                "detectors": per,
                "ran": ran,
                "skipped": skipped,
                **({"exposure": per["exposure"]["exposure"]} if exposure else {}),
            },
        )

    def allows(self, verdict: Verdict) -> bool:
        """Whether the client may train: never on an unverifiable model; under ``warn`` on
        a flagged one (logged), under ``abstain`` only on a benign one."""
        if not verdict.verified:
            return False
        return True if self.config.policy == "warn" else not verdict.malicious


def check_fit(template: nn.Module, data: Dataset, loss: LossFn | None) -> None:
    """Raise :class:`DataError` unless ``template`` takes two local examples and the loss
    (cross-entropy by default: logits N x C, labels below C) is a finite number on them."""
    x, y = data.x[:2], data.y[:2]
    was_training = template.training
    template.eval()
    try:
        with torch.no_grad():
            out = template(x)
            if loss is None:
                if not isinstance(out, torch.Tensor) or out.ndim != 2:
                    raise DataError(
                        "the model's output on the local data is not N x classes logits "
                        f"({getattr(out, 'shape', type(out).__name__)}): give the Guard your "
                        "loss function"
                    )
                if int(data.y.max()) >= out.shape[1]:
                    raise DataError(
                        f"the local data has label {int(data.y.max())} but the model has "
                        f"{out.shape[1]} outputs"
                    )
            value = (loss or torch.nn.functional.cross_entropy)(out, y)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - the client's model or loss: say what failed
        first = (str(e).splitlines() or [""])[0][:200]
        raise DataError(
            f"the model cannot be trained on the local data {tuple(data.x.shape[1:])}: "
            f"{type(e).__name__}: {first}"
        ) from None
    finally:
        template.train(was_training)
    if not (isinstance(value, torch.Tensor) and value.numel() == 1 and bool(value.isfinite())):
        raise DataError(f"the loss on the local data is not a finite number ({value!r})")


def _is_empty(data) -> bool:
    try:
        return len(data) == 0
    except TypeError:
        return False


def _sanity(received, max_bytes: int, max_entries: int) -> tuple[str, dict[str, float]]:
    """Why ``received`` cannot be verified at all ('' if it is a finite name->tensor map of
    dense tensors holding at most ``max_bytes``), and the largest magnitude of each floating
    entry (one pass, shared with detectors). Sizes are checked before any value is read."""
    if not isinstance(received, Mapping):
        return f"expected a mapping of names to tensors, got {type(received).__name__}", {}
    if len(received) > max_entries:
        return f"the received state names {len(received)} tensors (at most {max_entries})", {}
    total = 0
    for k, v in received.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            return f"entry {k!r} is a {type(v).__name__}, not a named tensor", {}
        if v.is_complex() or v.layout != torch.strided or v.is_quantized:
            return f"{k} has an unsupported tensor type ({v.dtype}, {v.layout})", {}
        bad = view_problem(v)
        if bad:
            return f"{k} {bad}", {}
        total += v.numel() * v.element_size()
        if total > max_bytes:
            return (
                f"the received state holds more than {max_bytes} bytes "
                f"({LIMIT_FACTOR} x the client's model)",
                {},
            )
    peaks: dict[str, float] = {}
    for k, v in received.items():
        if v.is_floating_point() and v.numel():
            peaks[k] = peak_abs(v)
            if not math.isfinite(peaks[k]):
                return f"{k} holds non-finite values (NaN or Inf): diverged or corrupted", {}
    return "", peaks
