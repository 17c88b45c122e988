"""``warmup+``: gradguard's light, scale-free variant of the seed paper's warm-up detector.

The same warm-up loop, target layers and statistics as :mod:`.warmup`, with three changes:

1. A variance floor. The faithful Z-score divides the first step's change by ``eps``
   (a history of one value has no spread), so it measures absolute change and its benign
   range depends on the layer's scale, the learning rate and training progress. Here the
   denominator is ``max(std(history), rel * (|mean(history)| + spread_0))`` where
   ``spread_0`` is the layer's step-0 standard deviation: Z counts changes in units of
   ``rel`` (0.1%) of the layer's own scale. A target that arrives constant (spread below
   ``1e-6`` x its max-abs) has no scale of its own. Biases are initialised constant
   (zero: Keras's default), so a constant bias borrows the step-0 spread of the same
   layer's weights (``linear[0]_bias`` -> ``linear[0]_weight``): without it the floor is
   ~1e-12 and one honest step scores |Z| 1e5-5e9 (measured: fresh mlp and convnet with
   zeroed biases). Per statistic the bias gets at least the floor its weights have,
   ``rel * (|s_0| + spread_0)`` of the weights, as a default-initialised bias of the same
   scale would. Weights are never initialised constant, so a constant weight target
   (the brightness rows of an imprint layer) keeps its own, collapsed floor and is flagged.
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

from gradguard.detect.base import Context, Threshold
from gradguard.detect.warmup import WarmUp, target_names, target_stats

CONSTANT = 1e-6  # a target whose step-0 spread is below this x its max-abs has no own scale


def borrowed_scales(stats: dict[str, torch.Tensor], keys: list[str]) -> torch.Tensor:
    """``len(keys) x 3``: for a constant bias, its layer's weights' step-0 scale per
    statistic (``|s_0| + spread_0``); zero for every other target."""
    out = torch.zeros(len(keys), 3, dtype=torch.float64)
    for i, key in enumerate(keys):
        weight = key.removesuffix("_bias") + "_weight"
        if not key.endswith("_bias") or weight not in stats:
            continue
        own, other = stats[key][0], stats[weight][0]
        if own[1] <= CONSTANT * own[2] and other[1] > CONSTANT * other[2]:
            out[i] = other.abs() + other[1]
    return out


class WarmUpPlus(WarmUp):
    name = "warmup+"
    THRESHOLDS = (Threshold("z", 3610.0, "warmup+.z", doc="any scored |Z| above this flags"),)

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

    def group_zscores(self, stats: dict[str, torch.Tensor], keys: list[str]) -> torch.Tensor:
        s = torch.stack([stats[k] for k in keys])
        return self.zscores(s, borrowed_scales(stats, keys).to(s.dtype))

    def zscores(self, s: torch.Tensor, borrowed: torch.Tensor | None = None) -> torch.Tensor:
        """Z-scores of ``s`` (``... x T x 3``) against the floor, which is at least
        ``rel * borrowed`` (``... x 3``) where given."""
        spread0 = s[..., 0, 1].abs().unsqueeze(-1)
        out = []
        for t in range(1, s.shape[-2]):
            hist = s[..., :t, :]
            mean = hist.mean(-2)
            floor = self.rel * (mean.abs() + spread0)
            if borrowed is not None:
                floor = torch.maximum(floor, self.rel * borrowed)
            floor = floor + 1e-12
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
