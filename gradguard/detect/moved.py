"""Rewritten units: a server that replaced a few rows of a layer so they isolate samples
(issue 8).

Trap weights (Boenisch et al., EuroS&P 2023) hidden among honest rows (``curious`` with
``traps``) replace a few rows of the first linear layer and keep the others: over the last
accepted model (``ctx.previous``, the same architecture) a replaced row moved by about its
own norm (a trap row of random signs at the honest scale: 1.3-1.4 times it), the others by
what one round of training moves a row. For every linear layer below the head that the
leakage audit reads (detect/exposure.py), the rows ``[W_i, b_i]`` that moved by
``REWRITTEN`` times their previous norm or more are the layer's rewritten units; on the
client's probe samples (the audit's 256) the check counts how often those units fire for
one sample alone (:func:`~gradguard.detect.exposure.lone_rates`, per sample, batches of 16,
32 and 64). Honest rounds rewrite rows too (a first round from the fresh init moves up to
123 of 128 rows of a convnet's ``fc1`` by half their norm), but the rows training moves
most do not fire for one sample alone; trap rows are tuned to.

First contact (no previous model): the check does not apply (no finding). Cost: the row
movements (no data), and only when some row was rewritten, one forward/backward pass on
the probe samples (0.02-0.03 s on a digits convnet).

A server that plants the traps over several rounds, each moving a row by less than
``REWRITTEN`` of its norm, is not seen by this check (it compares consecutive models).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import torch

from gradguard.detect.base import (
    Context,
    Finding,
    Threshold,
    Verdict,
    mismatch,
    unverifiable,
    verdict_from,
)
from gradguard.detect.exposure import LONE_SAMPLES, _capture, _dense, _head, lone_rates
from gradguard.detect.thresholds import resolve

#: A row ``[W_i, b_i]`` that moved by this share of its previous norm or more is rewritten.
#: Honest corpus round pairs (399, round 1 from the fresh init included): rows moved this
#: far fire for one sample alone at most 0.004 times per sample; trap rows moved 1.3-1.4.
REWRITTEN = 0.5
#: ... and by this many times its layer's median row movement: honest training at a high
#: learning rate moves every row of a layer by half its norm in the first rounds (Adam at
#: 1e-2: rows that then fire for one sample alone up to 0.86 times per sample at batch 16),
#: all of them alike.
OUTLIER = 4.0
#: A layer's median movement is floored at this share of its median row norm.
STILL = 1e-4


def row_movement(
    received: Mapping[str, torch.Tensor], previous: Mapping[str, torch.Tensor], layer: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row ``[W_i, b_i]`` of ``layer``: its movement over its norm in ``previous``, and
    over the layer's median row movement (floored at ``STILL`` of the median row norm)."""
    w, w0 = received[f"{layer}.weight"].double(), previous[f"{layer}.weight"].double()
    rows = torch.cat([w.flatten(1), received[f"{layer}.bias"].double()[:, None]], 1)
    before = torch.cat([w0.flatten(1), previous[f"{layer}.bias"].double()[:, None]], 1)
    moved, norms = (rows - before).norm(dim=1), before.norm(dim=1)
    median = max(float(moved.median()), STILL * float(norms.median()), 1e-30)
    return moved / norms.clamp_min(1e-30), moved / median


def rewritten(
    received: Mapping[str, torch.Tensor],
    previous: Mapping[str, torch.Tensor],
    layer: str,
    share: float = REWRITTEN,
    factor: float = OUTLIER,
) -> torch.Tensor:
    """The rows of ``layer`` that moved by ``share`` of their norm or more and by ``factor``
    times the layer's median row movement or more."""
    own, layerwise = row_movement(received, previous, layer)
    return torch.nonzero((own >= share) & (layerwise >= factor)).flatten()


class MovedUnits:
    """Rows rewritten since the last accepted model that isolate samples (``moved``)."""

    name = "moved"
    needs_data = True
    THRESHOLDS = tuple(
        Threshold(
            f"lone{size}",
            default,
            f"moved.lone{size}",
            floor=floor,
            doc=f"units moved by {REWRITTEN:g} of their norm or more since the last accepted "
            f"model, firing for one sample alone, per sample, in batches of {size}",
        )
        # 2x the honest maximum, of the corpus' 414 round pairs (at most 0.004) and of 180
        # pairs of long training at high learning rates (benchmarks/moved_calibration.py
        # --long: 0.214, 0.059, 0.015, a Fashion-MNIST mlp in Adam/AdamW's rounds 2-3 at
        # lr 1e-2); floor 0.05 (3 lone units per batch of 64). curious/convnet adaptive +
        # bend 0.9 + 32 traps: 0.55-0.62 at batch 16 (b16), 0.26-0.30 / 0.13-0.18 (b64)
        for size, default, floor in ((16, 0.43, 0.05), (32, 0.12, 0.05), (64, 0.05, 0.05))
    )

    def __init__(
        self,
        thresholds: Mapping[str, float] | None = None,
        seed: int = 0,
        lone_samples: int = LONE_SAMPLES,
        share: float = REWRITTEN,
        factor: float = OUTLIER,
    ) -> None:
        self.t = resolve(self, thresholds)
        self.seed, self.lone_samples = seed, int(lone_samples)
        self.share, self.factor = float(share), float(factor)

    def inspect(self, received: dict[str, torch.Tensor], ctx: Context) -> Verdict:
        start = time.perf_counter()
        reason = mismatch(received, ctx.expected)
        if reason:
            return unverifiable(self.name, f"cannot verify: {reason}", start)
        previous = ctx.previous
        if previous is None or mismatch(previous, ctx.expected) or ctx.data is None:
            return verdict_from(self.name, [], start, {"moved": None})
        findings, meta = self.judge(received, previous, ctx)
        return verdict_from(self.name, findings, start, {"moved": meta})

    def judge(self, received, previous, ctx: Context) -> tuple[list[Finding], dict]:
        head = _head(ctx.template)
        layers = [
            name
            for name, m in ctx.template.named_modules()
            if isinstance(m, torch.nn.Linear)
            and name != head
            and f"{name}.bias" in received
            and received[f"{name}.weight"].dim() == 2
        ]
        moved = {}
        for layer in layers:
            units = rewritten(received, previous, layer, self.share, self.factor)
            if len(units):
                moved[layer] = units
        meta: dict = {"units": {k: len(v) for k, v in moved.items()}, "lone": {}}
        if not moved:
            return [], meta
        g = torch.Generator().manual_seed(self.seed)
        idx = torch.randperm(len(ctx.data), generator=g)[: self.lone_samples]
        caught, _ = _capture(ctx.template, received, ctx.data.x[idx], ctx.data.y[idx], ctx.loss)
        read = set(_dense(caught, received, head))
        rates = {
            layer: lone_rates(caught[layer][1].index_select(1, units))
            for layer, units in moved.items()
            if layer in read
        }
        meta["lone"] = rates
        findings = []
        for size in sorted({b for r in rates.values() for b in r}):
            where = max((k for k in rates if size in rates[k]), key=lambda k: rates[k][size])
            value, bar = rates[where][size], self.t[f"lone{size}"]
            said = (
                f"{len(moved[where])} units moved by {self.share:g} of their norm and "
                f"{self.factor:g}x the layer's median row or more since the last accepted "
                f"model; {value:.2f} of them per sample fire for "
                f"that sample alone in batches of {size}"
            )
            findings.append(
                Finding(
                    f"moved.lone{size}",
                    where,
                    value,
                    bar,
                    f"{said}: rows rewritten to isolate samples (trap weights)"
                    if value >= bar
                    else said,
                    value >= bar,
                )
            )
        return findings, meta
