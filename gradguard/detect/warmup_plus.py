"""``warmup+``: gradguard's light, scale-free variant of the seed paper's warm-up detector.

The same warm-up loop, target layers and statistics as :mod:`.warmup`, with three changes:

1. A variance floor. The faithful Z-score divides the first step's change by ``eps``
   (a history of one value has no spread), so it measures absolute change and its benign
   range depends on the layer's scale, the learning rate and training progress. Here the
   denominator is ``max(std(history), rel * (|mean(history)| + spread_0))`` where
   ``spread_0`` is the layer's step-0 standard deviation: Z counts changes in units of
   ``rel`` (0.1%) of the layer's own scale.
2. Optionally (``use_previous=True``), the statistics of the client's previously accepted
   model (read from its state, no model is built) start the history, so a jump from the
   last accepted model to the received one counts too. Off by default: an honest round at
   a high learning rate moves the last layer's max-abs by more than its scale (measured:
   |Z| 1.2e3 on the demo's federation, lr 0.3, 2 local epochs), so this signal depends on
   the federation's training schedule and false-alarms outside its calibration.
3. It is light: one step on 32 samples (the faithful run takes 5 on 128), so that the
   default Guard fits in a tenth of a local epoch (benchmarks/detector_cost.py). With one
   step and no previous model the Z-score is the step's change in units of the floor;
   with a previous model the history holds two values. ``steps`` and ``samples`` are
   options (``GuardConfig.options``); the threshold was calibrated at the defaults.

Its threshold is calibrated at these settings on honest models (benchmarks/calibrate.py).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from gradguard.detect.base import Context
from gradguard.detect.warmup import WarmUp, target_names, target_stats


class WarmUpPlus(WarmUp):
    name = "warmup+"

    def __init__(
        self,
        thresholds: Mapping[str, float] | None = None,
        rel: float = 1e-3,
        steps: int = 1,
        samples: int = 32,
        use_previous: bool = False,
        **options,
    ) -> None:
        super().__init__(thresholds, steps=steps, samples=samples, **options)
        self.rel = rel
        self.use_previous = use_previous

    def zscores(self, s: torch.Tensor) -> torch.Tensor:
        spread0 = s[..., 0, 1].abs().unsqueeze(-1)
        out = []
        for t in range(1, s.shape[-2]):
            hist = s[..., :t, :]
            mean = hist.mean(-2)
            floor = self.rel * (mean.abs() + spread0) + 1e-12
            out.append((s[..., t, :] - mean) / torch.maximum(hist.std(-2, unbiased=False), floor))
        return torch.stack(out, dim=-2)

    def profile(self, received, ctx: Context):
        stats, losses = super().profile(received, ctx)
        prev = ctx.previous if self.use_previous else None
        if prev is None:
            return stats, losses
        names = target_names(ctx.template)
        expected = dict(ctx.template.named_parameters())
        usable = {
            key: ns
            for key, ns in names.items()
            if key in stats
            and all(
                isinstance(prev.get(n), torch.Tensor)
                and prev[n].shape == expected[n].shape
                and prev[n].is_floating_point()
                for n in ns
            )
        }
        for key, row in target_stats(prev, usable).items():
            if bool(torch.isfinite(row).all()):
                stats[key] = torch.cat([row[None], stats[key]])
        return stats, losses
