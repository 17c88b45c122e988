"""Model health: a diverged model is "cannot verify", never a named attack.

Training at too high a learning rate explodes weights (1e12 and more), produces NaN, or
collapses the network: dead ReLUs make its output the same for every input, or nearly so
while it predicts one class for all local data. Such a model also trips the
signature checks (the rows of a diverged layer become near-parallel, which is what
``forensics.imprint`` looks for), so it must be classified before them: the Guard runs this
check first, and on a diverged model returns an unverified verdict ("the model has
diverged: ...") that names no attack. The client never trains on it (fail closed).

An attacker can make a tampered model look diverged too; that gains nothing, since the
client does not train on it either, it only loses the attack's name in the verdict.

Checks (thresholds: ``health.max_abs``, ``health.collapse``, calibrated on honest models
by benchmarks/calibrate.py):

- ``health.finite``: every float entry finite (no data needed).
- ``health.magnitude``: largest |value| of the state (no data needed).
- ``health.constant-output``: on up to ``samples`` local examples (evaluation mode), the
  logits do not vary across inputs (relative spread below ``CONSTANT_SPREAD``; reported
  only when it flags).
- ``health.fishing-head``: a collapsed output (the two checks below) whose head's centred
  rows are collapsed too (``health.head_collapse``) is class fishing, named as such
  (verified, flagged), not divergence.
- ``health.collapse``: the logits' mean size over their largest spread across those
  examples (how little the output depends on the input); flags only when the model also
  predicts a single class for every example of a local sample that holds several classes.
  A first version used the loss over ``ln(classes)`` instead: honest, barely trained
  resnet18 models predict one class at 4-8x the loss of guessing (benchmarks/results/
  false_positives.md), so the loss does not separate divergence from slow training.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import replace

import torch
from torch.func import functional_call

from gradguard.detect.architecture import peak_abs
from gradguard.detect.base import Context, Finding, Threshold, Verdict, mismatch, verdict_from
from gradguard.detect.exposure import head_collapse
from gradguard.detect.layers import linears
from gradguard.detect.thresholds import resolve

CONSTANT_SPREAD = 1e-6  # max over classes of std across inputs, relative to the logits' size


class Health:
    name = "health"
    needs_data = False  # the output checks run only when local data is given
    # a model beyond these has diverged (cannot verify, no attack named)
    THRESHOLDS = (
        Threshold("max_abs", 1e6, "health.magnitude", floor=1e6, doc="largest |value|"),
        Threshold(
            "collapse",
            100.0,
            "health.collapse",
            # the output varies by under 1% of its size across inputs
            floor=100.0,
            doc="mean |logit| / largest spread across local inputs, one class predicted for all",
        ),
        Threshold(
            "head_collapse",
            0.469,
            "health.fishing-head",
            doc="a collapsed output with a head this collapsed is class fishing, not divergence "
            "(as exposure.head_collapse; diverged corpus models that collapse: at most 0.30)",
        ),
    )

    def __init__(
        self, thresholds: Mapping[str, float] | None = None, samples: int = 32, seed: int = 0
    ) -> None:
        self.t = resolve(self, thresholds)
        self.samples, self.seed = samples, seed
        # the samples read, keyed by the data's identity (which it keeps alive)
        self._drawn: tuple[tuple, tuple, tuple[torch.Tensor, torch.Tensor, int]] | None = None

    def inspect(self, received: dict[str, torch.Tensor], ctx: Context) -> Verdict:
        start = time.perf_counter()
        findings: list[Finding] = []
        peaks = ctx.peaks or {}
        top, top_key = 0.0, "-"
        for k, v in received.items():
            if not (isinstance(v, torch.Tensor) and v.is_floating_point() and v.numel()):
                continue
            peak = peaks[k] if k in peaks else peak_abs(v)
            if not math.isfinite(peak):
                bad = int((~torch.isfinite(v)).sum())
                findings.append(
                    Finding(
                        "health.finite",
                        k,
                        float(bad),
                        0.0,
                        f"the model has diverged: {bad} non-finite value(s) (NaN or Inf)",
                    )
                )
                return self._diverged(findings, start)
            if peak > top:
                top, top_key = peak, k
        exploded = top > self.t["max_abs"]
        findings.append(
            Finding(
                "health.magnitude",
                top_key,
                top,
                self.t["max_abs"],
                f"the model has diverged: a value of magnitude {top:.3g}"
                if exploded
                else f"largest magnitude {top:.3g}",
                flagged=exploded,
            )
        )
        if exploded:
            return self._diverged(findings, start)
        if ctx.data is not None and not mismatch(received, ctx.expected):
            outputs = self._outputs(received, ctx)
            fishing = self._fishing_head(received, ctx, outputs)
            if fishing is not None:
                quiet = [replace(f, flagged=False) for f in outputs]
                return verdict_from(self.name, [*findings, fishing, *quiet], start)
            findings += outputs
        if any(f.flagged for f in findings):
            return self._diverged(findings, start)
        return verdict_from(self.name, findings, start)

    def _fishing_head(
        self, received: dict[str, torch.Tensor], ctx: Context, outputs: list[Finding]
    ) -> Finding | None:
        """A collapsed output whose cause is the head (its centred rows collapsed onto few
        class directions, :func:`~gradguard.detect.exposure.head_collapse`) is class fishing,
        not divergence (Wen et al. 2022): honest models that collapse by divergence keep a
        spread head (diverged corpus: at most 0.30)."""
        if not any(f.flagged and f.check != "health.finite" for f in outputs):
            return None
        names = linears(ctx.template)
        weight = received.get(f"{names[-1]}.weight") if names else None
        if weight is None or weight.ndim != 2:
            return None
        collapse = head_collapse(weight)
        if collapse < self.t["head_collapse"]:
            return None
        return Finding(
            "health.fishing-head",
            names[-1],
            collapse,
            self.t["head_collapse"],
            f"the output is collapsed by the head, not by divergence: its centred rows keep "
            f"{(1 - collapse):.0%} of the class directions, so samples the model gets wrong "
            "are silenced (class fishing)",
        )

    def _outputs(self, received: dict[str, torch.Tensor], ctx: Context) -> list[Finding]:
        assert ctx.data is not None
        key = (id(ctx.data.x), id(ctx.data.y), len(ctx.data), self.seed, self.samples)
        if self._drawn is None or self._drawn[0] != key:  # the same samples every round
            g = torch.Generator().manual_seed(self.seed)
            idx = torch.randperm(len(ctx.data), generator=g)[: self.samples]
            x, y = ctx.data.x[idx], ctx.data.y[idx]
            self._drawn = (key, (ctx.data.x, ctx.data.y), (x, y, len(y.unique())))
        x, y, classes = self._drawn[2]
        model = ctx.template
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                logits = functional_call(model, received, (x,)).double()
        finally:
            model.train(was_training)
        if not bool(torch.isfinite(logits).all()):
            return [
                Finding(
                    "health.finite",
                    "output",
                    math.nan,
                    0.0,
                    "the model has diverged: its output on your data is not finite",
                )
            ]
        out = []
        spread = float(logits.std(0, unbiased=False).max()) if len(x) > 1 else math.inf
        scale = float(logits.abs().mean()) + 1e-12
        if classes > 1 and spread <= CONSTANT_SPREAD * scale:
            out.append(
                Finding(
                    "health.constant-output",
                    "output",
                    spread / scale,
                    CONSTANT_SPREAD,
                    "the model has collapsed: its output is the same for every input "
                    f"({len(x)} of your examples)",
                )
            )
        one_class = classes > 1 and int(logits.argmax(1).unique().numel()) == 1
        collapse = scale / max(spread, 1e-300)
        collapsed = one_class and collapse > self.t["collapse"]
        out.append(
            Finding(
                "health.collapse",
                "output",
                collapse,
                self.t["collapse"],
                f"the model has collapsed: it predicts one class for all {len(x)} of your "
                f"examples and its output varies across them by {100 / collapse:.2g}% of its size"
                if collapsed
                else f"output size / spread across inputs {collapse:.3g}",
                flagged=collapsed,
            )
        )
        return out

    def _diverged(self, findings: list[Finding], start: float) -> Verdict:
        """Unverified (the Guard fails closed); no attack is named."""
        return Verdict(
            True,
            math.inf,
            time.perf_counter() - start,
            findings,
            self.name,
            verified=False,
            metadata={"diverged": True},
        )
