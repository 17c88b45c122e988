"""Rewritten units: a server that replaced rows of a layer so they isolate samples (issue 8).

Trap weights (Boenisch et al., EuroS&P 2023) hidden among honest rows (``curious`` with
``traps``) replace a few rows of the first linear layer and keep the others. Over the last
accepted model (``ctx.previous``, the same architecture) a replaced row turned: the unit
vectors of ``[W_i, b_i]`` before and after lie about 1.41 apart (a trap row of random signs
is orthogonal to the honest one), where a round of training turns a row a little, and a
rescaled row not at all. For every linear layer below the head that the leakage audit reads
(detect/exposure.py), rows turned by ``REWRITTEN`` or more are rewritten, and outliers where
they also turned ``OUTLIER`` times the layer's median row or more. On the client's probe
samples (the audit's 256) the check counts how often each set fires for one sample alone
(:func:`~gradguard.detect.exposure.lone_rates`, per sample, in batches of 16, 32 and 64):

- ``moved.lone{b}``: the outliers. Honest rounds turn rows too (Adam at lr 1e-2 turns every
  row in its first rounds, all alike), but rows turned far more than their layer's do not
  fire for one sample alone; trap rows are tuned to.
- ``moved.all{b}``: every rewritten row, with higher bars (honest first rounds at high
  learning rates: rows that turn become sparse). A server that turns every row (``curious``
  ``spread``) so its traps are no outliers makes the turned honest rows random: they then
  isolate samples far beyond honest rounds.

First contact (no previous model): the check does not apply (no finding). Cost: the row
directions (no data), and only when some row turned, one forward/backward pass on the probe
samples (benchmarks/results/moved_attacks.md: 0.01-0.03 s on a digits convnet).

Not seen: traps planted over several rounds, each turning a row by less than ``REWRITTEN``
(the check compares consecutive models), and trap rows within ``REWRITTEN`` of an honest
row's direction.
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

#: A row ``[W_i, b_i]`` whose direction moved this far (unit vectors' distance; a trap row of
#: random signs: about 1.41, orthogonal) or farther is rewritten ...
REWRITTEN = 0.5
#: ... and an outlier where it moved this many times its layer's median row or more. Honest
#: training at a high learning rate turns every row of a layer far in its first rounds (Adam
#: at 1e-2 from the fresh init), all alike; a server rewriting a few rows turns those alone.
OUTLIER = 1.5
#: A layer's median movement is floored at this.
STILL = 1e-4


def row_movement(
    received: Mapping[str, torch.Tensor], previous: Mapping[str, torch.Tensor], layer: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row ``[W_i, b_i]`` of ``layer``: how far its direction moved (the distance of the
    unit vectors, 0 to 2: rescaling a row, which changes nothing of what it isolates, is no
    movement), and that over the layer's median (floored at ``STILL``)."""
    w, w0 = received[f"{layer}.weight"].double(), previous[f"{layer}.weight"].double()
    rows = torch.cat([w.flatten(1), received[f"{layer}.bias"].double()[:, None]], 1)
    before = torch.cat([w0.flatten(1), previous[f"{layer}.bias"].double()[:, None]], 1)
    unit = rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-30)
    unit0 = before / before.norm(dim=1, keepdim=True).clamp_min(1e-30)
    moved = (unit - unit0).norm(dim=1)
    return moved, moved / max(float(moved.median()), STILL)


class MovedUnits:
    """Rows rewritten since the last accepted model that isolate samples (``moved``)."""

    name = "moved"
    needs_data = True
    # Honest maxima (benchmarks/moved_calibration.py): 414 corpus round pairs and 180 pairs of
    # long high-learning-rate training (--long). Outliers: 0.044, 0.014, 0.010 (a Fashion-MNIST
    # mlp, AdamW at lr 1e-2), thresholds 2x that, at least 0.05 (3 lone units per batch of
    # 64). Every rewritten row: 0.833, 0.297, 0.110 (Adam at lr 1e-2, round 1 from the fresh
    # init), thresholds 2x. curious/convnet adaptive + bend 0.9 + 32 traps (outliers): 0.55-0.62
    # at batch 16 (b16 attacks), 0.26-0.30 at 32 and 0.13-0.18 at 64 (b64 attacks).
    THRESHOLDS = tuple(
        Threshold(
            f"{kind}{size}",
            default,
            f"moved.{kind}{size}",
            floor=0.05,
            doc=f"{what} rewritten since the last accepted model, firing for one sample alone, "
            f"per sample, in batches of {size}",
        )
        for kind, what, bars in (
            ("lone", "outlier units", ((16, 0.1), (32, 0.05), (64, 0.05))),
            ("all", "all units", ((16, 1.67), (32, 0.6), (64, 0.22))),
        )
        for size, default in bars
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
        sets: dict[str, dict[str, torch.Tensor]] = {"lone": {}, "all": {}}
        for layer in layers:
            own, layerwise = row_movement(received, previous, layer)
            turned = own >= self.share
            for kind, mask in (("lone", turned & (layerwise >= self.factor)), ("all", turned)):
                if bool(mask.any()):
                    sets[kind][layer] = torch.nonzero(mask).flatten()
        meta: dict = {
            kind: {"units": {k: len(v) for k, v in units.items()}, "lone": {}}
            for kind, units in sets.items()
        }
        if not sets["all"]:
            return [], meta
        g = torch.Generator().manual_seed(self.seed)
        idx = torch.randperm(len(ctx.data), generator=g)[: self.lone_samples]
        caught, _ = _capture(ctx.template, received, ctx.data.x[idx], ctx.data.y[idx], ctx.loss)
        read = set(_dense(caught, received, head))
        findings = []
        for kind, units in sets.items():
            rates = {
                layer: lone_rates(caught[layer][1].index_select(1, u))
                for layer, u in units.items()
                if layer in read
            }
            meta[kind]["lone"] = rates
            which = "outlier " if kind == "lone" else ""
            for size in sorted({b for r in rates.values() for b in r}):
                where = max((k for k in rates if size in rates[k]), key=lambda k: rates[k][size])
                value, bar = rates[where][size], self.t[f"{kind}{size}"]
                said = (
                    f"{len(units[where])} {which}units of {where} turned by {self.share:g} "
                    + (f"and {self.factor:g}x the layer's median row " if kind == "lone" else "")
                    + f"or more since the last accepted model; {value:.2f} of them per sample "
                    f"fire for that sample alone in batches of {size}"
                )
                findings.append(
                    Finding(
                        f"moved.{kind}{size}",
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
