"""``warmup+``: gradguard's scale-free variant of the seed paper's warm-up detector.

Same warm-up (steps, samples, target layers, statistics) as :mod:`.warmup`, two changes:

1. A variance floor. The faithful Z-score divides the first step's change by ``eps``
   (a history of one value has no spread), so it measures absolute change and its benign
   range depends on the layer's scale, the learning rate and training progress. Here the
   denominator is ``max(std(history), rel * (|mean(history)| + spread_0))`` where
   ``spread_0`` is the layer's step-0 standard deviation: Z counts changes in units of
   ``rel`` (0.1%) of the layer's own scale.
2. When the client has a previously accepted model, its statistics become the start of
   the history, so a jump from the last accepted model to the received one counts too.

Measured side by side with the faithful version in docs/detection.md.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from gradguard.detect.base import Context, Verdict
from gradguard.detect.warmup import WarmUp, _stats, target_parameters


class WarmUpPlus(WarmUp):
    name = "warmup+"

    def __init__(
        self, thresholds: Mapping[str, float] | None = None, rel: float = 1e-3, **options
    ) -> None:
        super().__init__(thresholds, **options)
        self.rel = rel

    def zscores(self, s: torch.Tensor) -> torch.Tensor:
        spread0 = s[0, 1].abs()
        out = []
        for t in range(1, len(s)):
            hist = s[:t]
            mean = hist.mean(0)
            floor = self.rel * (mean.abs() + spread0) + 1e-12
            out.append((s[t] - mean) / torch.maximum(hist.std(0, unbiased=False), floor))
        return torch.stack(out)

    def profile(self, received, ctx: Context):
        stats, losses = super().profile(received, ctx)
        if ctx.previous is None:
            return stats, losses
        try:
            prev = ctx.instantiate(ctx.previous)
        except Exception:  # noqa: BLE001 - a previous model of another shape adds nothing
            return stats, losses
        for key, ts in target_parameters(prev).items():
            if key in stats:
                row = _stats(torch.cat([t.detach().flatten() for t in ts]))
                stats[key] = torch.cat([row[None], stats[key]])
        return stats, losses

    def inspect(self, received: dict[str, torch.Tensor], ctx: Context) -> Verdict:
        return super().inspect(received, ctx)
